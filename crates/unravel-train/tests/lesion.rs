//! Lesion and reordering at test time on a tiny network.

use std::sync::Arc;

use rand::SeedableRng;
use unravel_device::Gpu;
use unravel_graph::{ModelState, Shape};
use unravel_train::analysis::lesion::{
    k_deletions, single_deletions, swap_blocks, swappable_pairs,
};
use unravel_train::data::{Dataset, LastBatch, Loader, LoaderConfig, Normalization};
use unravel_train::evaluate::Evaluator;
use unravel_train::models::{resnet_cifar_blocks, ModelConfig, ShortcutKind};

fn setup(gpu: &Gpu) -> (unravel_graph::Graph, ModelState, Loader) {
    let config = ModelConfig {
        input: Shape::new(1, 8, 8),
        classes: 3,
        shortcut: ShortcutKind::A,
    };
    let graph = resnet_cifar_blocks([2, 1, 1], &config).unwrap();
    let state = ModelState::new(gpu, &graph, 4).unwrap();
    let images: Vec<u8> = (0..20 * 64).map(|i| ((i * 37) % 251) as u8).collect();
    let labels: Vec<u8> = (0..20).map(|i| (i % 3) as u8).collect();
    let data = Dataset::new(images, labels, Shape::new(1, 8, 8), 3).unwrap();
    let norm = Normalization::from_dataset(&data);
    let loader = Loader::new(
        Arc::new(data),
        norm,
        LoaderConfig::eval(8, LastBatch::Partial),
    )
    .unwrap();
    (graph, state, loader)
}

#[test]
fn single_deletions_are_evaluations_with_that_block_switched_off() {
    let gpu = Gpu::default_adapter().unwrap();
    let (graph, state, test) = setup(&gpu);
    let mut eval = Evaluator::new(&gpu, &graph, &state, None);
    let (intact, rows) = single_deletions(&mut eval, &graph, &test).unwrap();
    assert_eq!(intact, 1.0 - eval.run(&test, &[]).unwrap().accuracy);
    assert_eq!(rows.len(), 4);
    let names: Vec<&str> = rows.iter().map(|r| r.block.as_str()).collect();
    assert_eq!(names, ["layer1.0", "layer1.1", "layer2.0", "layer3.0"]);
    assert_eq!(
        rows.iter().map(|r| r.downsampling).collect::<Vec<_>>(),
        [false, false, true, true]
    );
    for (r, (id, _)) in rows.iter().zip(graph.residual_blocks()) {
        assert_eq!(r.error, 1.0 - eval.run(&test, &[id]).unwrap().accuracy);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let k = k_deletions(&mut eval, &graph, &test, 3, &mut rng).unwrap();
    assert_eq!(k.iter().map(|e| e.k).collect::<Vec<_>>(), [1, 2, 3, 4]);
    // Deleting every block is one configuration: no spread.
    assert_eq!(k[3].std, 0.0);
}

#[test]
fn swapping_two_blocks_reorders_them_and_swapping_back_restores() {
    let gpu = Gpu::default_adapter().unwrap();
    let (graph, state, test) = setup(&gpu);
    let pairs = swappable_pairs(&graph);
    let name = |id: unravel_graph::BlockId| graph.blocks[id.0].name.clone();
    // Only the two blocks of stage 1 share a shape.
    assert_eq!(pairs.len(), 1);
    assert_eq!(
        (name(pairs[0].0), name(pairs[0].1)),
        ("layer1.0".into(), "layer1.1".into())
    );
    let before = state.read_params(&gpu).unwrap();
    let (a, b) = pairs[0];
    swap_blocks(&gpu, &graph, &state, a, b).unwrap();
    let swapped = state.read_params(&gpu).unwrap();
    let find = |p: &Vec<(String, Vec<usize>, Vec<f32>)>, n: &str| {
        p.iter().find(|x| x.0 == n).unwrap().2.clone()
    };
    assert_eq!(
        find(&swapped, "layer1.0.conv1.weight"),
        find(&before, "layer1.1.conv1.weight")
    );
    assert_eq!(
        find(&swapped, "layer1.1.bn2.bias"),
        find(&before, "layer1.0.bn2.bias")
    );
    let mut eval = Evaluator::new(&gpu, &graph, &state, None);
    let _ = eval.run(&test, &[]).unwrap();
    swap_blocks(&gpu, &graph, &state, a, b).unwrap();
    assert_eq!(state.read_params(&gpu).unwrap(), before);
}

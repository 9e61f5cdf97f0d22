//! Whole-model forward and backward on the GPU against the CPU reference
//! interpreter and its central finite differences, for tiny members of each
//! model family on three 8x8 images.

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use unravel_device::Gpu;
use unravel_graph::cpu::{self, CpuModel, CpuStep};
use unravel_graph::{Graph, Mode, ModelState, ParamId, Plan, Shape};
use unravel_train::models::*;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::default_adapter().expect("a GPU adapter (lavapipe in CI)"))
}

fn config(shortcut: ShortcutKind) -> ModelConfig {
    ModelConfig {
        input: Shape::new(3, 8, 8),
        classes: 4,
        shortcut,
    }
}

/// Compares logits and the gradients of up to 14 parameter tensors spread
/// over the network (3 entries each) with finite differences of the CPU
/// reference loss; tolerance relative to each tensor's largest gradient.
fn check_model(name: &str, graph: &Graph) {
    let g = gpu();
    let n = 3;
    let state = ModelState::new(g, graph, 11).unwrap();
    let model = CpuModel::from_state(g, graph, &state).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let images: Vec<f32> = (0..n * graph.shape(graph.input).numel())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels = vec![1, 3, 0];
    let input: Vec<f64> = images.iter().map(|&v| v as f64).collect();
    let plan = Plan::compile(g, graph, &state, n, Mode::Train).unwrap();
    let stats = plan.gradients(g, &images, &labels, &[]).unwrap();
    let step = CpuStep::default();
    let (values, _) = cpu::forward(graph, &model, &input, n, Mode::Train, &step).unwrap();
    let logits = plan.read_value(g, graph.output).unwrap();
    let want = &values[graph.output.0];
    let scale = want.iter().fold(1e-3f64, |m, w| m.max(w.abs()));
    for (got, w) in logits.iter().zip(want) {
        assert!(
            (*got as f64 - w).abs() / scale < 1e-4,
            "{name}: logits {got} vs {w}"
        );
    }
    let loss = cpu::loss(graph, &model, &input, &labels, Mode::Train, &step).unwrap();
    assert!(
        (stats.loss as f64 - loss).abs() < 1e-4,
        "{name}: loss {} vs {loss}",
        stats.loss
    );

    let count = graph.params.len();
    let picks: Vec<usize> = if count <= 14 {
        (0..count).collect()
    } else {
        (0..14).map(|k| k * (count - 1) / 13).collect()
    };
    for &pi in &picks {
        let grad = state.read_grad(g, ParamId(pi)).unwrap();
        let gmax = grad.iter().fold(1e-5f32, |m, v| m.max(v.abs())) as f64;
        let len = graph.params[pi].numel();
        for i in [0, len / 3, len - 1] {
            let eps = 1e-6;
            let mut probe = model.clone();
            probe.params[pi][i] += eps;
            let up = cpu::loss(graph, &probe, &input, &labels, Mode::Train, &step).unwrap();
            probe.params[pi][i] -= 2.0 * eps;
            let down = cpu::loss(graph, &probe, &input, &labels, Mode::Train, &step).unwrap();
            let fd = (up - down) / (2.0 * eps);
            let err = (grad[i] as f64 - fd).abs() / gmax;
            assert!(
                err < 5e-3,
                "{name}: d loss / d {}[{i}]: GPU {} vs finite difference {fd} (rel {err:.2e})",
                graph.params[pi].name,
                grad[i]
            );
        }
    }
}

#[test]
fn resnet_with_one_block_per_stage() {
    check_model(
        "resnet (A)",
        &resnet_cifar_blocks([1, 1, 1], &config(ShortcutKind::A)).unwrap(),
    );
}

#[test]
fn resnet_with_projection_shortcuts() {
    check_model(
        "resnet (B)",
        &resnet_cifar_blocks([1, 1, 1], &config(ShortcutKind::B)).unwrap(),
    );
}

#[test]
fn highway_resnet() {
    check_model(
        "highway",
        &resnet_cifar_blocks([1, 1, 1], &config(ShortcutKind::Highway)).unwrap(),
    );
}

#[test]
fn preactivation_resnet_basic_and_bottleneck() {
    check_model(
        "preact",
        &preact_blocks([1, 1, 1], false, &config(ShortcutKind::A)).unwrap(),
    );
    check_model(
        "preact-bottleneck",
        &preact_blocks([1, 1, 1], true, &config(ShortcutKind::A)).unwrap(),
    );
}

#[test]
fn resnext_with_cardinality_two() {
    check_model(
        "resnext",
        &resnext_blocks(1, 2, 2, 4, &config(ShortcutKind::B)).unwrap(),
    );
}

#[test]
fn densenet_bc_with_two_layers_per_block_and_growth_four() {
    check_model(
        "densenet-bc",
        &densenet_layers(2, 4, true, &config(ShortcutKind::A)).unwrap(),
    );
    check_model(
        "densenet",
        &densenet_layers(2, 3, false, &config(ShortcutKind::A)).unwrap(),
    );
}

#[test]
fn imagenet_stem_with_max_pooling() {
    let cfg = ModelConfig {
        input: Shape::new(3, 32, 32),
        classes: 4,
        shortcut: ShortcutKind::B,
    };
    let graph = resnet_imagenet(18, &cfg).unwrap();
    // Forward only (too large for finite differences here): logits match.
    let g = gpu();
    let state = ModelState::new(g, &graph, 3).unwrap();
    let model = CpuModel::from_state(g, &graph, &state).unwrap();
    let images: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| ((i * 37) % 17) as f32 / 17.0 - 0.5)
        .collect();
    let plan = Plan::compile(g, &graph, &state, 2, Mode::Eval).unwrap();
    plan.eval_step(g, &images, &[0, 1], &[]).unwrap();
    let input: Vec<f64> = images.iter().map(|&v| v as f64).collect();
    let (values, _) =
        cpu::forward(&graph, &model, &input, 2, Mode::Eval, &CpuStep::default()).unwrap();
    let got = plan.read_value(g, graph.output).unwrap();
    let want = &values[graph.output.0];
    let scale = want.iter().fold(1e-3f64, |m, w| m.max(w.abs()));
    for (a, b) in got.iter().zip(want) {
        assert!((*a as f64 - b).abs() / scale < 1e-3, "{a} vs {b}");
    }
}

#[test]
fn plain_network_and_its_block_deletion() {
    let graph = plain_cifar(8, &config(ShortcutKind::A)).unwrap();
    check_model("plain", &graph);
    // Deleting a plain block replaces it by the identity (option A where
    // the shape changes), on the GPU as in the CPU reference.
    let g = gpu();
    let state = ModelState::new(g, &graph, 12).unwrap();
    let model = CpuModel::from_state(g, &graph, &state).unwrap();
    let plan = Plan::compile(g, &graph, &state, 2, Mode::Eval).unwrap();
    let images: Vec<f32> = (0..2 * 192)
        .map(|i| ((i * 13) % 11) as f32 / 5.0 - 1.0)
        .collect();
    let input: Vec<f64> = images.iter().map(|&v| v as f64).collect();
    for (id, _) in graph.residual_blocks() {
        plan.eval_step(g, &images, &[0, 1], &[id]).unwrap();
        let step = CpuStep {
            dropped: vec![id],
            ..Default::default()
        };
        let (values, _) = cpu::forward(&graph, &model, &input, 2, Mode::Eval, &step).unwrap();
        let want = &values[graph.output.0];
        let got = plan.read_value(g, graph.output).unwrap();
        let scale = want.iter().fold(1e-3f64, |m, w| m.max(w.abs()));
        for (a, b) in got.iter().zip(want) {
            assert!((*a as f64 - b).abs() / scale < 1e-4, "{a} vs {b}");
        }
    }
}

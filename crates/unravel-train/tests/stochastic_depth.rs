//! Stochastic depth: the linear-decay survival rule, Bernoulli sampling,
//! dropped blocks skipped in the executor, and test-time scaling.

use std::sync::OnceLock;

use rand::SeedableRng;
use unravel_device::Gpu;
use unravel_graph::cpu::{self, CpuModel, CpuStep};
use unravel_graph::{Mode, ModelState, Plan, Shape};
use unravel_train::models::{build, resnet_cifar_blocks, ModelConfig, ShortcutKind};
use unravel_train::stochastic_depth::{survival, StochasticDepth};

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::default_adapter().expect("a GPU adapter (lavapipe in CI)"))
}

#[test]
fn survival_decays_linearly_to_p_last() {
    let graph = build("resnet110", &ModelConfig::cifar10()).unwrap();
    let sd = StochasticDepth::new(&graph, 0.5);
    let p = sd.probabilities();
    assert_eq!(p.len(), 54);
    assert!((p[0].1 - (1.0 - 0.5 / 54.0)).abs() < 1e-12);
    assert!((p[26].1 - (1.0 - 27.0 / 54.0 * 0.5)).abs() < 1e-12);
    assert!((p[53].1 - 0.5).abs() < 1e-12);
    // Expected active blocks: sum of 1 - l/L * 0.5 = L - 0.5 (L + 1) / 2.
    assert!((sd.expected_active() - (54.0 - 0.5 * 55.0 / 2.0)).abs() < 1e-9);
    assert!((survival(3, 3, 0.2) - 0.2).abs() < 1e-12);
}

#[test]
fn sampling_drops_each_block_with_its_probability() {
    let graph = build("resnet20", &ModelConfig::cifar10()).unwrap();
    let sd = StochasticDepth::new(&graph, 0.5);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let draws = 20_000;
    let mut dropped = [0usize; 9];
    for _ in 0..draws {
        for b in sd.sample_dropped(&mut rng) {
            let i = sd
                .probabilities()
                .iter()
                .position(|(id, _)| *id == b)
                .unwrap();
            dropped[i] += 1;
        }
    }
    for (i, (_, p)) in sd.probabilities().iter().enumerate() {
        let rate = dropped[i] as f64 / draws as f64;
        // 4 standard deviations of a binomial proportion.
        let sigma = (p * (1.0 - p) / draws as f64).sqrt();
        assert!(
            (rate - (1.0 - p)).abs() < 4.0 * sigma + 1e-9,
            "block {i}: {rate} vs {}",
            1.0 - p
        );
    }
}

fn tiny() -> unravel_graph::Graph {
    let cfg = ModelConfig {
        input: Shape::new(1, 8, 8),
        classes: 3,
        shortcut: ShortcutKind::A,
    };
    resnet_cifar_blocks([2, 1, 1], &cfg).unwrap()
}

#[test]
fn a_dropped_block_records_none_of_its_branch_dispatches() {
    let g = gpu();
    let graph = tiny();
    let state = ModelState::new(g, &graph, 1).unwrap();
    let plan = Plan::compile(g, &graph, &state, 2, Mode::Eval).unwrap();
    let images = vec![0.5f32; 2 * 64];
    let labels = [0, 1];
    let full = plan.eval_step(g, &images, &labels, &[]).unwrap().dispatches;
    for (id, block) in graph.residual_blocks() {
        let branch: usize = block
            .nodes
            .iter()
            .map(|n| plan.forward_dispatches(*n))
            .sum();
        assert!(branch >= 4, "a basic block has two convs and two BNs");
        let dropped = plan
            .eval_step(g, &images, &labels, &[id])
            .unwrap()
            .dispatches;
        // The merge is replaced by one pass-through dispatch of the shortcut.
        assert_eq!(dropped, full - branch, "{}", block.name);
    }
}

#[test]
fn eval_scales_each_branch_by_its_survival_probability() {
    let g = gpu();
    let graph = tiny();
    let state = ModelState::new(g, &graph, 2).unwrap();
    let mut plan = Plan::compile(g, &graph, &state, 2, Mode::Eval).unwrap();
    let sd = StochasticDepth::new(&graph, 0.5);
    sd.apply_test_scaling(g, &mut plan).unwrap();
    let images: Vec<f32> = (0..2 * 64).map(|i| (i % 7) as f32 / 7.0 - 0.4).collect();
    plan.eval_step(g, &images, &[0, 2], &[]).unwrap();
    let model = CpuModel::from_state(g, &graph, &state).unwrap();
    let step = CpuStep {
        scales: sd.probabilities().iter().copied().collect(),
        ..Default::default()
    };
    let input: Vec<f64> = images.iter().map(|&v| v as f64).collect();
    let (want, _) = cpu::forward(&graph, &model, &input, 2, Mode::Eval, &step).unwrap();
    let got = plan.read_value(g, graph.output).unwrap();
    let w = &want[graph.output.0];
    let scale = w.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for (a, b) in got.iter().zip(w) {
        assert!((*a as f64 - b).abs() / scale < 1e-4, "{a} vs {b}");
    }
}

//! The executor against the CPU reference interpreter: forward values,
//! whole-model gradients against finite differences, switched-off blocks
//! (no dispatches, shortcut only) and test-time branch scaling.

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use unravel_device::Gpu;
use unravel_graph::cpu::{self, CpuModel, CpuStep};
use unravel_graph::*;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::default_adapter().expect("a GPU adapter (lavapipe in CI)"))
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// conv -> bn+relu -> [option-A downsampling block] -> [identity block] ->
/// [highway block] -> linear: every residual feature without pooling.
fn tiny_residual_net() -> Graph {
    let mut b = GraphBuilder::new(Shape::new(2, 6, 5));
    let x = b.input();
    let x = b.conv2d(x, "conv1", Conv2d::new(3, 3)).unwrap();
    let x = b.batchnorm(x, "bn1", true).unwrap();
    let basic = |b: &mut GraphBuilder, x, c, stride| {
        let h = b.conv2d(x, "conv1", Conv2d::new(c, 3).stride(stride))?;
        let h = b.batchnorm(h, "bn1", true)?;
        let h = b.conv2d(h, "conv2", Conv2d::new(c, 3))?;
        b.batchnorm(h, "bn2", false)
    };
    let x = b
        .scoped("block0", |b| {
            b.residual(
                x,
                1,
                Merge::AddRelu,
                |b, x| b.shortcut_a(x, "sc", 5, 2),
                |b, x| basic(b, x, 5, 2),
            )
        })
        .unwrap();
    let x = b
        .scoped("block1", |b| {
            b.residual(x, 1, Merge::AddRelu, |_, x| Ok(x), |b, x| basic(b, x, 5, 1))
        })
        .unwrap();
    let x = b
        .scoped("block2", |b| {
            b.residual(
                x,
                1,
                Merge::Highway { gate_bias: -1.0 },
                |_, x| Ok(x),
                |b, x| basic(b, x, 5, 1),
            )
        })
        .unwrap();
    let y = b.linear(x, "fc", 3).unwrap();
    b.finish(y)
}

fn max_rel(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(1e-3f64, |m, w| m.max(w.abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).abs() / scale)
        .fold(0.0, f64::max)
}

const N: usize = 3;

fn batch(graph: &Graph) -> (Vec<f32>, Vec<u32>) {
    let images = random(N * graph.shape(graph.input).numel(), 7);
    (images, vec![0, 2, 1])
}

#[test]
fn forward_matches_the_cpu_reference_in_both_modes() {
    let g = gpu();
    let graph = tiny_residual_net();
    let state = ModelState::new(g, &graph, 1).unwrap();
    let (images, labels) = batch(&graph);
    let input: Vec<f64> = images.iter().map(|&v| v as f64).collect();
    for mode in [Mode::Train, Mode::Eval] {
        // The train pass updates the running statistics the eval pass uses.
        let model = CpuModel::from_state(g, &graph, &state).unwrap();
        let plan = Plan::compile(g, &graph, &state, N, mode).unwrap();
        let stats = match mode {
            Mode::Train => plan.gradients(g, &images, &labels, &[]).unwrap(),
            Mode::Eval => plan.eval_step(g, &images, &labels, &[]).unwrap(),
        };
        let (want, _) = cpu::forward(&graph, &model, &input, N, mode, &CpuStep::default()).unwrap();
        let logits = plan.read_value(g, graph.output).unwrap();
        let err = max_rel(&logits, &want[graph.output.0]);
        assert!(err < 1e-4, "{mode:?}: logits relative error {err:.2e}");
        let loss = cpu::loss(&graph, &model, &input, &labels, mode, &CpuStep::default()).unwrap();
        assert!(
            (stats.loss as f64 - loss).abs() < 1e-4 * loss.max(1.0),
            "{} vs {loss}",
            stats.loss
        );
    }
}

#[test]
fn whole_model_gradients_match_finite_differences() {
    let g = gpu();
    let graph = tiny_residual_net();
    let state = ModelState::new(g, &graph, 2).unwrap();
    let model = CpuModel::from_state(g, &graph, &state).unwrap();
    let (images, labels) = batch(&graph);
    let input: Vec<f64> = images.iter().map(|&v| v as f64).collect();
    let plan = Plan::compile(g, &graph, &state, N, Mode::Train).unwrap();
    plan.gradients(g, &images, &labels, &[]).unwrap();
    let step = CpuStep::default();
    let mut checked = 0;
    for (pi, param) in graph.params.iter().enumerate() {
        let grad = state.read_grad(g, ParamId(pi)).unwrap();
        let scale = grad.iter().fold(1e-4f32, |m, v| m.max(v.abs())) as f64;
        for i in [0, param.numel() / 2, param.numel() - 1] {
            let mut probe = model.clone();
            let eps = 1e-5;
            probe.params[pi][i] += eps;
            let up = cpu::loss(&graph, &probe, &input, &labels, Mode::Train, &step).unwrap();
            probe.params[pi][i] -= 2.0 * eps;
            let down = cpu::loss(&graph, &probe, &input, &labels, Mode::Train, &step).unwrap();
            let fd = (up - down) / (2.0 * eps);
            let err = (grad[i] as f64 - fd).abs() / scale;
            assert!(
                err < 2e-3,
                "{}[{i}]: GPU {} vs finite difference {fd} (rel {err:.2e})",
                param.name,
                grad[i]
            );
            checked += 1;
        }
    }
    assert!(checked > 30);
}

#[test]
fn a_switched_off_block_dispatches_nothing_and_keeps_the_shortcut() {
    let g = gpu();
    let graph = tiny_residual_net();
    let state = ModelState::new(g, &graph, 3).unwrap();
    let model = CpuModel::from_state(g, &graph, &state).unwrap();
    let (images, labels) = batch(&graph);
    let input: Vec<f64> = images.iter().map(|&v| v as f64).collect();
    let plan = Plan::compile(g, &graph, &state, N, Mode::Train).unwrap();
    let block = graph.block_by_name("block1").unwrap();
    let full = plan.gradients(g, &images, &labels, &[]).unwrap();
    let dropped = plan.gradients(g, &images, &labels, &[block]).unwrap();
    // Two conv + two BN forward and backward are gone; the merge remains.
    assert!(
        dropped.dispatches < full.dispatches,
        "{} vs {}",
        dropped.dispatches,
        full.dispatches
    );
    let step = CpuStep {
        dropped: vec![block],
        ..Default::default()
    };
    let (want, _) = cpu::forward(&graph, &model, &input, N, Mode::Train, &step).unwrap();
    let logits = plan.read_value(g, graph.output).unwrap();
    assert!(max_rel(&logits, &want[graph.output.0]) < 1e-4);
    // The dropped branch's parameters get no gradient; the others match FD.
    let conv = state.param_id("block1.conv1.weight").unwrap();
    assert!(state.read_grad(g, conv).unwrap().iter().all(|&v| v == 0.0));
    let fc = state.param_id("fc.weight").unwrap();
    let grad = state.read_grad(g, fc).unwrap();
    let mut probe = model.clone();
    let eps = 1e-5;
    probe.params[fc.0][4] += eps;
    let up = cpu::loss(&graph, &probe, &input, &labels, Mode::Train, &step).unwrap();
    probe.params[fc.0][4] -= 2.0 * eps;
    let down = cpu::loss(&graph, &probe, &input, &labels, Mode::Train, &step).unwrap();
    let fd = (up - down) / (2.0 * eps);
    assert!(
        (grad[4] as f64 - fd).abs() < 1e-3 * fd.abs().max(1e-2),
        "{} vs {fd}",
        grad[4]
    );
}

#[test]
fn eval_scales_a_branch_by_its_survival_probability() {
    let g = gpu();
    let graph = tiny_residual_net();
    let state = ModelState::new(g, &graph, 4).unwrap();
    let model = CpuModel::from_state(g, &graph, &state).unwrap();
    let (images, labels) = batch(&graph);
    let input: Vec<f64> = images.iter().map(|&v| v as f64).collect();
    let mut plan = Plan::compile(g, &graph, &state, N, Mode::Eval).unwrap();
    let block = graph.block_by_name("block1").unwrap();
    plan.set_block_scale(g, block, 0.7).unwrap();
    plan.eval_step(g, &images, &labels, &[]).unwrap();
    let mut step = CpuStep::default();
    step.scales.insert(block, 0.7);
    let (want, _) = cpu::forward(&graph, &model, &input, N, Mode::Eval, &step).unwrap();
    let logits = plan.read_value(g, graph.output).unwrap();
    assert!(max_rel(&logits, &want[graph.output.0]) < 1e-4);
    let (unscaled, _) =
        cpu::forward(&graph, &model, &input, N, Mode::Eval, &CpuStep::default()).unwrap();
    assert!(
        max_rel(&logits, &unscaled[graph.output.0]) > 1e-3,
        "the scale changed nothing"
    );
}

#[test]
fn a_batch_of_the_wrong_size_is_a_clear_error() {
    let g = gpu();
    let graph = tiny_residual_net();
    let state = ModelState::new(g, &graph, 5).unwrap();
    let plan = Plan::compile(g, &graph, &state, N, Mode::Train).unwrap();
    let err = plan
        .gradients(g, &[0.0; 10], &[0, 1, 2], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 images"), "{err}");
}

#[test]
fn eval_plans_fold_each_batch_norm_into_the_convolution_before_it() {
    let g = gpu();
    let graph = tiny_residual_net();
    let state = ModelState::new(g, &graph, 4).unwrap();
    let (images, labels) = batch(&graph);
    // A training step first, so the running statistics are not 0 and 1.
    let train = Plan::compile(g, &graph, &state, N, Mode::Train).unwrap();
    train.gradients(g, &images, &labels, &[]).unwrap();
    let folded = Plan::compile(g, &graph, &state, N, Mode::Eval).unwrap();
    let options = PlanOptions {
        unfused: true,
        ..Default::default()
    };
    let unfolded = Plan::compile_with(g, &graph, &state, N, Mode::Eval, &options).unwrap();
    for (i, node) in graph.nodes.iter().enumerate() {
        let id = NodeId(i);
        let before_bn = graph
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::BatchNorm { .. }) && n.inputs[0] == node.output);
        match node.op {
            // The folded batch norm's coefficients, then the convolution
            // (the highway gate's 1x1 convolution has no batch norm).
            Op::Conv2d { .. } => assert_eq!(
                folded.forward_dispatches(id),
                unfolded.forward_dispatches(id) + before_bn as usize,
                "{}",
                node.name
            ),
            Op::BatchNorm { .. } => {
                assert_eq!(folded.forward_dispatches(id), 0, "{}", node.name)
            }
            _ => {}
        }
    }
    let block = graph.block_by_name("block1").unwrap();
    for dropped in [vec![], vec![block]] {
        folded.eval_step(g, &images, &labels, &dropped).unwrap();
        unfolded.eval_step(g, &images, &labels, &dropped).unwrap();
        let a = folded.read_value(g, graph.output).unwrap();
        let b = unfolded.read_value(g, graph.output).unwrap();
        let want: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        assert!(max_rel(&a, &want) < 1e-5, "{a:?} vs {b:?}");
    }
}

#[test]
fn train_plans_fuse_each_residual_merge_into_the_batch_norm_before_it() {
    let g = gpu();
    let graph = tiny_residual_net();
    let state = ModelState::new(g, &graph, 5).unwrap();
    let (images, labels) = batch(&graph);
    let fused = Plan::compile(g, &graph, &state, N, Mode::Train).unwrap();
    let options = PlanOptions {
        unfused: true,
        ..Default::default()
    };
    let unfused = Plan::compile_with(g, &graph, &state, N, Mode::Train, &options).unwrap();
    // block0 and block1 end in bn2 -> add + ReLU; block2's highway merge
    // stays a pass of its own.
    for block in ["block0", "block1"] {
        let bn = graph
            .nodes
            .iter()
            .position(|n| n.name == format!("{block}.bn2"));
        let merge = graph
            .nodes
            .iter()
            .position(|n| n.op == Op::Add { relu: true } && n.name.starts_with(block));
        let (bn, merge) = (NodeId(bn.unwrap()), NodeId(merge.unwrap()));
        assert_eq!(fused.forward_dispatches(bn), unfused.forward_dispatches(bn));
        assert_eq!(fused.forward_dispatches(merge), 0, "{block}");
        assert_eq!(unfused.forward_dispatches(merge), 1, "{block}");
    }
    let conv = state.param_id("block0.conv1.weight").unwrap();
    let mut results = Vec::new();
    let mut dispatches = Vec::new();
    for plan in [&fused, &unfused] {
        dispatches.push(plan.gradients(g, &images, &labels, &[]).unwrap().dispatches);
        let logits = plan.read_value(g, graph.output).unwrap();
        results.push((logits, state.read_grad(g, conv).unwrap()));
    }
    let want: Vec<f64> = results[1].0.iter().map(|&v| v as f64).collect();
    assert!(max_rel(&results[0].0, &want) < 1e-5);
    let want: Vec<f64> = results[1].1.iter().map(|&v| v as f64).collect();
    assert!(max_rel(&results[0].1, &want) < 1e-4);
    // Per fused block: the merge's forward pass, and in backward the ReLU
    // mask of the branch's gradient, which the batch norm applies itself.
    assert_eq!(dispatches[1] - dispatches[0], 2 * 2, "{dispatches:?}");
}

/// Every batch norm's running statistics.
fn running_statistics(g: &Gpu, graph: &Graph, state: &ModelState) -> Vec<(Vec<f32>, Vec<f32>)> {
    (0..graph.bn_states.len())
        .map(|i| {
            let (_, mean, var) = state.read_bn(g, i).unwrap();
            (mean, var)
        })
        .collect()
}

/// An evaluation on a training plan (batch statistics) measures and
/// changes nothing: the running statistics stay as they are, where a
/// training step updates them.
#[test]
fn evaluating_on_a_training_plan_leaves_the_running_statistics_alone() {
    let g = gpu();
    let graph = tiny_residual_net();
    let state = ModelState::new(g, &graph, 6).unwrap();
    let (images, labels) = batch(&graph);
    // Unfused too: there every batch norm is a pass of its own.
    for unfused in [false, true] {
        let options = PlanOptions {
            unfused,
            ..Default::default()
        };
        let plan = Plan::compile_with(g, &graph, &state, N, Mode::Train, &options).unwrap();
        let before = running_statistics(g, &graph, &state);
        plan.eval_step(g, &images, &labels, &[]).unwrap();
        assert_eq!(
            running_statistics(g, &graph, &state),
            before,
            "unfused={unfused}"
        );
        plan.gradients(g, &images, &labels, &[]).unwrap();
        assert_ne!(
            running_statistics(g, &graph, &state),
            before,
            "unfused={unfused}"
        );
    }
}

/// A value the plan did not keep has had its buffer reused: reading it is
/// an error that says what to do, not stale data.
#[test]
fn reading_a_value_the_plan_did_not_keep_is_an_error() {
    let g = gpu();
    let graph = tiny_residual_net();
    let state = ModelState::new(g, &graph, 7).unwrap();
    let (images, labels) = batch(&graph);
    let inner = graph.nodes[1].output;
    let plan = Plan::compile(g, &graph, &state, N, Mode::Train).unwrap();
    plan.gradients(g, &images, &labels, &[]).unwrap();
    let err = plan.read_value(g, inner).unwrap_err();
    assert!(matches!(err, GraphError::NotKept { .. }), "{err}");
    assert!(err.to_string().contains("PlanOptions::keep"), "{err}");
    assert!(plan.read_value_grad(g, inner).is_err());
    assert!(plan.read_value(g, graph.output).is_ok());
    let options = PlanOptions {
        keep: vec![inner],
        ..Default::default()
    };
    let kept = Plan::compile_with(g, &graph, &state, N, Mode::Train, &options).unwrap();
    kept.gradients(g, &images, &labels, &[]).unwrap();
    assert_eq!(
        kept.read_value(g, inner).unwrap().len(),
        N * graph.shape(inner).numel()
    );
    assert!(kept.read_value_grad(g, inner).is_ok());
}

/// A DenseNet-like net with the pools: a dense block (channel slices of one
/// f16 buffer, recomputed batch norms), a transition (2x2 average pool),
/// max pooling and the global pool into the classifier.
fn tiny_dense_net() -> Graph {
    let mut b = GraphBuilder::new(Shape::new(2, 8, 8));
    let x = b.input();
    let x = b.conv2d(x, "conv0", Conv2d::new(4, 3)).unwrap();
    let x = b.maxpool3x3s2(x, "pool0").unwrap();
    let x = b
        .dense_block(x, 1, 3, 3, |b, x, _| {
            let h = b.batchnorm(x, "norm1", true)?;
            b.conv2d(h, "conv1", Conv2d::new(3, 3))
        })
        .unwrap();
    let x = b.batchnorm(x, "norm_t", true).unwrap();
    let x = b.avgpool2x2(x, "pool_t").unwrap();
    let x = b.global_avgpool(x, "avgpool").unwrap();
    let y = b.linear(x, "fc", 3).unwrap();
    b.finish(y)
}

/// Mixed precision (f16 activations and gradients) against f32 on the same
/// model and batch: logits, loss and every parameter gradient agree to what
/// a dozen f16 roundings in sequence allow (each 2^-11 relative), in both
/// modes, and the mixed plan's buffers take about half the memory.
#[test]
fn mixed_precision_matches_f32_within_f16_rounding() {
    let g = gpu();
    // Tensor cores by default in mixed precision only, and only where the
    // device's passed their check (then this test runs on them).
    assert_eq!(Precision::F32.default_conv_algo(g), None);
    let checked = unravel_device::kernels::conv2d::CoopTile::verified(g).is_ok();
    assert_eq!(Precision::Mixed.default_conv_algo(g).is_some(), checked);
    let mixed = PlanOptions {
        precision: Precision::Mixed,
        ..Default::default()
    };
    for (name, graph) in [
        ("residual", tiny_residual_net()),
        ("dense", tiny_dense_net()),
    ] {
        let state = ModelState::new(g, &graph, 5).unwrap();
        let (images, labels) = batch(&graph);
        let both = [PlanOptions::default(), mixed.clone()];
        // Evaluations first: a training step moves the running statistics.
        let eval_logits: Vec<Vec<f32>> = both
            .iter()
            .map(|options| {
                let eval = Plan::compile_with(g, &graph, &state, N, Mode::Eval, options).unwrap();
                eval.eval_step(g, &images, &labels, &[]).unwrap();
                eval.read_value(g, graph.output).unwrap()
            })
            .collect();
        let mut results = Vec::new();
        for (options, eval_logits) in both.iter().zip(eval_logits) {
            let train = Plan::compile_with(g, &graph, &state, N, Mode::Train, options).unwrap();
            let stats = train.gradients(g, &images, &labels, &[]).unwrap();
            let logits = train.read_value(g, graph.output).unwrap();
            let grads: Vec<Vec<f32>> = (0..graph.params.len())
                .map(|p| state.read_grad(g, ParamId(p)).unwrap())
                .collect();
            results.push((
                stats.loss,
                logits,
                grads,
                eval_logits,
                train.activation_bytes(),
            ));
        }
        let (f32_run, mixed_run) = (&results[0], &results[1]);
        let as_f64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        // Measured: 1e-3 (residual) and 5e-4 (dense).
        let tol = 5e-3;
        let err = max_rel(&mixed_run.1, &as_f64(&f32_run.1));
        assert!(err < tol, "{name}: train logits differ by {err:.2e}");
        let err = max_rel(&mixed_run.3, &as_f64(&f32_run.3));
        assert!(err < tol, "{name}: eval logits differ by {err:.2e}");
        assert!(
            (mixed_run.0 - f32_run.0).abs() < 1e-2 * f32_run.0,
            "{name}: loss"
        );
        for (p, (m, f)) in mixed_run.2.iter().zip(&f32_run.2).enumerate() {
            let err = max_rel(m, &as_f64(f));
            assert!(
                err < 3e-2,
                "{name}: gradient of {} differs by {err:.2e}",
                graph.params[p].name
            );
        }
        let ratio = mixed_run.4 as f64 / f32_run.4 as f64;
        assert!(
            ratio < 0.6,
            "{name}: mixed plan memory is {ratio:.2} of f32's"
        );
    }
}

fn param_bits(g: &Gpu, state: &ModelState) -> Vec<u32> {
    state
        .read_params(g)
        .unwrap()
        .iter()
        .flat_map(|(_, _, v)| v.iter().map(|x| x.to_bits()))
        .collect()
}

fn sgd() -> unravel_device::kernels::sgd::SgdConfig {
    unravel_device::kernels::sgd::SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    }
}

/// With f32 activations a power-of-two loss scale divides out exactly: the
/// scaled optimiser's steps are bit-identical to the plain one's.
#[test]
fn a_scaled_loss_trains_exactly_like_the_plain_one_in_f32() {
    let g = gpu();
    let graph = tiny_residual_net();
    let (images, labels) = batch(&graph);
    let scaling = unravel_device::kernels::loss_scale::LossScaleConfig {
        init_scale: 1024.0,
        ..Default::default()
    };
    let mut after = Vec::new();
    for scaled in [false, true] {
        let state = ModelState::new(g, &graph, 6).unwrap();
        let plan = Plan::compile(g, &graph, &state, N, Mode::Train).unwrap();
        let opt = match scaled {
            false => Optimizer::new(g, &state, sgd()).unwrap(),
            true => Optimizer::with_loss_scaling(g, &state, sgd(), &scaling).unwrap(),
        };
        for _ in 0..3 {
            let stats = plan
                .train_step(g, &images, &labels, &[], Some(&opt))
                .unwrap();
            assert_eq!(stats.loss_scale.is_some(), scaled);
        }
        after.push(param_bits(g, &state));
    }
    assert_eq!(after[0], after[1]);
}

/// Mixed precision with a scale so large that the f16 gradients overflow:
/// each such step changes no parameter and halves the scale, until a step
/// is clean and trains; after `growth_interval` clean steps the scale
/// doubles. What the step reports is what the optimiser holds.
#[test]
fn overflowing_steps_are_skipped_and_the_scale_adapts() {
    let g = gpu();
    let graph = tiny_residual_net();
    let (images, labels) = batch(&graph);
    let state = ModelState::new(g, &graph, 7).unwrap();
    let options = PlanOptions {
        precision: Precision::Mixed,
        ..Default::default()
    };
    let plan = Plan::compile_with(g, &graph, &state, N, Mode::Train, &options).unwrap();
    let scaling = unravel_device::kernels::loss_scale::LossScaleConfig {
        init_scale: 16_777_216.0, // 2^24: dlogits * scale far beyond f16's 65504
        growth_interval: 2,
        ..Default::default()
    };
    let opt = Optimizer::with_loss_scaling(g, &state, sgd(), &scaling).unwrap();
    let mut scale = scaling.init_scale;
    let mut skipped = 0;
    let mut before = param_bits(g, &state);
    let clean = loop {
        let stats = plan
            .train_step(g, &images, &labels, &[], Some(&opt))
            .unwrap();
        let now = stats.loss_scale.unwrap();
        assert_eq!(opt.loss_scale(g).unwrap(), Some(now));
        let after = param_bits(g, &state);
        if now.skipped_steps == skipped {
            break (now, after != before);
        }
        skipped += 1;
        scale /= 2.0;
        assert_eq!(now.skipped_steps, skipped);
        assert_eq!(now.scale, scale, "halved after a skipped step");
        assert_eq!(after, before, "a skipped step changed a parameter");
        assert!(skipped < 20, "the scale never came down far enough");
        before = after;
    };
    assert!(
        skipped >= 3,
        "2^24 should overflow f16 gradients ({skipped} skipped)"
    );
    let (state_after, trained) = clean;
    assert!(trained, "a clean step must update the parameters");
    assert_eq!((state_after.scale, state_after.clean_steps), (scale, 1));
    let stats = plan
        .train_step(g, &images, &labels, &[], Some(&opt))
        .unwrap();
    let grown = stats.loss_scale.unwrap();
    assert_eq!(
        (grown.scale, grown.clean_steps),
        (scale * 2.0, 0),
        "doubled after 2 clean steps"
    );
}

/// An adapter without f16 storage (SHADER_F16 switched off here) refuses a
/// mixed-precision plan with a message that says to use f32.
#[test]
fn mixed_precision_without_f16_is_a_clear_error() {
    let options = unravel_device::AdapterOptions {
        disabled_features: unravel_device::wgpu::Features::SHADER_F16,
        ..Default::default()
    };
    let g = Gpu::new(&options).unwrap();
    assert!(!g.has_f16());
    let graph = tiny_residual_net();
    let state = ModelState::new(&g, &graph, 1).unwrap();
    let mixed = PlanOptions {
        precision: Precision::Mixed,
        ..Default::default()
    };
    let err = Plan::compile_with(&g, &graph, &state, N, Mode::Train, &mixed)
        .err()
        .expect("a mixed plan without SHADER_F16");
    assert!(matches!(err, GraphError::NoF16 { .. }), "{err}");
    assert!(err.to_string().contains("use f32"), "{err}");
    assert!(g.zeros_of(&[4], unravel_device::DType::F16).is_err());
}

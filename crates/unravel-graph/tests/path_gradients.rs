//! Gradients along chosen paths (Veit et al. 2016): through the branch of
//! the sampled blocks and the shortcut of the others. Backward is linear in
//! the output gradient once the forward pass is fixed, so the gradients of
//! all 2^n paths add up to the ordinary gradient; the path through no
//! branch is the shortcut-only path; routing every block both ways is the
//! ordinary backward.

use unravel_device::Gpu;
use unravel_graph::*;

fn gpu() -> Gpu {
    Gpu::default_adapter().expect("a GPU adapter (lavapipe in CI)")
}

fn basic(b: &mut GraphBuilder, x: ValueId, c: usize, stride: usize) -> Result<ValueId> {
    let h = b.conv2d(x, "conv1", Conv2d::new(c, 3).stride(stride))?;
    let h = b.batchnorm(h, "bn1", true)?;
    let h = b.conv2d(h, "conv2", Conv2d::new(c, 3))?;
    b.batchnorm(h, "bn2", false)
}

/// Stem, then an identity block, an option-A downsampling block and a
/// highway block, then a linear layer. Returns the graph and the input of
/// the first block.
fn net() -> (Graph, ValueId) {
    let mut b = GraphBuilder::new(Shape::new(2, 6, 6));
    let x = b.input();
    let x = b.conv2d(x, "stem", Conv2d::new(3, 3)).unwrap();
    let first = b.batchnorm(x, "stem_bn", true).unwrap();
    let x = b
        .scoped("b0", |b| {
            b.residual(
                first,
                1,
                Merge::AddRelu,
                |_, x| Ok(x),
                |b, x| basic(b, x, 3, 1),
            )
        })
        .unwrap();
    let x = b
        .scoped("b1", |b| {
            b.residual(
                x,
                2,
                Merge::AddRelu,
                |b, x| b.shortcut_a(x, "sc", 5, 2),
                |b, x| basic(b, x, 5, 2),
            )
        })
        .unwrap();
    let x = b
        .scoped("b2", |b| {
            b.residual(
                x,
                2,
                Merge::Highway { gate_bias: -1.0 },
                |_, x| Ok(x),
                |b, x| basic(b, x, 5, 1),
            )
        })
        .unwrap();
    let y = b.linear(x, "fc", 3).unwrap();
    (b.finish(y), first)
}

const N: usize = 3;

fn batch(graph: &Graph) -> (Vec<f32>, Vec<u32>) {
    let len = N * graph.shape(graph.input).numel();
    (
        (0..len)
            .map(|i| ((i * 29) % 17) as f32 / 8.0 - 1.0)
            .collect(),
        vec![2, 0, 1],
    )
}

/// The test network with initialisation `seed`, a train plan that keeps the
/// first block's input, and its batch.
struct Setup {
    g: Gpu,
    graph: Graph,
    first: ValueId,
    state: ModelState,
    plan: Plan,
    images: Vec<f32>,
    labels: Vec<u32>,
}

fn setup(seed: u64) -> Setup {
    let g = gpu();
    let (graph, first) = net();
    let state = ModelState::new(&g, &graph, seed).unwrap();
    let options = PlanOptions {
        keep: vec![first],
        ..Default::default()
    };
    let plan = Plan::compile_with(&g, &graph, &state, N, Mode::Train, &options).unwrap();
    let (images, labels) = batch(&graph);
    Setup {
        g,
        graph,
        first,
        state,
        plan,
        images,
        labels,
    }
}

#[test]
fn the_gradients_of_all_paths_add_up_to_the_ordinary_gradient() {
    let Setup {
        g,
        graph,
        first,
        plan,
        images,
        labels,
        ..
    } = setup(5);
    plan.gradients(&g, &images, &labels, &[]).unwrap();
    let ordinary = plan.read_value_grad(&g, first).unwrap();
    let blocks: Vec<BlockId> = graph.residual_blocks().map(|(id, _)| id).collect();
    assert_eq!(blocks.len(), 3);
    let mut sum = vec![0.0f64; ordinary.len()];
    for subset in 0..(1 << blocks.len()) {
        let through: Vec<BlockId> = blocks
            .iter()
            .enumerate()
            .filter(|(i, _)| subset & (1 << i) != 0)
            .map(|(_, b)| *b)
            .collect();
        plan.path_gradients(&g, &images, &labels, &through).unwrap();
        for (s, v) in sum.iter_mut().zip(plan.read_value_grad(&g, first).unwrap()) {
            *s += v as f64;
        }
    }
    let scale = ordinary.iter().fold(1e-6f32, |m, v| m.max(v.abs())) as f64;
    for (s, o) in sum.iter().zip(&ordinary) {
        assert!(
            (s - *o as f64).abs() / scale < 1e-4,
            "sum of paths {s} vs ordinary {o}"
        );
    }
}

#[test]
fn the_path_through_no_branch_is_the_shortcut_path() {
    // Identity shortcuts and plain additions: the shortcut-only path
    // carries the output gradient of the last block unchanged to the first.
    let mut b = GraphBuilder::new(Shape::new(3, 5, 5));
    let first = b.input();
    let first = b.conv2d(first, "stem", Conv2d::new(3, 3)).unwrap();
    let mut x = first;
    for i in 0..3 {
        x = b
            .scoped(&format!("b{i}"), |b| {
                b.residual(x, 1, Merge::Add, |_, x| Ok(x), |b, x| basic(b, x, 3, 1))
            })
            .unwrap();
    }
    let last = x;
    let y = b.linear(x, "fc", 4).unwrap();
    let graph = b.finish(y);
    let g = gpu();
    let state = ModelState::new(&g, &graph, 6).unwrap();
    let options = PlanOptions {
        keep: vec![first, last],
        ..Default::default()
    };
    let plan = Plan::compile_with(&g, &graph, &state, N, Mode::Train, &options).unwrap();
    let (images, labels) = batch(&graph);
    plan.path_gradients(&g, &images, &labels, &[]).unwrap();
    let at_first = plan.read_value_grad(&g, first).unwrap();
    let at_last = plan.read_value_grad(&g, last).unwrap();
    assert_eq!(at_first, at_last);
    // And no branch parameter received a gradient.
    let conv = state.param_id("b1.conv1.weight").unwrap();
    assert!(state.read_grad(&g, conv).unwrap().iter().all(|&v| v == 0.0));
}

fn close(a: &[f32], b: &[f32], what: &str) {
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() / scale < 1e-5, "{what}: {x} vs {y}");
    }
}

#[test]
fn routing_every_block_both_ways_is_the_ordinary_gradient() {
    let Setup {
        g,
        first,
        state,
        plan,
        images,
        labels,
        ..
    } = setup(7);
    let conv = state.param_id("b0.conv1.weight").unwrap();
    plan.gradients(&g, &images, &labels, &[]).unwrap();
    let ordinary = plan.read_value_grad(&g, first).unwrap();
    let ordinary_conv = state.read_grad(&g, conv).unwrap();
    plan.routed_gradients(&g, &images, &labels, &|_| Route::Both)
        .unwrap();
    close(
        &plan.read_value_grad(&g, first).unwrap(),
        &ordinary,
        "input",
    );
    close(
        &state.read_grad(&g, conv).unwrap(),
        &ordinary_conv,
        "b0.conv1",
    );
    assert!(ordinary.iter().any(|&v| v != 0.0));
}

#[test]
fn a_block_routed_both_ways_adds_its_two_paths() {
    // Both ways through the first block and the shortcut of the others is
    // the sum of the shortcut-only path and the path through its branch.
    let Setup {
        g,
        graph,
        first,
        plan,
        images,
        labels,
        ..
    } = setup(8);
    let b0 = graph.residual_blocks().next().unwrap().0;
    plan.path_gradients(&g, &images, &labels, &[]).unwrap();
    let shortcut = plan.read_value_grad(&g, first).unwrap();
    plan.path_gradients(&g, &images, &labels, &[b0]).unwrap();
    let branch = plan.read_value_grad(&g, first).unwrap();
    let route = |b: BlockId| {
        if b == b0 {
            Route::Both
        } else {
            Route::Shortcut
        }
    };
    plan.routed_gradients(&g, &images, &labels, &route).unwrap();
    let both = plan.read_value_grad(&g, first).unwrap();
    let sum: Vec<f32> = shortcut.iter().zip(&branch).map(|(a, b)| a + b).collect();
    close(&both, &sum, "both ways");
    assert!(branch.iter().any(|&v| v != 0.0) && shortcut.iter().any(|&v| v != 0.0));
}

/// A path-gradient step measures: neither the parameters nor the batch-norm
/// running statistics change (a training step does change the latter).
#[test]
fn path_gradients_change_nothing_in_the_model() {
    let Setup {
        g,
        graph,
        state,
        plan,
        images,
        labels,
        ..
    } = setup(9);
    let snapshot = |state: &ModelState| {
        let bn: Vec<_> = (0..graph.bn_states.len())
            .map(|i| state.read_bn(&g, i).unwrap())
            .collect();
        (state.read_params(&g).unwrap(), bn)
    };
    let before = snapshot(&state);
    let blocks: Vec<BlockId> = graph.residual_blocks().map(|(id, _)| id).collect();
    plan.path_gradients(&g, &images, &labels, &blocks[..1])
        .unwrap();
    plan.routed_gradients(&g, &images, &labels, &|_| Route::Both)
        .unwrap();
    assert_eq!(snapshot(&state), before);
    plan.gradients(&g, &images, &labels, &[]).unwrap();
    assert_ne!(snapshot(&state).1, before.1, "a training step updates them");
}

/// With `frozen_batch_norm` a training plan computes the network as it is
/// evaluated (the evaluation plan's logits and loss, no running statistic
/// changed), and its gradients are the evaluation loss's: central finite
/// differences of the evaluation plan's loss in the stem's weights. With
/// batch statistics the gradients differ.
#[test]
fn frozen_batch_norm_gives_the_gradients_of_the_evaluated_network() {
    let s = setup(9);
    let (g, graph, state) = (&s.g, &s.graph, &s.state);
    // Running statistics away from (0, 1), as training leaves them.
    for _ in 0..4 {
        s.plan.gradients(g, &s.images, &s.labels, &[]).unwrap();
    }
    let stem = state.param_id("stem.weight").expect("the stem's weights");
    let batch_stats_grad = state.read_grad(g, stem).unwrap();
    let eval = Plan::compile(g, graph, state, N, Mode::Eval).unwrap();
    let eval_loss = |g: &Gpu| eval.eval_step(g, &s.images, &s.labels, &[]).unwrap().loss;
    let loss = eval_loss(g);
    let logits = eval.read_value(g, graph.output).unwrap();

    let options = PlanOptions {
        frozen_batch_norm: true,
        ..Default::default()
    };
    let frozen = Plan::compile_with(g, graph, state, N, Mode::Train, &options).unwrap();
    let bns = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::BatchNorm { .. }))
        .count();
    let running = |g: &Gpu| {
        (0..bns)
            .map(|i| state.read_bn(g, i).unwrap())
            .collect::<Vec<_>>()
    };
    let before = running(g);
    let stats = frozen.gradients(g, &s.images, &s.labels, &[]).unwrap();
    assert_eq!(
        running(g),
        before,
        "a frozen step changed running statistics"
    );
    assert!(
        (stats.loss - loss).abs() < 1e-5 * loss.abs().max(1.0),
        "loss {} vs {loss}",
        stats.loss
    );
    close(
        &frozen.read_value(g, graph.output).unwrap(),
        &logits,
        "logits",
    );

    let grad = state.read_grad(g, stem).unwrap();
    let mut w = state.read_params(g).unwrap();
    let w0 = w.remove(stem.0).2;
    let mut order: Vec<usize> = (0..grad.len()).collect();
    order.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
    let h = 1e-3;
    for &i in &order[..4] {
        let at = |delta: f32| {
            let mut v = w0.clone();
            v[i] += delta;
            state.write_param(g, stem, &v).unwrap();
            eval_loss(g)
        };
        let fd = (at(h) - at(-h)) / (2.0 * h);
        state.write_param(g, stem, &w0).unwrap();
        let err = (fd - grad[i]).abs() / grad[i].abs();
        assert!(
            err < 2e-2,
            "stem weight {i}: {} against {fd} by differences",
            grad[i]
        );
    }
    let differ = grad
        .iter()
        .zip(&batch_stats_grad)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        differ > 0.1 * grad[order[0]].abs(),
        "the batch statistics' gradient is the same"
    );
}

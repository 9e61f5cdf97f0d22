//! The memory planner: buffers shared by liveness, in-place ReLU, and the
//! planned bytes of plans.

use unravel_device::Gpu;
use unravel_graph::*;

fn gpu() -> Gpu {
    Gpu::default_adapter().expect("a GPU adapter (lavapipe in CI)")
}

/// A chain of `depth` identity residual blocks on 8 channels of 8x8.
fn chain(depth: usize, highway: bool) -> Graph {
    let mut b = GraphBuilder::new(Shape::new(8, 8, 8));
    let mut x = b.input();
    let merge = if highway {
        Merge::Highway { gate_bias: -1.0 }
    } else {
        Merge::AddRelu
    };
    for i in 0..depth {
        x = b
            .scoped(&format!("b{i}"), |b| {
                let y = b.residual(
                    x,
                    1,
                    merge,
                    |_, x| Ok(x),
                    |b, x| {
                        let h = b.conv2d(x, "conv", Conv2d::new(8, 3))?;
                        b.batchnorm(h, "bn", false)
                    },
                )?;
                if highway {
                    b.relu(y, "relu")
                } else {
                    Ok(y)
                }
            })
            .unwrap();
    }
    let y = b.linear(x, "fc", 4).unwrap();
    b.finish(y)
}

#[test]
fn eval_memory_does_not_grow_with_depth() {
    let g = gpu();
    let bytes = |depth| {
        let graph = chain(depth, false);
        let state = ModelState::new(&g, &graph, 0).unwrap();
        Plan::compile(&g, &graph, &state, 4, Mode::Eval)
            .unwrap()
            .activation_bytes()
    };
    // Liveness: a few activations are alive at any time, whatever the depth.
    assert_eq!(bytes(3), bytes(12));
}

#[test]
fn training_memory_grows_by_the_activations_backward_reads() {
    let g = gpu();
    let bytes = |depth| {
        let graph = chain(depth, false);
        let state = ModelState::new(&g, &graph, 0).unwrap();
        let plan = Plan::compile(&g, &graph, &state, 4, Mode::Train).unwrap();
        // Every value and every gradient with a buffer of its own:
        let naive: usize = graph
            .values
            .iter()
            .map(|v| 2 * 4 * 4 * v.shape.numel())
            .sum();
        (plan.activation_bytes(), naive as u64)
    };
    let (b4, naive4) = bytes(4);
    let (b8, _) = bytes(8);
    let (b16, _) = bytes(16);
    assert!(b4 < naive4, "{b4} of {naive4}");
    // Equal increments: linear in depth. Each block adds exactly the two
    // activations its backward reads (the conv output, for batch norm, and
    // the merge output, for the ReLU mask and the next conv's weight
    // gradient), plus its batch norm's saved mean and 1/std (2 x 8 floats);
    // gradients and the other activations are recycled.
    let per_block = 2 * (4 * 8 * 8 * 8 * 4) + 2 * 8 * 4;
    assert_eq!(b8 - b4, 4 * per_block);
    assert_eq!(b16 - b8, 8 * per_block);
}

#[test]
fn relu_runs_in_place_when_it_is_the_last_reader() {
    let g = gpu();
    let graph = chain(2, true);
    let state = ModelState::new(&g, &graph, 0).unwrap();
    let with = Plan::compile(&g, &graph, &state, 4, Mode::Train).unwrap();
    // Keeping the ReLU input forbids the in-place form.
    let relu = graph.nodes.iter().find(|n| n.op == Op::Relu).unwrap();
    let options = PlanOptions {
        keep: vec![relu.inputs[0]],
        ..Default::default()
    };
    let without = Plan::compile_with(&g, &graph, &state, 4, Mode::Train, &options).unwrap();
    assert!(with.activation_bytes() < without.activation_bytes());
}

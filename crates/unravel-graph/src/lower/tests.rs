//! Every gradient rule against its declaration: for every op kind (and the
//! fused batch norm + merge, and the merge of a switched-off block), the
//! values its compiled backward binds are exactly the values [`reads`]
//! declares, the ones the memory planner keeps alive for it.
//!
//! Shape legend: values are N x C x H x W.

use std::collections::HashSet;

use unravel_device::{Gpu, Tensor};

use super::backward::{dropped_merge_reads, reads};
use super::fusion::Fusions;
use crate::builder::{Conv2d, GraphBuilder, Merge};
use crate::ir::*;
use crate::plan::{Mode, Plan, PlanOptions};
use crate::state::ModelState;

fn gpu() -> &'static Gpu {
    static GPU: std::sync::OnceLock<Gpu> = std::sync::OnceLock::new();
    GPU.get_or_init(|| Gpu::default_adapter().expect("a GPU adapter (lavapipe in CI)"))
}

/// A small network with every op kind: a convolution with a bias, batch
/// norms with and without ReLU, max pooling, an option-A block whose batch
/// norm can fuse with its merge, a highway block (1x1 gate, sigmoid), a
/// ReLU, a plain block, a pre-activation style block (add without ReLU), a
/// dense block (copy, channel views), 2x2 average pooling, global average
/// pooling and a linear layer.
fn every_op() -> Graph {
    let mut b = GraphBuilder::new(Shape::new(3, 9, 9));
    let x = b.input();
    let x = b.conv2d(x, "conv1", Conv2d::new(8, 3).with_bias()).unwrap();
    let x = b.batchnorm(x, "bn1", true).unwrap();
    let x = b.maxpool3x3s2(x, "pool").unwrap();
    let branch = |b: &mut GraphBuilder, x, c, stride| {
        let h = b.conv2d(x, "conv1", Conv2d::new(c, 3).stride(stride))?;
        let h = b.batchnorm(h, "bn1", true)?;
        let h = b.conv2d(h, "conv2", Conv2d::new(c, 3))?;
        b.batchnorm(h, "bn2", false)
    };
    let x = b
        .scoped("a", |b| {
            b.residual(
                x,
                1,
                Merge::AddRelu,
                |b, x| b.shortcut_a(x, "sc", 12, 2),
                |b, x| branch(b, x, 12, 2),
            )
        })
        .unwrap();
    let x = b
        .scoped("h", |b| {
            let merge = Merge::Highway { gate_bias: -1.0 };
            b.residual(x, 2, merge, |_, x| Ok(x), |b, x| branch(b, x, 12, 1))
        })
        .unwrap();
    let x = b.relu(x, "relu").unwrap();
    let x = b
        .scoped("p", |b| {
            b.residual(x, 2, Merge::Plain, |_, x| Ok(x), |b, x| branch(b, x, 12, 1))
        })
        .unwrap();
    let x = b
        .scoped("add", |b| {
            b.residual(x, 2, Merge::Add, |_, x| Ok(x), |b, x| branch(b, x, 12, 1))
        })
        .unwrap();
    let x = b
        .scoped("dense", |b| {
            b.dense_block(x, 3, 2, 4, |b, x, _| {
                let h = b.batchnorm(x, "norm", true)?;
                b.conv2d(h, "conv", Conv2d::new(4, 3))
            })
        })
        .unwrap();
    let x = b.avgpool2x2(x, "avg").unwrap();
    let x = b.global_avgpool(x, "gap").unwrap();
    let y = b.linear(x, "fc", 5).unwrap();
    b.finish(y)
}

/// A view's identity: its buffer, offset and extent (a linear layer sees
/// an N x C x H x W value as N rows of C*H*W).
fn same(a: &Tensor, b: &Tensor) -> bool {
    a.buffer() == b.buffer()
        && a.offset() == b.offset()
        && a.numel() == b.numel()
        && a.shape()[0] == b.shape()[0]
        && a.batch_stride() == b.batch_stride()
}

/// The values among `bound` (tensors a backward's dispatches bind), as
/// indices of their first value with the same view; panics on a tensor
/// that is both a value and a gradient (the test needs them apart).
fn bound_values(plan: &Plan, bound: &[&Tensor]) -> HashSet<usize> {
    let mut found = HashSet::new();
    for t in bound {
        let value = plan.values.iter().position(|v| same(v, t));
        let grad = plan.grads.iter().flatten().any(|g| same(g, t));
        match (value, grad) {
            (Some(_), true) => panic!("a bound tensor is both a value and a gradient"),
            (Some(v), false) => {
                found.insert(v);
            }
            _ => {}
        }
    }
    found
}

/// `values` as indices of their first value with the same view.
fn canonical(plan: &Plan, values: &[ValueId]) -> HashSet<usize> {
    values
        .iter()
        .map(|v| {
            let t = &plan.values[v.0];
            plan.values.iter().position(|u| same(u, t)).expect("itself")
        })
        .collect()
}

/// Checks every node (and every block's dropped merge) of `plan`, both
/// variants of every contribution; returns the op kinds checked.
fn check(plan: &Plan, fusions: &Fusions) -> HashSet<&'static str> {
    let graph = &plan.graph;
    let mut kinds = HashSet::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let contributions = &plan.nodes[i].backward;
        let bound: Vec<&Tensor> = contributions
            .iter()
            .flat_map(|c| c.write.iter().chain(&c.add))
            .flat_map(|d| d.bound())
            .collect();
        let declared = reads(graph, fusions, NodeId(i)).values;
        assert_eq!(
            bound_values(plan, &bound),
            canonical(plan, &declared),
            "{} ({}): bound values differ from the declared {declared:?}",
            node.name,
            node.op.kind()
        );
        let kind = match fusions.merge_of(NodeId(i)) {
            Some(_) => "batchnorm fused with its merge",
            None => node.op.kind(),
        };
        kinds.insert(kind);
    }
    for block in plan.blocks.values() {
        let merge = &graph.nodes[block.merge.0];
        let bound: Vec<&Tensor> = block
            .backward_dropped
            .iter()
            .flat_map(|c| c.write.iter().chain(&c.add))
            .flat_map(|d| d.bound())
            .collect();
        let declared = dropped_merge_reads(merge).values;
        assert_eq!(
            bound_values(plan, &bound),
            canonical(plan, &declared),
            "{} switched off: bound values differ from the declared {declared:?}",
            merge.name
        );
    }
    kinds
}

#[test]
fn every_backward_binds_exactly_the_values_it_declares() {
    let g = gpu();
    let graph = every_op();
    let state = ModelState::new(g, &graph, 0).unwrap();
    let all: Vec<ValueId> = (1..graph.values.len()).map(ValueId).collect();
    // Every value kept: buffers of their own, so a bound tensor names one
    // value; nothing fused.
    let options = PlanOptions {
        keep: all.clone(),
        ..Default::default()
    };
    let plan = Plan::compile_with(g, &graph, &state, 2, Mode::Train, &options).unwrap();
    let mut kinds = check(&plan, &Fusions::default());
    // Everything but the batch-norm outputs a merge can take over: those
    // batch norms fuse with their merges.
    let fusions = Fusions::choose(&graph, Mode::Train, &[], &vec![false; all.len() + 1], false);
    assert!(
        !fusions.merges.is_empty(),
        "the network has a fusable merge"
    );
    let branch_outputs: Vec<ValueId> = fusions
        .merges
        .iter()
        .map(|(bn, _)| graph.nodes[bn.0].output)
        .collect();
    let options = PlanOptions {
        keep: all
            .into_iter()
            .filter(|v| !branch_outputs.contains(v))
            .collect(),
        ..Default::default()
    };
    let plan = Plan::compile_with(g, &graph, &state, 2, Mode::Train, &options).unwrap();
    let fused = Fusions::choose(
        &graph,
        Mode::Train,
        &options.keep,
        &vec![false; graph.values.len()],
        false,
    );
    assert_eq!(fused.merges, fusions.merges);
    kinds.extend(check(&plan, &fused));
    for kind in [
        "conv2d",
        "batchnorm",
        "batchnorm+relu",
        "batchnorm fused with its merge",
        "relu",
        "add",
        "add+relu",
        "sigmoid",
        "highway",
        "shortcut-a",
        "copy",
        "avgpool2x2",
        "maxpool3x3s2",
        "global-avgpool",
        "linear",
    ] {
        assert!(kinds.contains(kind), "no {kind} node was checked");
    }
}

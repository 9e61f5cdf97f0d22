//! Every op's gradient rule, next to the one declaration of what it reads
//! of the forward pass ([`reads`]). The memory planner keeps exactly the
//! declared values alive until the node's backward, and a rule is handed
//! exactly those values (in the declared order), so the two cannot drift; a
//! test checks that the dispatches a rule prepares bind no other value.
//!
//! A rule returns contributions to its inputs' gradients, each prepared as
//! the first write of the gradient buffer and as an addition to it
//! (`schedule` decides which runs), plus work that always runs (parameter
//! gradients).
//!
//! Shape legend: values are N x C x H x W; a linear layer sees its input as
//! N rows of C*H*W features.

use unravel_device::kernels::batchnorm::{self as bn, BackwardOperands};
use unravel_device::kernels::conv2d::{self, InputGradOptions, WeightGradOptions};
use unravel_device::kernels::pool::{self, PoolShape};
use unravel_device::kernels::{copy, elementwise as ew, linear, shortcut, Store};
use unravel_device::{Dispatch, Tensor};

use super::forward::merge_applies_relu;
use super::fusion::Fusions;
use super::{flat, Lowering, Pending};
use crate::error::Result;
use crate::ir::*;

/// What a node's backward reads of the forward pass: values, and the
/// gradients it starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reads {
    pub values: Vec<ValueId>,
    pub grads: Vec<ValueId>,
}

/// The values each op's backward reads, besides its output's gradient.
fn op_reads(node: &Node) -> Vec<ValueId> {
    let (x, y) = (node.inputs[0], node.output);
    match node.op {
        // The weight gradient reads the input.
        Op::Conv2d { .. } | Op::Linear { .. } => vec![x],
        // The normalised input (from x and the saved statistics), and the
        // ReLU's mask from y.
        Op::BatchNorm { relu: false, .. } => vec![x],
        Op::BatchNorm { relu: true, .. } => vec![x, y],
        // Masks and derivatives from the output.
        Op::Relu | Op::Add { relu: true } | Op::Sigmoid => vec![y],
        // The gate, the branch and the shortcut.
        Op::Highway => node.inputs.clone(),
        Op::Add { relu: false }
        | Op::ShortcutA { .. }
        | Op::Copy
        | Op::AvgPool2x2
        | Op::MaxPool3x3s2
        | Op::GlobalAvgPool => Vec::new(),
    }
}

/// What node `id`'s backward reads, fusions included: a batch norm fused
/// with the merge after it starts from the merge's output gradient and
/// applies the merge's ReLU mask (its own output is never stored).
pub(crate) fn reads(graph: &Graph, fusions: &Fusions, id: NodeId) -> Reads {
    let node = &graph.nodes[id.0];
    if let Some(merge) = fusions.merge_of(id) {
        let y = graph.nodes[merge.0].output;
        return Reads {
            values: vec![node.inputs[0], y],
            grads: vec![y],
        };
    }
    Reads {
        values: op_reads(node),
        grads: vec![node.output],
    }
}

/// What the merge of a switched-off block reads in backward: its output,
/// for a merge that ends in a ReLU (the mask).
pub(crate) fn dropped_merge_reads(node: &Node) -> Reads {
    let values = match merge_applies_relu(&node.op) {
        true => vec![node.output],
        false => Vec::new(),
    };
    Reads {
        values,
        grads: vec![node.output],
    }
}

/// The tensors of `reads`' values, in order, and the gradient it starts
/// from: all a rule may read.
fn saved(cx: &Lowering, reads: &Reads) -> Result<(Vec<Tensor>, Tensor)> {
    let values = reads.values.iter().map(|&v| cx.value(v)).collect();
    Ok((values, cx.grad(reads.grads[0])?))
}

/// Node `id`'s gradient rule.
pub(crate) fn lower<'g>(cx: &mut Lowering<'g>, id: NodeId) -> Result<Vec<Pending<'g>>> {
    let gpu = cx.gpu;
    let node = cx.graph.nodes[id.0].clone();
    let (saved, dy) = saved(cx, &reads(cx.graph, &cx.fusions, id))?;
    let x_id = node.inputs[0];
    let mut out = Vec::new();
    match &node.op {
        Op::Conv2d { weight, bias, .. } => {
            let s = cx.conv_shape(&node);
            let (x, dw) = (saved[0].clone(), cx.param_grad(*weight)?);
            let db = bias.map(|b| cx.param_grad(b)).transpose()?;
            let algo = cx.conv_algo;
            let dy2 = dy.clone();
            out.push(Pending::always(move || {
                let options = WeightGradOptions { algo };
                Ok(conv2d::conv2d_backward_weight(
                    gpu,
                    &s,
                    &x,
                    &dy2,
                    &dw,
                    db.as_ref(),
                    &options,
                )?)
            }));
            let w = cx.param(*weight)?;
            out.extend(kernel_adds(cx, x_id, move |dest, store| {
                let options = InputGradOptions { algo, store };
                Ok(conv2d::conv2d_backward_input(
                    gpu, &s, &dy, &w, dest, &options,
                )?)
            })?);
        }
        Op::BatchNorm {
            weight, bias, relu, ..
        } => {
            let s = cx.bn_shape(&node);
            // Fused with its merge, it applies the merge's ReLU mask.
            let relu = *relu || cx.fusions.merge_of(id).is_some();
            let cfg = cx.train_bn_config(relu, true);
            let stats = cx.saved[&id].clone();
            let gamma = cx.param(*weight)?;
            let (dg, dbeta) = (cx.param_grad(*weight)?, cx.param_grad(*bias)?);
            let x = saved[0].clone();
            let y = saved.get(1).cloned();
            out.extend(via_scratch(cx, x_id, move |dest| {
                let ops = BackwardOperands {
                    x: &x,
                    y: y.as_ref(),
                    saved: &stats,
                    dy: &dy,
                    dx: dest,
                    dgamma: &dg,
                    dbeta: &dbeta,
                };
                Ok(bn::batchnorm_backward(gpu, &s, &cfg, &gamma, &ops)?)
            })?);
        }
        Op::Relu => {
            let y = saved[0].clone();
            out.extend(via_scratch(cx, x_id, move |dest| {
                Ok(vec![ew::relu_backward(gpu, &y, &dy, dest)?])
            })?);
        }
        Op::Add { relu } => {
            let fused_branch = cx
                .fusions
                .batch_norm_of(id)
                .map(|bn| cx.graph.nodes[bn.0].output);
            for &v in &node.inputs {
                if fused_branch == Some(v) {
                    // Its batch norm reads this node's output gradient and
                    // ReLU mask itself: nothing to write, but the branch has
                    // a gradient from here on.
                    out.push(Pending {
                        target: Some(v),
                        write: Box::new(|| Ok(Vec::new())),
                        add: None,
                    });
                } else if *relu {
                    let (y, dy) = (saved[0].clone(), dy.clone());
                    out.extend(via_scratch(cx, v, move |dest| {
                        Ok(vec![ew::relu_backward(gpu, &y, &dy, dest)?])
                    })?);
                } else {
                    out.extend(copy_or_add(cx, v, dy.clone())?);
                }
            }
        }
        Op::Sigmoid => {
            let t = saved[0].clone();
            out.extend(via_scratch(cx, x_id, move |dest| {
                Ok(vec![ew::sigmoid_backward(gpu, &t, &dy, dest)?])
            })?);
        }
        Op::Highway => {
            let (t, h, s) = (saved[0].clone(), saved[1].clone(), saved[2].clone());
            let (dt, dh, ds) = (
                cx.scratch(node.output, 1)?,
                cx.scratch(node.output, 2)?,
                cx.scratch(node.output, 3)?,
            );
            let (dt2, dh2, ds2) = (dt.clone(), dh.clone(), ds.clone());
            out.push(Pending::always(move || {
                Ok(vec![
                    copy::copy_forward(gpu, &dy, &ds2)?,
                    ew::highway_backward(gpu, &t, &h, &s, &ds2, &dt2, &dh2)?,
                ])
            }));
            for (&v, src) in node.inputs.iter().zip([dt, dh, ds]) {
                out.extend(copy_or_add(cx, v, src)?);
            }
        }
        Op::ShortcutA { stride } => {
            let stride = *stride;
            out.extend(via_scratch(cx, x_id, move |dest| {
                Ok(vec![shortcut::shortcut_backward(gpu, &dy, dest, stride)?])
            })?);
        }
        Op::Copy => out.extend(copy_or_add(cx, x_id, dy)?),
        Op::AvgPool2x2 | Op::GlobalAvgPool | Op::MaxPool3x3s2 => {
            let [n, c, h, w] = cx.dims(x_id);
            let s = PoolShape { n, c, h, w };
            let argmax = cx.saved.get(&id).cloned();
            let op = node.op.clone();
            out.extend(via_scratch(cx, x_id, move |dest| {
                Ok(vec![match (&op, &argmax) {
                    (Op::AvgPool2x2, _) => pool::avg_pool2x2_backward(gpu, &s, &dy, dest)?,
                    (Op::MaxPool3x3s2, Some(argmax)) => {
                        pool::max_pool3x3s2_backward(gpu, &s, &dy, argmax, dest)?
                    }
                    _ => pool::global_avg_pool_backward(gpu, &s, &dy, dest)?,
                }])
            })?);
        }
        Op::Linear { weight, bias } => {
            let (x2, dy2) = (flat(&saved[0])?, flat(&dy)?);
            let (dw, db) = (cx.param_grad(*weight)?, cx.param_grad(*bias)?);
            let dy_w = dy2.clone();
            let as_conv = cx.linear_as_conv();
            out.push(Pending::always(move || match as_conv {
                Some(algo) => Ok(linear::linear_backward_weight_as_conv(
                    gpu,
                    &x2,
                    &dy_w,
                    &dw,
                    Some(&db),
                    algo,
                )?),
                None => Ok(vec![linear::linear_backward_weight(
                    gpu,
                    &x2,
                    &dy_w,
                    &dw,
                    Some(&db),
                )?]),
            }));
            let w = cx.param(*weight)?;
            out.extend(via_scratch(cx, x_id, move |dest| {
                let dx = flat(dest)?;
                match as_conv {
                    Some(algo) => Ok(linear::linear_backward_input_as_conv(
                        gpu, &dy2, &w, &dx, algo,
                    )?),
                    None => Ok(vec![linear::linear_backward_input(gpu, &dy2, &w, &dx)?]),
                }
            })?);
        }
    }
    Ok(out)
}

/// The merge of a switched-off block in backward: the shortcut's gradient
/// from the merge's alone (through its ReLU mask where it has one).
pub(crate) fn dropped_merge<'g>(
    cx: &mut Lowering<'g>,
    merge: NodeId,
    shortcut: ValueId,
) -> Result<Vec<Pending<'g>>> {
    let gpu = cx.gpu;
    let node = &cx.graph.nodes[merge.0];
    let (saved, dy) = saved(cx, &dropped_merge_reads(node))?;
    match saved.first().cloned() {
        Some(y) => Ok(via_scratch(cx, shortcut, move |dest| {
            Ok(vec![ew::relu_backward(gpu, &y, &dy, dest)?])
        })?
        .into_iter()
        .collect()),
        None => Ok(copy_or_add(cx, shortcut, dy)?.into_iter().collect()),
    }
}

/// A contribution to `v` from `make(dest)`: written straight into the
/// gradient, or into scratch and then added to it. None for the graph's
/// input, which gets no gradient.
fn via_scratch<'g>(
    cx: &mut Lowering<'g>,
    v: ValueId,
    make: impl Fn(&Tensor) -> Result<Vec<Dispatch>> + Clone + 'g,
) -> Result<Option<Pending<'g>>> {
    if v == cx.graph.input {
        return Ok(None);
    }
    let gpu = cx.gpu;
    let g = cx.grad(v)?;
    let tmp = cx.scratch(v, 0)?;
    let (g2, make2) = (g.clone(), make.clone());
    Ok(Some(Pending {
        target: Some(v),
        write: Box::new(move || make(&g)),
        add: Some(Box::new(move || {
            let mut d = make2(&tmp)?;
            d.push(ew::accumulate(gpu, &tmp, &g2)?);
            Ok(d)
        })),
    }))
}

/// A contribution to `v` from a kernel that adds to its output itself:
/// `make(dest, store)`.
fn kernel_adds<'g>(
    cx: &Lowering<'g>,
    v: ValueId,
    make: impl Fn(&Tensor, Store) -> Result<Vec<Dispatch>> + Clone + 'g,
) -> Result<Option<Pending<'g>>> {
    if v == cx.graph.input {
        return Ok(None);
    }
    let g = cx.grad(v)?;
    let (g2, make2) = (g.clone(), make.clone());
    Ok(Some(Pending {
        target: Some(v),
        write: Box::new(move || make(&g, Store::Write)),
        add: Some(Box::new(move || make2(&g2, Store::Add))),
    }))
}

/// A contribution of a finished tensor `src` to `v`: copied or added.
fn copy_or_add<'g>(cx: &Lowering<'g>, v: ValueId, src: Tensor) -> Result<Option<Pending<'g>>> {
    if v == cx.graph.input {
        return Ok(None);
    }
    let gpu = cx.gpu;
    let g = cx.grad(v)?;
    let (src2, g2) = (src.clone(), g.clone());
    Ok(Some(Pending {
        target: Some(v),
        write: Box::new(move || Ok(vec![copy::copy_forward(gpu, &src, &g)?])),
        add: Some(Box::new(move || Ok(vec![ew::accumulate(gpu, &src2, &g2)?]))),
    }))
}

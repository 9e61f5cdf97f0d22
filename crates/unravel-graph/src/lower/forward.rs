//! The forward of every op, the fused pairs (a convolution with the
//! evaluation batch norm after it, a training batch norm with the residual
//! merge after it), the merge of a switched-off block and the rebuilding of
//! a recomputed batch-norm output.
//!
//! Shape legend: values are N x C x H x W; a pooled value N x C x HO x WO.

use unravel_device::kernels::batchnorm::{self as bn, BatchNormLayer, TrainActivations};
use unravel_device::kernels::conv2d::{self, Conv2dEpilogue, ForwardOptions};
use unravel_device::kernels::pool::{self, PoolShape};
use unravel_device::kernels::{copy, elementwise as ew, linear, shortcut};
use unravel_device::{Dispatch, Tensor};

use super::{bn_config, flat, Lowering};
use crate::error::Result;
use crate::ir::*;
use crate::plan::{Mode, NodePlan};

/// Node `id`'s forward: its own op, or the fused pass it starts, or
/// nothing where a fused pass started earlier writes its output. A
/// training batch norm also gets the variant that leaves the running
/// statistics alone (for steps that only measure).
pub(crate) fn lower(cx: &mut Lowering, id: NodeId) -> Result<NodePlan> {
    let fold = cx
        .fusions
        .folds
        .iter()
        .copied()
        .find(|&(c, b)| c == id || b == id);
    let merge = cx
        .fusions
        .merges
        .iter()
        .copied()
        .find(|&(b, a)| b == id || a == id);
    let updating = match (fold, merge) {
        (Some((conv, bn)), _) if conv == id => folded(cx, conv, bn)?,
        (_, Some((bn, add))) if bn == id => merged(cx, bn, add, true)?,
        (Some(_), _) | (_, Some(_)) => Vec::new(),
        (None, None) => op(cx, id, true)?,
    };
    let is_train_bn = cx.mode == Mode::Train
        && matches!(cx.graph.nodes[id.0].op, Op::BatchNorm { .. })
        && !updating.is_empty();
    let measuring = match (is_train_bn, merge) {
        (false, _) => None,
        (true, Some((bn, add))) => Some(merged(cx, bn, add, false)?),
        (true, None) => Some(op(cx, id, false)?),
    };
    Ok(NodePlan {
        forward: updating,
        forward_measuring: measuring,
        backward: Vec::new(),
    })
}

/// One op's forward; a training batch norm updates its running statistics
/// where `update_running`.
fn op(cx: &mut Lowering, id: NodeId, update_running: bool) -> Result<Vec<Dispatch>> {
    let gpu = cx.gpu;
    let node = &cx.graph.nodes[id.0];
    let x = cx.value(node.inputs[0]);
    let y = cx.value(node.output);
    Ok(match &node.op {
        Op::Conv2d { weight, bias, .. } => {
            let s = cx.conv_shape(node);
            let b = bias.map(|b| cx.param(b)).transpose()?;
            let options = ForwardOptions {
                algo: cx.conv_algo,
                epilogue: b
                    .as_ref()
                    .map_or(Conv2dEpilogue::None, Conv2dEpilogue::Bias),
            };
            conv2d::conv2d_forward(gpu, &s, &x, &cx.param(*weight)?, &y, &options)?
        }
        Op::BatchNorm {
            weight,
            bias,
            state,
            relu,
        } => {
            let s = cx.bn_shape(node);
            let (rm, rv) = &cx.state.bn_running[*state];
            let (g, b) = (cx.param(*weight)?, cx.param(*bias)?);
            let layer = BatchNormLayer {
                gamma: &g,
                beta: &b,
                running_mean: rm,
                running_var: rv,
            };
            let cfg = cx.train_bn_config(*relu, update_running);
            match cx.mode {
                Mode::Train => {
                    let saved = saved_statistics(cx, id, s.c)?;
                    let io = TrainActivations {
                        x: &x,
                        saved: &saved,
                        y: &y,
                    };
                    bn::batchnorm_train_forward(gpu, &s, &cfg, &layer, &io)?
                }
                Mode::Eval => bn::batchnorm_eval_forward(gpu, &s, &cfg, &layer, &x, &y)?,
            }
        }
        Op::Relu => vec![ew::relu_forward(gpu, &x, &y)?],
        Op::Add { relu } => {
            let b = cx.value(node.inputs[1]);
            if *relu {
                vec![ew::add_relu_forward(gpu, &x, &b, &y)?]
            } else {
                vec![ew::add_forward(gpu, &x, &b, &y)?]
            }
        }
        Op::Sigmoid => vec![ew::sigmoid_forward(gpu, &x, &y)?],
        Op::Highway => {
            let (h, s) = (cx.value(node.inputs[1]), cx.value(node.inputs[2]));
            vec![ew::highway_forward(gpu, &x, &h, &s, &y)?]
        }
        Op::ShortcutA { stride } => vec![shortcut::shortcut_forward(gpu, &x, &y, *stride)?],
        Op::Copy => vec![copy::copy_forward(gpu, &x, &y)?],
        Op::AvgPool2x2 => vec![pool::avg_pool2x2_forward(gpu, &pool_shape(&x), &x, &y)?],
        Op::MaxPool3x3s2 => {
            let argmax = gpu.zeros_u32(y.shape())?;
            cx.saved.insert(id, argmax.clone());
            vec![pool::max_pool3x3s2_forward(
                gpu,
                &pool_shape(&x),
                &x,
                &y,
                &argmax,
            )?]
        }
        Op::GlobalAvgPool => vec![pool::global_avg_pool_forward(gpu, &pool_shape(&x), &x, &y)?],
        Op::Linear { weight, bias } => {
            let (x2, w, b, y2) = (flat(&x)?, cx.param(*weight)?, cx.param(*bias)?, flat(&y)?);
            match cx.linear_as_conv() {
                Some(algo) => linear::linear_forward_as_conv(gpu, &x2, &w, Some(&b), &y2, algo)?,
                None => vec![linear::linear_forward(gpu, &x2, &w, Some(&b), &y2)?],
            }
        }
    })
}

pub(crate) fn pool_shape(x: &Tensor) -> PoolShape {
    let s = x.shape();
    PoolShape {
        n: s[0],
        c: s[1],
        h: s[2],
        w: s[3],
    }
}

/// The (mean, 1/std) a training batch norm saves for its backward: one
/// buffer per node, shared by its updating and measuring forwards.
fn saved_statistics(cx: &mut Lowering, id: NodeId, c: usize) -> Result<Tensor> {
    if let Some(saved) = cx.saved.get(&id) {
        return Ok(saved.clone());
    }
    let saved = cx.gpu.zeros(&[2, c])?;
    cx.saved.insert(id, saved.clone());
    Ok(saved)
}

/// Convolution `conv` and the evaluation batch norm `bn` after it as one
/// convolution whose epilogue applies the batch norm (and its ReLU),
/// writing the batch norm's output; the coefficients are folded from the
/// current running statistics in the same step.
fn folded(cx: &mut Lowering, conv: NodeId, bn: NodeId) -> Result<Vec<Dispatch>> {
    let gpu = cx.gpu;
    let node = &cx.graph.nodes[conv.0];
    let bn_node = &cx.graph.nodes[bn.0];
    let (
        Op::Conv2d { weight, .. },
        Op::BatchNorm {
            weight: gamma,
            bias: beta,
            state,
            relu,
        },
    ) = (&node.op, &bn_node.op)
    else {
        unreachable!("folds pair a convolution with a batch norm")
    };
    let c = cx.dims(bn_node.output)[1];
    let scale_shift = gpu.zeros(&[2, c])?;
    let (rm, rv) = &cx.state.bn_running[*state];
    let (g, b) = (cx.param(*gamma)?, cx.param(*beta)?);
    let layer = BatchNormLayer {
        gamma: &g,
        beta: &b,
        running_mean: rm,
        running_var: rv,
    };
    let fold = bn::batchnorm_fold(gpu, &bn_config(*relu, false), &layer, &scale_shift)?;
    let options = ForwardOptions {
        algo: cx.conv_algo,
        epilogue: Conv2dEpilogue::Affine {
            scale_shift: &scale_shift,
            relu: *relu,
        },
    };
    let s = cx.conv_shape(node);
    let (x, y) = (cx.value(node.inputs[0]), cx.value(bn_node.output));
    let w = cx.param(*weight)?;
    let mut d = vec![fold];
    d.extend(conv2d::conv2d_forward(gpu, &s, &x, &w, &y, &options)?);
    Ok(d)
}

/// Training batch norm `bn` and the residual add + ReLU `add` after it as
/// one pass that writes the merge's output; the branch output itself is
/// never stored (no backward reads it).
fn merged(
    cx: &mut Lowering,
    bn: NodeId,
    add: NodeId,
    update_running: bool,
) -> Result<Vec<Dispatch>> {
    let gpu = cx.gpu;
    let node = &cx.graph.nodes[bn.0];
    let add_node = &cx.graph.nodes[add.0];
    let Op::BatchNorm {
        weight,
        bias,
        state,
        relu: false,
    } = node.op
    else {
        unreachable!("merges pair a batch norm without ReLU with an add")
    };
    let shortcut = add_node
        .inputs
        .iter()
        .copied()
        .find(|&v| v != node.output)
        .expect("a merge has a shortcut");
    let residual = cx.value(shortcut);
    let s = cx.bn_shape(node);
    let (rm, rv) = &cx.state.bn_running[state];
    let (g, b) = (cx.param(weight)?, cx.param(bias)?);
    let layer = BatchNormLayer {
        gamma: &g,
        beta: &b,
        running_mean: rm,
        running_var: rv,
    };
    let saved = saved_statistics(cx, bn, s.c)?;
    let (x, y) = (cx.value(node.inputs[0]), cx.value(add_node.output));
    let io = TrainActivations {
        x: &x,
        saved: &saved,
        y: &y,
    };
    let cfg = cx.train_bn_config(false, update_running);
    Ok(bn::batchnorm_train_forward_add_relu(
        gpu, &s, &cfg, &layer, &io, &residual,
    )?)
}

/// Rebuilds batch-norm node `id`'s output into its (recompute) buffer from
/// the statistics its training forward saved; running statistics untouched.
pub(crate) fn recompute(cx: &Lowering, id: NodeId) -> Result<Vec<Dispatch>> {
    let node = &cx.graph.nodes[id.0];
    let Op::BatchNorm {
        weight,
        bias,
        state,
        relu,
    } = node.op
    else {
        unreachable!("only batch-norm outputs are recomputed")
    };
    let s = cx.bn_shape(node);
    let (x, y) = (cx.value(node.inputs[0]), cx.value(node.output));
    let (g, b) = (cx.param(weight)?, cx.param(bias)?);
    let (rm, rv) = &cx.state.bn_running[state];
    let layer = BatchNormLayer {
        gamma: &g,
        beta: &b,
        running_mean: rm,
        running_var: rv,
    };
    let io = TrainActivations {
        x: &x,
        saved: &cx.saved[&id],
        y: &y,
    };
    Ok(bn::batchnorm_apply_saved(
        cx.gpu,
        &s,
        &bn_config(relu, false),
        &layer,
        &io,
    )?)
}

/// The merge of a switched-off block: y from the shortcut alone (a plain
/// block's merge is a ReLU of the branch, so of the shortcut here).
pub(crate) fn dropped_merge(
    cx: &Lowering,
    merge: NodeId,
    shortcut: ValueId,
) -> Result<Vec<Dispatch>> {
    let node = &cx.graph.nodes[merge.0];
    let (s, y) = (cx.value(shortcut), cx.value(node.output));
    Ok(vec![if merge_applies_relu(&node.op) {
        ew::relu_forward(cx.gpu, &s, &y)?
    } else {
        copy::copy_forward(cx.gpu, &s, &y)?
    }])
}

/// Whether a merge ends in a ReLU (add + ReLU, or a plain block's ReLU).
pub(crate) fn merge_applies_relu(op: &Op) -> bool {
    matches!(op, Op::Add { relu: true } | Op::Relu)
}

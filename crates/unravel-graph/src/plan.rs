//! A graph compiled for one batch size and mode: every buffer allocated and
//! every dispatch (forward, backward, loss, optimiser) prepared once, so a
//! step only records them into one command buffer.
//!
//! Backward is derived from the forward graph here, statically: each node
//! contributes gradients to its inputs. A value used more than once (every
//! shortcut) receives several contributions; the first one a step executes
//! writes the gradient buffer, later ones write a scratch buffer and add it
//! in. Which one is first depends on the blocks switched off in that step,
//! so each contribution is prepared both ways and chosen when recording.
//!
//! Shape legend: N batch, C channels, H x W plane; values are N x C x H x W.

use std::collections::HashMap;

use unravel_device::kernels::batchnorm::{self as bn, BatchNormConfig, BatchNormShape};
use unravel_device::kernels::conv2d::{self, Conv2dShape};
use unravel_device::kernels::{copy, elementwise as ew, linear, loss, shortcut};
use unravel_device::{Dispatch, Gpu, Tensor};

use crate::error::{GraphError, Result};
use crate::ir::*;
use crate::state::ModelState;

/// Training (batch statistics, backward) or evaluation (running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// A gradient contribution to `value`, prepared both as the first write of
/// the gradient buffer (`direct`) and as adding to what is there (`adding`:
/// in the kernel's own store, or through scratch and an accumulate pass);
/// or (value `None`) work that always runs, such as parameter gradients.
pub(crate) struct Part {
    pub value: Option<ValueId>,
    pub direct: Vec<Dispatch>,
    pub adding: Vec<Dispatch>,
}

impl Part {
    /// No gradient flows to the graph's input.
    fn nothing() -> Part {
        Part {
            value: None,
            direct: Vec::new(),
            adding: Vec::new(),
        }
    }
}

pub(crate) struct NodePlan {
    pub forward: Vec<Dispatch>,
    pub backward: Vec<Part>,
}

/// A residual block's alternatives: switched off (identity path only) and
/// its branch scaled (stochastic depth at test time).
pub(crate) struct BlockPlan {
    pub merge: NodeId,
    pub member: Vec<bool>,
    pub forward_dropped: Vec<Dispatch>,
    pub backward_dropped: Vec<Part>,
    pub scale: Dispatch,
    pub scale_value: f32,
    pub branch_output: ValueId,
    pub shortcut: ValueId,
    /// Nodes outside the block that compute its shortcut from its input
    /// (a projection or option A; none for the identity).
    pub shortcut_nodes: Vec<NodeId>,
}

pub struct Plan {
    pub(crate) graph: Graph,
    pub(crate) batch: usize,
    pub(crate) mode: Mode,
    pub(crate) input: Tensor,
    pub(crate) labels: Tensor,
    pub(crate) values: Vec<Tensor>,
    pub(crate) grads: Vec<Option<Tensor>>,
    /// Root value of each value (itself unless a channel view).
    pub(crate) root: Vec<ValueId>,
    /// Concatenation buffers: their gradients are cleared each step and
    /// only ever accumulated into.
    pub(crate) dense_roots: Vec<ValueId>,
    pub(crate) nodes: Vec<NodePlan>,
    pub(crate) blocks: HashMap<BlockId, BlockPlan>,
    pub(crate) loss: Tensor,
    pub(crate) correct: Tensor,
    pub(crate) loss_dispatch: Dispatch,
    /// Where each step's loss and correct count are copied for the host.
    pub(crate) stats: unravel_device::Readback,
    /// The residual block whose merge each node is, if any.
    pub(crate) merge_of: HashMap<NodeId, BlockId>,
    pub(crate) grads_arena: Tensor,
    /// Bytes of activations, gradients and scratch this plan allocated.
    pub(crate) activation_bytes: u64,
}

/// The gradients that hold a value when backward begins: the loss's (of the
/// output) and the concatenation buffers' (cleared, then only added to).
pub(crate) fn written_at_backward_start(graph: &Graph, dense_roots: &[ValueId]) -> Vec<bool> {
    let mut written = vec![false; graph.values.len()];
    written[graph.output.0] = true;
    for r in dense_roots {
        written[r.0] = true;
    }
    written
}

fn dims(batch: usize, s: Shape) -> [usize; 4] {
    [batch, s.c, s.h, s.w]
}

struct Compiler<'a> {
    gpu: &'a Gpu,
    graph: &'a Graph,
    state: &'a ModelState,
    batch: usize,
    mode: Mode,
    values: Vec<Tensor>,
    grads: Vec<Option<Tensor>>,
    /// One buffer per scratch slot, as large as the largest value.
    scratch: HashMap<usize, Tensor>,
    saved: HashMap<NodeId, Tensor>,
    /// Fused (batch norm, add + ReLU) pairs of a training plan: in backward
    /// too the batch norm takes the merge's output gradient and its ReLU
    /// mask itself (`merged_backward`).
    merges: Vec<(NodeId, NodeId)>,
    root: Vec<ValueId>,
    /// Gradients (by root) the ordinary backward has written so far while
    /// backward is compiled in its order: a part's variant for that case is
    /// compiled now, the other when a step first records it.
    written: Vec<bool>,
}

/// Bytes of the distinct buffers behind `tensors` (views share theirs).
fn distinct_bytes<'t>(tensors: impl Iterator<Item = &'t Tensor>) -> u64 {
    let mut seen: Vec<&unravel_device::wgpu::Buffer> = Vec::new();
    let mut bytes = 0;
    for t in tensors {
        if !seen.iter().any(|b| *b == t.buffer()) {
            seen.push(t.buffer());
            bytes += t.buffer().size();
        }
    }
    bytes
}

impl Compiler<'_> {
    fn shape(&self, v: ValueId) -> [usize; 4] {
        dims(self.batch, self.graph.shape(v))
    }

    fn param(&self, id: ParamId) -> Result<Tensor> {
        self.state.param(id)
    }

    /// Scratch buffer `slot` of `shape` (shared by every node: dispatches
    /// run in order, and each use is consumed right after it is written).
    fn scratch(&mut self, shape: [usize; 4], slot: usize) -> Result<Tensor> {
        if !self.scratch.contains_key(&slot) {
            let largest = self
                .graph
                .values
                .iter()
                .map(|v| v.shape.numel())
                .max()
                .unwrap_or(1);
            self.scratch
                .insert(slot, self.gpu.zeros(&[self.batch * largest])?);
        }
        Ok(self.scratch[&slot].sub_tensor(0, &shape)?)
    }

    fn grad(&self, v: ValueId) -> Result<Tensor> {
        self.grads[v.0]
            .clone()
            .ok_or_else(|| GraphError::Invalid(format!("value {} has no gradient", v.0)))
    }

    /// The output of the merge a training batch norm `bn` is fused with: its
    /// backward starts from that output's gradient and ReLU mask.
    fn merged_backward(&self, bn: NodeId) -> Option<ValueId> {
        self.merges
            .iter()
            .find(|(b, _)| *b == bn)
            .map(|(_, add)| self.graph.nodes[add.0].output)
    }

    /// The branch output of merge `add` whose batch norm does the merge's
    /// backward (see [`Compiler::merged_backward`]).
    fn merged_branch(&self, add: NodeId) -> Option<ValueId> {
        self.merges
            .iter()
            .find(|(_, a)| *a == add)
            .map(|(bn, _)| self.graph.nodes[bn.0].output)
    }

    /// A contribution to `v` from `make(dest)`, prepared both ways.
    fn part(
        &mut self,
        v: ValueId,
        make: impl Fn(&Tensor) -> Result<Vec<Dispatch>>,
    ) -> Result<Part> {
        if v == self.graph.input {
            return Ok(Part::nothing());
        }
        let g = self.grad(v)?;
        let tmp = self.scratch(self.shape(v), 0)?;
        let adding = || -> Result<Vec<Dispatch>> {
            let mut d = make(&tmp)?;
            d.push(ew::accumulate(self.gpu, &tmp, &g)?);
            Ok(d)
        };
        self.prepare(v, || make(&g), adding)
    }

    /// A part for `v` from both variants: the one the ordinary backward
    /// records is compiled now, the other when a step first records it.
    fn prepare(
        &mut self,
        v: ValueId,
        direct: impl FnOnce() -> Result<Vec<Dispatch>>,
        adding: impl FnOnce() -> Result<Vec<Dispatch>>,
    ) -> Result<Part> {
        let r = self.root[v.0].0;
        let first = !self.written[r];
        self.written[r] = true;
        let gpu = self.gpu;
        let (direct, adding) = if first {
            (direct()?, gpu.compile_deferred(adding)?)
        } else {
            (gpu.compile_deferred(direct)?, adding()?)
        };
        Ok(Part {
            value: Some(v),
            direct,
            adding,
        })
    }

    /// A contribution to `v` from a kernel that can add to its output
    /// itself: `make(dest, accumulate)`.
    fn part_adding(
        &mut self,
        v: ValueId,
        make: impl Fn(&Tensor, bool) -> Result<Vec<Dispatch>>,
    ) -> Result<Part> {
        if v == self.graph.input {
            return Ok(Part::nothing());
        }
        let g = self.grad(v)?;
        self.prepare(v, || make(&g, false), || make(&g, true))
    }

    /// A contribution of a finished tensor `src` to `v`: copy or add.
    fn part_from(&mut self, v: ValueId, src: &Tensor) -> Result<Part> {
        if v == self.graph.input {
            return Ok(Part::nothing());
        }
        let g = self.grad(v)?;
        let gpu = self.gpu;
        self.prepare(
            v,
            || Ok(vec![copy::copy_forward(gpu, src, &g)?]),
            || Ok(vec![ew::accumulate(gpu, src, &g)?]),
        )
    }

    fn conv_shape(&self, node: &Node) -> Conv2dShape {
        self.graph
            .conv_shape(node, self.batch)
            .expect("called on Conv2d nodes only")
    }

    fn bn_config(relu: bool) -> BatchNormConfig {
        BatchNormConfig {
            relu,
            ..BatchNormConfig::default()
        }
    }

    fn forward(&mut self, id: NodeId) -> Result<Vec<Dispatch>> {
        let gpu = self.gpu;
        let node = &self.graph.nodes[id.0];
        let x = self.values[node.inputs[0].0].clone();
        let y = self.values[node.output.0].clone();
        Ok(match &node.op {
            Op::Conv2d { weight, bias, .. } => {
                let s = self.conv_shape(node);
                let b = bias.map(|b| self.param(b)).transpose()?;
                conv2d::conv2d_forward(gpu, &s, &x, &self.param(*weight)?, b.as_ref(), &y)?
            }
            Op::BatchNorm {
                weight,
                bias,
                state,
                relu,
            } => {
                let [n, c, h, w] = self.shape(node.inputs[0]);
                let s = BatchNormShape { n, c, h, w };
                let (rm, rv) = &self.state.bn_running[*state];
                let (g, b) = (self.param(*weight)?, self.param(*bias)?);
                let cfg = Self::bn_config(*relu);
                match self.mode {
                    Mode::Train => {
                        let saved = gpu.zeros(&[2, c])?;
                        self.saved.insert(id, saved.clone());
                        bn::batchnorm_train_forward(gpu, &s, &cfg, &x, &g, &b, rm, rv, &saved, &y)?
                    }
                    Mode::Eval => {
                        bn::batchnorm_eval_forward(gpu, &s, &cfg, &x, &g, &b, rm, rv, &y)?
                    }
                }
            }
            Op::Relu => vec![ew::relu_forward(gpu, &x, &y)?],
            Op::Add { relu } => {
                let b = &self.values[node.inputs[1].0];
                if *relu {
                    vec![ew::add_relu_forward(gpu, &x, b, &y)?]
                } else {
                    vec![ew::add_forward(gpu, &x, b, &y)?]
                }
            }
            Op::Sigmoid => vec![ew::sigmoid_forward(gpu, &x, &y)?],
            Op::Highway => {
                let h = &self.values[node.inputs[1].0];
                let s = &self.values[node.inputs[2].0];
                vec![ew::highway_forward(gpu, &x, h, s, &y)?]
            }
            Op::ShortcutA { stride } => vec![shortcut::shortcut_forward(gpu, &x, &y, *stride)?],
            Op::Copy => vec![copy::copy_forward(gpu, &x, &y)?],
            Op::AvgPool2x2 | Op::MaxPool3x3s2 | Op::GlobalAvgPool => {
                crate::pooling::forward(gpu, &node.op, &x, &y, &mut self.saved, id)?
            }
            Op::Linear { weight, bias } => {
                let x2 = flat(&x)?;
                let y2 = flat(&y)?;
                vec![linear::linear_forward(
                    gpu,
                    &x2,
                    &self.param(*weight)?,
                    Some(&self.param(*bias)?),
                    &y2,
                )?]
            }
        })
    }

    /// Convolution `conv` and the evaluation batch norm `bn` after it as one
    /// convolution whose epilogue applies the batch norm (and its ReLU),
    /// writing the batch norm's output; the coefficients are folded from
    /// the current running statistics in the same step.
    fn forward_folded(&mut self, conv: NodeId, bn: NodeId) -> Result<Vec<Dispatch>> {
        let gpu = self.gpu;
        let node = &self.graph.nodes[conv.0];
        let bn_node = &self.graph.nodes[bn.0];
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
            return Err(GraphError::Invalid(format!(
                "{} -> {} is not a convolution and a batch norm",
                node.name, bn_node.name
            )));
        };
        let c = self.shape(bn_node.output)[1];
        let scale_shift = gpu.zeros(&[2, c])?;
        let (rm, rv) = &self.state.bn_running[*state];
        let fold = bn::batchnorm_fold(
            gpu,
            &Self::bn_config(*relu),
            &self.param(*gamma)?,
            &self.param(*beta)?,
            rm,
            rv,
            &scale_shift,
        )?;
        let epilogue = conv2d::Conv2dEpilogue::Affine {
            scale_shift: &scale_shift,
            relu: *relu,
        };
        let s = self.conv_shape(node);
        let x = &self.values[node.inputs[0].0];
        let y = &self.values[bn_node.output.0];
        let algo = conv2d::Conv2dAlgo::for_shape(gpu, &s);
        let w = self.param(*weight)?;
        let mut d = vec![fold];
        d.extend(conv2d::conv2d_forward_fused(
            gpu, algo, &s, x, &w, epilogue, y,
        )?);
        Ok(d)
    }

    /// Training batch norm `bn` and the residual add + ReLU `add` after it as
    /// one pass that writes the merge's output; the branch output itself
    /// is never stored (no backward reads it).
    fn forward_merged(&mut self, bn: NodeId, add: NodeId) -> Result<Vec<Dispatch>> {
        let gpu = self.gpu;
        let node = &self.graph.nodes[bn.0];
        let add_node = &self.graph.nodes[add.0];
        let Op::BatchNorm {
            weight,
            bias,
            state,
            relu: false,
        } = node.op
        else {
            return Err(GraphError::Invalid(format!(
                "{} is not a batch norm without ReLU",
                node.name
            )));
        };
        let residual = add_node
            .inputs
            .iter()
            .find(|&&v| v != node.output)
            .map(|v| self.values[v.0].clone())
            .ok_or_else(|| GraphError::Invalid(format!("{} has no shortcut", add_node.name)))?;
        let [n, c, h, w] = self.shape(node.inputs[0]);
        let s = BatchNormShape { n, c, h, w };
        let (rm, rv) = &self.state.bn_running[state];
        let (g, b) = (self.param(weight)?, self.param(bias)?);
        let saved = gpu.zeros(&[2, c])?;
        self.saved.insert(bn, saved.clone());
        let x = &self.values[node.inputs[0].0];
        let y = &self.values[add_node.output.0];
        let cfg = Self::bn_config(false);
        Ok(bn::batchnorm_train_forward_add_relu(
            gpu, &s, &cfg, x, &g, &b, rm, rv, &saved, &residual, y,
        )?)
    }

    fn backward(&mut self, id: NodeId) -> Result<Vec<Part>> {
        let gpu = self.gpu;
        let node = self.graph.nodes[id.0].clone();
        let needs = |v: ValueId| v != self.graph.input;
        let x_id = node.inputs[0];
        let x = self.values[x_id.0].clone();
        let y = self.values[node.output.0].clone();
        let dy = self.grad(node.output)?;
        let mut parts = Vec::new();
        match &node.op {
            Op::Conv2d { weight, bias, .. } => {
                let s = self.conv_shape(&node);
                let db = bias.map(|b| self.state.grad(b)).transpose()?;
                parts.push(Part {
                    value: None,
                    direct: conv2d::conv2d_backward_weight(
                        gpu,
                        &s,
                        &x,
                        &dy,
                        &self.state.grad(*weight)?,
                        db.as_ref(),
                    )?,
                    adding: Vec::new(),
                });
                if needs(x_id) {
                    let w = self.param(*weight)?;
                    parts.push(self.part_adding(x_id, |dest, accumulate| {
                        Ok(if accumulate {
                            conv2d::conv2d_backward_input_accumulate(gpu, &s, &dy, &w, dest)?
                        } else {
                            conv2d::conv2d_backward_input(gpu, &s, &dy, &w, dest)?
                        })
                    })?);
                }
            }
            Op::BatchNorm {
                weight, bias, relu, ..
            } => {
                let [n, c, h, w] = self.shape(x_id);
                let s = BatchNormShape { n, c, h, w };
                let cfg = Self::bn_config(*relu);
                let saved = self.saved[&id].clone();
                let gamma = self.param(*weight)?;
                let (dg, dbeta) = (self.state.grad(*weight)?, self.state.grad(*bias)?);
                let (dy, y_used, cfg) = match self.merged_backward(id) {
                    Some(merge) => (
                        self.grad(merge)?,
                        Some(self.values[merge.0].clone()),
                        Self::bn_config(true),
                    ),
                    None => (dy, relu.then_some(y.clone()), cfg),
                };
                parts.push(self.part(x_id, |dest| {
                    Ok(bn::batchnorm_backward(
                        gpu,
                        &s,
                        &cfg,
                        &x,
                        y_used.as_ref(),
                        &dy,
                        &gamma,
                        &saved,
                        dest,
                        &dg,
                        &dbeta,
                    )?)
                })?);
            }
            Op::Relu => parts.push(self.part(x_id, |dest| {
                Ok(vec![ew::relu_backward(gpu, &y, &dy, dest)?])
            })?),
            Op::Add { relu } => {
                for &v in &node.inputs {
                    if self.merged_branch(id) == Some(v) {
                        // Its batch norm reads this node's output gradient
                        // and ReLU mask itself: nothing to write, but the
                        // branch has a gradient from here on.
                        parts.push(self.prepare(v, || Ok(Vec::new()), || Ok(Vec::new()))?);
                    } else if *relu {
                        parts.push(
                            self.part(v, |dest| Ok(vec![ew::relu_backward(gpu, &y, &dy, dest)?]))?,
                        );
                    } else {
                        parts.push(self.part_from(v, &dy)?);
                    }
                }
            }
            Op::Sigmoid => parts.push(self.part(x_id, |dest| {
                Ok(vec![ew::sigmoid_backward(gpu, &y, &dy, dest)?])
            })?),
            Op::Highway => {
                let shape = self.shape(node.output);
                let (t, h, s) = (
                    &x,
                    &self.values[node.inputs[1].0].clone(),
                    &self.values[node.inputs[2].0].clone(),
                );
                let (dt, dh, ds) = (
                    self.scratch(shape, 1)?,
                    self.scratch(shape, 2)?,
                    self.scratch(shape, 3)?,
                );
                parts.push(Part {
                    value: None,
                    direct: vec![
                        copy::copy_forward(gpu, &dy, &ds)?,
                        ew::highway_backward(gpu, t, h, s, &ds, &dt, &dh)?,
                    ],
                    adding: Vec::new(),
                });
                for (v, src) in node.inputs.iter().zip([&dt, &dh, &ds]) {
                    parts.push(self.part_from(*v, src)?);
                }
            }
            Op::ShortcutA { stride } => parts.push(self.part(x_id, |dest| {
                Ok(vec![shortcut::shortcut_backward(gpu, &dy, dest, *stride)?])
            })?),
            Op::Copy => parts.push(self.part_from(x_id, &dy)?),
            Op::AvgPool2x2 | Op::MaxPool3x3s2 | Op::GlobalAvgPool => {
                let saved = self.saved.get(&id).cloned();
                parts.push(self.part(x_id, |dest| {
                    crate::pooling::backward(gpu, &node.op, &x, &dy, dest, saved.as_ref())
                })?);
            }
            Op::Linear { weight, bias } => {
                let (x2, dy2) = (flat(&x)?, flat(&dy)?);
                parts.push(Part {
                    value: None,
                    direct: vec![linear::linear_backward_weight(
                        gpu,
                        &x2,
                        &dy2,
                        &self.state.grad(*weight)?,
                        Some(&self.state.grad(*bias)?),
                    )?],
                    adding: Vec::new(),
                });
                if needs(x_id) {
                    let w = self.param(*weight)?;
                    parts.push(self.part(x_id, |dest| {
                        Ok(vec![linear::linear_backward_input(
                            gpu,
                            &dy2,
                            &w,
                            &flat(dest)?,
                        )?])
                    })?);
                }
            }
        }
        Ok(parts)
    }

    /// Rebuilds batch-norm node `id`'s output into `y` from the statistics
    /// its training forward saved (running statistics untouched).
    fn recompute(&self, id: NodeId, y: &Tensor) -> Result<Vec<Dispatch>> {
        let node = &self.graph.nodes[id.0];
        let Op::BatchNorm {
            weight, bias, relu, ..
        } = node.op
        else {
            return Err(GraphError::Invalid(format!(
                "only batch norm outputs are recomputed, not {}",
                node.op.kind()
            )));
        };
        let [n, c, h, w] = self.shape(node.inputs[0]);
        let s = BatchNormShape { n, c, h, w };
        let x = &self.values[node.inputs[0].0];
        Ok(bn::batchnorm_apply_saved(
            self.gpu,
            &s,
            &Self::bn_config(relu),
            x,
            &self.param(weight)?,
            &self.param(bias)?,
            &self.saved[&id],
            y,
        )?)
    }

    /// The merge of a switched-off block: y from the shortcut alone.
    fn dropped_merge(
        &mut self,
        merge: NodeId,
        shortcut: ValueId,
    ) -> Result<(Vec<Dispatch>, Vec<Part>)> {
        let gpu = self.gpu;
        let node = self.graph.nodes[merge.0].clone();
        let s = self.values[shortcut.0].clone();
        let y = self.values[node.output.0].clone();
        // A plain block's merge is a ReLU of the branch.
        let relu = matches!(node.op, Op::Add { relu: true } | Op::Relu);
        let forward = if relu {
            vec![ew::relu_forward(gpu, &s, &y)?]
        } else {
            vec![copy::copy_forward(gpu, &s, &y)?]
        };
        let mut backward = Vec::new();
        if self.mode == Mode::Train {
            let dy = self.grad(node.output)?;
            backward.push(if relu {
                self.part(shortcut, |dest| {
                    Ok(vec![ew::relu_backward(gpu, &y, &dy, dest)?])
                })?
            } else {
                self.part_from(shortcut, &dy)?
            });
        }
        Ok((forward, backward))
    }
}

/// The nodes that lead from `input` to `shortcut` (producer chain).
fn shortcut_chain(graph: &Graph, input: ValueId, shortcut: ValueId) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    let mut v = shortcut;
    while v != input {
        let Some(node) = graph.value(v).producer else {
            break;
        };
        nodes.push(node);
        v = graph.node(node).inputs[0];
    }
    nodes
}

/// An N x C x H x W value seen as N rows of C*H*W features.
fn flat(t: &Tensor) -> Result<Tensor> {
    let n = t.shape()[0];
    let per = t.sample_len();
    if t.is_contiguous() {
        Ok(t.reshape(&[n, per])?)
    } else {
        Err(GraphError::Invalid(
            "a linear layer's operand must be contiguous".into(),
        ))
    }
}

/// Options of [`Plan::compile_with`].
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// Values (and their gradients) that keep buffers of their own, so
    /// [`Plan::read_value`] and [`Plan::read_value_grad`] see them after a
    /// step; every other buffer is shared by liveness and may be reused.
    pub keep: Vec<ValueId>,
    /// Evaluation plans fold each batch norm that follows a convolution into
    /// it (the convolution stores scale * y + shift, and the ReLU), and
    /// training plans fuse each residual add + ReLU into the batch norm
    /// before it; this keeps every op a pass of its own instead.
    pub unfused: bool,
}

impl Plan {
    /// Compiles `graph` for batches of `batch` samples in `mode`, over the
    /// parameters and statistics of `state`.
    pub fn compile(
        gpu: &Gpu,
        graph: &Graph,
        state: &ModelState,
        batch: usize,
        mode: Mode,
    ) -> Result<Plan> {
        Plan::compile_with(gpu, graph, state, batch, mode, &PlanOptions::default())
    }

    /// [`Plan::compile`] with options.
    pub fn compile_with(
        gpu: &Gpu,
        graph: &Graph,
        state: &ModelState,
        batch: usize,
        mode: Mode,
        options: &PlanOptions,
    ) -> Result<Plan> {
        // The plan's pipelines compile on threads of their own meanwhile.
        gpu.compile_in_parallel(|| Plan::compile_all(gpu, graph, state, batch, mode, options))
    }

    fn compile_all(
        gpu: &Gpu,
        graph: &Graph,
        state: &ModelState,
        batch: usize,
        mode: Mode,
        options: &PlanOptions,
    ) -> Result<Plan> {
        if batch == 0 {
            return Err(GraphError::Invalid("batch size must be positive".into()));
        }
        let out = graph.shape(graph.output);
        if out.h != 1 || out.w != 1 {
            return Err(GraphError::Invalid(format!(
                "the graph must end in class scores, not {out}"
            )));
        }
        // Roots: a channel view lives in its concatenation buffer.
        let mut root: Vec<ValueId> = Vec::with_capacity(graph.values.len());
        let mut dense_roots = Vec::new();
        for (i, v) in graph.values.iter().enumerate() {
            root.push(match v.storage {
                Storage::ChannelsOf { parent, .. } => {
                    let r = root[parent.0];
                    if !dense_roots.contains(&r) {
                        dense_roots.push(r);
                    }
                    r
                }
                Storage::Own => ValueId(i),
            });
        }
        // Buffers shared by liveness (see memory.rs).
        // A batch norm that reads a dense block's concatenation buffer produces
        // as many channels as the block holds so far; keeping each for
        // backward would make memory quadratic in depth. They are rebuilt
        // from the saved statistics in backward instead.
        let mut recompute = vec![false; graph.values.len()];
        if mode == Mode::Train {
            for node in &graph.nodes {
                let reads_concat = matches!(
                    graph.value(node.inputs[0]).storage,
                    Storage::ChannelsOf { .. }
                );
                if matches!(node.op, Op::BatchNorm { .. })
                    && reads_concat
                    && !options.keep.contains(&node.output)
                {
                    recompute[node.output.0] = true;
                }
            }
        }
        let (folds, merges) = match (mode, options.unfused) {
            (_, true) => (Vec::new(), Vec::new()),
            (Mode::Eval, false) => (
                crate::fold::foldable_batch_norms(graph, &options.keep),
                Vec::new(),
            ),
            (Mode::Train, false) => {
                let merges = crate::fold::fusable_merges(graph, &options.keep);
                // A recomputed batch norm output is not a merge's branch.
                let merges = merges
                    .into_iter()
                    .filter(|(bn, _)| !recompute[graph.nodes[bn.0].output.0])
                    .collect();
                (Vec::new(), merges)
            }
        };
        // Each pair is one dispatch at the first node's place that writes
        // the second node's output.
        let early: Vec<(NodeId, NodeId)> = folds.iter().chain(&merges).copied().collect();
        let assignment = crate::memory::plan(
            graph,
            batch,
            mode,
            &root,
            &options.keep,
            &recompute,
            &early,
            &merges,
        );
        let slots: Vec<Tensor> = assignment
            .slot_bytes
            .iter()
            .map(|&b| gpu.zeros(&[(b / 4) as usize]))
            .collect::<std::result::Result<_, _>>()?;
        let in_slot = |slot: Option<usize>, shape: [usize; 4]| -> Result<Tensor> {
            match slot {
                Some(s) => Ok(slots[s].sub_tensor(0, &shape)?),
                // Never written or read (a value no node touches).
                None => Ok(gpu.zeros(&shape)?),
            }
        };
        let input = gpu.zeros(&dims(batch, graph.shape(graph.input)))?;
        let mut values: Vec<Tensor> = Vec::with_capacity(graph.values.len());
        for (i, v) in graph.values.iter().enumerate() {
            values.push(match v.storage {
                _ if i == graph.input.0 => input.clone(),
                _ if assignment.in_place[i].is_some() => {
                    values[assignment.in_place[i].expect("checked").0].clone()
                }
                Storage::Own => in_slot(assignment.value_slot[i], dims(batch, v.shape))?,
                Storage::ChannelsOf { parent, c0 } => {
                    values[parent.0].channel_slice(c0, c0 + v.shape.c)?
                }
            });
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; graph.values.len()];
        if mode == Mode::Train {
            for (i, v) in graph.values.iter().enumerate() {
                if i == graph.input.0 {
                    continue;
                }
                grads[i] = Some(match v.storage {
                    _ if assignment.in_place[i].is_some() => grads
                        [assignment.in_place[i].expect("checked").0]
                        .clone()
                        .expect("inputs precede outputs"),
                    Storage::Own => in_slot(assignment.grad_slot[i], dims(batch, v.shape))?,
                    Storage::ChannelsOf { parent, c0 } => grads[parent.0]
                        .as_ref()
                        .expect("parents precede their views")
                        .channel_slice(c0, c0 + v.shape.c)?,
                });
            }
        }
        let mut c = Compiler {
            gpu,
            graph,
            state,
            batch,
            mode,
            values,
            grads,
            scratch: HashMap::new(),
            saved: HashMap::new(),
            merges: merges.clone(),
            written: written_at_backward_start(graph, &dense_roots),
            root: root.clone(),
        };
        let mut nodes = Vec::with_capacity(graph.nodes.len());
        for i in 0..graph.nodes.len() {
            let id = NodeId(i);
            let fold = folds.iter().find(|(conv, bn)| *conv == id || *bn == id);
            let merge = merges.iter().find(|(bn, add)| *bn == id || *add == id);
            let forward = match (fold, merge) {
                (Some(&(conv, bn)), _) if conv == id => c.forward_folded(conv, bn)?,
                (_, Some(&(bn, add))) if bn == id => c.forward_merged(bn, add)?,
                (Some(_), _) | (_, Some(_)) => Vec::new(),
                (None, None) => c.forward(id)?,
            };
            nodes.push(NodePlan {
                forward,
                backward: Vec::new(),
            });
        }
        if mode == Mode::Train {
            // Recomputed values live elsewhere during backward: point the
            // backward dispatches there, and rebuild each value just before
            // its first backward reader.
            let mut rebuild: HashMap<NodeId, Vec<Dispatch>> = HashMap::new();
            for (v, slot) in assignment.recompute_slot.iter().enumerate() {
                let Some((slot, first_reader)) = *slot else {
                    continue;
                };
                let producer = graph.values[v]
                    .producer
                    .expect("a recomputed value has a producer");
                let fresh = slots[slot].sub_tensor(0, &dims(batch, graph.values[v].shape))?;
                c.values[v] = fresh.clone();
                rebuild
                    .entry(first_reader)
                    .or_default()
                    .extend(c.recompute(producer, &fresh)?);
            }
            // In backward's order, for `Compiler::written`.
            for (i, node) in nodes.iter_mut().enumerate().rev() {
                let mut parts = Vec::new();
                if let Some(d) = rebuild.remove(&NodeId(i)) {
                    parts.push(Part {
                        value: None,
                        direct: d,
                        adding: Vec::new(),
                    });
                }
                parts.extend(c.backward(NodeId(i))?);
                node.backward = parts;
            }
        }
        let mut blocks = HashMap::new();
        for (id, block) in graph.residual_blocks() {
            let BlockKind::Residual {
                merge,
                branch_output,
                shortcut,
                ..
            } = block.kind
            else {
                continue;
            };
            let mut member = vec![false; graph.nodes.len()];
            for n in &block.nodes {
                member[n.0] = true;
            }
            let (forward_dropped, backward_dropped) = c.dropped_merge(merge, shortcut)?;
            let h = c.values[branch_output.0].clone();
            let scale = ew::scale_forward(gpu, &h, 1.0, &h)?;
            blocks.insert(
                id,
                BlockPlan {
                    merge,
                    member,
                    forward_dropped,
                    backward_dropped,
                    scale,
                    scale_value: 1.0,
                    branch_output,
                    shortcut,
                    shortcut_nodes: shortcut_chain(graph, block.input, shortcut),
                },
            );
        }
        let activation_bytes = distinct_bytes(
            c.values
                .iter()
                .chain(c.grads.iter().flatten())
                .chain(c.scratch.values())
                .chain(c.saved.values()),
        );
        let classes = out.c;
        let logits = c.values[graph.output.0].reshape(&[batch, classes])?;
        let labels = gpu.zeros_u32(&[batch])?;
        let loss = gpu.zeros(&[1])?;
        let correct = gpu.zeros_u32(&[1])?;
        let loss_dispatch = match mode {
            Mode::Train => {
                let dlogits = c.grad(graph.output)?.reshape(&[batch, classes])?;
                loss::softmax_cross_entropy(gpu, &logits, &labels, &loss, &correct, &dlogits)?
            }
            Mode::Eval => loss::softmax_cross_entropy_eval(gpu, &logits, &labels, &loss, &correct)?,
        };
        let merge_of = blocks.iter().map(|(id, p)| (p.merge, *id)).collect();
        Ok(Plan {
            merge_of,
            graph: graph.clone(),
            batch,
            mode,
            input,
            labels,
            values: c.values,
            grads: c.grads,
            root,
            dense_roots,
            nodes,
            blocks,
            loss,
            correct,
            loss_dispatch,
            stats: gpu.readback_buffer(8),
            grads_arena: state.grads.clone(),
            activation_bytes,
        })
    }

    /// Bytes this plan allocated for activations, their gradients and
    /// scratch (the model's parameters and statistics are not included).
    pub fn activation_bytes(&self) -> u64 {
        self.activation_bytes
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Reads a value of the last step back: the graph's output, or a value
    /// the plan was compiled to keep (other buffers are reused).
    pub fn read_value(&self, gpu: &Gpu, v: ValueId) -> Result<Vec<f32>> {
        Ok(gpu.read(&self.values[v.0])?)
    }

    /// Reads the gradient of a kept value from the last training step.
    pub fn read_value_grad(&self, gpu: &Gpu, v: ValueId) -> Result<Vec<f32>> {
        let g = self.grads[v.0]
            .as_ref()
            .ok_or_else(|| GraphError::Invalid("no gradient for this value in this plan".into()))?;
        Ok(gpu.read(g)?)
    }

    /// Scales residual block `block`'s branch by `scale` in later eval steps
    /// (stochastic depth's test-time rule); 1 turns scaling off.
    pub fn set_block_scale(&mut self, gpu: &Gpu, block: BlockId, scale: f32) -> Result<()> {
        let plan = self.blocks.get_mut(&block).ok_or_else(|| {
            GraphError::Invalid(format!("block {} is not a residual block", block.0))
        })?;
        let h = &self.values[plan.branch_output.0];
        ew::set_scale(gpu, &plan.scale, h, scale, h)?;
        plan.scale_value = scale;
        Ok(())
    }
}

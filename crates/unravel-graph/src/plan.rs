//! A graph compiled for one batch size and mode: every buffer allocated and
//! every dispatch (forward, backward, loss, optimiser) prepared once, so a
//! step only records them into one command buffer. Compiling is in
//! [`crate::lower`]; running a step in [`crate::step`].
//!
//! Shape legend: N batch, C channels, H x W plane; values are N x C x H x W.

use std::collections::HashMap;

use unravel_device::kernels::conv2d::Conv2dAlgo;
use unravel_device::kernels::elementwise as ew;
use unravel_device::{Dispatch, Gpu, Tensor};

use crate::error::{GraphError, Result};
use crate::ir::*;
use crate::lower::schedule::Roots;
use crate::lower::Contribution;
use crate::precision::Precision;
use crate::state::ModelState;

/// Training (batch statistics, backward) or evaluation (running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// A node's prepared work.
pub(crate) struct NodePlan {
    pub forward: Vec<Dispatch>,
    /// A training batch norm's forward that leaves the running statistics
    /// alone, for steps that only measure (evaluation, path gradients).
    pub forward_measuring: Option<Vec<Dispatch>>,
    pub backward: Vec<Contribution>,
}

/// A residual block's alternatives: switched off (identity path only) and
/// its branch scaled (stochastic depth at test time).
pub(crate) struct BlockPlan {
    pub merge: NodeId,
    pub member: Vec<bool>,
    pub forward_dropped: Vec<Dispatch>,
    pub backward_dropped: Vec<Contribution>,
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
    /// Values whose buffers hold them after a step: the input, the output
    /// and the values the plan was compiled to keep.
    pub(crate) readable: Vec<ValueId>,
    pub(crate) roots: Roots,
    pub(crate) nodes: Vec<NodePlan>,
    pub(crate) blocks: HashMap<BlockId, BlockPlan>,
    pub(crate) loss: Tensor,
    pub(crate) correct: Tensor,
    pub(crate) loss_dispatch: Dispatch,
    /// Where each step's loss, correct count and loss scaler are copied
    /// for the host.
    pub(crate) stats: unravel_device::Readback,
    /// The dispatch scaling the loss gradient, for the scaler state whose
    /// buffer is kept with it (made on a scaling optimiser's first step).
    pub(crate) loss_scaling: std::sync::Mutex<Option<(unravel_device::wgpu::Buffer, Dispatch)>>,
    /// The residual block whose merge each node is, if any.
    pub(crate) merge_of: HashMap<NodeId, BlockId>,
    pub(crate) grads_arena: Tensor,
    /// Bytes of activations, gradients and scratch this plan allocated.
    pub(crate) activation_bytes: u64,
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
    /// The convolution algorithm of every convolution, instead of the one
    /// the adapter gets (to compare them on one device). Unset, a plan in
    /// mixed precision runs on tensor cores where the device has verified
    /// ones ([`Precision::default_conv_algo`]). With
    /// [`Conv2dAlgo::CoopMatrix`] the linear layer runs on them too, as a
    /// 1x1 convolution.
    pub conv_algo: Option<Conv2dAlgo>,
    /// f32 throughout, or f16 activations and gradients (needs the
    /// adapter's SHADER_F16).
    pub precision: Precision,
    /// Training plans normalise with the batch norms' running statistics,
    /// held constant in backward (PyTorch's `model.eval()` under autograd):
    /// the gradients of the network as it is evaluated. Their steps update
    /// no running statistic. Evaluation plans always use them.
    pub frozen_batch_norm: bool,
}

impl PlanOptions {
    /// The convolution algorithm a plan with these options runs on `gpu`:
    /// the one chosen, else the precision's default
    /// ([`Precision::default_conv_algo`]); None leaves each convolution the
    /// adapter's choice for its shape.
    pub fn conv_algo_for(&self, gpu: &Gpu) -> Option<Conv2dAlgo> {
        self.conv_algo
            .or_else(|| self.precision.default_conv_algo(gpu))
    }
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
        // Decided first: the tensor cores' check runs kernels of its own.
        let options = &PlanOptions {
            conv_algo: options.conv_algo_for(gpu),
            ..options.clone()
        };
        // The plan's pipelines compile on threads of their own meanwhile.
        gpu.compile_in_parallel(|| crate::lower::compile(gpu, graph, state, batch, mode, options))
    }

    /// Bytes this plan allocated for activations, their gradients and
    /// scratch (the model's parameters and statistics are not included).
    pub fn activation_bytes(&self) -> u64 {
        self.activation_bytes
    }

    /// The bytes of activations, gradients and scratch a plan of `graph`
    /// would allocate, without compiling it (compare precisions or batch
    /// sizes at no cost).
    pub fn planned_bytes(graph: &Graph, batch: usize, mode: Mode, options: &PlanOptions) -> u64 {
        crate::lower::estimate(graph, batch, mode, options).0
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

    fn check_readable(&self, v: ValueId) -> Result<()> {
        if v.0 >= self.graph.values.len() {
            return Err(GraphError::UnknownValue { value: v.0 });
        }
        if !self.readable.contains(&v) {
            return Err(GraphError::NotKept { value: v.0 });
        }
        Ok(())
    }

    /// Reads a value of the last step back: the graph's input or output, or
    /// a value the plan was compiled to keep ([`PlanOptions::keep`]); any
    /// other value's buffer has been reused, so asking for it is an error.
    pub fn read_value(&self, gpu: &Gpu, v: ValueId) -> Result<Vec<f32>> {
        self.check_readable(v)?;
        Ok(gpu.read(&self.values[v.0])?)
    }

    /// Reads the gradient of the output or of a kept value from the last
    /// training step.
    pub fn read_value_grad(&self, gpu: &Gpu, v: ValueId) -> Result<Vec<f32>> {
        self.check_readable(v)?;
        let g = self.grads[v.0]
            .as_ref()
            .ok_or(GraphError::NoGradient { value: v.0 })?;
        Ok(gpu.read(g)?)
    }

    /// Scales residual block `block`'s branch by `scale` in later eval steps
    /// (stochastic depth's test-time rule); 1 turns scaling off.
    pub fn set_block_scale(&mut self, gpu: &Gpu, block: BlockId, scale: f32) -> Result<()> {
        let plan = self
            .blocks
            .get_mut(&block)
            .ok_or(GraphError::NotResidualBlock { block: block.0 })?;
        let h = &self.values[plan.branch_output.0];
        ew::set_scale(gpu, &plan.scale, h, scale, h)?;
        plan.scale_value = scale;
        Ok(())
    }
}

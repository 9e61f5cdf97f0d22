//! Lowering: a graph compiled for one batch size and mode into prepared
//! dispatches. `forward` lowers each op's forward (and the fused pairs of
//! `fusion`), `backward` holds every op's gradient rule next to the values
//! it reads, and `schedule` decides, for the ordinary backward here and for
//! every step in the executor, which gradient contribution writes a
//! gradient buffer and which adds to it.
//!
//! Compiling a plan: roots and recomputed values, fusions, buffers by
//! liveness (`crate::memory`), then the forward of every node, the
//! backward rules, the blocks' alternatives and the loss.
//!
//! Shape legend: N batch, C channels, H x W plane; values are N x C x H x W.

pub(crate) mod backward;
pub(crate) mod forward;
pub(crate) mod fusion;
pub(crate) mod schedule;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use unravel_device::kernels::batchnorm::{BatchNormConfig, BatchNormShape};
use unravel_device::kernels::conv2d::{Conv2dAlgo, Conv2dShape};
use unravel_device::kernels::{elementwise as ew, loss};
use unravel_device::{DType, Dispatch, Gpu, Tensor};

use crate::error::{GraphError, Result};
use crate::ir::*;
use crate::memory::Assignment;
use crate::plan::{BlockPlan, Mode, NodePlan, Plan, PlanOptions};
use crate::precision::Precision;
use crate::state::ModelState;
use fusion::Fusions;
use schedule::{Roots, Run};

/// Dispatches not prepared yet: prepared when the contribution is compiled,
/// the variant the ordinary backward runs first, the other one deferred.
pub(crate) type Build<'g> = Box<dyn FnOnce() -> Result<Vec<Dispatch>> + 'g>;

/// One gradient contribution of a backward rule before compiling: to
/// `target`'s gradient, prepared both as the first write of its buffer and
/// as an addition to what is there; or, with no target, work that always
/// runs (parameter gradients, rebuilding a recomputed value).
pub(crate) struct Pending<'g> {
    pub target: Option<ValueId>,
    pub write: Build<'g>,
    pub add: Option<Build<'g>>,
}

impl<'g> Pending<'g> {
    pub fn always(build: impl FnOnce() -> Result<Vec<Dispatch>> + 'g) -> Pending<'g> {
        Pending {
            target: None,
            write: Box::new(build),
            add: None,
        }
    }
}

/// A compiled contribution (see [`Pending`]); `add` is empty for work
/// without a target.
pub(crate) struct Contribution {
    pub target: Option<ValueId>,
    pub write: Vec<Dispatch>,
    pub add: Vec<Dispatch>,
}

impl Contribution {
    /// The dispatches a step records for `run`.
    pub fn dispatches(&self, run: Run) -> &[Dispatch] {
        match run {
            Run::Always | Run::Write => &self.write,
            Run::Add => &self.add,
        }
    }
}

/// Compiles `pending` with the variant `first` (what the ordinary backward
/// runs) prepared now and the other deferred to its first recording; with
/// `first` None (a contribution the ordinary backward does not run), both
/// deferred.
fn materialise(gpu: &Gpu, pending: Pending, first: Option<Run>) -> Result<Contribution> {
    let Pending { target, write, add } = pending;
    let add = add.unwrap_or_else(|| Box::new(|| Ok(Vec::new())));
    let (write, add) = match first {
        Some(Run::Always | Run::Write) => (write()?, gpu.compile_deferred(add)?),
        Some(Run::Add) => (gpu.compile_deferred(write)?, add()?),
        None => (gpu.compile_deferred(write)?, gpu.compile_deferred(add)?),
    };
    Ok(Contribution { target, write, add })
}

/// What lowering an op needs: the plan's tensors so far and where to find
/// parameters, statistics and scratch space.
pub(crate) struct Lowering<'g> {
    pub gpu: &'g Gpu,
    pub graph: &'g Graph,
    pub state: &'g ModelState,
    pub batch: usize,
    pub mode: Mode,
    pub conv_algo: Option<Conv2dAlgo>,
    /// A training plan's batch norms use their running statistics, held
    /// constant (`PlanOptions::frozen_batch_norm`).
    pub frozen_bn: bool,
    /// Each value's element type (and its gradient's).
    pub dtypes: Vec<DType>,
    pub fusions: Fusions,
    pub values: Vec<Tensor>,
    pub grads: Vec<Option<Tensor>>,
    /// One buffer per scratch slot, as large as the largest value.
    scratch: HashMap<usize, Tensor>,
    /// What a node's forward keeps for its backward that is not a value:
    /// batch norm's (mean, 1/std), max pooling's argmax.
    pub saved: HashMap<NodeId, Tensor>,
}

impl<'g> Lowering<'g> {
    /// A training batch norm's settings ([`bn_config`]) with the plan's
    /// choice of statistics.
    pub fn train_bn_config(&self, relu: bool, update_running: bool) -> BatchNormConfig {
        BatchNormConfig {
            frozen_stats: self.frozen_bn,
            ..bn_config(relu, update_running)
        }
    }

    /// The convolution algorithm the linear layer runs as a 1x1 convolution
    /// on: the cooperative matrices' (tensor cores), which its own kernels
    /// lack; otherwise none (its own kernels).
    pub fn linear_as_conv(&self) -> Option<Conv2dAlgo> {
        self.conv_algo.filter(|&a| a == Conv2dAlgo::CoopMatrix)
    }

    pub fn dims(&self, v: ValueId) -> [usize; 4] {
        let s = self.graph.shape(v);
        [self.batch, s.c, s.h, s.w]
    }

    pub fn value(&self, v: ValueId) -> Tensor {
        self.values[v.0].clone()
    }

    pub fn grad(&self, v: ValueId) -> Result<Tensor> {
        self.grads[v.0]
            .clone()
            .ok_or(GraphError::NoGradient { value: v.0 })
    }

    pub fn param(&self, id: ParamId) -> Result<Tensor> {
        self.state.param(id)
    }

    pub fn param_grad(&self, id: ParamId) -> Result<Tensor> {
        self.state.grad(id)
    }

    /// Scratch buffer `slot` standing in for the gradient of `v` (its
    /// shape and element type); shared by every node: dispatches run in
    /// order, and each use is consumed right after it is written.
    pub fn scratch(&mut self, v: ValueId, slot: usize) -> Result<Tensor> {
        if !self.scratch.contains_key(&slot) {
            let bytes = scratch_bytes(self.graph, self.batch, &self.dtypes);
            self.scratch
                .insert(slot, self.gpu.zeros(&[bytes.div_ceil(4) as usize])?);
        }
        let (shape, dtype) = (self.dims(v), self.dtypes[v.0]);
        Ok(self.scratch[&slot].sub_tensor_as(0, &shape, dtype)?)
    }

    pub fn conv_shape(&self, node: &Node) -> Conv2dShape {
        self.graph
            .conv_shape(node, self.batch)
            .expect("called on Conv2d nodes only")
    }

    /// The batch-norm geometry of node `node`'s input.
    pub fn bn_shape(&self, node: &Node) -> BatchNormShape {
        let [n, c, h, w] = self.dims(node.inputs[0]);
        BatchNormShape { n, c, h, w }
    }
}

/// Batch-norm settings of a node: PyTorch's defaults with its ReLU, and
/// whether a training forward updates the running statistics.
pub(crate) fn bn_config(relu: bool, update_running: bool) -> BatchNormConfig {
    BatchNormConfig {
        relu,
        update_running,
        ..BatchNormConfig::default()
    }
}

/// The activation memory of a plan for `graph` at batch `batch`: its
/// buffers as the memory planner lays them out, the input, and one scratch
/// buffer in training; and the largest single buffer.
pub(crate) fn estimate(
    graph: &Graph,
    batch: usize,
    mode: Mode,
    options: &PlanOptions,
) -> (u64, u64) {
    sizes(
        graph,
        batch,
        mode,
        options.precision,
        &layout(graph, batch, mode, options).assignment,
    )
}

/// The values' roots, what is fused, and where every buffer goes.
struct Layout {
    roots: Roots,
    fusions: Fusions,
    assignment: Assignment,
}

fn layout(graph: &Graph, batch: usize, mode: Mode, options: &PlanOptions) -> Layout {
    let roots = Roots::of(graph);
    let recompute = recomputed_values(graph, mode, &options.keep);
    let fusions = Fusions::choose(graph, mode, &options.keep, &recompute, options.unfused);
    let assignment = crate::memory::plan(
        graph,
        batch,
        mode,
        &options.precision.value_dtypes(graph),
        &roots,
        &options.keep,
        &recompute,
        &fusions,
    );
    Layout {
        roots,
        fusions,
        assignment,
    }
}

fn sizes(
    graph: &Graph,
    batch: usize,
    mode: Mode,
    precision: Precision,
    assignment: &Assignment,
) -> (u64, u64) {
    let value_bytes = |numel: usize| (batch * numel * 4) as u64;
    // The scratch buffers hold one gradient each (f16 ones in mixed
    // precision); training plans use up to four (the highway gate's).
    let scratch = if mode == Mode::Train {
        scratch_bytes(graph, batch, &precision.value_dtypes(graph)) * scratch_slots(graph)
    } else {
        0
    };
    let slots: u64 = assignment
        .slot_bytes
        .iter()
        .map(|b| b.next_multiple_of(4))
        .sum();
    let input = value_bytes(graph.shape(graph.input).numel());
    let largest = assignment.slot_bytes.iter().copied().max().unwrap_or(0);
    (slots + input + scratch, largest.max(scratch))
}

/// Bytes of one scratch buffer: the largest value's gradient.
fn scratch_bytes(graph: &Graph, batch: usize, dtypes: &[DType]) -> u64 {
    graph
        .values
        .iter()
        .zip(dtypes)
        .map(|(v, t)| (batch * v.shape.numel()) as u64 * t.bytes())
        .max()
        .unwrap_or(4)
        .next_multiple_of(4)
}

/// Scratch buffers a training plan of `graph` uses: one for gradients that
/// add to others, three more where a highway gate splits its gradient.
fn scratch_slots(graph: &Graph) -> u64 {
    if graph.nodes.iter().any(|n| matches!(n.op, Op::Highway)) {
        4
    } else {
        1
    }
}

/// Refuses a plan whose buffers cannot be allocated, before any is: a
/// buffer above the adapter's limit, or (on a CPU adapter) more than the
/// host can give; the error names the largest batch that fits.
fn check_fits(
    gpu: &Gpu,
    graph: &Graph,
    batch: usize,
    mode: Mode,
    options: &PlanOptions,
    assignment: &Assignment,
) -> Result<()> {
    let limits = gpu.limits();
    let buffer_limit = limits
        .max_buffer_size
        .min(limits.max_storage_buffer_binding_size);
    // Room for what is not planned: the parameters, their gradients and
    // momentum, readbacks, and the driver's own memory.
    let budget = gpu.memory_budget().map(|b| b / 10 * 8);
    let fits =
        |(total, largest): (u64, u64)| largest <= buffer_limit && budget.is_none_or(|b| total <= b);
    let needed = sizes(graph, batch, mode, options.precision, assignment);
    if fits(needed) {
        return Ok(());
    }
    // Memory grows with the batch: the largest batch that fits, by bisection.
    let (mut lo, mut hi) = (0, batch);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(estimate(graph, mid, mode, options)) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mib = crate::error::mib;
    let limit = match budget {
        Some(b) if needed.0 > b => format!(
            "more than the {} this CPU adapter may use (80% of what the host and this process's limits leave)",
            mib(b)
        ),
        _ => format!(
            "with a buffer of {}, more than the adapter's limit of {}",
            mib(needed.1),
            mib(buffer_limit)
        ),
    };
    Err(GraphError::TooLarge {
        batch,
        needed: needed.0,
        limit,
        largest_batch: lo,
    })
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

/// A batch norm that reads a dense block's concatenation buffer produces
/// as many channels as the block holds so far; keeping each for backward
/// would make memory quadratic in depth. Those outputs are rebuilt from the
/// saved statistics in backward instead.
fn recomputed_values(graph: &Graph, mode: Mode, keep: &[ValueId]) -> Vec<bool> {
    let mut recompute = vec![false; graph.values.len()];
    if mode == Mode::Train {
        for node in &graph.nodes {
            let reads_concat = matches!(
                graph.value(node.inputs[0]).storage,
                Storage::ChannelsOf { .. }
            );
            if matches!(node.op, Op::BatchNorm { .. })
                && reads_concat
                && !keep.contains(&node.output)
            {
                recompute[node.output.0] = true;
            }
        }
    }
    recompute
}

/// Compiles `graph` for batches of `batch` in `mode` (see [`Plan::compile`]).
pub(crate) fn compile(
    gpu: &Gpu,
    graph: &Graph,
    state: &ModelState,
    batch: usize,
    mode: Mode,
    options: &PlanOptions,
) -> Result<Plan> {
    if batch == 0 {
        return Err(GraphError::ZeroBatch);
    }
    let out = graph.shape(graph.output);
    if out.h != 1 || out.w != 1 {
        return Err(GraphError::NotClassScores { shape: out });
    }
    let Layout {
        roots,
        fusions,
        assignment,
    } = layout(graph, batch, mode, options);
    check_fits(gpu, graph, batch, mode, options, &assignment)?;
    if options.precision == Precision::Mixed && !gpu.has_f16() {
        return Err(GraphError::NoF16 {
            adapter: gpu.adapter_info().name.clone(),
        });
    }
    let dtypes = options.precision.value_dtypes(graph);
    let slots: Vec<Tensor> = assignment
        .slot_bytes
        .iter()
        .map(|&b| gpu.zeros(&[b.div_ceil(4) as usize]))
        .collect::<std::result::Result<_, _>>()?;
    let dims = |s: Shape| [batch, s.c, s.h, s.w];
    let in_slot = |slot: Option<usize>, shape: [usize; 4], dtype| -> Result<Tensor> {
        match slot {
            Some(s) => Ok(slots[s].sub_tensor_as(0, &shape, dtype)?),
            // Never written or read (a value no node touches).
            None => Ok(gpu.zeros_of(&shape, dtype)?),
        }
    };
    let input = gpu.zeros(&dims(graph.shape(graph.input)))?;
    let mut values: Vec<Tensor> = Vec::with_capacity(graph.values.len());
    for (i, v) in graph.values.iter().enumerate() {
        values.push(match v.storage {
            _ if i == graph.input.0 => input.clone(),
            _ if assignment.in_place[i].is_some() => {
                values[assignment.in_place[i].expect("checked").0].clone()
            }
            Storage::Own => in_slot(assignment.value_slot[i], dims(v.shape), dtypes[i])?,
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
                Storage::Own => in_slot(assignment.grad_slot[i], dims(v.shape), dtypes[i])?,
                Storage::ChannelsOf { parent, c0 } => grads[parent.0]
                    .as_ref()
                    .expect("parents precede their views")
                    .channel_slice(c0, c0 + v.shape.c)?,
            });
        }
    }
    let mut cx = Lowering {
        gpu,
        graph,
        state,
        batch,
        mode,
        conv_algo: options.conv_algo,
        frozen_bn: options.frozen_batch_norm && mode == Mode::Train,
        dtypes,
        fusions,
        values,
        grads,
        scratch: HashMap::new(),
        saved: HashMap::new(),
    };
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    for i in 0..graph.nodes.len() {
        nodes.push(forward::lower(&mut cx, NodeId(i))?);
    }
    if mode == Mode::Train {
        lower_backward(&mut cx, &roots, &assignment, &slots, &mut nodes)?;
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
        let forward_dropped = forward::dropped_merge(&cx, merge, shortcut)?;
        let backward_dropped = match mode {
            Mode::Train => backward::dropped_merge(&mut cx, merge, shortcut)?
                .into_iter()
                .map(|p| materialise(gpu, p, None))
                .collect::<Result<_>>()?,
            Mode::Eval => Vec::new(),
        };
        let h = cx.value(branch_output);
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
        cx.values
            .iter()
            .chain(cx.grads.iter().flatten())
            .chain(cx.scratch.values())
            .chain(cx.saved.values()),
    );
    let classes = out.c;
    let logits = cx.values[graph.output.0].reshape(&[batch, classes])?;
    let labels = gpu.zeros_u32(&[batch])?;
    let loss = gpu.zeros(&[1])?;
    let correct = gpu.zeros_u32(&[1])?;
    let loss_dispatch = match mode {
        Mode::Train => {
            let dlogits = cx.grad(graph.output)?.reshape(&[batch, classes])?;
            loss::softmax_cross_entropy(gpu, &logits, &labels, &loss, &correct, &dlogits)?
        }
        Mode::Eval => loss::softmax_cross_entropy_eval(gpu, &logits, &labels, &loss, &correct)?,
    };
    let merge_of = blocks.iter().map(|(id, p)| (p.merge, *id)).collect();
    let mut readable = options.keep.clone();
    readable.extend([graph.input, graph.output]);
    Ok(Plan {
        merge_of,
        graph: graph.clone(),
        batch,
        mode,
        input,
        labels,
        values: cx.values,
        grads: cx.grads,
        readable,
        roots,
        nodes,
        blocks,
        loss,
        correct,
        loss_dispatch,
        stats: gpu.readback_buffer(24),
        loss_scaling: std::sync::Mutex::new(None),
        grads_arena: state.grads.clone(),
        activation_bytes,
    })
}

/// Lowers every node's gradient rule and compiles the contributions, the
/// variants the ordinary backward runs first. Recomputed values live in a
/// buffer of their own during backward: the rules read them there, and
/// each is rebuilt just before its first backward reader.
fn lower_backward(
    cx: &mut Lowering,
    roots: &Roots,
    assignment: &crate::memory::Assignment,
    slots: &[Tensor],
    nodes: &mut [NodePlan],
) -> Result<()> {
    let graph = cx.graph;
    let mut rebuild: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for (v, slot) in assignment.recompute_slot.iter().enumerate() {
        let Some((slot, first_reader)) = *slot else {
            continue;
        };
        let producer = graph.values[v]
            .producer
            .expect("a recomputed value has a producer");
        let shape = cx.dims(ValueId(v));
        cx.values[v] = slots[slot].sub_tensor_as(0, &shape, cx.dtypes[v])?;
        rebuild.entry(first_reader).or_default().push(producer);
    }
    let mut pending: Vec<Vec<Pending>> = Vec::with_capacity(graph.nodes.len());
    for i in 0..graph.nodes.len() {
        let mut p = Vec::new();
        for &producer in rebuild.get(&NodeId(i)).into_iter().flatten() {
            let d = forward::recompute(cx, producer)?;
            p.push(Pending::always(move || Ok(d)));
        }
        p.extend(backward::lower(cx, NodeId(i))?);
        pending.push(p);
    }
    let no_skip = vec![false; graph.nodes.len()];
    let order = schedule::backward(graph, roots, |i| &pending[i], &no_skip, |_, _| true);
    let mut first: Vec<Vec<Option<Run>>> = pending.iter().map(|p| vec![None; p.len()]).collect();
    for (node, index, run) in order {
        first[node][index] = Some(run);
    }
    for (i, (p, runs)) in pending.into_iter().zip(first).enumerate() {
        nodes[i].backward = p
            .into_iter()
            .zip(runs)
            .map(|(p, run)| materialise(cx.gpu, p, run))
            .collect::<Result<_>>()?;
    }
    Ok(())
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
pub(crate) fn flat(t: &Tensor) -> Result<Tensor> {
    let n = t.shape()[0];
    let per = t.sample_len();
    if !t.is_contiguous() {
        return Err(GraphError::NotContiguous {
            what: "a linear layer's operand",
        });
    }
    Ok(t.reshape(&[n, per])?)
}

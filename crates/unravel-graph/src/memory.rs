//! Memory planning: activations and gradients share GPU buffers by
//! liveness. A step runs the forward nodes in order, the loss, then the
//! backward nodes in reverse; every activation and every gradient is live
//! from its first write to its last read on that schedule, and two tensors
//! whose lifetimes do not overlap may occupy the same buffer. Activations
//! that backward reads stay live until that read, the rest are recycled
//! during the forward pass. Channel views (a dense block's layers) live in
//! their concatenation buffer, which lives as long as any of them.

use unravel_device::DType;

use crate::ir::*;
use crate::lower::backward::reads;
use crate::lower::fusion::Fusions;
use crate::lower::schedule::Roots;
use crate::plan::Mode;

/// Which buffer slot holds each root value and each root gradient, and the
/// bytes of every slot. `in_place[y] = Some(x)`: the output y of a ReLU
/// lives in its input x's buffer (and so do their gradients).
pub(crate) struct Assignment {
    pub value_slot: Vec<Option<usize>>,
    pub grad_slot: Vec<Option<usize>>,
    /// Where a recomputed value lives during backward, and the node before
    /// whose backward it is recomputed.
    pub recompute_slot: Vec<Option<(usize, NodeId)>>,
    pub slot_bytes: Vec<u64>,
    pub in_place: Vec<Option<ValueId>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Value,
    Grad,
    Recompute,
}

struct Interval {
    start: usize,
    end: usize,
    bytes: u64,
    what: (Kind, ValueId),
}

/// Plans buffers for `graph` at batch `batch`; `roots.root[v]` is the value
/// whose buffer holds v (itself unless v is a channel view). Values in
/// `keep` (and the graph's output) get buffers of their own, so they can
/// still be read after a step. Values marked in `recompute` are not kept
/// for backward: they are rebuilt just before the first backward node that
/// reads them, in a buffer of their own for that stretch. Each pair of
/// `fusions` is one dispatch at the first node's place that reads its input
/// and writes the second node's output. What each node's backward reads
/// comes from the gradient rules' declaration
/// ([`crate::lower::backward::reads`]). `dtypes` gives each value's element
/// type (its gradient's too).
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan(
    graph: &Graph,
    batch: usize,
    mode: Mode,
    dtypes: &[DType],
    roots: &Roots,
    keep: &[ValueId],
    recompute: &[bool],
    fusions: &Fusions,
) -> Assignment {
    let root = &roots.root;
    let f = graph.nodes.len();
    let fwd = |i: usize| i;
    let loss_time = f;
    let bwd = |i: usize| 2 * f - i;
    let nv = graph.values.len();
    let has_views: Vec<bool> = {
        let mut h = vec![false; nv];
        for (v, r) in root.iter().enumerate() {
            if r.0 != v {
                h[r.0] = true;
            }
        }
        h
    };
    // Per root: value [start, end], gradient [start, end].
    let mut v_start = vec![usize::MAX; nv];
    let mut v_end = vec![0usize; nv];
    let mut g_start = vec![usize::MAX; nv];
    let mut g_end = vec![0usize; nv];
    // Recomputed values: [first, last] backward read, and the first reader.
    let mut rc_start = vec![usize::MAX; nv];
    let mut rc_end = vec![0usize; nv];
    let mut rc_node = vec![None; nv];
    for (i, node) in graph.nodes.iter().enumerate() {
        let out = root[node.output.0].0;
        v_start[out] = v_start[out].min(fwd(i));
        v_end[out] = v_end[out].max(fwd(i));
        for x in &node.inputs {
            let r = root[x.0].0;
            v_end[r] = v_end[r].max(fwd(i));
        }
        if mode == Mode::Train {
            let reads = reads(graph, fusions, NodeId(i));
            for x in reads.values {
                let r = root[x.0].0;
                if recompute[r] {
                    if bwd(i) < rc_start[r] {
                        rc_start[r] = bwd(i);
                        rc_node[r] = Some(NodeId(i));
                    }
                    rc_end[r] = rc_end[r].max(bwd(i));
                } else {
                    v_end[r] = v_end[r].max(bwd(i));
                }
            }
            // The node's backward reads the gradients it starts from and
            // writes (or adds to) its inputs' gradients.
            for g in reads.grads {
                let r = root[g.0].0;
                g_end[r] = g_end[r].max(bwd(i));
                g_start[r] = g_start[r].min(bwd(i));
            }
            for x in &node.inputs {
                let r = root[x.0].0;
                g_start[r] = g_start[r].min(bwd(i));
                g_end[r] = g_end[r].max(bwd(i));
            }
        }
    }
    for &(first, second) in fusions.pairs() {
        let x = root[graph.nodes[first.0].inputs[0].0].0;
        let y = root[graph.nodes[second.0].output.0].0;
        v_end[x] = v_end[x].max(fwd(second.0));
        v_start[y] = v_start[y].min(fwd(first.0));
    }
    let logits = root[graph.output.0].0;
    v_end[logits] = v_end[logits].max(loss_time);
    g_start[logits] = g_start[logits].min(loss_time);
    let kept = |v: usize| v == logits || keep.iter().any(|k| root[k.0].0 == v);

    // In-place ReLU: where the ReLU is its input's last reader (forward and
    // backward), the output takes over the input's buffer, and in backward
    // the input's gradient takes over the output's.
    let mut in_place = vec![None; nv];
    for (i, node) in graph.nodes.iter().enumerate() {
        let (x, y) = (node.inputs[0].0, node.output.0);
        if node.op == Op::Relu
            && !recompute[x]
            && !recompute[y]
            && root[x].0 == x
            && root[y].0 == y
            && x != graph.input.0
            && !kept(x)
            && !kept(y)
            && v_end[x] == fwd(i)
        {
            in_place[y] = Some(ValueId(x));
            v_end[x] = v_end[y];
            v_start[y] = usize::MAX;
            if mode == Mode::Train {
                g_start[x] = g_start[x].min(g_start[y]);
                g_start[y] = usize::MAX;
            }
        }
    }
    for r in 0..nv {
        // Concatenation gradients are cleared when backward begins.
        if has_views[r] {
            g_start[r] = g_start[r].min(loss_time);
        }
    }

    let mut intervals = Vec::new();
    for r in 0..nv {
        if root[r].0 != r || r == graph.input.0 || v_start[r] == usize::MAX {
            continue;
        }
        let bytes = (batch * graph.values[r].shape.numel()) as u64 * dtypes[r].bytes();
        intervals.push(Interval {
            start: v_start[r],
            end: v_end[r],
            bytes,
            what: (Kind::Value, ValueId(r)),
        });
        if mode == Mode::Train && g_start[r] != usize::MAX {
            intervals.push(Interval {
                start: g_start[r],
                end: g_end[r].max(g_start[r]),
                bytes,
                what: (Kind::Grad, ValueId(r)),
            });
        }
        if rc_start[r] != usize::MAX {
            intervals.push(Interval {
                start: rc_start[r],
                end: rc_end[r],
                bytes,
                what: (Kind::Recompute, ValueId(r)),
            });
        }
    }
    // A kept value (and its gradient) is live for the whole step.
    let last = 2 * f + 1;
    for iv in intervals.iter_mut() {
        if kept(iv.what.1 .0) {
            iv.start = 0;
            iv.end = last;
        }
    }
    // Greedy by size: the largest tensors pick buffers first, then smaller
    // ones fill the time gaps of existing buffers. (Growing buffers in time
    // order would let small long-lived tensors pin buffers sized for large
    // short-lived ones, e.g. a dense block's growing inputs.)
    intervals.sort_by_key(|iv| (std::cmp::Reverse(iv.bytes), iv.start, iv.end));
    let mut slot_bytes: Vec<u64> = Vec::new();
    let mut slot_busy: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut value_slot = vec![None; nv];
    let mut grad_slot = vec![None; nv];
    let mut recompute_slot = vec![None; nv];
    for iv in &intervals {
        let free =
            |busy: &Vec<(usize, usize)>| busy.iter().all(|&(s, e)| e < iv.start || iv.end < s);
        let slot = match slot_busy.iter().position(free) {
            Some(s) => s,
            None => {
                slot_bytes.push(iv.bytes);
                slot_busy.push(Vec::new());
                slot_bytes.len() - 1
            }
        };
        slot_busy[slot].push((iv.start, iv.end));
        match iv.what {
            (Kind::Value, v) => value_slot[v.0] = Some(slot),
            (Kind::Grad, v) => grad_slot[v.0] = Some(slot),
            (Kind::Recompute, v) => {
                recompute_slot[v.0] = Some((slot, rc_node[v.0].expect("a first reader")))
            }
        }
    }
    Assignment {
        value_slot,
        grad_slot,
        recompute_slot,
        slot_bytes,
        in_place,
    }
}

//! Memory planning: activations and gradients share GPU buffers by
//! liveness. A step runs the forward nodes in order, the loss, then the
//! backward nodes in reverse; every activation and every gradient is live
//! from its first write to its last read on that schedule, and two tensors
//! whose lifetimes do not overlap may occupy the same buffer. Activations
//! that backward reads stay live until that read, the rest are recycled
//! during the forward pass. Channel views (a dense block's layers) live in
//! their concatenation buffer, which lives as long as any of them.

use crate::ir::*;
use crate::plan::Mode;

/// The forward values whose contents a node's backward reads (beyond the
/// gradient of its output).
pub(crate) fn backward_reads(node: &Node) -> Vec<ValueId> {
    match node.op {
        Op::Conv2d { .. } | Op::Linear { .. } => vec![node.inputs[0]],
        Op::BatchNorm { relu, .. } => {
            let mut v = vec![node.inputs[0]];
            if relu {
                v.push(node.output);
            }
            v
        }
        Op::Relu | Op::Add { relu: true } | Op::Sigmoid => vec![node.output],
        Op::Highway => node.inputs.clone(),
        Op::Add { relu: false }
        | Op::ShortcutA { .. }
        | Op::Copy
        | Op::AvgPool2x2
        | Op::MaxPool3x3s2
        | Op::GlobalAvgPool => Vec::new(),
    }
}

/// Which buffer slot holds each root value and each root gradient, and the
/// bytes of every slot. `in_place[y] = Some(x)`: the output y of a ReLU
/// lives in its input x's buffer (and so do their gradients).
pub(crate) struct Assignment {
    pub value_slot: Vec<Option<usize>>,
    pub grad_slot: Vec<Option<usize>>,
    pub slot_bytes: Vec<u64>,
    pub in_place: Vec<Option<ValueId>>,
}

struct Interval {
    start: usize,
    end: usize,
    bytes: u64,
    /// (is gradient, root value)
    what: (bool, ValueId),
}

/// Plans buffers for `graph` at batch `batch`; `root[v]` is the value whose
/// buffer holds v (itself unless v is a channel view).
/// Values in `keep` (and the graph's output) get buffers of their own, so
/// they can still be read after a step.
pub(crate) fn plan(
    graph: &Graph,
    batch: usize,
    mode: Mode,
    root: &[ValueId],
    keep: &[ValueId],
) -> Assignment {
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
    for (i, node) in graph.nodes.iter().enumerate() {
        let out = root[node.output.0].0;
        v_start[out] = v_start[out].min(fwd(i));
        v_end[out] = v_end[out].max(fwd(i));
        for x in &node.inputs {
            let r = root[x.0].0;
            v_end[r] = v_end[r].max(fwd(i));
        }
        if mode == Mode::Train {
            for x in backward_reads(node) {
                let r = root[x.0].0;
                v_end[r] = v_end[r].max(bwd(i));
            }
            // The node's backward reads its output's gradient and writes
            // (or adds to) its inputs' gradients.
            g_end[out] = g_end[out].max(bwd(i));
            g_start[out] = g_start[out].min(bwd(i));
            for x in &node.inputs {
                let r = root[x.0].0;
                g_start[r] = g_start[r].min(bwd(i));
                g_end[r] = g_end[r].max(bwd(i));
            }
        }
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
        let bytes = (batch * graph.values[r].shape.numel() * 4) as u64;
        intervals.push(Interval {
            start: v_start[r],
            end: v_end[r],
            bytes,
            what: (false, ValueId(r)),
        });
        if mode == Mode::Train && g_start[r] != usize::MAX {
            intervals.push(Interval {
                start: g_start[r],
                end: g_end[r].max(g_start[r]),
                bytes,
                what: (true, ValueId(r)),
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
    intervals.sort_by_key(|iv| (iv.start, iv.end));

    let mut slot_bytes: Vec<u64> = Vec::new();
    // (slot, busy until)
    let mut busy: Vec<(usize, usize)> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut value_slot = vec![None; nv];
    let mut grad_slot = vec![None; nv];
    for iv in &intervals {
        // A buffer is reusable once its last reader is strictly earlier.
        busy.retain(|&(slot, end)| {
            if end < iv.start {
                free.push(slot);
                false
            } else {
                true
            }
        });
        let fits = free
            .iter()
            .enumerate()
            .filter(|(_, s)| slot_bytes[**s] >= iv.bytes)
            .min_by_key(|(_, s)| slot_bytes[**s]);
        let largest = free.iter().enumerate().max_by_key(|(_, s)| slot_bytes[**s]);
        let slot = match fits.or(largest) {
            Some((k, &s)) => {
                free.swap_remove(k);
                slot_bytes[s] = slot_bytes[s].max(iv.bytes);
                s
            }
            None => {
                slot_bytes.push(iv.bytes);
                slot_bytes.len() - 1
            }
        };
        busy.push((slot, iv.end));
        match iv.what {
            (false, v) => value_slot[v.0] = Some(slot),
            (true, v) => grad_slot[v.0] = Some(slot),
        }
    }
    Assignment {
        value_slot,
        grad_slot,
        slot_bytes,
        in_place,
    }
}

//! The one place that decides how a step's backward runs: which gradient
//! contributions run, and whether each writes its gradient buffer (the
//! first contribution to reach that buffer in the step) or adds to what an
//! earlier one wrote. Which one is first depends on the blocks a step
//! switches off and on the routes of a path-gradient step, so every step
//! asks; compiling a plan asks about the ordinary backward, to prepare the
//! variants it runs first.
//!
//! Shape legend: values are N x C x H x W; a channel view's gradient lives
//! in its root's (the concatenation buffer's) gradient.

use crate::ir::{Graph, Storage, ValueId};

/// What gradient buffer holds each value's gradient, and which start the
/// backward already holding one.
#[derive(Clone, Debug)]
pub(crate) struct Roots {
    /// The value whose buffer holds each value (itself unless a channel
    /// view).
    pub root: Vec<ValueId>,
    /// Concatenation buffers: their gradients are cleared when backward
    /// begins and only ever added to.
    pub dense: Vec<ValueId>,
    output: ValueId,
}

impl Roots {
    pub fn of(graph: &Graph) -> Roots {
        let mut root: Vec<ValueId> = Vec::with_capacity(graph.values.len());
        let mut dense = Vec::new();
        for (i, v) in graph.values.iter().enumerate() {
            root.push(match v.storage {
                Storage::ChannelsOf { parent, .. } => {
                    let r = root[parent.0];
                    if !dense.contains(&r) {
                        dense.push(r);
                    }
                    r
                }
                Storage::Own => ValueId(i),
            });
        }
        Roots {
            root,
            dense,
            output: graph.output,
        }
    }

    /// The gradients that hold a value when backward begins: the loss's (of
    /// the output) and the concatenation buffers' (cleared).
    fn written_at_start(&self) -> Vec<bool> {
        let mut written = vec![false; self.root.len()];
        written[self.output.0] = true;
        for r in &self.dense {
            written[r.0] = true;
        }
        written
    }
}

/// How one contribution runs in a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Run {
    /// Work without a target (parameter gradients, a recomputation).
    Always,
    /// The first contribution to its gradient this step: overwrite.
    Write,
    /// A later one: add.
    Add,
}

/// A contribution's target: the value whose gradient it writes or adds to.
pub(crate) trait Target {
    fn target(&self) -> Option<ValueId>;
}

impl Target for super::Pending<'_> {
    fn target(&self) -> Option<ValueId> {
        self.target
    }
}

impl Target for super::Contribution {
    fn target(&self) -> Option<ValueId> {
        self.target
    }
}

/// The contributions a backward runs, in order, as (node, index among the
/// node's contributions, how). Nodes run in reverse; a node runs when it
/// is not in `skip` and some contribution has reached its output's
/// gradient (else it has nothing to pass back); `keep` filters a running
/// node's contributions (a path-gradient step's routes).
pub(crate) fn backward<'c, C: Target + 'c>(
    graph: &Graph,
    roots: &Roots,
    contributions: impl Fn(usize) -> &'c [C],
    skip: &[bool],
    keep: impl Fn(usize, &C) -> bool,
) -> Vec<(usize, usize, Run)> {
    let mut written = roots.written_at_start();
    let mut order = Vec::new();
    for i in (0..graph.nodes.len()).rev() {
        let output = graph.nodes[i].output;
        if skip[i] || !written[roots.root[output.0].0] {
            continue;
        }
        for (k, c) in contributions(i).iter().enumerate() {
            if !keep(i, c) {
                continue;
            }
            let run = match c.target() {
                None => Run::Always,
                Some(v) => {
                    let r = roots.root[v.0].0;
                    if written[r] {
                        Run::Add
                    } else {
                        written[r] = true;
                        Run::Write
                    }
                }
            };
            order.push((i, k, run));
        }
    }
    order
}

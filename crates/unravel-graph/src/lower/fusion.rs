//! Passes fused away. Evaluation plans fold batch norms into the convolution
//! before them: with running statistics a batch norm (and its ReLU) is a
//! per-channel affine map, which the convolution applies as it stores its
//! output (`Conv2dEpilogue::Affine`). Training plans fuse a residual merge
//! (add + ReLU) into the batch norm that ends the branch
//! (`batchnorm_train_forward_add_relu`). Each saves a pass over an activation.
//!
//! Shape legend: values are N x C x H x W.

use std::collections::HashMap;

use crate::ir::{BlockKind, Graph, NodeId, Op, Storage, ValueId};
use crate::plan::Mode;

/// The pairs of nodes a plan runs as one pass.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fusions {
    /// (convolution, evaluation batch norm): one convolution whose
    /// epilogue applies the batch norm, at the convolution's place.
    pub folds: Vec<(NodeId, NodeId)>,
    /// (training batch norm, add + ReLU merge): one batch-norm pass that
    /// writes the merge's output; in backward the batch norm reads the
    /// merge's output gradient and ReLU mask itself.
    pub merges: Vec<(NodeId, NodeId)>,
}

impl Fusions {
    /// The fusions of a plan in `mode`; `keep` values must stay stored and
    /// `recomputed` ones (rebuilt in backward) are no merge's branch.
    pub fn choose(
        graph: &Graph,
        mode: Mode,
        keep: &[ValueId],
        recomputed: &[bool],
        unfused: bool,
    ) -> Fusions {
        match (mode, unfused) {
            (_, true) => Fusions::default(),
            (Mode::Eval, false) => Fusions {
                folds: foldable_batch_norms(graph, keep),
                merges: Vec::new(),
            },
            (Mode::Train, false) => Fusions {
                folds: Vec::new(),
                merges: fusable_merges(graph, keep)
                    .into_iter()
                    .filter(|(bn, _)| !recomputed[graph.nodes[bn.0].output.0])
                    .collect(),
            },
        }
    }

    /// Every pair: one dispatch at the first node's place that writes the
    /// second node's output.
    pub fn pairs(&self) -> impl Iterator<Item = &(NodeId, NodeId)> {
        self.folds.iter().chain(&self.merges)
    }

    /// The merge a training batch norm `bn` is fused with.
    pub fn merge_of(&self, bn: NodeId) -> Option<NodeId> {
        self.merges.iter().find(|(b, _)| *b == bn).map(|&(_, m)| m)
    }

    /// The batch norm fused into merge `merge`.
    pub fn batch_norm_of(&self, merge: NodeId) -> Option<NodeId> {
        self.merges
            .iter()
            .find(|(_, m)| *m == merge)
            .map(|&(b, _)| b)
    }
}

/// Who reads each value.
fn readers(graph: &Graph) -> HashMap<ValueId, Vec<NodeId>> {
    let mut readers: HashMap<ValueId, Vec<NodeId>> = HashMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        for &v in &node.inputs {
            readers.entry(v).or_default().push(NodeId(i));
        }
    }
    readers
}

/// A value with a buffer of its own: no channel slice, no view of it.
fn own(graph: &Graph, v: ValueId) -> bool {
    matches!(graph.value(v).storage, Storage::Own)
        && !graph
            .values
            .iter()
            .any(|u| matches!(u.storage, Storage::ChannelsOf { parent, .. } if parent == v))
}

/// The (convolution -> batch norm) pairs an evaluation plan folds: the
/// convolution's output is read by that batch norm alone, is not a value the
/// caller keeps, and both nodes belong to the same blocks (so switching a
/// block off drops both or neither). Both values have buffers of their own:
/// no channel slice of a concatenation buffer, no view of them.
fn foldable_batch_norms(graph: &Graph, keep: &[ValueId]) -> Vec<(NodeId, NodeId)> {
    let readers = readers(graph);
    let mut folds = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        // A convolution's own bias would need folding too; the models put
        // none before a batch norm.
        if !matches!(node.op, Op::Conv2d { bias: None, .. }) {
            continue;
        }
        let v = node.output;
        let [reader] = readers.get(&v).map_or(&[][..], Vec::as_slice) else {
            continue;
        };
        let bn = &graph.nodes[reader.0];
        let same_blocks = graph
            .blocks
            .iter()
            .all(|b| b.nodes.contains(&NodeId(i)) == b.nodes.contains(reader));
        if matches!(bn.op, Op::BatchNorm { .. })
            && v != graph.output
            && !keep.contains(&v)
            && graph.shape(bn.output) == graph.shape(v)
            && own(graph, v)
            && own(graph, bn.output)
            && same_blocks
        {
            folds.push((NodeId(i), *reader));
        }
    }
    folds
}

/// The (batch norm -> add + ReLU) pairs a training plan fuses: the batch
/// norm has no ReLU of its own, its output is read by that merge alone and
/// not kept, the merge's other input (the shortcut) is computed before the
/// batch norm runs, and switching a block off drops both nodes, or drops
/// the batch norm and replaces the merge (the block whose merge it is).
fn fusable_merges(graph: &Graph, keep: &[ValueId]) -> Vec<(NodeId, NodeId)> {
    let readers = readers(graph);
    let mut fused = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        if !matches!(node.op, Op::BatchNorm { relu: false, .. }) {
            continue;
        }
        let v = node.output;
        let [merge] = readers.get(&v).map_or(&[][..], Vec::as_slice) else {
            continue;
        };
        let add = &graph.nodes[merge.0];
        let Some(&residual) = add.inputs.iter().find(|&&u| u != v) else {
            continue;
        };
        let ready = graph.value(residual).producer.is_none_or(|p| p.0 < i);
        let same_blocks = graph.blocks.iter().all(|b| {
            let its_merge = matches!(b.kind, BlockKind::Residual { merge: m, .. } if m == *merge);
            its_merge || b.nodes.contains(&NodeId(i)) == b.nodes.contains(merge)
        });
        if matches!(add.op, Op::Add { relu: true })
            && add.inputs.len() == 2
            && ready
            && v != graph.output
            && !keep.contains(&v)
            && own(graph, v)
            && own(graph, add.output)
            && same_blocks
        {
            fused.push((NodeId(i), *merge));
        }
    }
    fused
}

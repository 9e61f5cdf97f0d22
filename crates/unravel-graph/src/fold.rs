//! Batch norms folded into the convolution before them in evaluation plans:
//! with running statistics a batch norm (and its ReLU) is a per-channel
//! affine map, which the convolution applies as it stores its output
//! (`Conv2dEpilogue::Affine`), saving a pass over the activation.
//!
//! Shape legend: values are N x C x H x W.

use std::collections::HashMap;

use crate::ir::{Graph, NodeId, Op, Storage, ValueId};

/// The (convolution -> batch norm) pairs an evaluation plan folds: the
/// convolution's output is read by that batch norm alone, is not a value the
/// caller keeps, and both nodes belong to the same blocks (so switching a
/// block off drops both or neither). Both values have buffers of their own:
/// no channel slice of a concatenation buffer, no view of them.
pub(crate) fn foldable_batch_norms(graph: &Graph, keep: &[ValueId]) -> Vec<(NodeId, NodeId)> {
    let mut readers: HashMap<ValueId, Vec<NodeId>> = HashMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        for &v in &node.inputs {
            readers.entry(v).or_default().push(NodeId(i));
        }
    }
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
        let own = |v: ValueId| {
            matches!(graph.value(v).storage, Storage::Own)
                && !graph
                    .values
                    .iter()
                    .any(|u| matches!(u.storage, Storage::ChannelsOf { parent, .. } if parent == v))
        };
        let same_blocks = graph
            .blocks
            .iter()
            .all(|b| b.nodes.contains(&NodeId(i)) == b.nodes.contains(reader));
        if matches!(bn.op, Op::BatchNorm { .. })
            && v != graph.output
            && !keep.contains(&v)
            && graph.shape(bn.output) == graph.shape(v)
            && own(v)
            && own(bn.output)
            && same_blocks
        {
            folds.push((NodeId(i), *reader));
        }
    }
    folds
}

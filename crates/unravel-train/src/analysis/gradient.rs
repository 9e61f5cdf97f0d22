//! Gradient magnitude by path length (Veit et al. 2016, section 6): feed a
//! batch forward through the whole network, then in backward sample k
//! blocks and propagate through only their branches and only the shortcuts
//! of the others: the gradient of one path of length k, measured at the
//! input of the first residual block. Multiplied by the number of paths of
//! each length, it gives each length's share of the total gradient.

use num_bigint::BigUint;
use rand::seq::IndexedRandom;
use rand::Rng;
use unravel_device::Gpu;
use unravel_graph::{BlockId, Graph, Plan, ValueId};

use super::paths::{fraction, path_counts};

/// Mean and standard deviation over samples of the per-image gradient norm
/// for paths of length k.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LengthGradient {
    pub k: usize,
    pub mean: f64,
    pub std: f64,
}

/// The value whose gradient is measured: the input of the first residual
/// block (compile the plan with it kept).
pub fn first_block_input(graph: &Graph) -> Option<ValueId> {
    graph.residual_blocks().next().map(|(_, b)| b.input)
}

/// Per-image L2 norms of a batch gradient, averaged over the batch.
fn mean_norm(grad: &[f32], batch: usize) -> f64 {
    let per = grad.len() / batch.max(1);
    grad.chunks(per.max(1))
        .map(|g| g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
        .sum::<f64>()
        / batch.max(1) as f64
}

/// For k = 0..=n: the gradient of sampled paths of length k, over `samples`
/// draws of k blocks on one batch.
pub fn gradient_by_length(
    gpu: &Gpu,
    graph: &Graph,
    plan: &Plan,
    images: &[f32],
    labels: &[u32],
    samples: usize,
    rng: &mut impl Rng,
) -> Result<Vec<LengthGradient>, super::AnalysisError> {
    let at = first_block_input(graph).ok_or(super::AnalysisError::NoResidualBlocks)?;
    let blocks: Vec<BlockId> = graph.residual_blocks().map(|(id, _)| id).collect();
    let mut out = Vec::new();
    for k in 0..=blocks.len() {
        let mut norms = Vec::new();
        for _ in 0..samples.max(1) {
            let through: Vec<BlockId> = blocks.choose_multiple(rng, k).copied().collect();
            plan.path_gradients(gpu, images, labels, &through)?;
            norms.push(mean_norm(&plan.read_value_grad(gpu, at)?, labels.len()));
        }
        let mean = norms.iter().sum::<f64>() / norms.len() as f64;
        let var = norms.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / norms.len() as f64;
        out.push(LengthGradient {
            k,
            mean,
            std: var.sqrt(),
        });
    }
    Ok(out)
}

/// Each length's share of the total gradient: mean gradient of one path of
/// that length times the fraction of paths that have it, normalised to sum
/// to 1.
pub fn contributions(by_length: &[LengthGradient]) -> Vec<f64> {
    let n = by_length.len() - 1;
    let counts: Vec<BigUint> = path_counts(n);
    let raw: Vec<f64> = by_length
        .iter()
        .map(|g| g.mean * fraction(&counts[g.k], n))
        .collect();
    let total: f64 = raw.iter().sum();
    raw.iter()
        .map(|r| r / total.max(f64::MIN_POSITIVE))
        .collect()
}

/// The shortest range of lengths [lo, hi] whose shares add up to `share`.
pub fn shortest_share(shares: &[f64], share: f64) -> (usize, usize) {
    let mut best = (0, shares.len().saturating_sub(1));
    for lo in 0..shares.len() {
        let mut sum = 0.0;
        for (hi, s) in shares.iter().enumerate().skip(lo) {
            sum += s;
            if sum >= share - 1e-12 {
                if hi - lo < best.1 - best.0 {
                    best = (lo, hi);
                }
                break;
            }
        }
    }
    best
}

//! Stochastic depth (Huang et al. 2016): while training, residual block l of
//! L survives a mini-batch with probability p_l = 1 - (l / L)(1 - p_L), one
//! Bernoulli draw per block per mini-batch; a dropped block's branch is not
//! computed at all. At test time every branch is scaled by its p_l.

use rand::Rng;
use unravel_device::Gpu;
use unravel_graph::{BlockId, Graph, Plan, Result};

/// The linear-decay rule with survival probability `p_last` for the last
/// block (the paper's default is 0.5).
#[derive(Clone, Debug)]
pub struct StochasticDepth {
    pub p_last: f64,
    /// (block, survival probability) for every residual block, in order.
    blocks: Vec<(BlockId, f64)>,
}

impl StochasticDepth {
    pub fn new(graph: &Graph, p_last: f64) -> StochasticDepth {
        let ids: Vec<BlockId> = graph.residual_blocks().map(|(id, _)| id).collect();
        let total = ids.len();
        let blocks = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| (id, survival(i + 1, total, p_last)))
            .collect();
        StochasticDepth { p_last, blocks }
    }

    /// (block, p_l) for every residual block.
    pub fn probabilities(&self) -> &[(BlockId, f64)] {
        &self.blocks
    }

    /// Expected number of active blocks per mini-batch: sum of p_l.
    pub fn expected_active(&self) -> f64 {
        self.blocks.iter().map(|(_, p)| p).sum()
    }

    /// Draws the blocks to switch off for one mini-batch.
    pub fn sample_dropped(&self, rng: &mut impl Rng) -> Vec<BlockId> {
        self.blocks
            .iter()
            .filter(|(_, p)| !rng.random_bool(p.clamp(0.0, 1.0)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Sets every branch's test-time scale to its survival probability on
    /// an evaluation plan.
    pub fn apply_test_scaling(&self, gpu: &Gpu, plan: &mut Plan) -> Result<()> {
        for &(id, p) in &self.blocks {
            plan.set_block_scale(gpu, id, p as f32)?;
        }
        Ok(())
    }
}

/// p_l = 1 - (l / L)(1 - p_L) for block l (counted from 1) of L.
pub fn survival(l: usize, total: usize, p_last: f64) -> f64 {
    1.0 - (l as f64 / total as f64) * (1.0 - p_last)
}

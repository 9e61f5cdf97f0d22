//! Lesion and reordering studies (Veit et al. 2016, section 4): the test
//! error of a trained residual network when blocks are deleted (branch
//! removed, shortcut kept) or swapped at test time.
//!
//! Deleting a downsampling block keeps its shortcut, the part that changes
//! the shape (option A: stride-2 subsampling with zero-padded channels;
//! option B: the projection), so the rest of the network still fits.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use unravel_device::Gpu;
use unravel_graph::{BlockId, BlockKind, Graph, ModelState, ParamId};

use crate::data::Loader;
use crate::evaluate::Evaluator;

/// Test error with one block deleted.
#[derive(Clone, Debug, PartialEq)]
pub struct SingleLesion {
    pub block: String,
    pub stage: usize,
    pub downsampling: bool,
    pub error: f64,
}

/// Mean and standard deviation of the test error over samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorStats {
    pub k: usize,
    pub mean: f64,
    pub std: f64,
}

fn stats(k: usize, errors: &[f64]) -> ErrorStats {
    let n = errors.len().max(1) as f64;
    let mean = errors.iter().sum::<f64>() / n;
    let var = errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n;
    ErrorStats {
        k,
        mean,
        std: var.sqrt(),
    }
}

/// Error of the intact model and with each residual block deleted alone.
pub fn single_deletions(
    eval: &mut Evaluator,
    graph: &Graph,
    test: &Loader,
) -> unravel_graph::Result<(f64, Vec<SingleLesion>)> {
    let intact = 1.0 - eval.run(test, &[])?.accuracy;
    let mut rows = Vec::new();
    for (id, block) in graph.residual_blocks() {
        let BlockKind::Residual { downsampling, .. } = block.kind else {
            continue;
        };
        rows.push(SingleLesion {
            block: block.name.clone(),
            stage: block.stage,
            downsampling,
            error: 1.0 - eval.run(test, &[id])?.accuracy,
        });
    }
    Ok((intact, rows))
}

/// Error with k randomly chosen blocks deleted, k = 1..=n, over `samples`
/// draws each.
pub fn k_deletions(
    eval: &mut Evaluator,
    graph: &Graph,
    test: &Loader,
    samples: usize,
    rng: &mut impl Rng,
) -> unravel_graph::Result<Vec<ErrorStats>> {
    let blocks: Vec<BlockId> = graph.residual_blocks().map(|(id, _)| id).collect();
    let mut out = Vec::new();
    for k in 1..=blocks.len() {
        let mut errors = Vec::new();
        for _ in 0..samples {
            let dropped: Vec<BlockId> = blocks.choose_multiple(rng, k).copied().collect();
            errors.push(1.0 - eval.run(test, &dropped)?.accuracy);
        }
        out.push(stats(k, &errors));
    }
    Ok(out)
}

/// Pairs of residual blocks with identical parameter shapes (swappable).
pub fn swappable_pairs(graph: &Graph) -> Vec<(BlockId, BlockId)> {
    let signature = |id: BlockId| -> Vec<Vec<usize>> {
        params_of(graph, id)
            .iter()
            .map(|p| graph.params[p.0].shape.clone())
            .chain(
                bn_of(graph, id)
                    .iter()
                    .map(|&i| vec![graph.bn_states[i].channels]),
            )
            .collect()
    };
    let blocks: Vec<BlockId> = graph.residual_blocks().map(|(id, _)| id).collect();
    let mut pairs = Vec::new();
    for (i, &a) in blocks.iter().enumerate() {
        for &b in &blocks[i + 1..] {
            let same_shape = graph.shape(graph.blocks[a.0].input)
                == graph.shape(graph.blocks[b.0].input)
                && graph.shape(graph.blocks[a.0].output) == graph.shape(graph.blocks[b.0].output);
            if same_shape && signature(a) == signature(b) {
                pairs.push((a, b));
            }
        }
    }
    pairs
}

fn params_of(graph: &Graph, block: BlockId) -> Vec<ParamId> {
    graph.blocks[block.0]
        .nodes
        .iter()
        .flat_map(|n| graph.node_params(graph.node(*n)))
        .collect()
}

fn bn_of(graph: &Graph, block: BlockId) -> Vec<usize> {
    graph.blocks[block.0]
        .nodes
        .iter()
        .filter_map(|n| match graph.node(*n).op {
            unravel_graph::Op::BatchNorm { state, .. } => Some(state),
            _ => None,
        })
        .collect()
}

/// Exchanges the parameters and statistics of two blocks of identical
/// shape: the network now runs them in each other's place.
pub fn swap_blocks(
    gpu: &Gpu,
    graph: &Graph,
    state: &ModelState,
    a: BlockId,
    b: BlockId,
) -> unravel_graph::Result<()> {
    for (pa, pb) in params_of(graph, a).into_iter().zip(params_of(graph, b)) {
        let va = gpu.read(&state.param(pa)?)?;
        let vb = gpu.read(&state.param(pb)?)?;
        state.write_param(gpu, pa, &vb)?;
        state.write_param(gpu, pb, &va)?;
    }
    for (ia, ib) in bn_of(graph, a).into_iter().zip(bn_of(graph, b)) {
        let (_, ma, va) = state.read_bn(gpu, ia)?;
        let (_, mb, vb) = state.read_bn(gpu, ib)?;
        state.write_bn(gpu, ia, &mb, &vb)?;
        state.write_bn(gpu, ib, &ma, &va)?;
    }
    Ok(())
}

/// Error when k random disjoint pairs of same-shape blocks are swapped,
/// k = 1..=max, over `samples` draws each; the model is restored after
/// every draw.
pub fn k_reorderings(
    eval: &mut Evaluator,
    gpu: &Gpu,
    graph: &Graph,
    state: &ModelState,
    test: &Loader,
    samples: usize,
    rng: &mut impl Rng,
) -> unravel_graph::Result<Vec<ErrorStats>> {
    let pairs = swappable_pairs(graph);
    let mut out = Vec::new();
    let most = graph.residual_blocks().count() / 2;
    for k in 1..=most {
        let mut errors = Vec::new();
        for _ in 0..samples {
            // k pairs that share no block.
            let mut shuffled = pairs.clone();
            shuffled.shuffle(rng);
            let mut used = Vec::new();
            let mut chosen = Vec::new();
            for (a, b) in shuffled {
                if chosen.len() == k {
                    break;
                }
                if !used.contains(&a) && !used.contains(&b) {
                    used.extend([a, b]);
                    chosen.push((a, b));
                }
            }
            if chosen.len() < k {
                continue;
            }
            for &(a, b) in &chosen {
                swap_blocks(gpu, graph, state, a, b)?;
            }
            let result = eval.run(test, &[]);
            for &(a, b) in chosen.iter().rev() {
                swap_blocks(gpu, graph, state, a, b)?;
            }
            errors.push(1.0 - result?.accuracy);
        }
        if !errors.is_empty() {
            out.push(stats(k, &errors));
        }
    }
    Ok(out)
}

//! The analyses of "Residual Networks Behave Like Ensembles of Relatively
//! Shallow Networks" (Veit et al. 2016).

pub mod gradient;
pub mod lesion;
pub mod paths;

/// What can go wrong in an analysis.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("the model has no residual blocks to analyse")]
    NoResidualBlocks,
    #[error(transparent)]
    Graph(#[from] unravel_graph::GraphError),
}

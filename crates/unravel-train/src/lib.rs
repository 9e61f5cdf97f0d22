//! Unravel's training crate: the model zoo, datasets, learning-rate
//! schedules, stochastic depth, checkpoints, evaluation, the trainer, and
//! the analyses of "Residual Networks Behave Like Ensembles of Relatively
//! Shallow Networks" ([`analysis`]: lesions, path lengths, gradient by path
//! length).

pub mod analysis;
pub mod checkpoint;
pub mod data;
pub mod dataset_kind;
pub mod evaluate;
pub mod models;
pub mod run_folder;
pub mod schedule;
pub mod stochastic_depth;
pub mod trainer;

pub use dataset_kind::DatasetKind;

pub use unravel_graph as graph;

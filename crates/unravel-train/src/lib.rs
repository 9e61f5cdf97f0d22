//! Unravel's training crate: the model zoo (and, to come, datasets,
//! optimisers, the trainer, checkpoints and the ensemble analyses).

<<<<<<< HEAD
pub mod checkpoint;
=======
pub mod data;
>>>>>>> data
pub mod dataset_kind;
pub mod models;
pub mod schedule;
pub mod stochastic_depth;

pub use dataset_kind::DatasetKind;

pub use unravel_graph as graph;

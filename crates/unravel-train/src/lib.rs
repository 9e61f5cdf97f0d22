//! Unravel's training crate: the model zoo (and, to come, datasets,
//! optimisers, the trainer, checkpoints and the ensemble analyses).

pub mod models;

pub use unravel_graph as graph;

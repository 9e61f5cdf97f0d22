//! Typed errors of graph construction.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GraphError {
    /// Two operands of a node disagree; names the node and both shapes.
    #[error("node {node} ({op}): {message}")]
    Shape {
        node: String,
        op: &'static str,
        message: String,
    },
    #[error("parameter name {0:?} is used twice")]
    DuplicateName(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Device(#[from] unravel_device::DeviceError),
}

pub type Result<T, E = GraphError> = std::result::Result<T, E>;

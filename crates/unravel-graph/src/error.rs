//! Typed errors of graph construction, compilation and execution. Each
//! names the value that is wrong, never a command-line flag: the CLI maps
//! them to its flags.

use thiserror::Error;

use crate::ir::Shape;

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
    #[error("parameter {param} cannot be initialised: {reason}")]
    BadInit { param: String, reason: String },
    #[error("the batch size must be positive")]
    ZeroBatch,
    #[error(
        "a batch of {batch} needs {} of activation memory, {limit}; {}",
        mib(*needed),
        if *largest_batch == 0 { "not even a batch of 1 fits".to_string() }
        else { format!("the largest batch that fits is {largest_batch}") }
    )]
    TooLarge {
        batch: usize,
        needed: u64,
        /// The limit it exceeds, in words.
        limit: String,
        largest_batch: usize,
    },
    #[error("there are no samples to evaluate on")]
    NoSamples,
    #[error("the graph must end in class scores (C x 1 x 1), not {shape}")]
    NotClassScores { shape: Shape },
    #[error("this optimiser does not scale the loss")]
    NoLossScaling,
    #[error("mixed precision needs f16 storage (SHADER_F16), which the adapter {adapter} does not offer; use f32")]
    NoF16 { adapter: String },
    #[error(
        "a batch for this plan is {images} images of {image_shape:?} ({values} values) and {images} labels; got {got_values} values and {got_labels} labels"
    )]
    BatchMismatch {
        images: usize,
        image_shape: Vec<usize>,
        values: usize,
        got_values: usize,
        got_labels: usize,
    },
    #[error("{step} needs a plan compiled in train mode")]
    NeedsTrainPlan { step: &'static str },
    #[error("block {block} is not a residual block")]
    NotResidualBlock { block: usize },
    #[error("the graph has no value {value}")]
    UnknownValue { value: usize },
    #[error(
        "value {value} was not kept by this plan (its buffer is reused during a step); compile the plan with the value in PlanOptions::keep to read it"
    )]
    NotKept { value: usize },
    #[error("value {value} has no gradient in this plan")]
    NoGradient { value: usize },
    #[error("{what} must be contiguous")]
    NotContiguous { what: &'static str },
    #[error("the input has {got} values; the graph takes {expected} ({samples} samples)")]
    InputLength {
        got: usize,
        expected: usize,
        samples: usize,
    },
    #[error(transparent)]
    Device(#[from] unravel_device::DeviceError),
}

pub type Result<T, E = GraphError> = std::result::Result<T, E>;

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

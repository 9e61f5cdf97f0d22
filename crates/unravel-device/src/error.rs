//! Typed errors of the device layer.

use thiserror::Error;

/// Everything that can go wrong between Unravel and the GPU.
#[derive(Debug, Error)]
pub enum DeviceError {
    #[error(
        "no GPU adapter found{detail}.\n\
         On Linux without a GPU driver, install the software Vulkan driver lavapipe:\n\
         \x20   sudo apt-get install -y mesa-vulkan-drivers\n\
         Choose another adapter with --adapter NAME or WGPU_ADAPTER_NAME, or another backend with WGPU_BACKEND=vulkan|metal|dx12."
    )]
    NoAdapter { detail: String },

    #[error("no adapter matches {wanted:?}; available: {available}")]
    AdapterNotFound { wanted: String, available: String },

    #[error("could not open a device on adapter {adapter}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },

    #[error("GPU out of memory while {context}")]
    OutOfMemory { context: String },

    #[error("GPU validation error while {context}: {message}")]
    Validation { context: String, message: String },

    #[error("shader {file} failed to compile: {message}")]
    Shader { file: String, message: String },

    #[error("shader {file} has no entry point {entry:?}")]
    UnknownEntryPoint { file: String, entry: String },

    #[error("kernel {kernel}: binding {binding} is used by the shader but was not provided")]
    MissingBinding { kernel: String, binding: u32 },

    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },

    #[error("{op}: {what} needs the adapter feature {feature}, which this device does not have")]
    MissingFeature {
        op: &'static str,
        what: String,
        feature: &'static str,
    },

    #[error("buffer of {bytes} bytes exceeds the adapter's limit of {limit} bytes ({what})")]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },

    #[error("reading back from the GPU failed: {0}")]
    Readback(String),

    #[error("waiting for the GPU failed: {0}")]
    Poll(String),
}

/// Shorthand for results of the device layer.
pub type Result<T, E = DeviceError> = std::result::Result<T, E>;

/// Builds a [`DeviceError::Shape`]; kernels call it when operands disagree.
pub(crate) fn shape_error(op: &'static str, message: impl Into<String>) -> DeviceError {
    DeviceError::Shape {
        op,
        message: message.into(),
    }
}

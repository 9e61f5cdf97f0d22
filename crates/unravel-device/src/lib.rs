//! Unravel's device layer: a wgpu context, GPU tensors that carry their shape,
//! a registry of WGSL kernels compiled once, and a recorder that submits many
//! dispatches as one command buffer. It knows no models.
//!
//! Every op family has a WGSL file in this crate's `shaders/` folder
//! (forward and backward entry points side by side), a host module in
//! [`kernels`] that validates shapes and prepares [`Dispatch`]es, and a
//! plain-Rust CPU reference in [`reference`] that the tests check the GPU
//! against. A program can add kernels of its own with [`Gpu::add_shader`].

pub mod context;
pub mod dispatch;
pub mod error;
pub mod host_memory;
pub mod kernels;
pub mod reference;
pub mod registry;
pub mod shaders;
pub mod summary;
pub mod tensor;

pub use context::{AdapterOptions, Gpu, USED_FEATURES, WANTED_FEATURES};
pub use dispatch::{grid_1d, Dispatch, Readback, Recorder};
pub use error::{DeviceError, Result};
pub use registry::{BindingKind, Kernel};
pub use summary::AdapterSummary;
pub use tensor::{DType, Tensor};
pub use wgpu;

// The unit tests share tests/common with the integration tests, which name
// this crate by its package name.
#[cfg(test)]
extern crate self as unravel_device;

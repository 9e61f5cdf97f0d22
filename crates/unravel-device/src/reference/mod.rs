//! CPU reference implementations of every kernel, in plain Rust with f64
//! accumulation. Tests check the GPU against them, and check each backward
//! here against central finite differences of the forward.

pub mod batchnorm;
pub mod conv2d;
pub mod copy;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod sgd;
pub mod shortcut;

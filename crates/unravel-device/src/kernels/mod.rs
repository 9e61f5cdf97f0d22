//! Host side of each kernel family: validates shapes, fills the uniform
//! parameters and prepares [`crate::Dispatch`]es. One module per WGSL file.

pub mod batchnorm;
pub mod conv2d;
pub mod copy;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod pool;
pub mod sgd;
pub mod shortcut;

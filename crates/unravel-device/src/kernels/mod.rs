//! Host side of each kernel family: validates shapes, fills the uniform
//! parameters and prepares [`crate::Dispatch`]es. One module per WGSL file.

pub mod batchnorm;
pub(crate) mod checks;
pub mod conv2d;
pub mod copy;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod loss_scale;
pub mod pool;
pub mod sgd;
pub mod shortcut;

/// Whether a kernel overwrites its output or adds to what is there (how a
/// value read by several nodes sums their gradients).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Store {
    #[default]
    Write,
    Add,
}

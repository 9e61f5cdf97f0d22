//! 2-D convolution (`shaders/conv2d.wgsl` and its generated part
//! `shaders/conv2d_generated.wgsl`): forward, input gradient and weight
//! (+ bias) gradient, with PyTorch's semantics and layouts.
//!
//! Shape legend: x `[N, C, H, W]`, w `[K, C/G, KH, KW]` (OIHW), bias `[K]`,
//! y `[N, K, OH, OW]`, with stride S, zero padding P and G groups. x, y, dy
//! and dx may be channel slices of larger NCHW buffers (DenseNet reads a
//! channel prefix of its concatenation buffer and writes into a slice of
//! it); weights and biases must be contiguous.
//!
//! One entry point a pass, each with an options struct:
//! [`conv2d_forward`] ([`ForwardOptions`]: algorithm, epilogue),
//! [`conv2d_backward_input`] ([`InputGradOptions`]: algorithm, write or
//! add) and [`conv2d_backward_weight`] ([`WeightGradOptions`]). Each returns
//! its dispatches in order; the scratch buffers they use live as long as
//! the dispatches.
//!
//! The files: `shape` (the geometry and its checks), `algo` (which
//! [`Conv2dAlgo`] an adapter gets, the subgroup kernels' constants),
//! `window` (window modes and their geometry), `pack` (operand packing),
//! then one file per pass, and `coop`, all three passes on cooperative
//! matrices (tensor cores, experimental), with `coop_check`, the check a
//! device's cooperative matrices pass before they are chosen by default.

mod algo;
mod backward_input;
mod backward_weight;
mod coop;
mod coop_check;
mod forward;
mod pack;
mod params;
mod shape;
#[cfg(test)]
mod tests;
mod window;

pub use algo::Conv2dAlgo;
pub use backward_input::{conv2d_backward_input, InputGradOptions};
pub use backward_weight::{conv2d_backward_weight, WeightGradOptions};
pub use coop::CoopTile;
pub use forward::{conv2d_forward, Conv2dEpilogue, ForwardOptions};
pub use shape::Conv2dShape;

const FILE: &str = "conv2d.wgsl";
/// Invocations per workgroup of every entry point but the tiled forward.
const GROUP: u32 = 64;
/// Rows (pixels) per invocation of the forward and input-gradient subgroup
/// kernels: each B value a lane receives feeds that many FMAs.
const PIXEL_ROWS: u32 = 4;
/// Rows (weight columns) per invocation of the weight gradient.
const WEIGHT_ROWS: u32 = 4;
/// In the weight gradient's window mode: the 3 taps of 2 (ci, ky) pairs.
const WINDOW_WEIGHT_ROWS: u32 = 6;
/// Pixels and channels of a tile of the tiled forward (TM, TN in WGSL).
const TILE: u32 = 64;
/// Output channels one invocation of the subgroup kernels keeps in registers.
/// 32 (8 vec4 blocks; with 4 rows, 32 vec4 accumulators a lane) halves the
/// loads of A per FMA where a group has 32+ channels; on lavapipe that was
/// worth 0-5% over 16 (and 16 columns x 8 rows was 10-20% slower than x 4).
const MAX_COLS: usize = 32;

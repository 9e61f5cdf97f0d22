//! Copies between NCHW views (`shaders/copy.wgsl`): a dense block's input
//! copied into the first channels of its concatenation buffer, and that
//! slice's gradient copied back out (a copy is its own backward).
//!
//! Shape legend: N batch, C channels, H x W pixels; either view may be a
//! channel slice of a larger buffer.

use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::{shape_error, Result};
use crate::tensor::Tensor;

const FILE: &str = "copy.wgsl";
const GROUP: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    total: u32,
    per: u32,
    src: [u32; 2],
    dst: [u32; 2],
    _pad: [u32; 2],
}

/// dst = src for two views of the same shape; either may be a channel slice
/// of a larger buffer. Each is f32 or f16, so the copy also converts (f32
/// to f16 rounds to nearest); a u32 tensor is refused.
pub fn copy_forward(gpu: &Gpu, src: &Tensor, dst: &Tensor) -> Result<Dispatch> {
    if src.shape() != dst.shape() {
        return Err(shape_error(
            "copy",
            format!(
                "source {:?} and destination {:?} differ",
                src.shape(),
                dst.shape()
            ),
        ));
    }
    if !src.dtype().is_float() || !dst.dtype().is_float() {
        return Err(shape_error("copy", "operands must be f32 or f16"));
    }
    let total = src.numel();
    let per = if src.shape().len() <= 1 {
        total
    } else {
        src.sample_len()
    };
    let (sv, dv) = (src.view_params(), dst.view_params());
    // Quads apply when every row starts 16-byte aligned and holds whole quads.
    let q = if [per as u32, sv[0], sv[1], dv[0], dv[1]]
        .iter()
        .all(|v| v % 4 == 0)
    {
        4
    } else {
        1
    };
    let params = Params {
        total: (total / q) as u32,
        per: (per / q).max(1) as u32,
        src: [sv[0] / q as u32, sv[1] / q as u32],
        dst: [dv[0] / q as u32, dv[1] / q as u32],
        _pad: [0; 2],
    };
    let entry = if q == 4 {
        "copy_forward_vec4"
    } else {
        "copy_forward"
    };
    gpu.dispatch(FILE, entry, &params, &[src, dst], grid_1d(total / q, GROUP))
}

//! Copies between NCHW views (`shaders/copy.wgsl`): channel concatenation
//! and its backward, the split.
//!
//! Shape legend: N batch, C channels, H x W pixels. A concatenation needs no
//! dedicated kernel: each input is copied into its channel slice of the
//! output, and the backward copies each slice of the output gradient back
//! out. Writing the producers straight into a slice avoids even that copy;
//! these dispatches are for the places where that is not possible.

use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::{shape_error, Result};
use crate::tensor::{DType, Tensor};

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
/// of a larger buffer. Both must be f32 (the copy moves 32-bit words, but a
/// u32 tensor passed here is almost certainly a mistake).
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
    if src.dtype() != DType::F32 || dst.dtype() != DType::F32 {
        return Err(shape_error("copy", "operands must be f32"));
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

/// The channel slices of `out` that the `parts` (in order) occupy, after
/// checking that N, H, W agree and the channel counts add up to out's.
fn channel_slices(op: &'static str, parts: &[&Tensor], out: &Tensor) -> Result<Vec<Tensor>> {
    let os = out.shape();
    if os.len() != 4 {
        return Err(shape_error(op, format!("output {os:?} is not NCHW")));
    }
    if parts.is_empty() {
        return Err(shape_error(op, "no inputs"));
    }
    for t in parts {
        let s = t.shape();
        if s.len() != 4 || s[0] != os[0] || s[2] != os[2] || s[3] != os[3] || s[1] == 0 {
            return Err(shape_error(
                op,
                format!("input {s:?} does not fit output {os:?} along channels"),
            ));
        }
    }
    let sum: usize = parts.iter().map(|t| t.shape()[1]).sum();
    if sum != os[1] {
        return Err(shape_error(
            op,
            format!("input channels add up to {sum}, output has {}", os[1]),
        ));
    }
    let mut c0 = 0;
    let mut slices = Vec::with_capacity(parts.len());
    for t in parts {
        let c = t.shape()[1];
        slices.push(out.channel_slice(c0, c0 + c)?);
        c0 += c;
    }
    Ok(slices)
}

/// out = concat(inputs) along channels: one copy per input into its slice.
/// `out` may itself be a channel slice of a larger buffer.
pub fn concat_forward(gpu: &Gpu, inputs: &[&Tensor], out: &Tensor) -> Result<Vec<Dispatch>> {
    let slices = channel_slices("concat_forward", inputs, out)?;
    inputs
        .iter()
        .zip(&slices)
        .map(|(x, slice)| copy_forward(gpu, x, slice))
        .collect()
}

/// grads[k] = the channel slice of `dout` that input k produced.
pub fn concat_backward(gpu: &Gpu, dout: &Tensor, grads: &[&Tensor]) -> Result<Vec<Dispatch>> {
    let slices = channel_slices("concat_backward", grads, dout)?;
    grads
        .iter()
        .zip(&slices)
        .map(|(g, slice)| copy_forward(gpu, slice, g))
        .collect()
}

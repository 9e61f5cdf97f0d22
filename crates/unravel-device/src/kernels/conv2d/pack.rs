//! Packing operand B of the subgroup kernels into vec4 column blocks.
//!
//! Shape legend: G groups, `blocks` column blocks a group, NV vec4s a
//! block; packed B is [G * blocks][k_len][4 * NV], zero-padded.

use super::params::Params;
use super::window::WindowMode;
use super::{FILE, GROUP};
use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::Result;
use crate::tensor::Tensor;

/// Packs B (`b`, read through binding 2) with packing entry point `entry`
/// for window mode `mode` (which decides the input gradient's order of
/// taps). Returns the packing dispatch and the packed buffer.
pub(super) fn pack_weights(
    gpu: &Gpu,
    entry: &str,
    params: &Params,
    nv: u32,
    mode: WindowMode,
    [a, b]: [&Tensor; 2],
    k_len: usize,
) -> Result<(Dispatch, Tensor)> {
    let len = (params.groups * params.blocks) as usize * k_len * 4 * nv as usize;
    let packed = gpu.zeros(&[len])?;
    let grid = grid_1d(len, GROUP);
    let tensors = [a, b, b, &packed];
    let constants = [("NV", nv as f64), ("WINDOW", mode.wgsl() as f64)];
    let d = gpu.dispatch_with(FILE, entry, &constants, params, &tensors, grid)?;
    Ok((d, packed))
}

/// Packs dy for the weight gradient ([`pack_weights`]'s layout, `k` =
/// pixels).
pub(super) fn pack_dy(
    gpu: &Gpu,
    params: &Params,
    nv: u32,
    dy: &Tensor,
    pixels: usize,
) -> Result<(Dispatch, Tensor)> {
    let gb = params.groups * params.blocks;
    let packed = gpu.zeros(&[gb as usize * pixels * 4 * nv as usize])?;
    let [gx, gy, _] = grid_1d(pixels, GROUP);
    // dy is read through binding 2; the unused ones get the (f32) packed
    // buffer, which fits every binding's element type.
    let tensors = [&packed, dy, &packed, &packed, &packed];
    let constants = [("NV", nv as f64)];
    let d = gpu.dispatch_with(
        FILE,
        "conv2d_pack_dy",
        &constants,
        params,
        &tensors,
        [gx, gy, gb],
    )?;
    Ok((d, packed))
}

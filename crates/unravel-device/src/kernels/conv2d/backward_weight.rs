//! The weight (and bias) gradient: dw = sum over pixels of dy x^T, in
//! splits of pixels whose partial sums a second pass reduces.
//!
//! Shape legend: x [N, C, H, W], dy [N, K, OH, OW], dw [K, C/G, KH, KW],
//! dbias [K]; partials [splits, K, C/G*KH*KW (+1 for the bias)].

use super::algo::{Conv2dAlgo, Lanes, SubgroupConstants};
use super::coop::{self, Pass};
use super::pack::pack_dy;
use super::params::Params;
use super::shape::Conv2dShape;
use super::window::{column_blocks, vec4_shift, WindowMode};
use super::{FILE, GROUP, WEIGHT_ROWS, WINDOW_WEIGHT_ROWS};
use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::Result;
use crate::kernels::checks;
use crate::tensor::Tensor;

/// Options of [`conv2d_backward_weight`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightGradOptions {
    /// The algorithm; `None` picks the adapter's.
    pub algo: Option<Conv2dAlgo>,
}

/// dw (and dbias when given) = the parameter gradients for output gradient
/// dy (overwritten, not accumulated). Returns the dispatches in order
/// (packing, the split sums, their reduction).
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    dbias: Option<&Tensor>,
    options: &WeightGradOptions,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "conv2d_backward_weight";
    let algo = Conv2dAlgo::for_backward(options.algo, gpu);
    let lanes = Lanes::for_adapter(gpu);
    s.validate()?;
    algo.require(gpu, OP)?;
    checks::activation(OP, "x", x, &s.input_shape())?;
    checks::activation(OP, "dy", dy, &s.output_shape())?;
    checks::contiguous(OP, "dw", dw, &s.weight_shape())?;
    if let Some(b) = dbias {
        checks::contiguous(OP, "dbias", b, &[s.c_out])?;
    }
    let mut params = Params::new(s);
    params.a = x.view_params();
    params.b = dy.view_params();
    params.o = [dw.offset() as u32, 0];
    params.has_bias = dbias.is_some() as u32;
    params.v_off = dbias.map_or(0, |b| b.offset() as u32);
    let dbias = dbias.unwrap_or(dw);
    // The bias gradient is one more row of ones.
    let r1 = s.cin_g() * s.kh * s.kw + params.has_bias as usize;
    if algo == Conv2dAlgo::CoopMatrix {
        let pixels = s.n * s.out_h() * s.out_w();
        let chunk = split_chunk(pixels);
        params.chunk = chunk as u32;
        params.splits = pixels.div_ceil(chunk) as u32;
        let partials = gpu.zeros(&[params.splits as usize, s.c_out, r1])?;
        let m_nc = coop::extent(s, Pass::WeightGrad, params.has_bias != 0);
        let tensors = [x, dy, &partials, &partials];
        let pass1 = coop::dispatch(gpu, Pass::WeightGrad, &params, tensors, m_nc, false)?;
        let grid = grid_1d(s.c_out * r1, GROUP);
        let entry = "conv2d_backward_weight_reduce";
        let pass2 = gpu.dispatch(FILE, entry, &params, &[&partials, dy, dbias, dw], grid)?;
        return Ok(vec![pass1, pass2]);
    }
    if !algo.uses_subgroups() {
        let grid = grid_1d(s.c_out * r1, GROUP);
        let entry = "conv2d_backward_weight_direct";
        return Ok(vec![gpu.dispatch(
            FILE,
            entry,
            &params,
            &[x, dy, dbias, dw],
            grid,
        )?]);
    }
    let (nv, blocks) = column_blocks(s.cout_g());
    params.blocks = blocks;
    let pixels = s.n * s.out_h() * s.out_w();
    let wide = algo == Conv2dAlgo::SubgroupWide;
    let mode = WindowMode::for_weights(s, params.has_bias != 0, lanes == Lanes::Broadcast && wide);
    let mut chunk = split_chunk(pixels);
    if mode.is_on() {
        // Splits of whole output rows: chunks stop at a row's end.
        chunk = chunk.next_multiple_of(s.out_w());
    }
    params.chunk = chunk as u32;
    params.splits = pixels.div_ceil(chunk) as u32;
    let packed = pack_dy(gpu, &params, nv, dy, pixels)?;
    let partials = gpu.zeros(&[params.splits as usize, s.c_out, r1])?;
    let rows = if mode.is_on() {
        WINDOW_WEIGHT_ROWS
    } else {
        WEIGHT_ROWS
    };
    let grid = [
        r1.div_ceil((rows * GROUP) as usize) as u32,
        blocks * s.groups as u32,
        params.splits,
    ];
    let entry = if mode.is_on() {
        "conv2d_backward_weight_window"
    } else {
        "conv2d_backward_weight_sg"
    };
    // Binding 6 (vec4 stores) is unused here; 7 is x as vec4s. Binding 3
    // (the epilogue vector) is unused: the f32 partials fill it.
    let tensors = [x, dy, &partials, &partials, &packed.1, &partials, x];
    let mut constants = SubgroupConstants { nv, rows, lanes }.pipeline_constants();
    // A chunk starts at a multiple of 8 output columns, its windows at
    // x = ox*S - P.
    let a4_shift = vec4_shift(mode, x, s.h * s.w, s.w, -(s.pad as i64));
    constants.push(("WINDOW", mode.wgsl() as f64));
    constants.push(("A4_SHIFT", a4_shift as f64));
    let pass1 = gpu.dispatch_with(FILE, entry, &constants, &params, &tensors, grid)?;
    let grid = grid_1d(s.c_out * r1, GROUP);
    let entry = "conv2d_backward_weight_reduce";
    let pass2 = gpu.dispatch(FILE, entry, &params, &[&partials, dy, dbias, dw], grid)?;
    Ok(vec![packed.0, pass1, pass2])
}

/// Output pixels per split of the weight-gradient reduction: long enough to
/// amortise each split's partial sums, short enough to give both the CPU's
/// cores (or a GPU's many) enough workgroups.
fn split_chunk(pixels: usize) -> usize {
    (pixels / 16).clamp(64, 1024)
}

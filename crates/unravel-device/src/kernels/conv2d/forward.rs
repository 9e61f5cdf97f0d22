//! The forward pass: y = epilogue(conv(x, w)).
//!
//! Shape legend: x [N, C, H, W], w [K, C/G, KH, KW], y [N, K, OH, OW];
//! the epilogue's vector is [K] (bias) or [2, K] (scale, shift).

use super::algo::{Conv2dAlgo, Lanes, SubgroupConstants};
use super::coop::{self, Pass};
use super::pack::pack_weights;
use super::params::Params;
use super::shape::Conv2dShape;
use super::window::{
    column_blocks, pixel_grid, vec4_shift, vec4_stores, WindowConstants, WindowMode,
};
use super::{FILE, GROUP, TILE};
use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::Result;
use crate::kernels::checks;
use crate::tensor::Tensor;

/// What the forward applies to each output y[n, k, ..] as it stores it.
#[derive(Clone, Copy, Debug, Default)]
pub enum Conv2dEpilogue<'a> {
    /// y = conv.
    #[default]
    None,
    /// y = conv + bias[k].
    Bias(&'a Tensor),
    /// y = conv * scale_shift[0, k] + scale_shift[1, k], then max(y, 0) if
    /// `relu`: an evaluation-mode batch norm (and its ReLU) folded into the
    /// convolution, see `batchnorm_fold`.
    Affine { scale_shift: &'a Tensor, relu: bool },
}

/// Options of [`conv2d_forward`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardOptions<'a> {
    /// The algorithm; `None` picks the adapter's for this shape.
    pub algo: Option<Conv2dAlgo>,
    pub epilogue: Conv2dEpilogue<'a>,
}

impl ForwardOptions<'_> {
    /// No epilogue, with algorithm `algo` (`None`: the adapter's).
    pub fn with_algo(algo: Option<Conv2dAlgo>) -> Self {
        ForwardOptions {
            algo,
            epilogue: Conv2dEpilogue::None,
        }
    }
}

/// y = epilogue(conv(x, w)). Returns the dispatches in order (packing
/// first); the scratch buffers they use live as long as they do.
pub fn conv2d_forward(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    y: &Tensor,
    options: &ForwardOptions,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "conv2d_forward";
    let algo = Conv2dAlgo::for_forward(options.algo, gpu, s.cout_g());
    let lanes = Lanes::for_adapter(gpu);
    s.validate()?;
    algo.require(gpu, OP)?;
    checks::activation(OP, "x", x, &s.input_shape())?;
    checks::contiguous(OP, "w", w, &s.weight_shape())?;
    checks::activation(OP, "y", y, &s.output_shape())?;
    let mut params = Params::new(s);
    params.a = x.view_params();
    params.b = [w.offset() as u32, 0];
    params.o = y.view_params();
    let v = match options.epilogue {
        Conv2dEpilogue::None => None,
        Conv2dEpilogue::Bias(bias) => {
            checks::contiguous(OP, "bias", bias, &[s.c_out])?;
            params.has_bias = 1;
            Some(bias)
        }
        Conv2dEpilogue::Affine { scale_shift, relu } => {
            checks::contiguous(OP, "scale_shift", scale_shift, &[2, s.c_out])?;
            params.affine = 1;
            params.relu = relu as u32;
            Some(scale_shift)
        }
    };
    params.v_off = v.map_or(0, |t| t.offset() as u32);
    // Without an epilogue vector, any buffer fills the unused binding.
    let v = v.unwrap_or(w);
    let pixels = s.n * s.out_h() * s.out_w();
    if algo == Conv2dAlgo::CoopMatrix {
        let m_nc = coop::extent(s, Pass::Forward, false);
        let d = coop::dispatch(gpu, Pass::Forward, &params, [x, w, v, y], m_nc, false)?;
        return Ok(vec![d]);
    }
    if !algo.uses_subgroups() {
        let (entry, grid) = if algo == Conv2dAlgo::Tiled {
            let tiles = s.cout_g().div_ceil(TILE as usize) as u32;
            params.blocks = tiles;
            let [gx, gy, _] = grid_1d(pixels.div_ceil(TILE as usize), 1);
            ("conv2d_forward_tiled", [gx, gy, tiles * s.groups as u32])
        } else {
            ("conv2d_forward_direct", grid_1d(pixels * s.c_out, GROUP))
        };
        return Ok(vec![gpu.dispatch(
            FILE,
            entry,
            &params,
            &[x, w, v, y],
            grid,
        )?]);
    }
    let (nv, blocks) = column_blocks(s.cout_g());
    params.blocks = blocks;
    let r_len = s.cin_g() * s.kh * s.kw;
    let entry = "conv2d_pack_forward_weights";
    let packed = pack_weights(gpu, entry, &params, nv, WindowMode::Off, [x, w], r_len)?;
    let wide = algo == Conv2dAlgo::SubgroupWide;
    let mode = WindowMode::for_pixels(s, false, lanes == Lanes::Broadcast, wide);
    let rows = mode.rows(nv, wide);
    let [gx, gy, _] = pixel_grid(mode, pixels, s.n * s.out_h(), s.out_w(), rows);
    let grid = [gx, gy, blocks * s.groups as u32];
    // Bindings 6 and 7 are y and x again, as vec4s.
    let tensors = [x, w, v, y, &packed.1, y, x];
    let entry = if mode.is_on() {
        "conv2d_forward_window"
    } else {
        "conv2d_forward_sg"
    };
    let window = WindowConstants {
        mode,
        store4: vec4_stores(mode, y, s.out_h() * s.out_w(), s.out_w(), rows),
        // A window starts at x = ox*S - P.
        a4_shift: vec4_shift(mode, x, s.h * s.w, s.w, -(s.pad as i64)),
    };
    let mut constants = SubgroupConstants { nv, rows, lanes }.pipeline_constants();
    constants.extend(window.pipeline_constants());
    let conv = gpu.dispatch_with(FILE, entry, &constants, &params, &tensors, grid)?;
    Ok(vec![packed.0, conv])
}

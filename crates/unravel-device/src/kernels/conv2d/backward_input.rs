//! The input gradient: dx = conv_transpose(dy, w), written or added.
//!
//! Shape legend: dy [N, K, OH, OW], w [K, C/G, KH, KW], dx [N, C, H, W].

use super::algo::{Conv2dAlgo, Lanes, SubgroupConstants};
use super::coop::{self, Pass};
use super::pack::pack_weights;
use super::params::Params;
use super::shape::Conv2dShape;
use super::window::{
    column_blocks, pixel_grid, vec4_shift, vec4_stores, WindowConstants, WindowMode,
};
use super::{FILE, GROUP};
use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::Result;
use crate::kernels::{checks, Store};
use crate::tensor::Tensor;

/// Options of [`conv2d_backward_input`].
#[derive(Clone, Copy, Debug, Default)]
pub struct InputGradOptions {
    /// The algorithm; `None` picks the adapter's.
    pub algo: Option<Conv2dAlgo>,
    /// Overwrite dx, or add to it (how a value read by several nodes sums
    /// their gradients without an extra pass).
    pub store: Store,
}

impl InputGradOptions {
    /// Overwriting dx, with algorithm `algo` (`None`: the adapter's).
    pub fn with_algo(algo: Option<Conv2dAlgo>) -> Self {
        InputGradOptions {
            algo,
            store: Store::Write,
        }
    }
}

/// dx (=, or += with [`Store::Add`]) the input gradient for output
/// gradient dy. Returns the dispatches in order (packing first).
pub fn conv2d_backward_input(
    gpu: &Gpu,
    s: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    options: &InputGradOptions,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "conv2d_backward_input";
    let algo = Conv2dAlgo::for_backward(options.algo, gpu);
    let lanes = Lanes::for_adapter(gpu);
    s.validate()?;
    algo.require(gpu, OP)?;
    checks::activation(OP, "dy", dy, &s.output_shape())?;
    checks::contiguous(OP, "w", w, &s.weight_shape())?;
    checks::activation(OP, "dx", dx, &s.input_shape())?;
    let accumulate = ("ACCUMULATE", (options.store == Store::Add) as u8 as f64);
    let mut params = Params::new(s);
    params.a = dy.view_params();
    params.b = [w.offset() as u32, 0];
    params.o = dx.view_params();
    if algo == Conv2dAlgo::CoopMatrix {
        let m_nc = coop::extent(s, Pass::InputGrad, false);
        let add = options.store == Store::Add;
        let d = coop::dispatch(gpu, Pass::InputGrad, &params, [dy, w, w, dx], m_nc, add)?;
        return Ok(vec![d]);
    }
    if !algo.uses_subgroups() {
        let grid = grid_1d(s.n * s.c_in * s.h * s.w, GROUP);
        let entry = "conv2d_backward_input_direct";
        let tensors = [dy, w, w, dx];
        let d = gpu.dispatch_with(FILE, entry, &[accumulate], &params, &tensors, grid)?;
        return Ok(vec![d]);
    }
    let (nv, blocks) = column_blocks(s.cin_g());
    params.blocks = blocks;
    let k_len = s.cout_g() * s.kh * s.kw;
    let wide = algo == Conv2dAlgo::SubgroupWide;
    let mode = WindowMode::for_pixels(s, true, lanes == Lanes::Broadcast, wide);
    // At stride 2 a lane's pixels share half as many multiply-adds per
    // window: 8 of them (4 with two taps, 4 with one).
    let rows = mode.rows(nv, wide);
    let entry = "conv2d_pack_backward_input_weights";
    let packed = pack_weights(gpu, entry, &params, nv, mode, [dy, w], k_len)?;
    let blocks_z = blocks * s.groups as u32;
    let grid = if mode == WindowMode::InputGradS2 {
        // S phases (in y only), alternating along the workgroups (see the
        // shader), each a whole number of workgroups.
        let lanes = s.n * s.h.div_ceil(s.stride) * s.w.div_ceil(rows as usize);
        let per_phase = lanes.div_ceil(GROUP as usize) * GROUP as usize;
        let [gx, gy, _] = grid_1d(s.stride * per_phase, GROUP);
        [gx, gy, blocks_z]
    } else {
        // S*S phases, one per z slice.
        let per_phase = s.n * s.h.div_ceil(s.stride) * s.w.div_ceil(s.stride);
        let [gx, gy, _] = pixel_grid(mode, per_phase, s.n * s.h, s.w, rows);
        [gx, gy, blocks_z * (s.stride * s.stride) as u32]
    };
    let tensors = [dy, w, w, dx, &packed.1, dx, dy];
    let entry = match mode {
        WindowMode::Off => "conv2d_backward_input_sg",
        WindowMode::InputGradS2 => "conv2d_backward_input_window_s2",
        _ => "conv2d_backward_input_window",
    };
    // A window starts at column ox0 - 2 = ix + P - 2 at stride 1 and
    // (ix0 + P + 1) / 2 - 1 at stride 2 (dy's columns).
    let first_x = match mode {
        WindowMode::InputGradS2 => (s.pad as i64 + 1) / 2 - 1,
        _ => s.pad as i64 - 2,
    };
    let plane = s.out_h() * s.out_w();
    let window = WindowConstants {
        mode,
        // Window mode at stride 2 puts its rows into pixel order first.
        store4: vec4_stores(mode, dx, s.h * s.w, s.w, rows),
        a4_shift: vec4_shift(mode, dy, plane, s.out_w(), first_x),
    };
    let mut constants = SubgroupConstants { nv, rows, lanes }.pipeline_constants();
    constants.extend(window.pipeline_constants());
    constants.push(accumulate);
    let conv = gpu.dispatch_with(FILE, entry, &constants, &params, &tensors, grid)?;
    Ok(vec![packed.0, conv])
}

//! Option-A shortcut of the CIFAR ResNets (`shaders/shortcut.wgsl`):
//! subsample by the stride and zero-pad the channels, no parameters.
//!
//! Shape legend: x [N, CI, H, W] -> y [N, CO, ceil(H/S), ceil(W/S)] with
//! CO >= CI. Input channel c goes to output channel c + (CO - CI) / 2
//! (rounded down), so when CO - CI is odd the extra zero channel is the last
//! one. That matches PyTorch's `F.pad(x[:, :, ::S, ::S], (0, 0, 0, 0, lo, hi))`
//! with lo = (CO - CI) / 2 and hi = CO - CI - lo. All operands may be views.

use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::{shape_error, Result};
use crate::tensor::Tensor;

const FILE: &str = "shortcut.wgsl";
const GROUP: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    ci: u32,
    h: u32,
    w: u32,
    co: u32,
    ho: u32,
    wo: u32,
    stride: u32,
    lo: u32,
    total: u32,
    a: [u32; 2],
    b: [u32; 2],
    _pad: [u32; 2],
}

/// Zero channels placed before the copied ones for `ci` -> `co` channels.
pub fn pad_lo(ci: usize, co: usize) -> usize {
    (co - ci) / 2
}

/// Checks x [N, CI, H, W] against y [N, CO, HO, WO] for `stride` and builds
/// the parameters (views filled in by the caller).
fn params(op: &'static str, x: &[usize], y: &[usize], stride: usize) -> Result<Params> {
    if x.len() != 4 || y.len() != 4 {
        return Err(shape_error(
            op,
            format!("{x:?} -> {y:?}: both must be NCHW"),
        ));
    }
    if stride == 0 {
        return Err(shape_error(op, "stride must be at least 1"));
    }
    let (n, ci, h, w) = (x[0], x[1], x[2], x[3]);
    let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
    if y[0] != n || y[1] < ci || y[2] != ho || y[3] != wo {
        return Err(shape_error(
            op,
            format!("{x:?} with stride {stride} gives [{n}, >= {ci}, {ho}, {wo}], not {y:?}"),
        ));
    }
    Ok(Params {
        n: n as u32,
        ci: ci as u32,
        h: h as u32,
        w: w as u32,
        co: y[1] as u32,
        ho: ho as u32,
        wo: wo as u32,
        stride: stride as u32,
        lo: pad_lo(ci, y[1]) as u32,
        total: 0,
        a: [0; 2],
        b: [0; 2],
        _pad: [0; 2],
    })
}

/// True when the vec4 entry points apply: every quad of four consecutive
/// elements of x and y stays inside one image row and starts 16-byte aligned.
fn quads_fit(p: &Params, x: &Tensor, y: &Tensor) -> bool {
    let [xo, xs] = x.view_params();
    let [yo, ys] = y.view_params();
    p.stride <= 2 && [p.w, p.wo, xo, xs, yo, ys].iter().all(|v| v % 4 == 0)
}

/// Picks the vec4 entry point (a quarter of the invocations) where
/// [`quads_fit`], the scalar one otherwise; `out` is the operand written.
fn prepare(
    gpu: &Gpu,
    entry: &'static str,
    mut p: Params,
    [input, out]: [&Tensor; 2],
    vec4: bool,
) -> Result<Dispatch> {
    p.a = input.view_params();
    p.b = out.view_params();
    let (entry, threads) = if vec4 {
        (format!("{entry}_vec4"), out.numel() / 4)
    } else {
        (entry.to_string(), out.numel())
    };
    p.total = threads as u32;
    gpu.dispatch(FILE, &entry, &p, &[input, out], grid_1d(threads, GROUP))
}

/// y = zero-pad-channels(x[:, :, ::stride, ::stride]).
pub fn shortcut_forward(gpu: &Gpu, x: &Tensor, y: &Tensor, stride: usize) -> Result<Dispatch> {
    let p = params("shortcut_forward", x.shape(), y.shape(), stride)?;
    let vec4 = quads_fit(&p, x, y);
    prepare(gpu, "shortcut_forward", p, [x, y], vec4)
}

/// dx = dy's copied channels scattered back to the subsampled pixels, zeros
/// elsewhere. Overwrites all of `dx` (no clear needed).
pub fn shortcut_backward(gpu: &Gpu, dy: &Tensor, dx: &Tensor, stride: usize) -> Result<Dispatch> {
    let p = params("shortcut_backward", dx.shape(), dy.shape(), stride)?;
    let vec4 = quads_fit(&p, dx, dy);
    prepare(gpu, "shortcut_backward", p, [dy, dx], vec4)
}

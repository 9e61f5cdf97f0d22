//! Pooling kernels (`shaders/pool.wgsl`), PyTorch semantics: 2x2 average
//! with stride 2 (DenseNet transitions), 3x3 max with stride 2 and padding 1
//! (ImageNet stem) and global average, each forward next to its backward.
//!
//! Shape legend: x and dx are NCHW views [N, C, H, W]; y and dy are NCHW
//! views [N, C, HO, WO] ([N, C] views for the global pool); argmax is a
//! contiguous u32 [N, C, HO, WO] tensor. Any NCHW operand may be a channel
//! slice of a larger buffer. Backwards overwrite dx (they do not accumulate).

use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::{shape_error, Result};
use crate::kernels::checks;
use crate::tensor::{DType, Tensor};

const FILE: &str = "pool.wgsl";
const GROUP: u32 = 256;

/// NCHW extent of a pooling input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl PoolShape {
    fn dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// Output extent of the 2x2 / stride 2 average pool (floor, as PyTorch).
    pub fn avg2x2_out(&self) -> [usize; 4] {
        [self.n, self.c, self.h / 2, self.w / 2]
    }

    /// Output extent of the 3x3 / stride 2 / padding 1 max pool:
    /// floor((H + 2 - 3) / 2) + 1.
    pub fn max3x3s2_out(&self) -> [usize; 4] {
        [self.n, self.c, (self.h - 1) / 2 + 1, (self.w - 1) / 2 + 1]
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    total: u32,
    _pad0: u32,
    full: [u32; 2],
    pooled: [u32; 2],
    inv_rows: f32,
    inv_cols: f32,
    inv_c: f32,
    _pad1: u32,
}

fn check_input(op: &'static str, s: &PoolShape, min_hw: usize) -> Result<()> {
    if s.n == 0 || s.c == 0 || s.h < min_hw || s.w < min_hw {
        return Err(shape_error(
            op,
            format!(
                "input {:?} is empty or smaller than {min_hw}x{min_hw}",
                s.dims()
            ),
        ));
    }
    Ok(())
}

/// One pooling pass: its entry point, the pooled extent `out` (rows, cols)
/// and `space`, the (rows, cols) of one plane of its thread space (one
/// thread per element of N x C x rows x cols).
struct Pass {
    entry: &'static str,
    out: [usize; 2],
    space: [usize; 2],
}

fn pass(entry: &'static str, out: [usize; 2], space: [usize; 2]) -> Pass {
    Pass { entry, out, space }
}

/// Prepares `pass` with `full` (x or dx), `pooled` (y or dy) and an
/// optional argmax.
fn prepare(
    gpu: &Gpu,
    s: &PoolShape,
    pass: Pass,
    full: &Tensor,
    pooled: &Tensor,
    argmax: Option<&Tensor>,
) -> Result<Dispatch> {
    let Pass { entry, out, space } = pass;
    let threads = s.n * s.c * space[0] * space[1];
    let params = Params {
        n: s.n as u32,
        c: s.c as u32,
        h: s.h as u32,
        w: s.w as u32,
        ho: out[0] as u32,
        wo: out[1] as u32,
        total: threads as u32,
        _pad0: 0,
        full: full.view_params(),
        pooled: pooled.view_params(),
        inv_rows: 1.0 / space[0] as f32,
        inv_cols: 1.0 / space[1] as f32,
        inv_c: 1.0 / s.c as f32,
        _pad1: 0,
    };
    let mut tensors = vec![full, pooled];
    tensors.extend(argmax);
    gpu.dispatch(FILE, entry, &params, &tensors, grid_1d(threads, GROUP))
}

/// Whether the `*4` entry points may address `full` (x or dx) as vec4s.
fn vec4_ok(s: &PoolShape, full: &Tensor) -> bool {
    s.w.is_multiple_of(4)
        && full.offset().is_multiple_of(4)
        && full.batch_stride().is_multiple_of(4)
}

/// y = mean of each 2x2 block of x (stride 2; an odd last row/column is
/// dropped, as PyTorch's floor mode).
pub fn avg_pool2x2_forward(gpu: &Gpu, s: &PoolShape, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    const OP: &str = "avg_pool2x2_forward";
    check_input(OP, s, 2)?;
    let out = s.avg2x2_out();
    checks::activation(OP, "x", x, &s.dims())?;
    checks::activation(OP, "y", y, &out)?;
    let o = [out[2], out[3]];
    if vec4_ok(s, x) {
        let vec4 = pass("avg_pool2x2_forward4", o, [o[0], s.w / 4]);
        return prepare(gpu, s, vec4, x, y, None);
    }
    prepare(gpu, s, pass(OP, o, o), x, y, None)
}

/// dx = dy / 4 spread over each block (0 on dropped rows/columns).
pub fn avg_pool2x2_backward(
    gpu: &Gpu,
    s: &PoolShape,
    dy: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch> {
    const OP: &str = "avg_pool2x2_backward";
    check_input(OP, s, 2)?;
    let out = s.avg2x2_out();
    checks::activation(OP, "dy", dy, &out)?;
    checks::activation(OP, "dx", dx, &s.dims())?;
    let o = [out[2], out[3]];
    if vec4_ok(s, dx) {
        return prepare(
            gpu,
            s,
            pass("avg_pool2x2_backward4", o, [s.h, s.w / 4]),
            dx,
            dy,
            None,
        );
    }
    prepare(gpu, s, pass(OP, o, [s.h, s.w]), dx, dy, None)
}

fn check_argmax(op: &'static str, argmax: &Tensor, out: &[usize; 4]) -> Result<()> {
    checks::view(op, "argmax", argmax, DType::U32, out)?;
    if !argmax.is_contiguous() || argmax.offset() != 0 {
        return Err(shape_error(op, "argmax must be a whole contiguous tensor"));
    }
    Ok(())
}

/// 3x3 max pool, stride 2, padding 1: y and the in-plane index (h * W + w)
/// of each maximum in `argmax` (u32), first maximum on ties.
pub fn max_pool3x3s2_forward(
    gpu: &Gpu,
    s: &PoolShape,
    x: &Tensor,
    y: &Tensor,
    argmax: &Tensor,
) -> Result<Dispatch> {
    const OP: &str = "max_pool3x3s2_forward";
    check_input(OP, s, 1)?;
    let out = s.max3x3s2_out();
    checks::activation(OP, "x", x, &s.dims())?;
    checks::activation(OP, "y", y, &out)?;
    check_argmax(OP, argmax, &out)?;
    let space = [out[2], out[3]];
    prepare(gpu, s, pass(OP, space, space), x, y, Some(argmax))
}

/// Routes dy to the forward's argmax pixels; a pixel that is the maximum of
/// several overlapping windows receives the sum of their gradients.
pub fn max_pool3x3s2_backward(
    gpu: &Gpu,
    s: &PoolShape,
    dy: &Tensor,
    argmax: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch> {
    const OP: &str = "max_pool3x3s2_backward";
    check_input(OP, s, 1)?;
    let out = s.max3x3s2_out();
    checks::activation(OP, "dy", dy, &out)?;
    check_argmax(OP, argmax, &out)?;
    checks::activation(OP, "dx", dx, &s.dims())?;
    let o = [out[2], out[3]];
    prepare(gpu, s, pass(OP, o, o), dx, dy, Some(argmax))
}

/// y[n, c] = mean over H, W of x[n, c]; y is an [N, C] or [N, C, 1, 1]
/// view (the latter can be a channel slice).
pub fn global_avg_pool_forward(
    gpu: &Gpu,
    s: &PoolShape,
    x: &Tensor,
    y: &Tensor,
) -> Result<Dispatch> {
    const OP: &str = "global_avg_pool_forward";
    check_input(OP, s, 1)?;
    checks::activation(OP, "x", x, &s.dims())?;
    check_global(OP, "y", y, s)?;
    let entry = if vec4_ok(s, x) {
        "global_avg_pool_forward4"
    } else {
        OP
    };
    prepare(gpu, s, pass(entry, [1, 1], [1, 1]), x, y, None)
}

/// The pooled operand of the global pool: [N, C] or [N, C, 1, 1].
fn check_global(op: &'static str, what: &str, t: &Tensor, s: &PoolShape) -> Result<()> {
    if t.shape() == [s.n, s.c, 1, 1] {
        return checks::activation(op, what, t, &[s.n, s.c, 1, 1]);
    }
    checks::activation(op, what, t, &[s.n, s.c]).map_err(|_| {
        shape_error(
            op,
            format!(
                "{what} has shape {:?}, expected f32 [{}, {}] or [{}, {}, 1, 1]",
                t.shape(),
                s.n,
                s.c,
                s.n,
                s.c
            ),
        )
    })
}

/// dx[n, c, h, w] = dy[n, c] / (H * W); dy is [N, C] or [N, C, 1, 1].
pub fn global_avg_pool_backward(
    gpu: &Gpu,
    s: &PoolShape,
    dy: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch> {
    const OP: &str = "global_avg_pool_backward";
    check_input(OP, s, 1)?;
    check_global(OP, "dy", dy, s)?;
    checks::activation(OP, "dx", dx, &s.dims())?;
    if vec4_ok(s, dx) {
        let space = [1, s.h * s.w / 4];
        return prepare(
            gpu,
            s,
            pass("global_avg_pool_backward4", [1, 1], space),
            dx,
            dy,
            None,
        );
    }
    prepare(gpu, s, pass(OP, [1, 1], [s.h, s.w]), dx, dy, None)
}

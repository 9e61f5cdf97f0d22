//! Fully connected layer (`shaders/linear.wgsl`): y = x W^T + b with
//! PyTorch's `nn.Linear` weight layout, and its two backward halves.
//!
//! Shape legend: x [N, I] or any [N, ...] whose trailing axes hold I elements
//! per row (a pooled [N, C, 1, 1], or an NCHW map flattened the way
//! `torch.flatten(x, 1)` does); W [O, I]; b [O]; y [N, O]. x, y, dy and dx
//! may be views with an offset and a row stride (a slice of a concat
//! buffer); W, b, dW and db must be contiguous but may start at an offset
//! (a parameter arena).

use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::{shape_error, Result};
use crate::kernels::checks;
use crate::tensor::{DType, Tensor};

mod as_conv;
pub use as_conv::{
    linear_backward_input_as_conv, linear_backward_weight_as_conv, linear_forward_as_conv,
};

const FILE: &str = "linear.wgsl";
const GROUP: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    fin: u32,
    fout: u32,
    total: u32,
    a: [u32; 2],
    b: [u32; 2],
    c: [u32; 2],
    d_off: u32,
    _pad: u32,
}

/// (N, I, O) after checking the batch operands against W [O, I].
struct Dims {
    n: usize,
    fin: usize,
    fout: usize,
}

/// Rows and row length of a batch operand ([N, ...], at least 2-D). x and
/// dx may be f16 (mixed precision's features); the rest is f32.
fn rows(op: &'static str, what: &str, t: &Tensor) -> Result<(usize, usize)> {
    checks::float(op, what, t)?;
    if t.shape().len() < 2 {
        return Err(shape_error(
            op,
            format!("{what} {:?} must be [N, ...]", t.shape()),
        ));
    }
    Ok((t.shape()[0], t.sample_len()))
}

fn dims(op: &'static str, x: &Tensor, w: &Tensor, y: &Tensor) -> Result<Dims> {
    checks::dtype(op, "W", w, DType::F32)?;
    if w.shape().len() != 2 || !w.is_contiguous() {
        return Err(shape_error(
            op,
            format!("W {:?} must be a contiguous [O, I]", w.shape()),
        ));
    }
    let (fout, fin) = (w.shape()[0], w.shape()[1]);
    let (n, xi) = rows(op, "x", x)?;
    let (ny, yo) = rows(op, "y", y)?;
    if xi != fin || yo != fout || ny != n {
        return Err(shape_error(
            op,
            format!(
                "x {:?} and y {:?} do not fit W [{fout}, {fin}] (N rows of {fin} -> N rows of {fout})",
                x.shape(),
                y.shape()
            ),
        ));
    }
    Ok(Dims { n, fin, fout })
}

fn check_bias(op: &'static str, what: &str, b: &Tensor, fout: usize) -> Result<()> {
    checks::dtype(op, what, b, DType::F32)?;
    if b.numel() != fout || !b.is_contiguous() {
        return Err(shape_error(
            op,
            format!("{what} {:?} must be {fout} contiguous values", b.shape()),
        ));
    }
    Ok(())
}

fn params(d: &Dims, total: usize, a: &Tensor, b: &Tensor, c: &Tensor) -> Params {
    Params {
        n: d.n as u32,
        fin: d.fin as u32,
        fout: d.fout as u32,
        total: total as u32,
        a: a.view_params(),
        b: b.view_params(),
        c: c.view_params(),
        d_off: 0,
        _pad: 0,
    }
}

/// y = x W^T (+ b).
pub fn linear_forward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    y: &Tensor,
) -> Result<Dispatch> {
    let op = "linear_forward";
    let d = dims(op, x, w, y)?;
    let total = d.n * d.fout;
    let mut p = params(&d, total, x, w, y);
    let grid = grid_1d(total, GROUP);
    match b {
        Some(b) => {
            check_bias(op, "bias", b, d.fout)?;
            p.d_off = b.offset() as u32;
            gpu.dispatch(FILE, "linear_forward", &p, &[x, w, y, b], grid)
        }
        None => gpu.dispatch(FILE, "linear_forward_no_bias", &p, &[x, w, y], grid),
    }
}

/// dx = dy W. `dx` has x's shape.
pub fn linear_backward_input(gpu: &Gpu, dy: &Tensor, w: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let d = dims("linear_backward_input", dx, w, dy)?;
    let total = d.n * d.fin;
    let p = params(&d, total, dy, w, dx);
    gpu.dispatch(
        FILE,
        "linear_backward_input",
        &p,
        &[dy, w, dx],
        grid_1d(total, GROUP),
    )
}

/// dW = dy^T x and, when given, db = sum over the batch of dy, in one
/// dispatch. Both are overwritten, not accumulated.
pub fn linear_backward_weight(
    gpu: &Gpu,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    db: Option<&Tensor>,
) -> Result<Dispatch> {
    let op = "linear_backward_weight";
    let d = dims(op, x, dw, dy)?;
    let weights = d.fout * d.fin;
    match db {
        Some(db) => {
            check_bias(op, "db", db, d.fout)?;
            let total = weights + d.fout;
            let mut p = params(&d, total, x, dy, dw);
            p.d_off = db.offset() as u32;
            gpu.dispatch(
                FILE,
                "linear_backward_weight",
                &p,
                &[x, dy, dw, db],
                grid_1d(total, GROUP),
            )
        }
        None => {
            let p = params(&d, weights, x, dy, dw);
            gpu.dispatch(
                FILE,
                "linear_backward_weight_no_bias",
                &p,
                &[x, dy, dw],
                grid_1d(weights, GROUP),
            )
        }
    }
}

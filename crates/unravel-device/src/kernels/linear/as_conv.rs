//! The fully connected layer as a 1x1 convolution over 1x1 images, so that
//! it runs on any convolution algorithm: the cooperative-matrix one (tensor
//! cores), which the linear kernels have no counterpart of, in particular.
//!
//! Shape legend: x [N, I] (or [N, ...] with I elements a row), W [O, I],
//! b [O], y [N, O]; as the convolution x [N, C = I, 1, 1],
//! w [K = O, I, KH = 1, KW = 1], y [N, O, 1, 1], G = 1.

use super::{check_bias, dims, Dims};
use crate::context::Gpu;
use crate::dispatch::Dispatch;
use crate::error::Result;
use crate::kernels::conv2d::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2dAlgo, Conv2dEpilogue,
    Conv2dShape, ForwardOptions, InputGradOptions, WeightGradOptions,
};
use crate::tensor::Tensor;

fn conv_shape(d: &Dims) -> Conv2dShape {
    Conv2dShape {
        n: d.n,
        c_in: d.fin,
        h: 1,
        w: 1,
        c_out: d.fout,
        kh: 1,
        kw: 1,
        stride: 1,
        pad: 0,
        groups: 1,
    }
}

/// A batch operand's rows of `c` values as [N, c, 1, 1].
fn as_image(t: &Tensor, c: usize) -> Result<Tensor> {
    t.with_sample_shape(&[c, 1, 1])
}

/// y = x W^T (+ b) with convolution algorithm `algo`.
pub fn linear_forward_as_conv(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    y: &Tensor,
    algo: Conv2dAlgo,
) -> Result<Vec<Dispatch>> {
    let op = "linear_forward";
    let d = dims(op, x, w, y)?;
    if let Some(b) = b {
        check_bias(op, "bias", b, d.fout)?;
    }
    let s = conv_shape(&d);
    let options = ForwardOptions {
        algo: Some(algo),
        epilogue: b.map_or(Conv2dEpilogue::None, Conv2dEpilogue::Bias),
    };
    let (x4, y4) = (as_image(x, d.fin)?, as_image(y, d.fout)?);
    conv2d_forward(gpu, &s, &x4, &w.reshape(&s.weight_shape())?, &y4, &options)
}

/// dx = dy W with convolution algorithm `algo`. `dx` has x's shape.
pub fn linear_backward_input_as_conv(
    gpu: &Gpu,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    algo: Conv2dAlgo,
) -> Result<Vec<Dispatch>> {
    let d = dims("linear_backward_input", dx, w, dy)?;
    let s = conv_shape(&d);
    let (dy4, dx4) = (as_image(dy, d.fout)?, as_image(dx, d.fin)?);
    let w4 = w.reshape(&s.weight_shape())?;
    let options = InputGradOptions::with_algo(Some(algo));
    conv2d_backward_input(gpu, &s, &dy4, &w4, &dx4, &options)
}

/// dW = dy^T x and, when given, db = the batch's sum of dy, with convolution
/// algorithm `algo`; both overwritten.
pub fn linear_backward_weight_as_conv(
    gpu: &Gpu,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    db: Option<&Tensor>,
    algo: Conv2dAlgo,
) -> Result<Vec<Dispatch>> {
    let op = "linear_backward_weight";
    let d = dims(op, x, dw, dy)?;
    if let Some(db) = db {
        check_bias(op, "db", db, d.fout)?;
    }
    let s = conv_shape(&d);
    let (x4, dy4) = (as_image(x, d.fin)?, as_image(dy, d.fout)?);
    let dw4 = dw.reshape(&s.weight_shape())?;
    let options = WeightGradOptions { algo: Some(algo) };
    conv2d_backward_weight(gpu, &s, &x4, &dy4, &dw4, db, &options)
}

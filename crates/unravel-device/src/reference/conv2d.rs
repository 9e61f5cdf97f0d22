//! CPU reference of the 2-D convolution: the textbook loops, in f64.
//!
//! Layouts follow PyTorch: activations are contiguous NCHW, weights OIHW
//! (`[c_out, c_in / groups, kh, kw]`), bias `[c_out]`. Output channel `co`
//! belongs to group `co / (c_out / groups)` and sees only that group's input
//! channels.

use crate::kernels::conv2d::Conv2dShape;

/// Calls `f(x_index, w_index, y_index)` for every multiply-add of the
/// forward, so the three passes share one definition of the index algebra.
fn for_each_mac(s: &Conv2dShape, mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let cin_g = s.c_in / s.groups;
    let cout_g = s.c_out / s.groups;
    for n in 0..s.n {
        for co in 0..s.c_out {
            let g = co / cout_g;
            for ci in 0..cin_g {
                let c = g * cin_g + ci;
                for ky in 0..s.kh {
                    for kx in 0..s.kw {
                        let w_index = ((co * cin_g + ci) * s.kh + ky) * s.kw + kx;
                        for oy in 0..oh {
                            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                            if iy < 0 || iy >= s.h as isize {
                                continue;
                            }
                            for ox in 0..ow {
                                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                                if ix < 0 || ix >= s.w as isize {
                                    continue;
                                }
                                let x_index =
                                    ((n * s.c_in + c) * s.h + iy as usize) * s.w + ix as usize;
                                let y_index = ((n * s.c_out + co) * oh + oy) * ow + ox;
                                f(x_index, w_index, y_index);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// y = conv(x, w) + bias, with `x` of `s.input_shape()` and the result of
/// `s.output_shape()`.
pub fn conv2d_forward(s: &Conv2dShape, x: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    let [n, c_out, oh, ow] = s.output_shape();
    let plane = oh * ow;
    let mut y = vec![0.0; n * c_out * plane];
    if let Some(b) = bias {
        for (i, v) in y.iter_mut().enumerate() {
            *v = b[(i / plane) % c_out];
        }
    }
    for_each_mac(s, |xi, wi, yi| y[yi] += x[xi] * w[wi]);
    y
}

/// dx = the input gradient of [`conv2d_forward`] for output gradient `dy`.
pub fn conv2d_backward_input(s: &Conv2dShape, dy: &[f64], w: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; s.input_shape().iter().product()];
    for_each_mac(s, |xi, wi, yi| dx[xi] += dy[yi] * w[wi]);
    dx
}

/// (dw, dbias): the weight and bias gradients of [`conv2d_forward`] for
/// output gradient `dy`.
pub fn conv2d_backward_weight(s: &Conv2dShape, x: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut dw = vec![0.0; s.weight_shape().iter().product()];
    for_each_mac(s, |xi, wi, yi| dw[wi] += x[xi] * dy[yi]);
    let plane = s.out_h() * s.out_w();
    let mut dbias = vec![0.0; s.c_out];
    for (i, g) in dy.iter().enumerate() {
        dbias[(i / plane) % s.c_out] += g;
    }
    (dw, dbias)
}

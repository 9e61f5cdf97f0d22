//! Helpers shared by the kernel tests: one GPU per test binary, seeded random
//! data, tolerance checks and central finite differences.
#![allow(dead_code)]

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use unravel_device::kernels::batchnorm::{BackwardOperands, BatchNormLayer, TrainActivations};
use unravel_device::kernels::conv2d::Conv2dShape;
use unravel_device::{AdapterOptions, Gpu, Tensor};

/// The adapter every test in this binary uses (lavapipe in CI). With
/// `UNRAVEL_UNCHECKED_SHADERS=1` the kernels are compiled without runtime
/// bounds checks; `scripts/test` runs the kernel tests both ways.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let options = AdapterOptions {
            unchecked_shaders: std::env::var("UNRAVEL_UNCHECKED_SHADERS").is_ok_and(|v| v == "1"),
            ..Default::default()
        };
        Gpu::new(&options).expect("a GPU adapter (lavapipe in CI)")
    })
}

/// `len` values uniform in [-1, 1), reproducible from `seed`.
pub fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Largest |got - want|, relative to the largest |want| (floored at 1e-3, so
/// an all-near-zero reference is compared absolutely).
pub fn max_rel_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(1e-3f64, |m, w| m.max(w.abs()));
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs() / scale)
        .fold(0.0, f64::max)
}

/// Asserts that the GPU result matches the CPU reference within `tol`
/// relative error (see [`max_rel_error`]); `tol` around 1e-4 suits f32.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let err = max_rel_error(got, want);
    assert!(
        err <= tol,
        "{what}: relative error {err:.3e} exceeds {tol:.0e} (got[..4] = {:?}, want[..4] = {:?})",
        &got[..got.len().min(4)],
        &want[..want.len().min(4)]
    );
}

/// Central finite differences of the scalar `loss` at `x`, for the entries
/// `indices` (all of them when `None`), with step `eps`.
pub fn finite_differences(
    loss: &dyn Fn(&[f64]) -> f64,
    x: &[f64],
    indices: &[usize],
    eps: f64,
) -> Vec<f64> {
    let mut probe = x.to_vec();
    indices
        .iter()
        .map(|&i| {
            probe[i] = x[i] + eps;
            let up = loss(&probe);
            probe[i] = x[i] - eps;
            let down = loss(&probe);
            probe[i] = x[i];
            (up - down) / (2.0 * eps)
        })
        .collect()
}

/// Up to `count` distinct indices below `len`, spread over the range.
pub fn sample_indices(len: usize, count: usize) -> Vec<usize> {
    if len <= count {
        return (0..len).collect();
    }
    let step = len as f64 / count as f64;
    (0..count).map(|k| (k as f64 * step) as usize).collect()
}

/// Checks an analytic gradient against finite differences of
/// `loss(x) = sum(forward(x) * dy)` at sampled entries; tolerance relative to
/// the largest gradient entry.
#[track_caller]
pub fn assert_gradient_matches_fd(
    what: &str,
    loss: &dyn Fn(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    tol: f64,
) {
    let idx = sample_indices(x.len(), 48);
    let fd = finite_differences(loss, x, &idx, 1e-6);
    let scale = analytic.iter().fold(1e-6f64, |m, g| m.max(g.abs()));
    for (k, &i) in idx.iter().enumerate() {
        let err = (fd[k] - analytic[i]).abs() / scale;
        assert!(
            err <= tol,
            "{what}: d/dx[{i}] analytic {} vs finite difference {} (rel {err:.2e})",
            analytic[i],
            fd[k]
        );
    }
}

/// sum(a * b), the scalar whose gradient with respect to a forward's output
/// is `b`.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A batch-norm layer from its four [C] tensors.
pub fn layer<'a>(
    gamma: &'a Tensor,
    beta: &'a Tensor,
    running_mean: &'a Tensor,
    running_var: &'a Tensor,
) -> BatchNormLayer<'a> {
    BatchNormLayer {
        gamma,
        beta,
        running_mean,
        running_var,
    }
}

/// A batch norm's training-forward activations.
pub fn io<'a>(x: &'a Tensor, saved: &'a Tensor, y: &'a Tensor) -> TrainActivations<'a> {
    TrainActivations { x, saved, y }
}

/// A batch norm's backward operands, in [`BackwardOperands`]' order.
pub fn bwd<'a>(
    x: &'a Tensor,
    y: Option<&'a Tensor>,
    saved: &'a Tensor,
    dy: &'a Tensor,
    dx: &'a Tensor,
    dgamma: &'a Tensor,
    dbeta: &'a Tensor,
) -> BackwardOperands<'a> {
    BackwardOperands {
        x,
        y,
        saved,
        dy,
        dx,
        dgamma,
        dbeta,
    }
}

/// A convolution in legend order: N, (C in, K out), (H, W), kernel,
/// stride, padding, G.
pub fn conv_shape(
    n: usize,
    (c_in, c_out): (usize, usize),
    (h, w): (usize, usize),
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
) -> Conv2dShape {
    Conv2dShape {
        n,
        c_in,
        h,
        w,
        c_out,
        kh: k,
        kw: k,
        stride,
        pad,
        groups,
    }
}

/// `v` rounded to f16 and back: the values an f16 tensor uploaded from `v`
/// holds (to within the rounding direction the GPU picks).
pub fn to_f16_values(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// Relative error of one f16 rounding (half an ulp is 2^-11; WGSL lets a
/// conversion round either way, so allow a whole ulp).
pub const F16_ROUNDING: f64 = 1.0 / 1024.0;

/// Asserts that every `got[i]` is within one f16 ulp of `want[i]`, relative
/// to each value (not to the largest): what storing `want` as f16 allows,
/// plus 1e-6 absolute for the f32 arithmetic before the store (a difference
/// of two values near 1 that cancel).
#[track_caller]
pub fn assert_f16_rounded(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length mismatch");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let bound = w.abs() * F16_ROUNDING + 1.0e-6;
        assert!(
            (g as f64 - w).abs() <= bound,
            "{what}[{i}]: {g} is not {w} rounded to f16"
        );
    }
}

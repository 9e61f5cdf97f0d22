//! Batch norm against the CPU reference: training forward (y, running
//! statistics, saved mean/invstd), eval forward and backward (dx, dgamma,
//! dbeta), with and without the fused ReLU, on awkward shapes (scalar and vec4
//! kernels, one and several workgroups per channel) and on channel slices;
//! the reference backward against finite differences of the full training
//! forward (the batch statistics depend on x).

mod common;

use common::*;
use unravel_device::kernels::batchnorm::{
    batchnorm_backward, batchnorm_eval_forward, batchnorm_train_forward,
    batchnorm_train_forward_add_relu, BatchNormConfig, BatchNormShape,
};
use unravel_device::reference::batchnorm as reference;
use unravel_device::{DType, Tensor};

/// Relative error allowed for f32 results against the f64 reference.
const TOL: f64 = 1e-4;

fn bn_shape(d: [usize; 4]) -> BatchNormShape {
    BatchNormShape {
        n: d[0],
        c: d[1],
        h: d[2],
        w: d[3],
    }
}

fn relu_cfg(relu: bool) -> BatchNormConfig {
    BatchNormConfig {
        relu,
        ..BatchNormConfig::default()
    }
}

/// Per-channel parameters: gamma around 1 (some negative), beta, running
/// statistics with positive variance.
struct Params {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    rm: Vec<f32>,
    rv: Vec<f32>,
}

fn params(c: usize, seed: u64) -> Params {
    let r = |k: u64| random(c, seed * 10 + k);
    Params {
        gamma: r(1).iter().map(|v| 1.0 + 0.5 * v).collect(),
        beta: r(2),
        rm: r(3).iter().map(|v| 0.2 * v).collect(),
        rv: r(4).iter().map(|v| 1.0 + 0.5 * v).collect(),
    }
}

struct GpuParams {
    gamma: Tensor,
    beta: Tensor,
    rm: Tensor,
    rv: Tensor,
    saved: Tensor,
}

fn upload_params(p: &Params) -> GpuParams {
    let g = gpu();
    let c = p.gamma.len();
    GpuParams {
        gamma: g.upload(&p.gamma, &[c]).unwrap(),
        beta: g.upload(&p.beta, &[c]).unwrap(),
        rm: g.upload(&p.rm, &[c]).unwrap(),
        rv: g.upload(&p.rv, &[c]).unwrap(),
        saved: g.zeros(&[2, c]).unwrap(),
    }
}

fn train_forward(s: &BatchNormShape, cfg: &BatchNormConfig, x: &Tensor, p: &GpuParams, y: &Tensor) {
    let g = gpu();
    g.run(
        &batchnorm_train_forward(
            g,
            s,
            cfg,
            &layer(&p.gamma, &p.beta, &p.rm, &p.rv),
            &io(x, &p.saved, y),
        )
        .unwrap(),
    )
    .unwrap();
}

fn reference_train(
    x: &[f32],
    d: [usize; 4],
    p: &Params,
    cfg: &BatchNormConfig,
) -> reference::TrainForward {
    let (gamma, beta, rm, rv) = (
        to_f64(&p.gamma),
        to_f64(&p.beta),
        to_f64(&p.rm),
        to_f64(&p.rv),
    );
    reference::train_forward(
        &to_f64(x),
        d,
        &reference_layer(&gamma, &beta, &rm, &rv, cfg),
    )
}

/// The reference's view of a layer with `cfg`'s settings.
fn reference_layer<'a>(
    gamma: &'a [f64],
    beta: &'a [f64],
    rm: &'a [f64],
    rv: &'a [f64],
    cfg: &BatchNormConfig,
) -> reference::Layer<'a> {
    reference::Layer {
        gamma,
        beta,
        running_mean: rm,
        running_var: rv,
        eps: cfg.eps as f64,
        momentum: cfg.momentum as f64,
        relu: cfg.relu,
    }
}

/// Host data as activations of `dtype` hold it (f16: rounded).
fn as_activation(v: Vec<f32>, dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => to_f16_values(&v),
        _ => v,
    }
}

/// Tolerance for an activation or activation gradient of `dtype`: f32
/// arithmetic, plus one f16 rounding of the largest value when stored as f16.
fn activation_tol(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => F16_ROUNDING + TOL,
        _ => TOL,
    }
}

/// Runs the training forward and backward on contiguous tensors and checks
/// every output against the reference.
fn check_train_and_backward(d: [usize; 4], relu: bool, seed: u64) {
    check_train_and_backward_as(d, relu, seed, DType::F32);
}

/// The same with activations and their gradients (x, y, dy, dx) of `dtype`;
/// statistics and parameter gradients stay f32 and keep the f32 tolerance.
fn check_train_and_backward_as(d: [usize; 4], relu: bool, seed: u64, dtype: DType) {
    let g = gpu();
    let s = bn_shape(d);
    let cfg = relu_cfg(relu);
    let numel: usize = d.iter().product();
    let x: Vec<f32> = random(numel, seed).iter().map(|v| 0.3 + 2.0 * v).collect();
    let x = as_activation(x, dtype);
    let dy = as_activation(random(numel, seed + 1), dtype);
    let p = params(d[1], seed);
    let gp = upload_params(&p);
    let tx = g.upload_as(&x, &d, dtype).unwrap();
    let ty = g.zeros_of(&d, dtype).unwrap();
    train_forward(&s, &cfg, &tx, &gp, &ty);

    let what = format!("{d:?} relu={relu} {}", dtype.name());
    let want = reference_train(&x, d, &p, &cfg);
    let y = g.read(&ty).unwrap();
    assert_close(&format!("y {what}"), &y, &want.y, activation_tol(dtype));
    assert_close(
        &format!("running_mean {what}"),
        &g.read(&gp.rm).unwrap(),
        &want.running_mean,
        TOL,
    );
    assert_close(
        &format!("running_var {what}"),
        &g.read(&gp.rv).unwrap(),
        &want.running_var,
        TOL,
    );
    let saved = g.read(&gp.saved).unwrap();
    assert_close(
        &format!("saved mean {what}"),
        &saved[..d[1]],
        &want.mean,
        TOL,
    );
    assert_close(
        &format!("saved invstd {what}"),
        &saved[d[1]..],
        &want.invstd,
        TOL,
    );

    let tdy = g.upload_as(&dy, &d, dtype).unwrap();
    let tdx = g.zeros_of(&d, dtype).unwrap();
    let tdg = g.upload(&random(d[1], 99), &[d[1]]).unwrap();
    let tdb = g.upload(&random(d[1], 98), &[d[1]]).unwrap();
    let yopt = relu.then_some(&ty);
    g.run(
        &batchnorm_backward(
            g,
            &s,
            &cfg,
            &gp.gamma,
            &bwd(&tx, yopt, &gp.saved, &tdy, &tdx, &tdg, &tdb),
        )
        .unwrap(),
    )
    .unwrap();
    let back = reference::train_backward(
        &to_f64(&x),
        &to_f64(&y),
        &to_f64(&dy),
        d,
        &to_f64(&p.gamma),
        cfg.eps as f64,
        relu,
    );
    assert_close(
        &format!("dx {what}"),
        &g.read(&tdx).unwrap(),
        &back.dx,
        activation_tol(dtype),
    );
    assert_close(
        &format!("dgamma {what}"),
        &g.read(&tdg).unwrap(),
        &back.dgamma,
        TOL,
    );
    assert_close(
        &format!("dbeta {what}"),
        &g.read(&tdb).unwrap(),
        &back.dbeta,
        TOL,
    );
}

#[test]
fn train_forward_and_backward_match_reference_on_awkward_shapes() {
    // Scalar kernels (H*W odd) and vec4 kernels; batch 1 with a plane > 1;
    // one channel; several workgroups per channel even with lavapipe's long
    // chunks of 64 threads x 64 units ([3, 2, 128, 180] as vec4: 5 chunks,
    // merged by one thread; [2, 1, 181, 183] as scalars: 17 chunks, merged by
    // the whole workgroup; [1, 1, 513, 513]: 65 chunks, more than a
    // workgroup's threads).
    let shapes = [
        [1, 4, 5, 7],
        [3, 5, 7, 9],
        [2, 1, 6, 6],
        [1, 2, 1, 3],
        [3, 3, 4, 4],
        [5, 2, 64, 64],
        [3, 2, 128, 180],
        [2, 1, 181, 183],
        [1, 1, 513, 513],
    ];
    for (k, d) in shapes.into_iter().enumerate() {
        for relu in [false, true] {
            check_train_and_backward(d, relu, 100 + 10 * k as u64);
        }
    }
}

/// Mixed precision's batch norm: f16 activations and gradients, f32
/// statistics, on scalar and vec4 planes and on several workgroups per
/// channel.
#[test]
fn f16_activations_train_forward_and_backward_match_reference() {
    for (k, d) in [[3, 5, 7, 9], [3, 3, 4, 4], [2, 1, 181, 183]]
        .into_iter()
        .enumerate()
    {
        for relu in [false, true] {
            check_train_and_backward_as(d, relu, 300 + 10 * k as u64, DType::F16);
        }
    }
}

#[test]
fn train_forward_fused_with_the_residual_merge_matches_reference() {
    // y = max(bn(x) + r, 0); planes of 12 (vec4 kernels) and 7x5 (scalar),
    // the residual a channel slice of a larger buffer in the second case.
    let g = gpu();
    let cases = [([3, 5, 4, 3], 40), ([2, 3, 7, 5], 50)];
    for (dtype, (d, seed)) in [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|t| cases.map(|c| (t, c)))
    {
        let s = bn_shape(d);
        let cfg = BatchNormConfig::default();
        let numel: usize = d.iter().product();
        let x: Vec<f32> = random(numel, seed).iter().map(|v| 0.3 + 2.0 * v).collect();
        let x = as_activation(x, dtype);
        let r = as_activation(random(numel, seed + 1), dtype);
        let p = params(d[1], seed);
        let gp = upload_params(&p);
        let tx = g.upload_as(&x, &d, dtype).unwrap();
        let wide = [d[0], d[1] + 2, d[2], d[3]];
        let plane = d[2] * d[3];
        let mut r_wide = random(wide.iter().product(), seed + 2);
        for n in 0..d[0] {
            let src = &r[n * d[1] * plane..(n + 1) * d[1] * plane];
            let at = (n * wide[1] + 1) * plane;
            r_wide[at..at + src.len()].copy_from_slice(src);
        }
        let residual = g.upload_as(&r_wide, &wide, dtype).unwrap();
        let tr = residual.channel_slice(1, 1 + d[1]).unwrap();
        let ty = g.upload_as(&random(numel, seed + 3), &d, dtype).unwrap();
        let dispatches = batchnorm_train_forward_add_relu(
            g,
            &s,
            &cfg,
            &layer(&gp.gamma, &gp.beta, &gp.rm, &gp.rv),
            &io(&tx, &gp.saved, &ty),
            &tr,
        )
        .unwrap();
        g.run(&dispatches).unwrap();
        let want = reference_train(&x, d, &p, &cfg);
        let want_y: Vec<f64> = want
            .y
            .iter()
            .zip(&r)
            .map(|(b, &r)| (b + r as f64).max(0.0))
            .collect();
        assert_close(
            &format!("y {d:?} {}", dtype.name()),
            &g.read(&ty).unwrap(),
            &want_y,
            activation_tol(dtype),
        );
        assert_close(
            "running_mean",
            &g.read(&gp.rm).unwrap(),
            &want.running_mean,
            TOL,
        );
        assert_close(
            "running_var",
            &g.read(&gp.rv).unwrap(),
            &want.running_var,
            TOL,
        );
    }
    // The ReLU comes after the sum, so a fused ReLU before it is refused.
    let s = bn_shape([2, 3, 4, 4]);
    let t = g.zeros(&[2, 3, 4, 4]).unwrap();
    let v = g.zeros(&[3]).unwrap();
    let saved = g.zeros(&[2, 3]).unwrap();
    let err = batchnorm_train_forward_add_relu(
        g,
        &s,
        &relu_cfg(true),
        &layer(&v, &v, &v, &v),
        &io(&t, &saved, &t),
        &t,
    )
    .unwrap_err();
    assert!(err.to_string().contains("cfg.relu must be off"), "{err}");
}

/// A training forward that only measures (an evaluation or an analysis on
/// a training plan): the same output and saved statistics, and the running
/// statistics left exactly as they were.
#[test]
fn train_forward_without_updating_running_statistics() {
    let g = gpu();
    let d = [3, 5, 4, 6];
    let s = bn_shape(d);
    let x: Vec<f32> = random(d.iter().product(), 7)
        .iter()
        .map(|v| 0.3 + 2.0 * v)
        .collect();
    let p = params(d[1], 7);
    let gp = upload_params(&p);
    let tx = g.upload(&x, &d).unwrap();
    let ty = g.zeros(&d).unwrap();
    let cfg = BatchNormConfig {
        update_running: false,
        ..relu_cfg(true)
    };
    train_forward(&s, &cfg, &tx, &gp, &ty);
    let want = reference_train(&x, d, &p, &cfg);
    assert_close("y", &g.read(&ty).unwrap(), &want.y, TOL);
    let saved = g.read(&gp.saved).unwrap();
    assert_close("saved mean", &saved[..d[1]], &want.mean, TOL);
    assert_eq!(g.read(&gp.rm).unwrap(), p.rm, "running mean changed");
    assert_eq!(g.read(&gp.rv).unwrap(), p.rv, "running var changed");
}

#[test]
fn eval_forward_matches_reference() {
    let g = gpu();
    for (d, relu, dtype) in [
        ([3, 5, 7, 9], false, DType::F32),
        ([2, 3, 4, 8], true, DType::F32),
        ([1, 1, 3, 3], true, DType::F32),
        ([3, 5, 7, 9], false, DType::F16),
        ([2, 3, 4, 8], true, DType::F16),
    ] {
        let s = bn_shape(d);
        let cfg = relu_cfg(relu);
        let numel: usize = d.iter().product();
        let x = as_activation(random(numel, 7), dtype);
        let p = params(d[1], 8);
        let gp = upload_params(&p);
        let tx = g.upload_as(&x, &d, dtype).unwrap();
        let ty = g.zeros_of(&d, dtype).unwrap();
        g.run(
            &batchnorm_eval_forward(
                g,
                &s,
                &cfg,
                &layer(&gp.gamma, &gp.beta, &gp.rm, &gp.rv),
                &tx,
                &ty,
            )
            .unwrap(),
        )
        .unwrap();
        let (gamma, beta, rm, rv) = (
            to_f64(&p.gamma),
            to_f64(&p.beta),
            to_f64(&p.rm),
            to_f64(&p.rv),
        );
        let layer = reference_layer(&gamma, &beta, &rm, &rv, &cfg);
        let want = reference::eval_forward(&to_f64(&x), d, &layer);
        assert_close(
            &format!("eval {d:?} relu={relu} {}", dtype.name()),
            &g.read(&ty).unwrap(),
            &want,
            activation_tol(dtype),
        );
        // Eval mode leaves the running statistics alone.
        assert_eq!(g.read(&gp.rm).unwrap(), p.rm);
        assert_eq!(g.read(&gp.rv).unwrap(), p.rv);
    }
}

#[test]
fn variance_is_stable_with_a_large_mean() {
    // Values 1000 + U(-1, 1): E[x^2] - E[x]^2 in f32 would lose every digit
    // of the variance (1/3) to cancellation at 1e6.
    let g = gpu();
    let d = [16, 2, 32, 32];
    let s = bn_shape(d);
    let cfg = BatchNormConfig::default();
    let numel: usize = d.iter().product();
    let x: Vec<f32> = random(numel, 21).iter().map(|v| 1000.0 + v).collect();
    let p = params(2, 22);
    let gp = upload_params(&p);
    let tx = g.upload(&x, &d).unwrap();
    let ty = g.zeros(&d).unwrap();
    train_forward(&s, &cfg, &tx, &gp, &ty);
    let want = reference_train(&x, d, &p, &cfg);
    let saved = g.read(&gp.saved).unwrap();
    assert_close("large-mean invstd", &saved[2..], &want.invstd, 1e-4);
    assert_close(
        "large-mean running_var",
        &g.read(&gp.rv).unwrap(),
        &want.running_var,
        1e-4,
    );
    // y is (x - mean) * invstd: its error is the mean's f32 rounding (~6e-5
    // at 1000) times invstd (~1.7), relative to |y| up to ~1.7 * gamma.
    assert_close("large-mean y", &g.read(&ty).unwrap(), &want.y, 2e-4);
}

/// A reference backward against central finite differences of its forward
/// in x, gamma and beta, with and without the ReLU, on a [2, 3, 3, 5] batch.
fn check_reference_by_differences(
    name: &str,
    seed: u64,
    forward: impl Fn(&[f64], [usize; 4], &reference::Layer) -> Vec<f64>,
    backward: impl Fn(&[f64], &[f64], &[f64], [usize; 4], &reference::Layer) -> reference::Backward,
) {
    let d = [2, 3, 3, 5];
    let numel: usize = d.iter().product();
    let x = to_f64(&random(numel, seed));
    let dy = to_f64(&random(numel, seed + 1));
    let p = params(3, seed + 2);
    let (gamma, beta) = (to_f64(&p.gamma), to_f64(&p.beta));
    let (rm, rv) = (to_f64(&p.rm), to_f64(&p.rv));
    for relu in [false, true] {
        let cfg = relu_cfg(relu);
        let fwd = |x: &[f64], gamma: &[f64], beta: &[f64]| {
            forward(x, d, &reference_layer(gamma, beta, &rm, &rv, &cfg))
        };
        let y = fwd(&x, &gamma, &beta);
        let back = backward(
            &x,
            &y,
            &dy,
            d,
            &reference_layer(&gamma, &beta, &rm, &rv, &cfg),
        );
        let what = |v: &str| format!("{name} {v} relu={relu}");
        let lx = |x: &[f64]| dot(&fwd(x, &gamma, &beta), &dy);
        assert_gradient_matches_fd(&what("dx"), &lx, &x, &back.dx, 1e-5);
        let lg = |g: &[f64]| dot(&fwd(&x, g, &beta), &dy);
        assert_gradient_matches_fd(&what("dgamma"), &lg, &gamma, &back.dgamma, 1e-5);
        let lb = |b: &[f64]| dot(&fwd(&x, &gamma, b), &dy);
        assert_gradient_matches_fd(&what("dbeta"), &lb, &beta, &back.dbeta, 1e-5);
    }
}

#[test]
fn reference_backward_matches_finite_differences() {
    check_reference_by_differences(
        "train",
        31,
        |x, d, layer| reference::train_forward(x, d, layer).y,
        |x, y, dy, d, l| reference::train_backward(x, y, dy, d, l.gamma, l.eps, l.relu),
    );
}

/// Channels `c0..c0 + d[1]` of a [d[0], ct, d[2], d[3]] buffer.
fn slice_of(data: &[f32], d: [usize; 4], ct: usize, c0: usize) -> Vec<f32> {
    let hw = d[2] * d[3];
    (0..d[0])
        .flat_map(|n| {
            data[(n * ct + c0) * hw..(n * ct + c0 + d[1]) * hw]
                .iter()
                .copied()
        })
        .collect()
}

/// Asserts that `got` equals `before` outside channels c0..c1.
fn assert_untouched(
    what: &str,
    got: &[f32],
    before: &[f32],
    d: [usize; 4],
    ct: usize,
    c0: usize,
    c1: usize,
) {
    let hw = d[2] * d[3];
    for (i, (a, b)) in got.iter().zip(before).enumerate() {
        let c = (i / hw) % ct;
        if !(c0..c1).contains(&c) {
            assert_eq!(
                a, b,
                "{what}: element {i} (channel {c}) outside the slice changed"
            );
        }
    }
}

#[test]
fn channel_slices_in_place_forward_and_backward() {
    // x = channels 2..7 of a C=9 buffer (a DenseNet concat prefix would be
    // 0..k), normalised in place; dy and dx are slices of other buffers.
    // Both the scalar (7x9) and the vec4 (4x6) kernels.
    let g = gpu();
    for (d, relu) in [([3, 5, 7, 9], true), ([2, 5, 4, 6], false)] {
        let ct = 9;
        let full_d = [d[0], ct, d[2], d[3]];
        let full_n: usize = full_d.iter().product();
        let s = bn_shape(d);
        let cfg = relu_cfg(relu);
        let p = params(d[1], 41);
        let gp = upload_params(&p);
        let full_x = random(full_n, 42);
        let buffer = g.upload(&full_x, &full_d).unwrap();
        let xs = buffer.channel_slice(2, 7).unwrap();
        let x = slice_of(&full_x, d, ct, 2);
        let keep = g.upload(&x, &d).unwrap();
        train_forward(&s, &cfg, &xs, &gp, &xs);
        let want = reference_train(&x, d, &p, &cfg);
        let after = g.read(&buffer).unwrap();
        assert_close("sliced y", &slice_of(&after, d, ct, 2), &want.y, TOL);
        assert_untouched("forward", &after, &full_x, full_d, ct, 2, 7);

        let full_dy = random(full_n, 43);
        let dy_buf = g.upload(&full_dy, &full_d).unwrap();
        let dx_full = random(full_n, 44);
        let dx_buf = g.upload(&dx_full, &full_d).unwrap();
        let (tdy, tdx) = (
            dy_buf.channel_slice(4, 9).unwrap(),
            dx_buf.channel_slice(1, 6).unwrap(),
        );
        let (tdg, tdb) = (g.zeros(&[d[1]]).unwrap(), g.zeros(&[d[1]]).unwrap());
        let y = relu.then_some(&xs);
        g.run(
            &batchnorm_backward(
                g,
                &s,
                &cfg,
                &gp.gamma,
                &bwd(&keep, y, &gp.saved, &tdy, &tdx, &tdg, &tdb),
            )
            .unwrap(),
        )
        .unwrap();
        let dy = slice_of(&full_dy, d, ct, 4);
        let back = reference::train_backward(
            &to_f64(&x),
            &want.y,
            &to_f64(&dy),
            d,
            &to_f64(&p.gamma),
            1e-5,
            relu,
        );
        let got_dx = g.read(&dx_buf).unwrap();
        assert_close("sliced dx", &slice_of(&got_dx, d, ct, 1), &back.dx, TOL);
        assert_untouched("backward", &got_dx, &dx_full, full_d, ct, 1, 6);
        assert_close("sliced dgamma", &g.read(&tdg).unwrap(), &back.dgamma, TOL);
        assert_close("sliced dbeta", &g.read(&tdb).unwrap(), &back.dbeta, TOL);
    }
}

#[test]
fn backward_may_overwrite_dy_with_dx() {
    let g = gpu();
    let d = [2, 3, 5, 5];
    let s = bn_shape(d);
    let cfg = BatchNormConfig::default();
    let numel: usize = d.iter().product();
    let x = random(numel, 51);
    let dy = random(numel, 52);
    let p = params(3, 53);
    let gp = upload_params(&p);
    let tx = g.upload(&x, &d).unwrap();
    let ty = g.zeros(&d).unwrap();
    train_forward(&s, &cfg, &tx, &gp, &ty);
    let grad = g.upload(&dy, &d).unwrap();
    let (tdg, tdb) = (g.zeros(&[3]).unwrap(), g.zeros(&[3]).unwrap());
    g.run(
        &batchnorm_backward(
            g,
            &s,
            &cfg,
            &gp.gamma,
            &bwd(&tx, None, &gp.saved, &grad, &grad, &tdg, &tdb),
        )
        .unwrap(),
    )
    .unwrap();
    let back = reference::train_backward(
        &to_f64(&x),
        &[],
        &to_f64(&dy),
        d,
        &to_f64(&p.gamma),
        1e-5,
        false,
    );
    assert_close("dx in place", &g.read(&grad).unwrap(), &back.dx, TOL);
}

#[test]
fn bad_shapes_are_typed_errors() {
    let g = gpu();
    let s = bn_shape([2, 3, 4, 4]);
    let cfg = BatchNormConfig::default();
    let x = g.zeros(&[2, 3, 4, 4]).unwrap();
    let wrong = g.zeros(&[2, 3, 4, 5]).unwrap();
    let v3 = g.zeros(&[3]).unwrap();
    let v4 = g.zeros(&[4]).unwrap();
    let saved = g.zeros(&[2, 3]).unwrap();
    let err = batchnorm_train_forward(
        g,
        &s,
        &cfg,
        &layer(&v3, &v3, &v3, &v3),
        &io(&x, &saved, &wrong),
    )
    .unwrap_err();
    assert!(err.to_string().contains("y has shape"), "{err}");
    let err = batchnorm_train_forward(g, &s, &cfg, &layer(&v4, &v3, &v3, &v3), &io(&x, &saved, &x))
        .unwrap_err();
    assert!(err.to_string().contains("gamma"), "{err}");
    let err = batchnorm_train_forward(g, &s, &cfg, &layer(&v3, &v3, &v3, &v3), &io(&x, &v3, &x))
        .unwrap_err();
    assert!(err.to_string().contains("saved"), "{err}");
    // One value per channel has no unbiased variance.
    let one = bn_shape([1, 3, 1, 1]);
    let x1 = g.zeros(&[1, 3, 1, 1]).unwrap();
    let err = batchnorm_train_forward(
        g,
        &one,
        &cfg,
        &layer(&v3, &v3, &v3, &v3),
        &io(&x1, &saved, &x1),
    )
    .unwrap_err();
    assert!(err.to_string().contains("more than 1 value"), "{err}");
    let relu = relu_cfg(true);
    let err = batchnorm_backward(g, &s, &relu, &v3, &bwd(&x, None, &saved, &x, &x, &v3, &v3))
        .unwrap_err();
    assert!(err.to_string().contains("needs the output y"), "{err}");
}

/// `frozen_stats`: the training forward normalises with the running
/// statistics (y as the eval forward's, saved = (running mean, invstd), the
/// running statistics untouched, also fused with the residual merge), and
/// backward holds them constant; on a scalar and a vec4 shape, with and
/// without the ReLU.
#[test]
fn frozen_statistics_train_like_the_eval_forward() {
    let g = gpu();
    for (d, seed) in [([3, 5, 3, 5], 61), ([2, 4, 4, 4], 62)] {
        for relu in [false, true] {
            let what = format!("{d:?} relu={relu}");
            let s = bn_shape(d);
            let cfg = BatchNormConfig {
                frozen_stats: true,
                ..relu_cfg(relu)
            };
            let numel: usize = d.iter().product();
            let x: Vec<f32> = random(numel, seed).iter().map(|v| 0.3 + 2.0 * v).collect();
            let dy = random(numel, seed + 1);
            let p = params(d[1], seed);
            let gp = upload_params(&p);
            let (tx, tdy) = (g.upload(&x, &d).unwrap(), g.upload(&dy, &d).unwrap());
            let (ty, tdx) = (g.zeros(&d).unwrap(), g.zeros(&d).unwrap());
            let (tdg, tdb) = (g.zeros(&[d[1]]).unwrap(), g.zeros(&[d[1]]).unwrap());
            train_forward(&s, &cfg, &tx, &gp, &ty);
            let ops = bwd(&tx, Some(&ty), &gp.saved, &tdy, &tdx, &tdg, &tdb);
            g.run(&batchnorm_backward(g, &s, &cfg, &gp.gamma, &ops).unwrap())
                .unwrap();

            let (gamma, beta) = (to_f64(&p.gamma), to_f64(&p.beta));
            let (rm, rv) = (to_f64(&p.rm), to_f64(&p.rv));
            let want_layer = reference_layer(&gamma, &beta, &rm, &rv, &cfg);
            let y = reference::eval_forward(&to_f64(&x), d, &want_layer);
            assert_close(&format!("{what} y"), &g.read(&ty).unwrap(), &y, TOL);
            let saved = g.read(&gp.saved).unwrap();
            let invstd: Vec<f64> = rv.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
            assert_close(&format!("{what} saved mean"), &saved[..d[1]], &rm, TOL);
            assert_close(
                &format!("{what} saved invstd"),
                &saved[d[1]..],
                &invstd,
                TOL,
            );
            assert_eq!(
                g.read(&gp.rm).unwrap(),
                p.rm,
                "{what}: running mean changed"
            );
            assert_eq!(g.read(&gp.rv).unwrap(), p.rv, "{what}: running var changed");
            let back = reference::frozen_backward(&to_f64(&x), &y, &to_f64(&dy), d, &want_layer);
            assert_close(&format!("{what} dx"), &g.read(&tdx).unwrap(), &back.dx, TOL);
            assert_close(
                &format!("{what} dgamma"),
                &g.read(&tdg).unwrap(),
                &back.dgamma,
                TOL,
            );
            assert_close(
                &format!("{what} dbeta"),
                &g.read(&tdb).unwrap(),
                &back.dbeta,
                TOL,
            );

            // Fused with the merge: y = max(eval(x) + residual, 0).
            let plain = BatchNormConfig { relu: false, ..cfg };
            let residual = random(numel, seed + 2);
            let tres = g.upload(&residual, &d).unwrap();
            let layer_gpu = layer(&gp.gamma, &gp.beta, &gp.rm, &gp.rv);
            let io_gpu = io(&tx, &gp.saved, &ty);
            let fused = batchnorm_train_forward_add_relu(g, &s, &plain, &layer_gpu, &io_gpu, &tres)
                .unwrap();
            assert_eq!(fused.len(), 1, "{what}: one dispatch");
            g.run(&fused).unwrap();
            let plain_layer = reference_layer(&gamma, &beta, &rm, &rv, &plain);
            let merged: Vec<f64> = reference::eval_forward(&to_f64(&x), d, &plain_layer)
                .iter()
                .zip(&residual)
                .map(|(&v, &r)| (v + r as f64).max(0.0))
                .collect();
            assert_close(
                &format!("{what} fused y"),
                &g.read(&ty).unwrap(),
                &merged,
                TOL,
            );
        }
    }
}

#[test]
fn reference_frozen_backward_matches_finite_differences() {
    check_reference_by_differences(
        "frozen",
        71,
        reference::eval_forward,
        reference::frozen_backward,
    );
}

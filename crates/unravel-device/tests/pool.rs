//! Pooling kernels against the CPU reference, forward and backward, on odd
//! shapes (7x9 with floor for the 2x2 average, 1x1 planes for the global
//! pool, batch 1 and 3, C = 5) and on channel slices; max-pool ties and
//! overlapping windows; every reference backward against finite differences.

mod common;

use common::*;
use unravel_device::kernels::pool::{self, PoolShape};
use unravel_device::reference::pool as reference;
use unravel_device::Tensor;

const TOL: f64 = 1e-5;

fn shape(d: [usize; 4]) -> PoolShape {
    PoolShape {
        n: d[0],
        c: d[1],
        h: d[2],
        w: d[3],
    }
}

fn numel(d: &[usize]) -> usize {
    d.iter().product()
}

#[test]
fn avg_pool2x2_matches_reference_and_finite_differences() {
    let g = gpu();
    // Scalar kernels (W % 4 != 0) and vec4 kernels (W = 8, 4, 12).
    for (k, d) in [
        [3, 5, 7, 9],
        [1, 2, 4, 6],
        [1, 1, 2, 2],
        [2, 3, 3, 2],
        [3, 5, 7, 8],
        [1, 2, 4, 4],
        [2, 3, 6, 12],
    ]
    .into_iter()
    .enumerate()
    {
        let s = shape(d);
        let out = s.avg2x2_out();
        let x = random(numel(&d), 10 + k as u64);
        let dy = random(numel(&out), 20 + k as u64);
        let (tx, ty) = (g.upload(&x, &d).unwrap(), g.zeros(&out).unwrap());
        // dx starts as garbage: the backward must overwrite dropped rows too.
        let tdx = g.upload(&random(numel(&d), 5), &d).unwrap();
        let tdy = g.upload(&dy, &out).unwrap();
        g.run(&[
            pool::avg_pool2x2_forward(g, &s, &tx, &ty).unwrap(),
            pool::avg_pool2x2_backward(g, &s, &tdy, &tdx).unwrap(),
        ])
        .unwrap();
        let (x64, dy64) = (to_f64(&x), to_f64(&dy));
        let y = reference::avg_pool2x2_forward(&x64, d);
        assert_close(&format!("avg fwd {d:?}"), &g.read(&ty).unwrap(), &y, TOL);
        let dx = reference::avg_pool2x2_backward(&dy64, d);
        assert_close(&format!("avg bwd {d:?}"), &g.read(&tdx).unwrap(), &dx, TOL);
        let loss = |x: &[f64]| dot(&reference::avg_pool2x2_forward(x, d), &dy64);
        assert_gradient_matches_fd(&format!("avg {d:?}"), &loss, &x64, &dx, 1e-6);
    }
}

fn run_max_pool(s: &PoolShape, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let g = gpu();
    let d = [s.n, s.c, s.h, s.w];
    let out = s.max3x3s2_out();
    let tx = g.upload(x, &d).unwrap();
    let ty = g.zeros(&out).unwrap();
    let targ = g.zeros_u32(&out).unwrap();
    let tdy = g.upload(dy, &out).unwrap();
    let tdx = g.upload(&random(numel(&d), 6), &d).unwrap();
    g.run(&[
        pool::max_pool3x3s2_forward(g, s, &tx, &ty, &targ).unwrap(),
        pool::max_pool3x3s2_backward(g, s, &tdy, &targ, &tdx).unwrap(),
    ])
    .unwrap();
    (
        g.read(&ty).unwrap(),
        g.read_u32(&targ).unwrap(),
        g.read(&tdx).unwrap(),
    )
}

#[test]
fn max_pool3x3s2_matches_reference_and_finite_differences() {
    for (k, d) in [
        [3, 5, 7, 9],
        [1, 2, 8, 8],
        [2, 3, 1, 1],
        [1, 1, 2, 3],
        [1, 2, 32, 31],
    ]
    .into_iter()
    .enumerate()
    {
        let s = shape(d);
        let out = s.max3x3s2_out();
        let x = random(numel(&d), 30 + k as u64);
        let dy = random(numel(&out), 40 + k as u64);
        let (y, arg, dx) = run_max_pool(&s, &x, &dy);
        let (x64, dy64) = (to_f64(&x), to_f64(&dy));
        let (want_y, want_arg) = reference::max_pool3x3s2_forward(&x64, d);
        assert_close(&format!("max fwd {d:?}"), &y, &want_y, 0.0);
        let arg: Vec<usize> = arg.iter().map(|&a| a as usize).collect();
        assert_eq!(arg, want_arg, "argmax {d:?}");
        let want_dx = reference::max_pool3x3s2_backward(&dy64, &want_arg, d);
        assert_close(&format!("max bwd {d:?}"), &dx, &want_dx, TOL);
        let loss = |x: &[f64]| dot(&reference::max_pool3x3s2_forward(x, d).0, &dy64);
        assert_gradient_matches_fd(&format!("max {d:?}"), &loss, &x64, &want_dx, 1e-6);
    }
}

#[test]
fn max_pool_ties_pick_the_first_maximum_and_shared_maxima_accumulate() {
    // A constant plane: every window ties, so each picks its top-left
    // in-image pixel, and pixel (1, 1) -- top-left of window (1, 1), inside
    // windows (0, 0)..(1, 1) -- is chosen only by window (1, 1).
    let d = [1, 1, 5, 5];
    let s = shape(d);
    let (y, arg, _) = run_max_pool(&s, &[2.0; 25], &[0.0; 9]);
    assert_eq!(y, vec![2.0; 9]);
    assert_eq!(arg, vec![0, 1, 3, 5, 6, 8, 15, 16, 18]);
    // One large pixel at (1, 1) lies in windows (0..=1, 0..=1) and is the
    // maximum of all four; its gradient is their sum.
    let mut x = random(25, 7);
    x[5 + 1] = 10.0;
    let dy: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let (_, arg, dx) = run_max_pool(&s, &x, &dy);
    for o in [0, 1, 3, 4] {
        assert_eq!(arg[o], 6, "window {o}");
    }
    assert_eq!(dx[6], 1.0 + 2.0 + 4.0 + 5.0);
    let want = reference::max_pool3x3s2_backward(
        &to_f64(&dy),
        &arg.iter().map(|&a| a as usize).collect::<Vec<_>>(),
        d,
    );
    assert_close("accumulated dx", &dx, &want, 0.0);
}

#[test]
fn global_avg_pool_matches_reference_and_finite_differences() {
    let g = gpu();
    for (k, d) in [[3, 5, 7, 9], [2, 3, 1, 1], [1, 4, 8, 8]]
        .into_iter()
        .enumerate()
    {
        let s = shape(d);
        let x = random(numel(&d), 50 + k as u64);
        let dy = random(d[0] * d[1], 60 + k as u64);
        let tx = g.upload(&x, &d).unwrap();
        let ty = g.zeros(&[d[0], d[1]]).unwrap();
        let tdy = g.upload(&dy, &[d[0], d[1]]).unwrap();
        let tdx = g.zeros(&d).unwrap();
        g.run(&[
            pool::global_avg_pool_forward(g, &s, &tx, &ty).unwrap(),
            pool::global_avg_pool_backward(g, &s, &tdy, &tdx).unwrap(),
        ])
        .unwrap();
        let (x64, dy64) = (to_f64(&x), to_f64(&dy));
        let y = reference::global_avg_pool_forward(&x64, d);
        assert_close(&format!("gap fwd {d:?}"), &g.read(&ty).unwrap(), &y, TOL);
        let dx = reference::global_avg_pool_backward(&dy64, d);
        assert_close(&format!("gap bwd {d:?}"), &g.read(&tdx).unwrap(), &dx, TOL);
        let loss = |x: &[f64]| dot(&reference::global_avg_pool_forward(x, d), &dy64);
        assert_gradient_matches_fd(&format!("gap {d:?}"), &loss, &x64, &dx, 1e-6);
    }
}

/// A buffer [n, ct, h, w] of random data and the view of its channels
/// c0..c0 + c, with the data of that view.
fn sliced(d: [usize; 4], ct: usize, c0: usize, seed: u64) -> (Tensor, Tensor, Vec<f32>, Vec<f32>) {
    let g = gpu();
    let full_d = [d[0], ct, d[2], d[3]];
    let full = random(numel(&full_d), seed);
    let buffer = g.upload(&full, &full_d).unwrap();
    let view = buffer.channel_slice(c0, c0 + d[1]).unwrap();
    let hw = d[2] * d[3];
    let data = (0..d[0])
        .flat_map(|n| {
            full[(n * ct + c0) * hw..(n * ct + c0 + d[1]) * hw]
                .iter()
                .copied()
        })
        .collect();
    (buffer, view, full, data)
}

/// Checks that `buffer` holds `want` in channels c0.. and `before` elsewhere.
fn assert_slice(
    what: &str,
    buffer: &Tensor,
    before: &[f32],
    want: &[f64],
    d: [usize; 4],
    c0: usize,
) {
    let got = gpu().read(buffer).unwrap();
    let (ct, hw) = (buffer.shape()[1], d[2] * d[3]);
    let mut inside = Vec::new();
    for (i, (&a, &b)) in got.iter().zip(before).enumerate() {
        let c = (i / hw) % ct;
        if (c0..c0 + d[1]).contains(&c) {
            inside.push(a);
        } else {
            assert_eq!(a, b, "{what}: element {i} outside the view changed");
        }
    }
    assert_close(what, &inside, want, TOL);
}

#[test]
fn pools_read_and_write_channel_slices() {
    // Scalar (W = 9) and vec4 (W = 8) kernels.
    for d in [[3, 5, 7, 9], [3, 5, 5, 8]] {
        pools_on_slices(d);
    }
}

fn pools_on_slices(d: [usize; 4]) {
    let g = gpu();
    let s = shape(d);
    let (ct, c0) = (8, 2);
    let (_xb, xv, _, x) = sliced(d, ct, c0, 70);
    let x64 = to_f64(&x);

    // avg 2x2: y into channels 1..6 of an [3, 8, HO, WO] buffer, dx into a slice.
    let od = s.avg2x2_out();
    let (yb, yv, y_before, _) = sliced(od, ct, 1, 71);
    let (dyb, dyv, _, dy) = sliced(od, ct, 3, 72);
    let (dxb, dxv, dx_before, _) = sliced(d, ct, 0, 73);
    g.run(&[
        pool::avg_pool2x2_forward(g, &s, &xv, &yv).unwrap(),
        pool::avg_pool2x2_backward(g, &s, &dyv, &dxv).unwrap(),
    ])
    .unwrap();
    assert_slice(
        "avg y",
        &yb,
        &y_before,
        &reference::avg_pool2x2_forward(&x64, d),
        od,
        1,
    );
    let dx = reference::avg_pool2x2_backward(&to_f64(&dy), d);
    assert_slice("avg dx", &dxb, &dx_before, &dx, d, 0);
    drop(dyb);

    // max 3x3 s2.
    let od = s.max3x3s2_out();
    let (yb, yv, y_before, _) = sliced(od, ct, 3, 74);
    let (_dyb, dyv, _, dy) = sliced(od, ct, 2, 75);
    let (dxb, dxv, dx_before, _) = sliced(d, ct, 3, 76);
    let arg = g.zeros_u32(&od).unwrap();
    g.run(&[
        pool::max_pool3x3s2_forward(g, &s, &xv, &yv, &arg).unwrap(),
        pool::max_pool3x3s2_backward(g, &s, &dyv, &arg, &dxv).unwrap(),
    ])
    .unwrap();
    let (want_y, want_arg) = reference::max_pool3x3s2_forward(&x64, d);
    assert_slice("max y", &yb, &y_before, &want_y, od, 3);
    let dx = reference::max_pool3x3s2_backward(&to_f64(&dy), &want_arg, d);
    assert_slice("max dx", &dxb, &dx_before, &dx, d, 3);

    // global average: y is channels 2..7 of an [3, 8, 1, 1] buffer.
    let y_full = random(3 * 8, 77);
    let ybuf = g.upload(&y_full, &[3, 8, 1, 1]).unwrap();
    let yv = ybuf.channel_slice(2, 7).unwrap();
    let dy = random(15, 78);
    let tdy = g.upload(&dy, &[3, 5]).unwrap();
    let (dxb, dxv, dx_before, _) = sliced(d, ct, 1, 79);
    g.run(&[
        pool::global_avg_pool_forward(g, &s, &xv, &yv).unwrap(),
        pool::global_avg_pool_backward(g, &s, &tdy, &dxv).unwrap(),
    ])
    .unwrap();
    assert_slice(
        "gap y",
        &ybuf,
        &y_full,
        &reference::global_avg_pool_forward(&x64, d),
        [3, 5, 1, 1],
        2,
    );
    let dx = reference::global_avg_pool_backward(&to_f64(&dy), d);
    assert_slice("gap dx", &dxb, &dx_before, &dx, d, 1);
}

#[test]
fn bad_shapes_are_typed_errors() {
    let g = gpu();
    let s = shape([2, 3, 7, 9]);
    let x = g.zeros(&[2, 3, 7, 9]).unwrap();
    let wrong = g.zeros(&[2, 3, 4, 4]).unwrap();
    let err = pool::avg_pool2x2_forward(g, &s, &x, &wrong).unwrap_err();
    assert!(err.to_string().contains("y has shape"), "{err}");
    let y = g.zeros(&[2, 3, 4, 5]).unwrap();
    let arg_f32 = g.zeros(&[2, 3, 4, 5]).unwrap();
    let err = pool::max_pool3x3s2_forward(g, &s, &x, &y, &arg_f32).unwrap_err();
    assert!(err.to_string().contains("argmax must be u32"), "{err}");
    let err = pool::global_avg_pool_forward(g, &s, &x, &y).unwrap_err();
    assert!(err.to_string().contains("expected f32 [2, 3]"), "{err}");
    let y4 = g.zeros(&[2, 3, 1, 2]).unwrap();
    let err = pool::global_avg_pool_forward(g, &s, &x, &y4).unwrap_err();
    assert!(err.to_string().contains("or [2, 3, 1, 1]"), "{err}");
    let tiny = shape([1, 1, 1, 5]);
    let t = g.zeros(&[1, 1, 1, 5]).unwrap();
    let err = pool::avg_pool2x2_forward(g, &tiny, &t, &t).unwrap_err();
    assert!(err.to_string().contains("smaller than 2x2"), "{err}");
}

#[test]
fn indices_beyond_2_pow_24_split_exactly() {
    // 2 x 2900 x 2901 > 2^24 elements (scalar kernel, W odd): the last ones
    // take the shader's exact-division path instead of the f32 reciprocal.
    let g = gpu();
    let d = [2, 1, 2900, 2901];
    let s = shape(d);
    let tdy = g.upload(&[3.0, -5.0], &[2, 1]).unwrap();
    let tdx = g.zeros(&d).unwrap();
    g.run(&[pool::global_avg_pool_backward(g, &s, &tdy, &tdx).unwrap()])
        .unwrap();
    let dx = g.read(&tdx).unwrap();
    let hw = 2900 * 2901;
    for (i, &v) in dx.iter().enumerate() {
        // Which image an element belongs to is what is tested; the value
        // may be off by an ulp or two (Vulkan allows 2.5 ulp for division,
        // and NVIDIA's driver uses that).
        let want = if i < hw { 3.0 } else { -5.0 } / hw as f32;
        assert!(
            (v - want).abs() <= 4.0 * f32::EPSILON * want.abs(),
            "element {i}: {v} != {want}"
        );
    }
}

/// Every pool with f16 activations (mixed precision): the f32 result on the
/// f16 inputs, rounded once where the output is f16. The global pool reads
/// f16 and writes the f32 features the classifier takes, and its backward
/// spreads an f32 gradient into f16.
#[test]
fn f16_activations_match_the_reference_rounded_once() {
    let g = gpu();
    for (k, d) in [[3, 5, 7, 9], [1, 4, 8, 8]].into_iter().enumerate() {
        let s = shape(d);
        let x = to_f16_values(&random(numel(&d), 70 + k as u64));
        let x64 = to_f64(&x);
        let f16 = unravel_device::DType::F16;
        let tx = g.upload_as(&x, &d, f16).unwrap();

        let avg_out = s.avg2x2_out();
        let dy_avg = to_f16_values(&random(numel(&avg_out), 72));
        let (ty, tdx) = (
            g.zeros_of(&avg_out, f16).unwrap(),
            g.zeros_of(&d, f16).unwrap(),
        );
        let tdy = g.upload_as(&dy_avg, &avg_out, f16).unwrap();
        let max_out = s.max3x3s2_out();
        let dy_max = to_f16_values(&random(numel(&max_out), 73));
        let (tym, tdxm) = (
            g.zeros_of(&max_out, f16).unwrap(),
            g.zeros_of(&d, f16).unwrap(),
        );
        let targ = g.zeros_u32(&max_out).unwrap();
        let tdym = g.upload_as(&dy_max, &max_out, f16).unwrap();
        let dy_gap = random(d[0] * d[1], 74);
        let (tyg, tdxg) = (
            g.zeros(&[d[0], d[1]]).unwrap(),
            g.zeros_of(&d, f16).unwrap(),
        );
        let tdyg = g.upload(&dy_gap, &[d[0], d[1]]).unwrap();
        g.run(&[
            pool::avg_pool2x2_forward(g, &s, &tx, &ty).unwrap(),
            pool::avg_pool2x2_backward(g, &s, &tdy, &tdx).unwrap(),
            pool::max_pool3x3s2_forward(g, &s, &tx, &tym, &targ).unwrap(),
            pool::max_pool3x3s2_backward(g, &s, &tdym, &targ, &tdxm).unwrap(),
            pool::global_avg_pool_forward(g, &s, &tx, &tyg).unwrap(),
            pool::global_avg_pool_backward(g, &s, &tdyg, &tdxg).unwrap(),
        ])
        .unwrap();
        let read = |t: &Tensor| g.read(t).unwrap();
        let want = reference::avg_pool2x2_forward(&x64, d);
        assert_f16_rounded("avg fwd", &read(&ty), &want);
        let want = reference::avg_pool2x2_backward(&to_f64(&dy_avg), d);
        assert_f16_rounded("avg bwd", &read(&tdx), &want);
        let (want, argmax) = reference::max_pool3x3s2_forward(&x64, d);
        assert_f16_rounded("max fwd", &read(&tym), &want);
        let want = reference::max_pool3x3s2_backward(&to_f64(&dy_max), &argmax, d);
        assert_f16_rounded("max bwd", &read(&tdxm), &want);
        let want = reference::global_avg_pool_forward(&x64, d);
        assert_close("global fwd (f32 out)", &read(&tyg), &want, TOL);
        let want = reference::global_avg_pool_backward(&to_f64(&dy_gap), d);
        assert_f16_rounded("global bwd", &read(&tdxg), &want);
    }
}

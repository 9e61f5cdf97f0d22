//! Element-wise kernels against the CPU reference, forward and backward, on
//! strided views (a channel slice of a larger NCHW buffer) as well as plain
//! tensors; backward references against finite differences.

mod common;

use common::*;
use unravel_device::kernels::elementwise as ew;
use unravel_device::reference::elementwise as reference;
use unravel_device::{DType, Tensor};

// N=3, C=5, H=3, W=7: no dimension a multiple of 4.
const SHAPE: [usize; 4] = [3, 5, 3, 7];

fn numel() -> usize {
    SHAPE.iter().product()
}

#[test]
fn relu_forward_and_backward_match_reference() {
    let g = gpu();
    let x = random(numel(), 1);
    let dy = random(numel(), 2);
    let tx = g.upload(&x, &SHAPE).unwrap();
    let ty = g.zeros(&SHAPE).unwrap();
    let tdy = g.upload(&dy, &SHAPE).unwrap();
    let tdx = g.zeros(&SHAPE).unwrap();
    g.run(&[
        ew::relu_forward(g, &tx, &ty).unwrap(),
        ew::relu_backward(g, &ty, &tdy, &tdx).unwrap(),
    ])
    .unwrap();
    let y = reference::relu_forward(&to_f64(&x));
    assert_close("relu forward", &g.read(&ty).unwrap(), &y, 1e-6);
    let dx = reference::relu_backward(&y, &to_f64(&dy));
    assert_close("relu backward", &g.read(&tdx).unwrap(), &dx, 1e-6);
}

#[test]
fn relu_in_place_on_a_channel_slice() {
    let g = gpu();
    // Channels 2..5 of an N=3, C=9 buffer; the rest must stay untouched.
    let full: Vec<f32> = random(3 * 9 * 3 * 7, 3);
    let buffer = g.upload(&full, &[3, 9, 3, 7]).unwrap();
    let slice = buffer.channel_slice(2, 7).unwrap();
    assert_eq!(slice.shape(), &SHAPE);
    g.run(&[ew::relu_forward(g, &slice, &slice).unwrap()])
        .unwrap();
    let got = g.read(&buffer).unwrap();
    let hw = 21;
    for n in 0..3 {
        for c in 0..9 {
            for k in 0..hw {
                let i = (n * 9 + c) * hw + k;
                let want = if (2..7).contains(&c) {
                    full[i].max(0.0)
                } else {
                    full[i]
                };
                assert_eq!(got[i], want, "n={n} c={c} k={k}");
            }
        }
    }
}

#[test]
fn add_scale_accumulate_match_reference() {
    let g = gpu();
    let a = random(numel(), 4);
    let b = random(numel(), 5);
    let ta = g.upload(&a, &SHAPE).unwrap();
    let tb = g.upload(&b, &SHAPE).unwrap();
    let sum = g.zeros(&SHAPE).unwrap();
    let sum_relu = g.zeros(&SHAPE).unwrap();
    let scaled = g.zeros(&SHAPE).unwrap();
    let acc = g.upload(&a, &SHAPE).unwrap();
    g.run(&[
        ew::add_forward(g, &ta, &tb, &sum).unwrap(),
        ew::add_relu_forward(g, &ta, &tb, &sum_relu).unwrap(),
        ew::scale_forward(g, &ta, 0.625, &scaled).unwrap(),
        ew::accumulate(g, &tb, &acc).unwrap(),
    ])
    .unwrap();
    let (a64, b64) = (to_f64(&a), to_f64(&b));
    let want = reference::add_forward(&a64, &b64);
    assert_close("add", &g.read(&sum).unwrap(), &want, 1e-6);
    assert_close("accumulate", &g.read(&acc).unwrap(), &want, 1e-6);
    assert_close(
        "add+relu",
        &g.read(&sum_relu).unwrap(),
        &reference::relu_forward(&want),
        1e-6,
    );
    assert_close(
        "scale",
        &g.read(&scaled).unwrap(),
        &reference::scale(&a64, 0.625),
        1e-6,
    );
}

#[test]
fn sigmoid_forward_and_backward_match_reference_and_finite_differences() {
    let g = gpu();
    // Include large magnitudes: the kernel must neither overflow nor NaN.
    let mut z: Vec<f32> = random(numel(), 8).iter().map(|v| v * 6.0).collect();
    z[0] = 120.0;
    z[1] = -120.0;
    let dt = random(numel(), 9);
    let tz = g.upload(&z, &SHAPE).unwrap();
    let tt = g.zeros(&SHAPE).unwrap();
    let tdt = g.upload(&dt, &SHAPE).unwrap();
    let tdz = g.zeros(&SHAPE).unwrap();
    g.run(&[
        ew::sigmoid_forward(g, &tz, &tt).unwrap(),
        ew::sigmoid_backward(g, &tt, &tdt, &tdz).unwrap(),
    ])
    .unwrap();
    let z64 = to_f64(&z);
    let t = reference::sigmoid_forward(&z64);
    assert_close("sigmoid", &g.read(&tt).unwrap(), &t, 1e-6);
    let dt64 = to_f64(&dt);
    let dz = reference::sigmoid_backward(&t, &dt64);
    assert_close("sigmoid backward", &g.read(&tdz).unwrap(), &dz, 1e-5);
    let loss = |z: &[f64]| dot(&reference::sigmoid_forward(z), &dt64);
    assert_gradient_matches_fd("sigmoid", &loss, &z64, &dz, 1e-6);
}

#[test]
fn highway_gate_forward_and_backward_match_reference_and_finite_differences() {
    let g = gpu();
    let t: Vec<f32> = random(numel(), 13).iter().map(|v| 0.5 + 0.45 * v).collect();
    let (h, x, dy) = (
        random(numel(), 14),
        random(numel(), 15),
        random(numel(), 16),
    );
    let (tt, th, tx) = (
        g.upload(&t, &SHAPE).unwrap(),
        g.upload(&h, &SHAPE).unwrap(),
        g.upload(&x, &SHAPE).unwrap(),
    );
    let ty = g.zeros(&SHAPE).unwrap();
    let tgrad = g.upload(&dy, &SHAPE).unwrap();
    let (tdt, tdh) = (g.zeros(&SHAPE).unwrap(), g.zeros(&SHAPE).unwrap());
    g.run(&[
        ew::highway_forward(g, &tt, &th, &tx, &ty).unwrap(),
        ew::highway_backward(g, &tt, &th, &tx, &tgrad, &tdt, &tdh).unwrap(),
    ])
    .unwrap();
    let (t64, h64, x64, dy64) = (to_f64(&t), to_f64(&h), to_f64(&x), to_f64(&dy));
    assert_close(
        "highway",
        &g.read(&ty).unwrap(),
        &reference::highway_forward(&t64, &h64, &x64),
        1e-6,
    );
    let (dt, dh, dx) = reference::highway_backward(&t64, &h64, &x64, &dy64);
    assert_close("highway dt", &g.read(&tdt).unwrap(), &dt, 1e-6);
    assert_close("highway dh", &g.read(&tdh).unwrap(), &dh, 1e-6);
    assert_close("highway dx", &g.read(&tgrad).unwrap(), &dx, 1e-6);
    let lt = |t: &[f64]| dot(&reference::highway_forward(t, &h64, &x64), &dy64);
    assert_gradient_matches_fd("highway dt", &lt, &t64, &dt, 1e-6);
    let lh = |h: &[f64]| dot(&reference::highway_forward(&t64, h, &x64), &dy64);
    assert_gradient_matches_fd("highway dh", &lh, &h64, &dh, 1e-6);
    let lx = |x: &[f64]| dot(&reference::highway_forward(&t64, &h64, x), &dy64);
    assert_gradient_matches_fd("highway dx", &lx, &x64, &dx, 1e-6);
}

#[test]
fn mismatched_shapes_are_a_typed_error() {
    let g = gpu();
    let a = g.zeros(&[2, 3]).unwrap();
    let b = g.zeros(&[3, 2]).unwrap();
    let err = ew::add_forward(g, &a, &a, &b).unwrap_err();
    assert!(err.to_string().contains("shapes differ"), "{err}");
}

#[test]
fn vec4_paths_match_the_reference_on_aligned_views() {
    let g = gpu();
    // Channels 1..4 of an N=3, C=6, 4x5 buffer: rows of 60, offsets and
    // strides multiples of 4, so the vec4 twins run.
    let full = [3, 6, 4, 5];
    let shape = [3, 3, 4, 5];
    let a_buf = g.upload(&random(360, 20), &full).unwrap();
    let b_buf = g.upload(&random(360, 21), &full).unwrap();
    let (a, b) = (
        a_buf.channel_slice(1, 4).unwrap(),
        b_buf.channel_slice(2, 5).unwrap(),
    );
    let (ha, hb) = (g.read(&a).unwrap(), g.read(&b).unwrap());
    let (a64, b64) = (to_f64(&ha), to_f64(&hb));
    let outs: Vec<_> = (0..5).map(|_| g.zeros(&shape).unwrap()).collect();
    let acc = g.upload(&hb, &shape).unwrap();
    let dispatches = [
        ew::relu_forward(g, &a, &outs[0]).unwrap(),
        ew::add_forward(g, &a, &b, &outs[1]).unwrap(),
        ew::add_relu_forward(g, &a, &b, &outs[2]).unwrap(),
        ew::scale_forward(g, &a, -1.5, &outs[3]).unwrap(),
        ew::relu_backward(g, &a, &b, &outs[4]).unwrap(),
        ew::accumulate(g, &a, &acc).unwrap(),
    ];
    for d in &dispatches {
        assert!(
            d.kernel().name().ends_with('4'),
            "{} did not take the vec4 path",
            d.kernel().name()
        );
    }
    g.run(&dispatches).unwrap();
    let sum = reference::add_forward(&a64, &b64);
    assert_close(
        "relu4",
        &g.read(&outs[0]).unwrap(),
        &reference::relu_forward(&a64),
        1e-6,
    );
    assert_close("add4", &g.read(&outs[1]).unwrap(), &sum, 1e-6);
    assert_close(
        "add_relu4",
        &g.read(&outs[2]).unwrap(),
        &reference::relu_forward(&sum),
        1e-6,
    );
    assert_close(
        "scale4",
        &g.read(&outs[3]).unwrap(),
        &reference::scale(&a64, -1.5),
        1e-6,
    );
    assert_close(
        "relu_backward4",
        &g.read(&outs[4]).unwrap(),
        &reference::relu_backward(&a64, &b64),
        1e-6,
    );
    assert_close("accumulate4", &g.read(&acc).unwrap(), &sum, 1e-6);
    // An odd offset falls back to the scalar kernel.
    let odd = g.upload(&random(3 * 7 * 9, 22), &[3, 7, 3, 3]).unwrap();
    let d = ew::relu_forward(
        g,
        &odd.channel_slice(1, 5).unwrap(),
        &g.zeros(&[3, 4, 3, 3]).unwrap(),
    )
    .unwrap();
    assert_eq!(d.kernel().name(), "elementwise.wgsl::relu_forward");
}

#[test]
fn set_scale_changes_a_prepared_vec4_scale() {
    let g = gpu();
    let x = g
        .upload(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[2, 4])
        .unwrap();
    let y = g.zeros(&[2, 4]).unwrap();
    let d = ew::scale_forward(g, &x, 2.0, &y).unwrap();
    ew::set_scale(g, &d, &x, 0.5, &y).unwrap();
    g.run(&[d]).unwrap();
    assert_eq!(
        g.read(&y).unwrap(),
        vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    );
}

/// Every op with f16 operands (mixed precision's activations and
/// gradients), on the odd shape and on rows of whole quads (the vec4 entry
/// points): each output is the f32 result on the f16 inputs, rounded once.
#[test]
fn f16_operands_match_the_reference_rounded_once() {
    let g = gpu();
    for shape in [SHAPE, [2, 4, 2, 4]] {
        let len: usize = shape.iter().product();
        let host = |seed| to_f16_values(&random(len, seed));
        let (a, b, c, d) = (host(60), host(61), host(62), host(63));
        let gate: Vec<f32> = to_f16_values(&a.iter().map(|v| 0.5 + 0.4 * v).collect::<Vec<_>>());
        let up = |v: &[f32]| g.upload_as(v, &shape, DType::F16).unwrap();
        let out = || g.zeros_of(&shape, DType::F16).unwrap();
        let (ta, tb, tc, tt) = (up(&a), up(&b), up(&c), up(&gate));
        let (relu, drelu, sum, sum_relu, scaled) = (out(), out(), out(), out(), out());
        let (sig, dsig, hw, dt, dh) = (out(), out(), out(), out(), out());
        let acc = up(&c);
        let dy_dx = up(&d);
        g.run(&[
            ew::relu_forward(g, &ta, &relu).unwrap(),
            ew::relu_backward(g, &ta, &tb, &drelu).unwrap(),
            ew::add_forward(g, &ta, &tb, &sum).unwrap(),
            ew::add_relu_forward(g, &ta, &tb, &sum_relu).unwrap(),
            ew::scale_forward(g, &ta, 0.625, &scaled).unwrap(),
            ew::accumulate(g, &tb, &acc).unwrap(),
            ew::sigmoid_forward(g, &ta, &sig).unwrap(),
            ew::sigmoid_backward(g, &tt, &tb, &dsig).unwrap(),
            ew::highway_forward(g, &tt, &tb, &tc, &hw).unwrap(),
            ew::highway_backward(g, &tt, &tb, &tc, &dy_dx, &dt, &dh).unwrap(),
        ])
        .unwrap();
        let (a64, b64, c64, d64, t64) = (
            to_f64(&a),
            to_f64(&b),
            to_f64(&c),
            to_f64(&d),
            to_f64(&gate),
        );
        let read = |t: &Tensor| g.read(t).unwrap();
        let relu_want = reference::relu_forward(&a64);
        assert_f16_rounded("relu", &read(&relu), &relu_want);
        assert_f16_rounded(
            "relu backward",
            &read(&drelu),
            &reference::relu_backward(&a64, &b64),
        );
        let sum_want = reference::add_forward(&a64, &b64);
        assert_f16_rounded("add", &read(&sum), &sum_want);
        assert_f16_rounded(
            "add relu",
            &read(&sum_relu),
            &reference::relu_forward(&sum_want),
        );
        assert_f16_rounded("scale", &read(&scaled), &reference::scale(&a64, 0.625));
        assert_f16_rounded(
            "accumulate",
            &read(&acc),
            &reference::add_forward(&c64, &b64),
        );
        assert_f16_rounded("sigmoid", &read(&sig), &reference::sigmoid_forward(&a64));
        assert_f16_rounded(
            "sigmoid backward",
            &read(&dsig),
            &reference::sigmoid_backward(&t64, &b64),
        );
        assert_f16_rounded(
            "highway",
            &read(&hw),
            &reference::highway_forward(&t64, &b64, &c64),
        );
        let (dt_want, dh_want, dx_want) = reference::highway_backward(&t64, &b64, &c64, &d64);
        assert_f16_rounded("highway dt", &read(&dt), &dt_want);
        assert_f16_rounded("highway dh", &read(&dh), &dh_want);
        assert_f16_rounded("highway dx", &read(&dy_dx), &dx_want);
    }
}

//! Option-A shortcut against the CPU reference and finite differences: odd
//! H and W, odd channel padding, batch 1 and 3, stride 1 and 2, and channel
//! slices of larger buffers.

mod common;

use common::*;
use unravel_device::kernels::shortcut;
use unravel_device::reference::shortcut as reference;

/// Runs forward and backward on contiguous tensors and checks both against
/// the reference, the backward also against finite differences.
fn check(n: usize, ci: usize, h: usize, w: usize, co: usize, stride: usize, seed: u64) {
    let g = gpu();
    let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
    let xs = [n, ci, h, w];
    let x = random(n * ci * h * w, seed);
    let dy = random(n * co * ho * wo, seed + 1);
    let tx = g.upload(&x, &xs).unwrap();
    let ty = g
        .upload(&random(n * co * ho * wo, 99), &[n, co, ho, wo])
        .unwrap();
    let tdy = g.upload(&dy, &[n, co, ho, wo]).unwrap();
    // Garbage in dx: the backward must overwrite every element.
    let tdx = g.upload(&random(n * ci * h * w, 98), &xs).unwrap();
    g.run(&[
        shortcut::shortcut_forward(g, &tx, &ty, stride).unwrap(),
        shortcut::shortcut_backward(g, &tdy, &tdx, stride).unwrap(),
    ])
    .unwrap();
    let what = format!("{xs:?} -> {co} channels, stride {stride}");
    let (x64, dy64) = (to_f64(&x), to_f64(&dy));
    let y = reference::shortcut_forward(&x64, xs, co, stride);
    assert_close(&what, &g.read(&ty).unwrap(), &y, 0.0);
    let dx = reference::shortcut_backward(&dy64, xs, co, stride);
    assert_close(&what, &g.read(&tdx).unwrap(), &dx, 0.0);
    let loss = |x: &[f64]| dot(&reference::shortcut_forward(x, xs, co, stride), &dy64);
    assert_gradient_matches_fd(&what, &loss, &x64, &dx, 1e-6);
}

#[test]
fn odd_sizes_batch_1_symmetric_padding() {
    // 7x9 -> 4x5; 3 -> 7 channels: 2 zero channels on each side.
    check(1, 3, 7, 9, 7, 2, 1);
}

#[test]
fn odd_padding_batch_3_puts_the_extra_zero_channel_last() {
    check(3, 3, 7, 9, 8, 2, 3);
    // And the placement itself: channels 0, 1 and 5, 6, 7 are zero.
    let g = gpu();
    let x = vec![1.0f32; 3 * 7 * 9];
    let tx = g.upload(&x, &[1, 3, 7, 9]).unwrap();
    let ty = g.zeros(&[1, 8, 4, 5]).unwrap();
    g.run(&[shortcut::shortcut_forward(g, &tx, &ty, 2).unwrap()])
        .unwrap();
    let y = g.read(&ty).unwrap();
    for c in 0..8 {
        let want = if (2..5).contains(&c) { 1.0 } else { 0.0 };
        assert!(
            y[c * 20..(c + 1) * 20].iter().all(|&v| v == want),
            "channel {c} should be {want}"
        );
    }
    assert_eq!(shortcut::pad_lo(3, 8), 2);
}

#[test]
fn resnet_stage_transition_and_stride_1() {
    // 16 -> 32 channels on 8x8 (the CIFAR ResNet case) and a stride-1 pad.
    check(3, 16, 8, 8, 32, 2, 5);
    check(3, 5, 5, 6, 9, 1, 7);
    check(1, 4, 3, 3, 4, 1, 9);
}

#[test]
fn four_wide_quads_with_stride_1_and_2() {
    // W and WO multiples of 4: the vec4 entry points run.
    check(2, 4, 4, 8, 6, 1, 23);
    check(3, 3, 16, 16, 8, 2, 25);
    check(1, 5, 6, 8, 5, 2, 27); // WO = 4
    let g = gpu();
    let kernel = |x: &[usize], y: &[usize], s| {
        let (x, y) = (g.zeros(x).unwrap(), g.zeros(y).unwrap());
        let f = shortcut::shortcut_forward(g, &x, &y, s).unwrap();
        let b = shortcut::shortcut_backward(g, &y, &x, s).unwrap();
        [f, b].map(|d| d.kernel().name().ends_with("_vec4"))
    };
    assert_eq!(kernel(&[1, 5, 6, 8], &[1, 5, 3, 4], 2), [true; 2]);
    assert_eq!(kernel(&[1, 4, 4, 8], &[1, 6, 4, 8], 1), [true; 2]);
    // WO = 6 and W = 9 do not split into quads.
    assert_eq!(kernel(&[1, 4, 4, 12], &[1, 6, 2, 6], 2), [false; 2]);
    assert_eq!(kernel(&[1, 3, 7, 9], &[1, 7, 4, 5], 2), [false; 2]);
}

#[test]
fn channel_slices_of_larger_buffers() {
    // 7x9 takes the scalar entry points, 8x16 the vec4 ones.
    slices(7, 9);
    slices(8, 16);
}

fn slices(h: usize, w: usize) {
    let g = gpu();
    let (n, ci, co) = (3, 3, 7);
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let hwo = ho * wo;
    let xs = [n, ci, h, w];
    // x = channels 1..4 of 6, y = channels 2..9 of 10, dy = 0..7 of 8,
    // dx = channels 3..6 of 6.
    let xbig = g.upload(&random(n * 6 * h * w, 11), &[n, 6, h, w]).unwrap();
    let tx = xbig.channel_slice(1, 4).unwrap();
    let ybig_host = random(n * 10 * hwo, 12);
    let ybig = g.upload(&ybig_host, &[n, 10, ho, wo]).unwrap();
    let ty = ybig.channel_slice(2, 9).unwrap();
    let dybig = g.upload(&random(n * 8 * hwo, 13), &[n, 8, ho, wo]).unwrap();
    let tdy = dybig.channel_slice(0, 7).unwrap();
    let dxbig = g.zeros(&[n, 6, h, w]).unwrap();
    let tdx = dxbig.channel_slice(3, 6).unwrap();
    g.run(&[
        shortcut::shortcut_forward(g, &tx, &ty, 2).unwrap(),
        shortcut::shortcut_backward(g, &tdy, &tdx, 2).unwrap(),
    ])
    .unwrap();
    let x64 = to_f64(&g.read(&tx).unwrap());
    let dy64 = to_f64(&g.read(&tdy).unwrap());
    let y = reference::shortcut_forward(&x64, xs, co, 2);
    assert_close("slice forward", &g.read(&ty).unwrap(), &y, 0.0);
    let dx = reference::shortcut_backward(&dy64, xs, co, 2);
    assert_close("slice backward", &g.read(&tdx).unwrap(), &dx, 0.0);
    // Channels outside the slices are untouched.
    let ybig_now = g.read(&ybig).unwrap();
    for b in 0..n {
        for c in (0..2).chain(9..10) {
            let r = (b * 10 + c) * hwo..(b * 10 + c + 1) * hwo;
            assert_eq!(&ybig_now[r.clone()], &ybig_host[r], "y channel {c} changed");
        }
    }
    let untouched = g.read(&dxbig.channel_slice(0, 3).unwrap()).unwrap();
    assert!(untouched.iter().all(|&v| v == 0.0));
}

#[test]
fn bad_shapes_are_typed_errors() {
    let g = gpu();
    let x = g.zeros(&[1, 3, 7, 9]).unwrap();
    // 7 / 2 rounds up to 4, not 3.
    let y = g.zeros(&[1, 6, 3, 5]).unwrap();
    let err = shortcut::shortcut_forward(g, &x, &y, 2).unwrap_err();
    assert!(err.to_string().contains("shortcut_forward"), "{err}");
    // Fewer output than input channels.
    let y = g.zeros(&[1, 2, 4, 5]).unwrap();
    assert!(shortcut::shortcut_forward(g, &x, &y, 2).is_err());
    assert!(shortcut::shortcut_backward(g, &y, &x, 2).is_err());
    let y = g.zeros(&[1, 6, 4, 5]).unwrap();
    let err = shortcut::shortcut_forward(g, &x, &y, 0).unwrap_err();
    assert!(err.to_string().contains("stride"), "{err}");
}

/// Option A with f16 activations, scalar (5x7) and quad (8x8) paths: a
/// shortcut only moves values, so f16 in and out is exact.
#[test]
fn f16_activations_move_exactly() {
    let g = gpu();
    let f16 = unravel_device::DType::F16;
    for (h, w) in [(5, 7), (8, 8)] {
        let (n, ci, co, stride): (usize, usize, usize, usize) = (2, 3, 8, 2);
        let xs = [n, ci, h, w];
        let ys = [n, co, h.div_ceil(stride), w.div_ceil(stride)];
        let x = to_f16_values(&random(xs.iter().product(), 80));
        let dy = to_f16_values(&random(ys.iter().product(), 81));
        let tx = g.upload_as(&x, &xs, f16).unwrap();
        let ty = g.zeros_of(&ys, f16).unwrap();
        let tdy = g.upload_as(&dy, &ys, f16).unwrap();
        let tdx = g.zeros_of(&xs, f16).unwrap();
        g.run(&[
            shortcut::shortcut_forward(g, &tx, &ty, stride).unwrap(),
            shortcut::shortcut_backward(g, &tdy, &tdx, stride).unwrap(),
        ])
        .unwrap();
        let y = reference::shortcut_forward(&to_f64(&x), xs, co, stride);
        assert_close("f16 shortcut forward", &g.read(&ty).unwrap(), &y, 0.0);
        let dx = reference::shortcut_backward(&to_f64(&dy), xs, co, stride);
        assert_close("f16 shortcut backward", &g.read(&tdx).unwrap(), &dx, 0.0);
    }
}

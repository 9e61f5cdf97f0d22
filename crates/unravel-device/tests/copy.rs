//! Copies between channel slices against the CPU reference: a dense block's
//! input copied into the first channels of its concatenation buffer and the
//! slice's gradient copied back out, on rows of whole quads (the vec4 entry
//! point) and not; nothing outside the slice is touched.
//!
//! Shape legend: N batch, C channels, H x W pixels.

mod common;

use common::*;
use unravel_device::kernels::copy;
use unravel_device::reference::copy as reference;
use unravel_device::DType;

const N: usize = 3;
const H: usize = 3;
const W: usize = 7;

fn shape(c: usize) -> [usize; 4] {
    [N, c, H, W]
}

#[test]
fn copies_into_and_out_of_channel_slices_match_reference() {
    // 3x7 rows copy one element per invocation; 4x6 rows hold whole quads.
    roundtrip(3, 7, false);
    roundtrip(4, 6, true);
}

/// x (5 channels) into channels 4..9 of a 13-channel buffer, then channels
/// 4..9 of a gradient buffer into channels 1..6 of a 9-channel one.
fn roundtrip(h: usize, w: usize, quads: bool) {
    let g = gpu();
    let hw = h * w;
    let x_host = random(N * 5 * hw, 10);
    let x = g.upload(&x_host, &[N, 5, h, w]).unwrap();
    let big_host = random(N * 13 * hw, 11);
    let big = g.upload(&big_host, &[N, 13, h, w]).unwrap();
    let slice = big.channel_slice(4, 9).unwrap();
    let grads_host = random(N * 13 * hw, 12);
    let grads = g.upload(&grads_host, &[N, 13, h, w]).unwrap();
    let dslice = grads.channel_slice(4, 9).unwrap();
    let dst_host = random(N * 9 * hw, 13);
    let dst = g.upload(&dst_host, &[N, 9, h, w]).unwrap();
    let dx = dst.channel_slice(1, 6).unwrap();

    let dispatches = [
        copy::copy_forward(g, &x, &slice).unwrap(),
        copy::copy_forward(g, &dslice, &dx).unwrap(),
    ];
    for d in &dispatches {
        assert_eq!(d.kernel().name().ends_with("_vec4"), quads);
    }
    g.run(&dispatches).unwrap();

    let mut want_big = to_f64(&big_host);
    reference::put_channels(&mut want_big, &to_f64(&x_host), N, 13, hw, 4, 5);
    assert_close("into slice", &g.read(&big).unwrap(), &want_big, 0.0);
    let dgrad = reference::channels(&to_f64(&grads_host), N, 13, hw, 4, 5);
    let mut want_dst = to_f64(&dst_host);
    reference::put_channels(&mut want_dst, &dgrad, N, 9, hw, 1, 5);
    assert_close("out of slice", &g.read(&dst).unwrap(), &want_dst, 0.0);
}

#[test]
fn copy_forward_copies_a_slice_out() {
    let g = gpu();
    let host = random(N * 6 * H * W, 40);
    let t = g.upload(&host, &shape(6)).unwrap();
    let slice = t.channel_slice(2, 5).unwrap();
    let dst = g.zeros(&shape(3)).unwrap();
    g.run(&[copy::copy_forward(g, &slice, &dst).unwrap()])
        .unwrap();
    let want = reference::channels(&to_f64(&host), N, 6, H * W, 2, 3);
    assert_close("copy slice", &g.read(&dst).unwrap(), &want, 0.0);
}

/// f32 into an f16 channel slice (odd offsets: 21-pixel channels), then
/// the slice back out to f32: the copy converts both ways, touches nothing
/// outside the slice, and f16 to f32 is exact.
#[test]
fn copies_convert_between_f32_and_f16_slices() {
    let g = gpu();
    for (h, w) in [(3, 7), (4, 6)] {
        let hw = h * w;
        let x_host = random(N * 5 * hw, 50);
        let x = g.upload(&x_host, &[N, 5, h, w]).unwrap();
        let big_host = to_f16_values(&random(N * 13 * hw, 51));
        let big = g.upload_as(&big_host, &[N, 13, h, w], DType::F16).unwrap();
        assert_eq!(
            big.buffer().size(),
            (N * 13 * hw * 2).next_multiple_of(4) as u64
        );
        // Exactly representable values survive the round trip unchanged.
        assert_eq!(g.read(&big).unwrap(), big_host);
        let slice = big.channel_slice(4, 9).unwrap();
        let back = g.zeros(&[N, 5, h, w]).unwrap();
        g.run(&[
            copy::copy_forward(g, &x, &slice).unwrap(),
            copy::copy_forward(g, &slice, &back).unwrap(),
        ])
        .unwrap();
        let mut want_big = to_f64(&big_host);
        reference::put_channels(&mut want_big, &to_f64(&x_host), N, 13, hw, 4, 5);
        assert_f16_rounded("into an f16 slice", &g.read(&big).unwrap(), &want_big);
        let got_slice = reference::channels(&to_f64(&g.read(&big).unwrap()), N, 13, hw, 4, 5);
        assert_close(
            "out of an f16 slice",
            &g.read(&back).unwrap(),
            &got_slice,
            0.0,
        );
    }
}

#[test]
fn bad_shapes_are_typed_errors() {
    let g = gpu();
    let a = g.zeros(&shape(3)).unwrap();
    let b = g.zeros(&shape(5)).unwrap();
    let err = copy::copy_forward(g, &a, &b).unwrap_err();
    assert!(err.to_string().contains("differ"), "{err}");
    let u = g.zeros_u32(&shape(3)).unwrap();
    let err = copy::copy_forward(g, &u, &a).unwrap_err();
    assert!(err.to_string().contains("f32 or f16"), "{err}");
}

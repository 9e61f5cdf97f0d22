//! Channel concatenation and its backward (split) against the CPU reference
//! and finite differences, on plain tensors and on channel slices of larger
//! buffers.

mod common;

use common::*;
use unravel_device::kernels::copy;
use unravel_device::reference::copy as reference;

// Channel counts 3, 5, 2 (none a multiple of 4) over N=3, H=3, W=7.
const CHANNELS: [usize; 3] = [3, 5, 2];
const N: usize = 3;
const H: usize = 3;
const W: usize = 7;

fn shape(c: usize) -> [usize; 4] {
    [N, c, H, W]
}

#[test]
fn concat_forward_and_backward_match_reference_and_finite_differences() {
    // 3x7 rows copy one element per invocation; 4x6 rows hold whole quads.
    concat_roundtrip(H, W, false);
    concat_roundtrip(4, 6, true);
}

fn concat_roundtrip(h: usize, w: usize, quads: bool) {
    let g = gpu();
    let shape = |c: usize| [N, c, h, w];
    let c_out: usize = CHANNELS.iter().sum();
    let xs: Vec<Vec<f32>> = CHANNELS
        .iter()
        .enumerate()
        .map(|(k, &c)| random(N * c * h * w, 10 + k as u64))
        .collect();
    let txs: Vec<_> = xs
        .iter()
        .zip(CHANNELS)
        .map(|(x, c)| g.upload(x, &shape(c)).unwrap())
        .collect();
    let out = g.zeros(&shape(c_out)).unwrap();
    let dout_host = random(N * c_out * h * w, 20);
    let dout = g.upload(&dout_host, &shape(c_out)).unwrap();
    let grads: Vec<_> = CHANNELS
        .iter()
        .map(|&c| g.zeros(&shape(c)).unwrap())
        .collect();

    let refs: Vec<_> = txs.iter().collect();
    let grad_refs: Vec<_> = grads.iter().collect();
    let mut dispatches = copy::concat_forward(g, &refs, &out).unwrap();
    dispatches.extend(copy::concat_backward(g, &dout, &grad_refs).unwrap());
    assert_eq!(dispatches.len(), 6);
    for d in &dispatches {
        assert_eq!(d.kernel().name().ends_with("_vec4"), quads);
    }
    g.run(&dispatches).unwrap();

    let x64: Vec<Vec<f64>> = xs.iter().map(|x| to_f64(x)).collect();
    let parts: Vec<(&[f64], usize)> = x64.iter().map(|x| x.as_slice()).zip(CHANNELS).collect();
    let want = reference::concat_forward(&parts, N, h * w);
    assert_close("concat", &g.read(&out).unwrap(), &want, 0.0);

    let dout64 = to_f64(&dout_host);
    let want_grads = reference::concat_backward(&dout64, &CHANNELS, N, h * w);
    for (k, (t, want)) in grads.iter().zip(&want_grads).enumerate() {
        assert_close(&format!("split {k}"), &g.read(t).unwrap(), want, 0.0);
        // d/dx_k of sum(concat(x) * dout), varying input k alone.
        let loss = |xk: &[f64]| {
            let parts: Vec<(&[f64], usize)> = (0..3)
                .map(|j| (if j == k { xk } else { x64[j].as_slice() }, CHANNELS[j]))
                .collect();
            dot(&reference::concat_forward(&parts, N, h * w), &dout64)
        };
        assert_gradient_matches_fd(&format!("split {k}"), &loss, &x64[k], want, 1e-6);
    }
}

#[test]
fn concat_into_a_channel_slice_leaves_the_rest_untouched() {
    let g = gpu();
    // The output occupies channels 4..14 of a 17-channel buffer; the second
    // input is itself channels 1..6 of a 9-channel buffer.
    let big_host = random(N * 17 * H * W, 30);
    let big = g.upload(&big_host, &shape(17)).unwrap();
    let out = big.channel_slice(4, 14).unwrap();
    let a_host = random(N * 3 * H * W, 31);
    let src_host = random(N * 9 * H * W, 32);
    let c_host = random(N * 2 * H * W, 33);
    let a = g.upload(&a_host, &shape(3)).unwrap();
    let src = g.upload(&src_host, &shape(9)).unwrap();
    let b = src.channel_slice(1, 6).unwrap();
    let c = g.upload(&c_host, &shape(2)).unwrap();
    g.run(&copy::concat_forward(g, &[&a, &b, &c], &out).unwrap())
        .unwrap();

    let b_host = g.read(&b).unwrap();
    let (a64, b64, c64) = (to_f64(&a_host), to_f64(&b_host), to_f64(&c_host));
    let cat = reference::concat_forward(&[(&a64, 3), (&b64, 5), (&c64, 2)], N, H * W);
    let hw = H * W;
    let mut want = to_f64(&big_host);
    for n in 0..N {
        let dst = (n * 17 + 4) * hw;
        want[dst..dst + 10 * hw].copy_from_slice(&cat[n * 10 * hw..(n + 1) * 10 * hw]);
    }
    assert_close("concat into slice", &g.read(&big).unwrap(), &want, 0.0);

    // Split it back out of the slice into another slice.
    let dst_big = g.zeros(&shape(9)).unwrap();
    let dst_b = dst_big.channel_slice(2, 7).unwrap();
    let a2 = g.zeros(&shape(3)).unwrap();
    let c2 = g.zeros(&shape(2)).unwrap();
    g.run(&copy::concat_backward(g, &out, &[&a2, &dst_b, &c2]).unwrap())
        .unwrap();
    assert_close("split a", &g.read(&a2).unwrap(), &a64, 0.0);
    assert_close("split b", &g.read(&dst_b).unwrap(), &b64, 0.0);
    assert_close("split c", &g.read(&c2).unwrap(), &c64, 0.0);
    let rest = g.read(&dst_big.channel_slice(7, 9).unwrap()).unwrap();
    assert!(
        rest.iter().all(|&v| v == 0.0),
        "split wrote outside its slice"
    );
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
    let want: Vec<f64> = (0..N)
        .flat_map(|n| host[(n * 6 + 2) * H * W..(n * 6 + 5) * H * W].iter())
        .map(|&v| v as f64)
        .collect();
    assert_close("copy slice", &g.read(&dst).unwrap(), &want, 0.0);
}

#[test]
fn bad_shapes_are_typed_errors() {
    let g = gpu();
    let a = g.zeros(&shape(3)).unwrap();
    let b = g.zeros(&shape(5)).unwrap();
    let out = g.zeros(&shape(9)).unwrap();
    let err = copy::concat_forward(g, &[&a, &b], &out).unwrap_err();
    assert!(err.to_string().contains("add up to 8"), "{err}");
    let wrong_hw = g.zeros(&[N, 1, H, W + 1]).unwrap();
    let err = copy::concat_backward(g, &out, &[&a, &b, &wrong_hw]).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
    let err = copy::copy_forward(g, &a, &b).unwrap_err();
    assert!(err.to_string().contains("differ"), "{err}");
}

//! 2-D convolution against the CPU reference: forward, input gradient and
//! weight/bias gradient, for both algorithms, on awkward geometries (odd
//! sizes, channel counts that are not multiples of 4, strides 1-3, padding,
//! groups, depthwise) and on channel-slice views; the reference's backward
//! passes against finite differences of its forward.

mod common;

use common::*;
use unravel_device::kernels::conv2d::{
    conv2d_backward_input_accumulate_with, conv2d_backward_input_with, conv2d_backward_weight_with,
    conv2d_forward, conv2d_forward_with, Conv2dAlgo, Conv2dShape,
};
use unravel_device::reference::conv2d as reference;
use unravel_device::Tensor;

/// f32 against f64 with reductions of a few hundred terms.
const TOL: f64 = 1e-4;

#[allow(clippy::too_many_arguments)]
fn shape(
    n: usize,
    c_in: usize,
    c_out: usize,
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

fn numel(shape: [usize; 4]) -> usize {
    shape.iter().product()
}

/// A tensor pre-filled with garbage, so a kernel that skips an element (or
/// accumulates instead of overwriting) is caught.
fn garbage(shape: &[usize], seed: u64) -> Tensor {
    let len = shape.iter().product();
    gpu().upload(&random(len, seed), shape).unwrap()
}

/// Runs all three passes of `s` with `algo` and checks them against the
/// reference.
fn check(s: Conv2dShape, with_bias: bool, algo: Conv2dAlgo, seed: u64) {
    let g = gpu();
    let what = format!("{algo:?} {s:?} bias={with_bias}");
    let x = random(numel(s.input_shape()), seed);
    let w = random(numel(s.weight_shape()), seed + 1);
    let bias = random(s.c_out, seed + 2);
    let dy = random(numel(s.output_shape()), seed + 3);
    let tx = g.upload(&x, &s.input_shape()).unwrap();
    let tw = g.upload(&w, &s.weight_shape()).unwrap();
    let tb = g.upload(&bias, &[s.c_out]).unwrap();
    let tdy = g.upload(&dy, &s.output_shape()).unwrap();
    let ty = garbage(&s.output_shape(), seed + 4);
    let tdx = garbage(&s.input_shape(), seed + 5);
    let tdw = garbage(&s.weight_shape(), seed + 6);
    let tdb = garbage(&[s.c_out], seed + 7);
    let tdx_sum = garbage(&s.input_shape(), seed + 8);
    let b = with_bias.then_some(&tb);
    let db = with_bias.then_some(&tdb);
    let mut dispatches = conv2d_forward_with(g, algo, &s, &tx, &tw, b, &ty).unwrap();
    dispatches.extend(conv2d_backward_input_with(g, algo, &s, &tdy, &tw, &tdx).unwrap());
    dispatches.extend(conv2d_backward_weight_with(g, algo, &s, &tx, &tdy, &tdw, db).unwrap());
    dispatches
        .extend(conv2d_backward_input_accumulate_with(g, algo, &s, &tdy, &tw, &tdx_sum).unwrap());
    g.run(&dispatches).unwrap();

    let (x64, w64, b64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&bias), to_f64(&dy));
    let b64 = with_bias.then_some(&b64[..]);
    let y = reference::conv2d_forward(&s, &x64, &w64, b64);
    assert_close(&format!("forward {what}"), &g.read(&ty).unwrap(), &y, TOL);
    let dx = reference::conv2d_backward_input(&s, &dy64, &w64);
    assert_close(&format!("dx {what}"), &g.read(&tdx).unwrap(), &dx, TOL);
    let before = to_f64(&random(numel(s.input_shape()), seed + 8));
    let sum: Vec<f64> = before.iter().zip(&dx).map(|(a, b)| a + b).collect();
    let got_sum = g.read(&tdx_sum).unwrap();
    assert_close(&format!("dx accumulated {what}"), &got_sum, &sum, TOL);
    let (dw, dbias) = reference::conv2d_backward_weight(&s, &x64, &dy64);
    assert_close(&format!("dw {what}"), &g.read(&tdw).unwrap(), &dw, TOL);
    let got_db = g.read(&tdb).unwrap();
    if with_bias {
        assert_close(&format!("dbias {what}"), &got_db, &dbias, TOL);
    } else {
        let untouched = random(s.c_out, seed + 7);
        assert_eq!(got_db, untouched, "dbias written without a bias: {what}");
    }
}

/// Every algorithm the adapter runs.
fn check_both(s: Conv2dShape, with_bias: bool, seed: u64) {
    check(s, with_bias, Conv2dAlgo::Direct, seed);
    check(s, with_bias, Conv2dAlgo::Tiled, seed);
    if gpu().features().contains(wgpu::Features::SUBGROUP) {
        // Both register budgets (GPUs' and CPUs') and the shuffle path.
        check(s, with_bias, Conv2dAlgo::Subgroup, seed);
        check(s, with_bias, Conv2dAlgo::SubgroupWide, seed);
        check(s, with_bias, Conv2dAlgo::SubgroupShuffle, seed);
    }
}

#[test]
fn dense_convolutions_match_reference() {
    // 3 -> 5 on 7x9, 3x3 same padding, batch 1.
    check_both(shape(1, 3, 5, (7, 9), 3, 1, 1, 1), true, 10);
    // 1x1 on odd sizes, batch 3.
    check_both(shape(3, 5, 7, (5, 5), 1, 1, 0, 1), true, 20);
    // More output channels than one register block (36 = 16 + 16 + 4) and
    // more input channels than one block for the input gradient.
    check_both(shape(1, 20, 36, (6, 6), 3, 1, 1, 1), false, 30);
    // More pixels than one workgroup's rows (429 > 256), several splits of
    // the weight-gradient reduction with a ragged last one.
    check_both(shape(3, 3, 5, (11, 13), 3, 1, 1, 1), true, 32);
    // More weight columns than one workgroup's rows (R = 288 > 256).
    check_both(shape(1, 32, 8, (5, 5), 3, 1, 1, 1), true, 34);
    // A 5x5 kernel.
    check_both(shape(2, 4, 6, (9, 7), 5, 1, 2, 1), false, 36);
    // Widths that are whole vec4s: window mode stores a lane's 4 pixels of a
    // channel as one vec4 (with the bias added there).
    check_both(shape(2, 5, 6, (6, 8), 3, 1, 1, 1), true, 38);
    // Lanes of 8 pixels on rows of 12: the last lane of a row is half full.
    check_both(shape(1, 4, 5, (5, 12), 3, 1, 1, 1), true, 39);
    // 20 input channels (5 column blocks) in the input gradient's lanes of 8.
    check_both(shape(2, 20, 6, (6, 8), 3, 1, 1, 1), false, 41);
}

#[test]
fn strided_convolutions_match_reference() {
    // ResNet's stride-2 3x3, odd input.
    check_both(shape(3, 6, 10, (11, 13), 3, 2, 1, 2), false, 40);
    // Stem-like 7x7 stride 2 pad 3.
    check_both(shape(1, 3, 4, (11, 13), 7, 2, 3, 1), true, 50);
    // 1x1 stride 2 (projection shortcut): some input pixels get no gradient.
    check_both(shape(3, 16, 32, (9, 9), 1, 2, 0, 1), false, 60);
    // Stride 3 and stride 2 without padding.
    check_both(shape(1, 4, 6, (11, 13), 3, 3, 1, 1), true, 70);
    check_both(shape(3, 3, 5, (11, 13), 3, 2, 0, 1), false, 80);
    // The stride-2 input gradient's window mode with vec4 stores: odd
    // padding (pixels 1, 3 take two taps), even padding (pixels 0, 2), and
    // a forward whose output rows are whole vec4s too.
    check_both(shape(3, 6, 10, (10, 12), 3, 2, 1, 1), true, 82);
    check_both(shape(1, 4, 7, (9, 8), 3, 2, 2, 1), false, 84);
    check_both(shape(2, 3, 5, (8, 16), 3, 2, 1, 1), true, 86);
    // One column: every lane's first pixel with two taps is past the edge.
    check_both(shape(2, 3, 4, (7, 1), 3, 2, 1, 1), false, 88);
    // More than 16 input channels: two column blocks, the second ragged.
    check_both(shape(1, 20, 6, (7, 10), 3, 2, 1, 1), false, 90);
    check_both(shape(2, 36, 4, (6, 9), 3, 2, 1, 1), false, 92);
}

#[test]
fn windows_loaded_as_vec4s_match_reference() {
    // Where rows are whole vec4s, window mode loads each window as vec4s;
    // the first element's place in its vec4 (A4_SHIFT) follows the padding.
    // Forward: P = 0 at stride 1 (place 0); P = 2 at stride 2 is test 84.
    check_both(shape(2, 4, 6, (6, 8), 3, 1, 0, 1), false, 140);
    // Input gradient at stride 1, P = 2: dy rows of 8, place 0.
    check_both(shape(1, 3, 5, (4, 6), 3, 1, 2, 1), true, 142);
    // Input gradient at stride 2: P = 0 (place 3) and P = 2 (place 0) on
    // dy rows of 8; the dx rows (17, 14) are not whole lanes of 8.
    check_both(shape(2, 3, 5, (9, 17), 3, 2, 0, 1), false, 144);
    check_both(shape(1, 4, 6, (7, 14), 3, 2, 2, 1), false, 146);
}

#[test]
fn weight_gradient_window_mode_matches_reference() {
    // Output rows of whole chunks of 8 pixels, no bias: the weight gradient
    // loads one window per (ci, ky) pair and chunk. Several splits with a
    // ragged last one and an odd number of pairs (15).
    check_both(shape(3, 5, 7, (6, 16), 3, 1, 1, 1), false, 130);
    // Stride 2 (windows of 17), no padding with groups, a single row.
    check_both(shape(2, 3, 4, (9, 16), 3, 2, 1, 1), false, 132);
    check_both(shape(2, 4, 6, (10, 10), 3, 1, 0, 2), false, 134);
    check_both(shape(1, 2, 3, (1, 8), 3, 1, 1, 1), false, 136);
}

#[test]
fn grouped_convolutions_match_reference() {
    check_both(shape(3, 8, 8, (7, 9), 3, 1, 1, 4), false, 90);
    // ResNeXt-like: 64 -> 64 channels in 32 groups of 2.
    check_both(shape(2, 64, 64, (5, 5), 3, 1, 1, 32), true, 100);
}

#[test]
fn depthwise_convolutions_match_reference() {
    check_both(shape(3, 6, 6, (7, 9), 3, 2, 1, 6), true, 110);
    // Channel multiplier 2.
    check_both(shape(1, 5, 10, (7, 7), 3, 1, 1, 5), false, 120);
}

/// DenseNet's use: x is a channel prefix of the concatenation buffer and y
/// a slice of the same buffer; dy and dx are slices of another buffer.
#[test]
fn channel_slices_of_one_buffer_are_read_and_written_in_place() {
    // 7x9 planes, and 8x8 ones where window mode stores vec4s.
    channel_slices_in_place(7, 9);
    channel_slices_in_place(8, 8);
}

fn channel_slices_in_place(h: usize, w: usize) {
    let g = gpu();
    let s = shape(3, 5, 4, (h, w), 3, 1, 1, 1);
    let total = [3, 12, h, w];
    let hw = h * w;
    for algo in [
        Conv2dAlgo::Direct,
        Conv2dAlgo::Tiled,
        Conv2dAlgo::for_gpu(g),
    ] {
        let concat_host = random(numel(total), 200);
        let concat = g.upload(&concat_host, &total).unwrap();
        let x = concat.channel_slice(0, 5).unwrap();
        let y = concat.channel_slice(8, 12).unwrap();
        let grads_host = random(numel(total), 201);
        let grads = g.upload(&grads_host, &total).unwrap();
        let dy = grads.channel_slice(8, 12).unwrap();
        let dx = grads.channel_slice(1, 6).unwrap();
        let w = random(numel(s.weight_shape()), 202);
        let tw = g.upload(&w, &s.weight_shape()).unwrap();
        let tdw = g.zeros(&s.weight_shape()).unwrap();

        let mut d = conv2d_forward_with(g, algo, &s, &x, &tw, None, &y).unwrap();
        d.extend(conv2d_backward_weight_with(g, algo, &s, &x, &dy, &tdw, None).unwrap());
        d.extend(conv2d_backward_input_with(g, algo, &s, &dy, &tw, &dx).unwrap());
        g.run(&d).unwrap();

        let channels = |host: &[f32], c0: usize, c1: usize| -> Vec<f64> {
            (0..3)
                .flat_map(|n| host[(n * 12 + c0) * hw..(n * 12 + c1) * hw].iter())
                .map(|&v| v as f64)
                .collect()
        };
        let x64 = channels(&concat_host, 0, 5);
        let dy64 = channels(&grads_host, 8, 12);
        let w64 = to_f64(&w);
        let want_y = reference::conv2d_forward(&s, &x64, &w64, None);
        let want_dx = reference::conv2d_backward_input(&s, &dy64, &w64);
        let (want_dw, _) = reference::conv2d_backward_weight(&s, &x64, &dy64);
        assert_close("y slice", &g.read(&y).unwrap(), &want_y, TOL);
        assert_close("dx slice", &g.read(&dx).unwrap(), &want_dx, TOL);
        assert_close("dw", &g.read(&tdw).unwrap(), &want_dw, TOL);

        // Everything outside the written slices is untouched.
        let got_concat = g.read(&concat).unwrap();
        let got_grads = g.read(&grads).unwrap();
        for n in 0..3 {
            for c in 0..12 {
                let range = (n * 12 + c) * hw..(n * 12 + c + 1) * hw;
                if !(8..12).contains(&c) {
                    assert_eq!(
                        got_concat[range.clone()],
                        concat_host[range.clone()],
                        "{algo:?} concat n={n} c={c}"
                    );
                }
                if !(1..6).contains(&c) {
                    assert_eq!(
                        got_grads[range.clone()],
                        grads_host[range],
                        "{algo:?} grads n={n} c={c}"
                    );
                }
            }
        }
    }
}

#[test]
fn reference_backward_matches_finite_differences() {
    for (s, seed) in [
        (shape(2, 4, 6, (5, 7), 3, 2, 1, 2), 300),
        (shape(1, 3, 3, (6, 5), 3, 1, 1, 3), 310),
        (shape(1, 2, 3, (7, 7), 1, 2, 0, 1), 320),
    ] {
        let x = to_f64(&random(numel(s.input_shape()), seed));
        let w = to_f64(&random(numel(s.weight_shape()), seed + 1));
        let b = to_f64(&random(s.c_out, seed + 2));
        let dy = to_f64(&random(numel(s.output_shape()), seed + 3));
        let dx = reference::conv2d_backward_input(&s, &dy, &w);
        let (dw, db) = reference::conv2d_backward_weight(&s, &x, &dy);
        let loss_x = |x: &[f64]| dot(&reference::conv2d_forward(&s, x, &w, Some(&b)), &dy);
        assert_gradient_matches_fd("dx", &loss_x, &x, &dx, 1e-6);
        let loss_w = |w: &[f64]| dot(&reference::conv2d_forward(&s, &x, w, Some(&b)), &dy);
        assert_gradient_matches_fd("dw", &loss_w, &w, &dw, 1e-6);
        let loss_b = |b: &[f64]| dot(&reference::conv2d_forward(&s, &x, &w, Some(b)), &dy);
        assert_gradient_matches_fd("dbias", &loss_b, &b, &db, 1e-6);
    }
}

#[test]
fn bad_shapes_are_typed_errors() {
    let g = gpu();
    let s = shape(1, 4, 6, (5, 5), 3, 1, 1, 2);
    let x = g.zeros(&s.input_shape()).unwrap();
    let w = g.zeros(&s.weight_shape()).unwrap();
    let y = g.zeros(&s.output_shape()).unwrap();
    // Weights of the ungrouped conv.
    let w_dense = g.zeros(&[6, 4, 3, 3]).unwrap();
    let err = conv2d_forward(g, &s, &x, &w_dense, None, &y).unwrap_err();
    assert!(err.to_string().contains("w must be a contiguous"), "{err}");
    // Output of the wrong size.
    let y_bad = g.zeros(&[1, 6, 4, 5]).unwrap();
    let err = conv2d_forward(g, &s, &x, &w, None, &y_bad).unwrap_err();
    assert!(err.to_string().contains("y has shape"), "{err}");
    // Channels not divisible by the groups.
    let s_bad = Conv2dShape { groups: 3, ..s };
    let err = conv2d_forward(g, &s_bad, &x, &w, None, &y).unwrap_err();
    assert!(err.to_string().contains("not divisible"), "{err}");
    // Kernel larger than the padded input.
    let s_bad = Conv2dShape { kh: 9, kw: 9, ..s };
    assert!(s_bad.validate().is_err());
    // A strided weight view.
    let big = g.zeros(&[6, 4, 3, 3]).unwrap();
    let strided = big.channel_slice(0, 2).unwrap();
    let err = conv2d_forward(g, &s, &x, &strided, None, &y).unwrap_err();
    assert!(err.to_string().contains("strided"), "{err}");
}

#[test]
fn shape_helpers_follow_pytorch() {
    let s = shape(64, 16, 32, (32, 32), 3, 2, 1, 1);
    assert_eq!(s.output_shape(), [64, 32, 16, 16]);
    assert_eq!(s.weight_shape(), [32, 16, 3, 3]);
    assert_eq!(s.macs(), 64 * 32 * 16 * 16 * 16 * 9);
    let s = shape(1, 3, 8, (11, 13), 7, 2, 3, 1);
    assert_eq!((s.out_h(), s.out_w()), (6, 7));
}

#[test]
fn the_algorithm_can_be_chosen_by_name_for_an_adapter() {
    assert_eq!("tiled".parse::<Conv2dAlgo>(), Ok(Conv2dAlgo::Tiled));
    assert_eq!("Subgroup".parse::<Conv2dAlgo>(), Ok(Conv2dAlgo::Subgroup));
    assert_eq!(
        "subgroup-wide".parse::<Conv2dAlgo>(),
        Ok(Conv2dAlgo::SubgroupWide)
    );
    assert_eq!(
        "subgroup-shuffle".parse::<Conv2dAlgo>(),
        Ok(Conv2dAlgo::SubgroupShuffle)
    );
    let err = "winograd".parse::<Conv2dAlgo>().unwrap_err();
    assert!(err.contains("unknown convolution algorithm"), "{err}");
    let options = unravel_device::AdapterOptions {
        conv_algo: Some(Conv2dAlgo::Direct),
        ..Default::default()
    };
    let g = unravel_device::Gpu::new(&options).unwrap();
    assert_eq!(Conv2dAlgo::for_gpu(&g), Conv2dAlgo::Direct);
}

//! Every convolution variant against the CPU reference: forward, input
//! gradient (written and added) and weight/bias gradient, on awkward
//! geometries (odd sizes, channel counts that are not multiples of 4,
//! strides 1-3, padding, groups, depthwise, window modes with and without
//! vec4 loads and stores).
//!
//! Shape legend: x [N, C, H, W], w [K, C/G, KH, KW], y [N, K, OH, OW].

use super::common::*;
use super::{variants, Variant};
use crate::kernels::conv2d::{Conv2dEpilogue, Conv2dShape};
use crate::kernels::Store;
use crate::reference::conv2d as reference;
use crate::{DType, Tensor};

/// f32 against f64 with reductions of a few hundred terms.
const TOL: f64 = 1e-4;

fn numel(shape: [usize; 4]) -> usize {
    shape.iter().product()
}

/// A tensor pre-filled with garbage, so a kernel that skips an element (or
/// accumulates instead of overwriting) is caught.
fn garbage(shape: &[usize], seed: u64) -> Tensor {
    garbage_as(shape, seed, DType::F32)
}

fn garbage_as(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let len = shape.iter().product();
    gpu().upload_as(&random(len, seed), shape, dtype).unwrap()
}

/// Host data as activations of `dtype` hold it (f16: rounded).
fn as_activation(v: Vec<f32>, dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => to_f16_values(&v),
        _ => v,
    }
}

/// Runs all three passes of `s` with `variant` and checks them against
/// the reference.
fn check(s: Conv2dShape, with_bias: bool, variant: Variant, seed: u64) {
    check_as(s, with_bias, variant, seed, DType::F32, 0.0);
}

/// The same with activations and their gradients (x, y, dy, dx) of
/// `dtype`. Weights, bias and their gradients stay f32. With f16, y and dx
/// are f32 sums of exact products of f16 inputs, rounded once when stored:
/// one f16 rounding of the largest value on top of the f32 tolerance; dw
/// and dbias are f32 and keep the f32 tolerance. `operand_tol` is added to
/// every tolerance where the kernel rounds its operands (tensor cores).
fn check_as(
    s: Conv2dShape,
    with_bias: bool,
    variant: Variant,
    seed: u64,
    dtype: DType,
    operand_tol: f64,
) {
    let g = gpu();
    let what = format!("{variant:?} {s:?} bias={with_bias} {}", dtype.name());
    let x = as_activation(random(numel(s.input_shape()), seed), dtype);
    let w = random(numel(s.weight_shape()), seed + 1);
    let bias = random(s.c_out, seed + 2);
    let dy = as_activation(random(numel(s.output_shape()), seed + 3), dtype);
    let tx = g.upload_as(&x, &s.input_shape(), dtype).unwrap();
    let tw = g.upload(&w, &s.weight_shape()).unwrap();
    let tb = g.upload(&bias, &[s.c_out]).unwrap();
    let tdy = g.upload_as(&dy, &s.output_shape(), dtype).unwrap();
    let ty = garbage_as(&s.output_shape(), seed + 4, dtype);
    let tdx = garbage_as(&s.input_shape(), seed + 5, dtype);
    let tdw = garbage(&s.weight_shape(), seed + 6);
    let tdb = garbage(&[s.c_out], seed + 7);
    let tdx_sum = garbage_as(&s.input_shape(), seed + 8, dtype);
    let act_tol = match dtype {
        DType::F16 => F16_ROUNDING + TOL,
        _ => TOL,
    } + operand_tol;
    let tol = TOL + operand_tol;
    let epilogue = match with_bias {
        true => Conv2dEpilogue::Bias(&tb),
        false => Conv2dEpilogue::None,
    };
    let db = with_bias.then_some(&tdb);
    let v = variant;
    let mut dispatches = v.forward(&s, &tx, &tw, &ty, epilogue).unwrap();
    dispatches.extend(v.backward_input(&s, &tdy, &tw, &tdx, Store::Write).unwrap());
    dispatches.extend(v.backward_weight(&s, &tx, &tdy, &tdw, db).unwrap());
    dispatches.extend(
        v.backward_input(&s, &tdy, &tw, &tdx_sum, Store::Add)
            .unwrap(),
    );
    g.run(&dispatches).unwrap();

    let (x64, w64, b64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&bias), to_f64(&dy));
    let b64 = with_bias.then_some(&b64[..]);
    let y = reference::conv2d_forward(&s, &x64, &w64, b64);
    assert_close(
        &format!("forward {what}"),
        &g.read(&ty).unwrap(),
        &y,
        act_tol,
    );
    let dx = reference::conv2d_backward_input(&s, &dy64, &w64);
    assert_close(&format!("dx {what}"), &g.read(&tdx).unwrap(), &dx, act_tol);
    let before = to_f64(&as_activation(
        random(numel(s.input_shape()), seed + 8),
        dtype,
    ));
    let sum: Vec<f64> = before.iter().zip(&dx).map(|(a, b)| a + b).collect();
    let got_sum = g.read(&tdx_sum).unwrap();
    assert_close(&format!("dx accumulated {what}"), &got_sum, &sum, act_tol);
    let (dw, dbias) = reference::conv2d_backward_weight(&s, &x64, &dy64);
    assert_close(&format!("dw {what}"), &g.read(&tdw).unwrap(), &dw, tol);
    let got_db = g.read(&tdb).unwrap();
    if with_bias {
        assert_close(&format!("dbias {what}"), &got_db, &dbias, tol);
    } else {
        let untouched = random(s.c_out, seed + 7);
        assert_eq!(got_db, untouched, "dbias written without a bias: {what}");
    }
}

/// Every algorithm, both register budgets (GPUs' and CPUs') and the
/// shuffle path.
fn check_both(s: Conv2dShape, with_bias: bool, seed: u64) {
    for variant in variants() {
        check(s, with_bias, variant, seed);
    }
}

#[test]
fn dense_convolutions_match_reference() {
    // 3 -> 5 on 7x9, 3x3 same padding, batch 1.
    check_both(conv_shape(1, (3, 5), (7, 9), 3, 1, 1, 1), true, 10);
    // 1x1 on odd sizes, batch 3.
    check_both(conv_shape(3, (5, 7), (5, 5), 1, 1, 0, 1), true, 20);
    // More output channels than one register block (36 = 16 + 16 + 4) and
    // more input channels than one block for the input gradient.
    check_both(conv_shape(1, (20, 36), (6, 6), 3, 1, 1, 1), false, 30);
    // More pixels than one workgroup's rows (429 > 256), several splits of
    // the weight-gradient reduction with a ragged last one.
    check_both(conv_shape(3, (3, 5), (11, 13), 3, 1, 1, 1), true, 32);
    // More weight columns than one workgroup's rows (R = 288 > 256).
    check_both(conv_shape(1, (32, 8), (5, 5), 3, 1, 1, 1), true, 34);
    // A 5x5 kernel.
    check_both(conv_shape(2, (4, 6), (9, 7), 5, 1, 2, 1), false, 36);
    // Widths that are whole vec4s: window mode stores a lane's 4 pixels of a
    // channel as one vec4 (with the bias added there).
    check_both(conv_shape(2, (5, 6), (6, 8), 3, 1, 1, 1), true, 38);
    // Lanes of 8 pixels on rows of 12: the last lane of a row is half full.
    check_both(conv_shape(1, (4, 5), (5, 12), 3, 1, 1, 1), true, 39);
    // 20 input channels (5 column blocks) in the input gradient's lanes of 8.
    check_both(conv_shape(2, (20, 6), (6, 8), 3, 1, 1, 1), false, 41);
}

#[test]
fn strided_convolutions_match_reference() {
    // ResNet's stride-2 3x3, odd input.
    check_both(conv_shape(3, (6, 10), (11, 13), 3, 2, 1, 2), false, 40);
    // Stem-like 7x7 stride 2 pad 3.
    check_both(conv_shape(1, (3, 4), (11, 13), 7, 2, 3, 1), true, 50);
    // 1x1 stride 2 (projection shortcut): some input pixels get no gradient.
    check_both(conv_shape(3, (16, 32), (9, 9), 1, 2, 0, 1), false, 60);
    // Stride 3 and stride 2 without padding.
    check_both(conv_shape(1, (4, 6), (11, 13), 3, 3, 1, 1), true, 70);
    check_both(conv_shape(3, (3, 5), (11, 13), 3, 2, 0, 1), false, 80);
    // The stride-2 input gradient's window mode with vec4 stores: odd
    // padding (pixels 1, 3 take two taps), even padding (pixels 0, 2), and
    // a forward whose output rows are whole vec4s too.
    check_both(conv_shape(3, (6, 10), (10, 12), 3, 2, 1, 1), true, 82);
    check_both(conv_shape(1, (4, 7), (9, 8), 3, 2, 2, 1), false, 84);
    check_both(conv_shape(2, (3, 5), (8, 16), 3, 2, 1, 1), true, 86);
    // One column: every lane's first pixel with two taps is past the edge.
    check_both(conv_shape(2, (3, 4), (7, 1), 3, 2, 1, 1), false, 88);
    // More than 16 input channels: two column blocks, the second ragged.
    check_both(conv_shape(1, (20, 6), (7, 10), 3, 2, 1, 1), false, 90);
    check_both(conv_shape(2, (36, 4), (6, 9), 3, 2, 1, 1), false, 92);
}

#[test]
fn windows_loaded_as_vec4s_match_reference() {
    // Where rows are whole vec4s, window mode loads each window as vec4s;
    // the first element's place in its vec4 (A4_SHIFT) follows the padding.
    // Forward: P = 0 at stride 1 (place 0); P = 2 at stride 2 is test 84.
    check_both(conv_shape(2, (4, 6), (6, 8), 3, 1, 0, 1), false, 140);
    // Input gradient at stride 1, P = 2: dy rows of 8, place 0.
    check_both(conv_shape(1, (3, 5), (4, 6), 3, 1, 2, 1), true, 142);
    // Input gradient at stride 2: P = 0 (place 3) and P = 2 (place 0) on
    // dy rows of 8; the dx rows (17, 14) are not whole lanes of 8.
    check_both(conv_shape(2, (3, 5), (9, 17), 3, 2, 0, 1), false, 144);
    check_both(conv_shape(1, (4, 6), (7, 14), 3, 2, 2, 1), false, 146);
}

#[test]
fn weight_gradient_window_mode_matches_reference() {
    // Output rows of whole chunks of 8 pixels, no bias: the weight gradient
    // loads one window per (ci, ky) pair and chunk. Several splits with a
    // ragged last one and an odd number of pairs (15).
    check_both(conv_shape(3, (5, 7), (6, 16), 3, 1, 1, 1), false, 130);
    // Stride 2 (windows of 17), no padding with groups, a single row.
    check_both(conv_shape(2, (3, 4), (9, 16), 3, 2, 1, 1), false, 132);
    check_both(conv_shape(2, (4, 6), (10, 10), 3, 1, 0, 2), false, 134);
    check_both(conv_shape(1, (2, 3), (1, 8), 3, 1, 1, 1), false, 136);
}

#[test]
fn grouped_convolutions_match_reference() {
    check_both(conv_shape(3, (8, 8), (7, 9), 3, 1, 1, 4), false, 90);
    // ResNeXt-like: 64 -> 64 channels in 32 groups of 2.
    check_both(conv_shape(2, (64, 64), (5, 5), 3, 1, 1, 32), true, 100);
}

#[test]
fn depthwise_convolutions_match_reference() {
    check_both(conv_shape(3, (6, 6), (7, 9), 3, 2, 1, 6), true, 110);
    // Channel multiplier 2.
    check_both(conv_shape(1, (5, 10), (7, 7), 3, 1, 1, 5), false, 120);
}

/// Mixed precision's convolutions (f16 activations and gradients, f32
/// weights and weight gradients) through every variant, on geometries that
/// between them take each code path: scalar and vec4 stores, vec4 window
/// loads at stride 2, the weight gradient's window mode, depthwise.
#[test]
fn f16_activations_match_reference_in_every_variant() {
    let shapes = [
        (conv_shape(1, (3, 5), (7, 9), 3, 1, 1, 1), true, 10),
        (conv_shape(2, (5, 6), (6, 8), 3, 1, 1, 1), true, 38),
        (conv_shape(2, (3, 5), (9, 17), 3, 2, 0, 1), false, 144),
        (conv_shape(3, (6, 6), (7, 9), 3, 2, 1, 6), true, 110),
    ];
    for (s, bias, seed) in shapes {
        for variant in variants() {
            check_as(s, bias, variant, seed, DType::F16, 0.0);
        }
    }
}

/// The convolution on cooperative matrices (tensor cores), every pass, on
/// the geometries above, with f32 and f16 activations. Its tiles hold f16
/// operands (weights included), so each product carries up to two f16
/// roundings: 4e-3 of the largest value on top of the usual tolerance.
#[test]
#[ignore = "needs an adapter with EXPERIMENTAL_COOPERATIVE_MATRIX (tensor cores): run with --ignored there"]
fn cooperative_matrices_match_reference() {
    let g = gpu();
    let tile = crate::kernels::conv2d::CoopTile::for_gpu(g);
    assert!(
        tile.is_some(),
        "{} offers no cooperative-matrix tile",
        g.adapter_info().name
    );
    let variant = Variant {
        algo: crate::kernels::conv2d::Conv2dAlgo::CoopMatrix,
        lanes: super::Lanes::for_adapter(g),
    };
    let shapes = [
        (conv_shape(1, (3, 5), (7, 9), 3, 1, 1, 1), true, 10),
        (conv_shape(1, (20, 36), (6, 6), 3, 1, 1, 1), false, 30),
        (conv_shape(3, (3, 5), (11, 13), 3, 2, 1, 1), true, 32),
        (conv_shape(3, (16, 32), (9, 9), 1, 2, 0, 1), false, 60),
        (conv_shape(1, (3, 4), (11, 13), 7, 2, 3, 1), true, 50),
        (conv_shape(2, (64, 64), (5, 5), 3, 1, 1, 32), true, 100),
        (conv_shape(3, (6, 6), (7, 9), 3, 2, 1, 6), true, 110),
    ];
    for (s, bias, seed) in shapes {
        for dtype in [DType::F32, DType::F16] {
            check_as(s, bias, variant, seed, dtype, 4e-3);
        }
    }
}

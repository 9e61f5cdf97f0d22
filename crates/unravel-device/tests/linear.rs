//! Fully connected layer against the CPU reference and finite differences:
//! batch 1 and 3, odd feature counts, a pooled [N, C, 1, 1] input, with and
//! without bias, and channel-slice views for the batch operands.

mod common;

use common::*;
use unravel_device::kernels::conv2d::Conv2dAlgo;
use unravel_device::kernels::linear;
use unravel_device::reference::linear as reference;
use unravel_device::DType;

/// Forward, backward-input and backward-weight on random data, all checked
/// against the reference (1e-5 relative, f32 dot products of up to 100
/// terms) and the reference backward against finite differences.
fn check(n: usize, fin: usize, fout: usize, bias: bool, pooled: bool, seed: u64) {
    let g = gpu();
    let what = format!("N={n} I={fin} O={fout} bias={bias}");
    let xshape: Vec<usize> = if pooled {
        vec![n, fin, 1, 1]
    } else {
        vec![n, fin]
    };
    let x = random(n * fin, seed);
    let w = random(fout * fin, seed + 1);
    let b = random(fout, seed + 2);
    let dy = random(n * fout, seed + 3);
    let tx = g.upload(&x, &xshape).unwrap();
    let tw = g.upload(&w, &[fout, fin]).unwrap();
    let tb = g.upload(&b, &[fout]).unwrap();
    let ty = g.zeros(&[n, fout]).unwrap();
    let tdy = g.upload(&dy, &[n, fout]).unwrap();
    let tdx = g.zeros(&xshape).unwrap();
    let tdw = g.zeros(&[fout, fin]).unwrap();
    // Garbage in db: it must be overwritten, not accumulated into.
    let tdb = g.upload(&random(fout, 77), &[fout]).unwrap();
    let bias_t = bias.then_some(&tb);
    let db_t = bias.then_some(&tdb);
    g.run(&[
        linear::linear_forward(g, &tx, &tw, bias_t, &ty).unwrap(),
        linear::linear_backward_input(g, &tdy, &tw, &tdx).unwrap(),
        linear::linear_backward_weight(g, &tx, &tdy, &tdw, db_t).unwrap(),
    ])
    .unwrap();

    let (x64, w64, b64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&dy));
    let bref = bias.then_some(b64.as_slice());
    let y = reference::linear_forward(&x64, &w64, bref, n, fin, fout);
    assert_close(&what, &g.read(&ty).unwrap(), &y, 1e-5);
    let dx = reference::linear_backward_input(&dy64, &w64, n, fin, fout);
    assert_close(&what, &g.read(&tdx).unwrap(), &dx, 1e-5);
    let (dw, db) = reference::linear_backward_weight(&x64, &dy64, n, fin, fout);
    assert_close(&what, &g.read(&tdw).unwrap(), &dw, 1e-5);
    if bias {
        assert_close(&what, &g.read(&tdb).unwrap(), &db, 1e-5);
    }

    let lx = |x: &[f64]| {
        dot(
            &reference::linear_forward(x, &w64, bref, n, fin, fout),
            &dy64,
        )
    };
    assert_gradient_matches_fd(&format!("{what} dx"), &lx, &x64, &dx, 1e-6);
    let lw = |w: &[f64]| {
        dot(
            &reference::linear_forward(&x64, w, bref, n, fin, fout),
            &dy64,
        )
    };
    assert_gradient_matches_fd(&format!("{what} dW"), &lw, &w64, &dw, 1e-6);
    let lb = |b: &[f64]| {
        dot(
            &reference::linear_forward(&x64, &w64, Some(b), n, fin, fout),
            &dy64,
        )
    };
    assert_gradient_matches_fd(&format!("{what} db"), &lb, &b64, &db, 1e-6);
}

#[test]
fn small_odd_sizes_batch_1_and_3() {
    check(1, 7, 5, true, false, 1);
    check(3, 7, 5, true, true, 5);
    check(3, 7, 5, false, false, 9);
}

#[test]
fn classifier_heads_from_pooled_features() {
    check(3, 64, 10, true, true, 13);
    check(3, 64, 100, true, true, 17);
    check(1, 64, 100, false, true, 21);
}

#[test]
fn batch_operands_as_channel_slices() {
    let g = gpu();
    let (n, fin, fout) = (3, 7, 5);
    // x = channels 2..9 of a pooled [3, 12, 1, 1] buffer, y = channels 1..6
    // of [3, 8, 1, 1]; dy and dx likewise slices.
    let xbig = g.upload(&random(n * 12, 30), &[n, 12, 1, 1]).unwrap();
    let tx = xbig.channel_slice(2, 9).unwrap();
    let ybig_host = random(n * 8, 31);
    let ybig = g.upload(&ybig_host, &[n, 8, 1, 1]).unwrap();
    let ty = ybig.channel_slice(1, 6).unwrap();
    let dybig = g.upload(&random(n * 6, 32), &[n, 6, 1, 1]).unwrap();
    let tdy = dybig.channel_slice(1, 6).unwrap();
    let dxbig = g.zeros(&[n, 9, 1, 1]).unwrap();
    let tdx = dxbig.channel_slice(1, 8).unwrap();
    let w = random(fout * fin, 33);
    let b = random(fout, 34);
    let tw = g.upload(&w, &[fout, fin]).unwrap();
    let tb = g.upload(&b, &[fout]).unwrap();
    let tdw = g.zeros(&[fout, fin]).unwrap();
    let tdb = g.zeros(&[fout]).unwrap();
    g.run(&[
        linear::linear_forward(g, &tx, &tw, Some(&tb), &ty).unwrap(),
        linear::linear_backward_input(g, &tdy, &tw, &tdx).unwrap(),
        linear::linear_backward_weight(g, &tx, &tdy, &tdw, Some(&tdb)).unwrap(),
    ])
    .unwrap();
    let x64 = to_f64(&g.read(&tx).unwrap());
    let dy64 = to_f64(&g.read(&tdy).unwrap());
    let (w64, b64) = (to_f64(&w), to_f64(&b));
    let y = reference::linear_forward(&x64, &w64, Some(&b64), n, fin, fout);
    assert_close("slice y", &g.read(&ty).unwrap(), &y, 1e-5);
    let dx = reference::linear_backward_input(&dy64, &w64, n, fin, fout);
    assert_close("slice dx", &g.read(&tdx).unwrap(), &dx, 1e-5);
    let (dw, db) = reference::linear_backward_weight(&x64, &dy64, n, fin, fout);
    assert_close("slice dW", &g.read(&tdw).unwrap(), &dw, 1e-5);
    assert_close("slice db", &g.read(&tdb).unwrap(), &db, 1e-5);
    // y's neighbours in its buffer are untouched.
    let ynow = g.read(&ybig).unwrap();
    for r in 0..n {
        for c in [0, 6, 7] {
            assert_eq!(ynow[r * 8 + c], ybig_host[r * 8 + c]);
        }
    }
    let dx_rest = g.read(&dxbig.channel_slice(8, 9).unwrap()).unwrap();
    assert!(dx_rest.iter().all(|&v| v == 0.0));
}

#[test]
fn bad_shapes_are_typed_errors() {
    let g = gpu();
    let x = g.zeros(&[3, 7]).unwrap();
    let w = g.zeros(&[5, 7]).unwrap();
    let y = g.zeros(&[3, 5]).unwrap();
    let wrong_w = g.zeros(&[5, 6]).unwrap();
    let err = linear::linear_forward(g, &x, &wrong_w, None, &y).unwrap_err();
    assert!(err.to_string().contains("do not fit W [5, 6]"), "{err}");
    let wrong_b = g.zeros(&[4]).unwrap();
    let err = linear::linear_forward(g, &x, &w, Some(&wrong_b), &y).unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
    let wrong_y = g.zeros(&[2, 5]).unwrap();
    assert!(linear::linear_backward_input(g, &wrong_y, &w, &x).is_err());
    let labels = g.zeros_u32(&[3, 7]).unwrap();
    let err = linear::linear_backward_weight(g, &labels, &y, &w, None).unwrap_err();
    assert!(err.to_string().contains("f32"), "{err}");
    let flat = g.zeros(&[7]).unwrap();
    assert!(linear::linear_forward(g, &flat, &w, None, &y).is_err());
}

/// The classifier in mixed precision: f16 features x (and their gradient
/// dx), f32 logits, weights and gradients. y and dW are f32 sums of exact
/// products (f32 tolerance); dx is rounded once to f16.
#[test]
fn f16_features_match_the_reference() {
    let g = gpu();
    let f16 = DType::F16;
    let (n, fin, fout) = (3, 13, 5);
    let x = to_f16_values(&random(n * fin, 90));
    let w = random(fout * fin, 91);
    let b = random(fout, 92);
    let dy = random(n * fout, 93);
    let tx = g.upload_as(&x, &[n, fin, 1, 1], f16).unwrap();
    let tw = g.upload(&w, &[fout, fin]).unwrap();
    let tb = g.upload(&b, &[fout]).unwrap();
    let ty = g.zeros(&[n, fout]).unwrap();
    let tdy = g.upload(&dy, &[n, fout]).unwrap();
    let tdx = g.zeros_of(&[n, fin, 1, 1], f16).unwrap();
    let (tdw, tdb) = (g.zeros(&[fout, fin]).unwrap(), g.zeros(&[fout]).unwrap());
    g.run(&[
        linear::linear_forward(g, &tx, &tw, Some(&tb), &ty).unwrap(),
        linear::linear_backward_input(g, &tdy, &tw, &tdx).unwrap(),
        linear::linear_backward_weight(g, &tx, &tdy, &tdw, Some(&tdb)).unwrap(),
    ])
    .unwrap();
    let (x64, w64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&dy));
    let y = reference::linear_forward(&x64, &w64, Some(&to_f64(&b)), n, fin, fout);
    assert_close("f16 x: y", &g.read(&ty).unwrap(), &y, 1e-5);
    let dx = reference::linear_backward_input(&dy64, &w64, n, fin, fout);
    assert_close("f16 dx", &g.read(&tdx).unwrap(), &dx, F16_ROUNDING + 1e-5);
    let (dw, db) = reference::linear_backward_weight(&x64, &dy64, n, fin, fout);
    assert_close("f16 x: dW", &g.read(&tdw).unwrap(), &dw, 1e-5);
    assert_close("f16 x: db", &g.read(&tdb).unwrap(), &db, 1e-5);
}

/// The layer as a 1x1 convolution (`linear_*_as_conv`) in `algo` with the
/// features (x, dx) in `dtype`, against the reference: with and without a
/// bias, a classifier head, and channel-slice views. `extra` is added to
/// every tolerance (the cooperative matrices' f16 operand tiles).
fn check_as_conv(algo: Conv2dAlgo, dtype: DType, extra: f64) {
    let g = gpu();
    let f16 = dtype == DType::F16;
    let round = |v: Vec<f32>| if f16 { to_f16_values(&v) } else { v };
    // (N, I, O, bias, channels around x: x is channels 2..2+I of 2+I+3)
    for (n, fin, fout, bias, sliced) in [
        (3, 13, 5, true, false),
        (1, 64, 10, false, false),
        (3, 7, 5, true, true),
    ] {
        let what = format!(
            "{algo:?} {} N={n} I={fin} O={fout} bias={bias}",
            dtype.name()
        );
        let (lead, width) = if sliced { (2, fin + 5) } else { (0, fin) };
        let xbig = round(random(n * width, 40 + n as u64));
        let txbig = g.upload_as(&xbig, &[n, width, 1, 1], dtype).unwrap();
        let tx = txbig.channel_slice(lead, lead + fin).unwrap();
        let tdxbig = g.zeros_of(&[n, width, 1, 1], dtype).unwrap();
        let tdx = tdxbig.channel_slice(lead, lead + fin).unwrap();
        let (w, b, dy) = (
            random(fout * fin, 41),
            random(fout, 42),
            random(n * fout, 43),
        );
        let tw = g.upload(&w, &[fout, fin]).unwrap();
        let tb = g.upload(&b, &[fout]).unwrap();
        let tdy = g.upload(&dy, &[n, fout]).unwrap();
        let ty = g.zeros(&[n, fout]).unwrap();
        // Garbage in dW and db: overwritten, not accumulated into.
        let tdw = g.upload(&random(fout * fin, 44), &[fout, fin]).unwrap();
        let tdb = g.upload(&random(fout, 45), &[fout]).unwrap();
        let mut dispatches =
            linear::linear_forward_as_conv(g, &tx, &tw, bias.then_some(&tb), &ty, algo).unwrap();
        dispatches.extend(linear::linear_backward_input_as_conv(g, &tdy, &tw, &tdx, algo).unwrap());
        let db = bias.then_some(&tdb);
        dispatches
            .extend(linear::linear_backward_weight_as_conv(g, &tx, &tdy, &tdw, db, algo).unwrap());
        g.run(&dispatches).unwrap();

        let x64 = to_f64(&g.read(&tx).unwrap());
        let (w64, b64, dy64) = (to_f64(&w), to_f64(&b), to_f64(&dy));
        let y = reference::linear_forward(&x64, &w64, bias.then_some(&b64[..]), n, fin, fout);
        assert_close(
            &format!("{what}: y"),
            &g.read(&ty).unwrap(),
            &y,
            1e-5 + extra,
        );
        let dx = reference::linear_backward_input(&dy64, &w64, n, fin, fout);
        let dx_tol = if f16 { F16_ROUNDING } else { 0.0 } + 1e-5 + extra;
        assert_close(&format!("{what}: dx"), &g.read(&tdx).unwrap(), &dx, dx_tol);
        let (dw, db) = reference::linear_backward_weight(&x64, &dy64, n, fin, fout);
        assert_close(
            &format!("{what}: dW"),
            &g.read(&tdw).unwrap(),
            &dw,
            1e-5 + extra,
        );
        if bias {
            assert_close(
                &format!("{what}: db"),
                &g.read(&tdb).unwrap(),
                &db,
                1e-5 + extra,
            );
        }
        // The channels around the slice stay zero.
        if sliced {
            let dxall = g.read(&tdxbig).unwrap();
            for r in 0..n {
                for c in (0..lead).chain(lead + fin..width) {
                    assert_eq!(dxall[r * width + c], 0.0, "{what}: dx[{r}, {c}]");
                }
            }
        }
    }
}

#[test]
fn as_a_convolution_in_every_algorithm() {
    for algo in [
        Conv2dAlgo::Direct,
        Conv2dAlgo::Subgroup,
        Conv2dAlgo::SubgroupWide,
        Conv2dAlgo::Tiled,
    ] {
        for dtype in [DType::F32, DType::F16] {
            check_as_conv(algo, dtype, 0.0);
        }
    }
}

/// The layer on cooperative matrices (tensor cores): f16 operand tiles, so
/// 4e-3 of the largest value on top (as the convolution's test).
#[test]
#[ignore = "needs an adapter with EXPERIMENTAL_COOPERATIVE_MATRIX (tensor cores): run with --ignored there"]
fn on_cooperative_matrices() {
    let g = gpu();
    assert!(
        unravel_device::kernels::conv2d::CoopTile::for_gpu(g).is_some(),
        "{} offers no cooperative-matrix tile",
        g.adapter_info().name
    );
    for dtype in [DType::F32, DType::F16] {
        check_as_conv(Conv2dAlgo::CoopMatrix, dtype, 4e-3);
    }
}

//! Softmax cross-entropy against the CPU reference: loss, gradient and
//! correct count for batches smaller and larger than the kernel's workgroup,
//! the reference gradient against finite differences of the reference loss,
//! huge logits, argmax ties, out-of-range labels and views.

mod common;

use common::*;
use unravel_device::kernels::loss;
use unravel_device::reference::loss as reference;
use unravel_device::Tensor;

/// Labels in 0..k; every third sample gets its row's argmax so the correct
/// count is neither 0 nor N.
fn labels_for(logits: &[f32], n: usize, k: usize, seed: u64) -> Vec<u32> {
    random(n, seed)
        .iter()
        .enumerate()
        .map(|(r, v)| {
            if r % 3 == 0 {
                let row = &logits[r * k..(r + 1) * k];
                let mut arg = 0;
                for j in 1..k {
                    if row[j] > row[arg] {
                        arg = j;
                    }
                }
                arg as u32
            } else {
                (((v + 1.0) * 0.5 * k as f32) as u32).min(k as u32 - 1)
            }
        })
        .collect()
}

struct Outputs {
    loss: f32,
    correct: u32,
    grad: Vec<f32>,
    eval_loss: f32,
    eval_correct: u32,
}

/// Runs the training and the eval entry points on the given logits view.
fn run(logits: &Tensor, labels: &[u32]) -> Outputs {
    let g = gpu();
    let n = logits.shape()[0];
    let tl = g.upload_u32(labels, &[n]).unwrap();
    // Garbage in every output: all must be overwritten.
    let tloss = g.upload(&[7.0], &[1]).unwrap();
    let tcorrect = g.upload_u32(&[12345], &[1]).unwrap();
    let teloss = g.upload(&[7.0], &[1]).unwrap();
    let tecorrect = g.upload_u32(&[12345], &[1]).unwrap();
    let tgrad = g
        .upload(&random(logits.numel(), 999), logits.shape())
        .unwrap();
    g.run(&[
        loss::softmax_cross_entropy(g, logits, &tl, &tloss, &tcorrect, &tgrad).unwrap(),
        loss::softmax_cross_entropy_eval(g, logits, &tl, &teloss, &tecorrect).unwrap(),
    ])
    .unwrap();
    Outputs {
        loss: g.read(&tloss).unwrap()[0],
        correct: g.read_u32(&tcorrect).unwrap()[0],
        grad: g.read(&tgrad).unwrap(),
        eval_loss: g.read(&teloss).unwrap()[0],
        eval_correct: g.read_u32(&tecorrect).unwrap()[0],
    }
}

/// GPU vs reference for N x K logits of spread `scale`; the reference
/// gradient also against finite differences.
fn check(n: usize, k: usize, scale: f32, seed: u64) {
    let g = gpu();
    let what = format!("N={n} K={k} scale={scale}");
    let z: Vec<f32> = random(n * k, seed).iter().map(|v| v * scale).collect();
    let labels = labels_for(&z, n, k, seed + 1);
    let out = run(&g.upload(&z, &[n, k]).unwrap(), &labels);
    let z64 = to_f64(&z);
    let (want_loss, want_grad, want_correct) =
        reference::softmax_cross_entropy(&z64, &labels, n, k);
    assert!(out.loss.is_finite() && out.grad.iter().all(|v| v.is_finite()));
    assert_close(&what, &[out.loss], &[want_loss], 1e-5);
    assert_close(&what, &[out.eval_loss], &[want_loss], 1e-5);
    assert_close(&what, &out.grad, &want_grad, 1e-5);
    assert_eq!(out.correct, want_correct, "{what}: correct");
    assert_eq!(out.eval_correct, want_correct, "{what}: eval correct");
    assert!(
        want_correct >= n.div_ceil(3) as u32,
        "{what}: labels too easy to miss"
    );
    let lossf = |z: &[f64]| reference::softmax_cross_entropy_loss(z, &labels, n, k);
    assert_gradient_matches_fd(&what, &lossf, &z64, &want_grad, 1e-5);
}

#[test]
fn batch_1_and_3() {
    check(1, 10, 3.0, 1);
    check(3, 10, 3.0, 3);
    check(3, 100, 3.0, 5);
}

#[test]
fn batches_larger_than_the_workgroup() {
    check(130, 10, 3.0, 7);
    check(1000, 100, 3.0, 9);
    check(1024, 10, 3.0, 11);
}

#[test]
fn wide_rows() {
    check(5, 1000, 4.0, 13);
}

#[test]
fn huge_logits_stay_finite() {
    // +-100 logits: exp would overflow without the max subtraction.
    check(3, 10, 100.0, 15);
    let g = gpu();
    let z = [100.0, -100.0, 99.0, -100.0, 100.0, 0.0];
    let out = run(&g.upload(&z, &[2, 3]).unwrap(), &[1, 0]);
    let (want_loss, want_grad, _) = reference::softmax_cross_entropy(&to_f64(&z), &[1, 0], 2, 3);
    assert!(out.loss.is_finite() && out.grad.iter().all(|v| v.is_finite()));
    assert!(want_loss > 100.0);
    assert_close("huge", &[out.loss], &[want_loss], 1e-5);
    assert_close("huge grad", &out.grad, &want_grad, 1e-5);
}

#[test]
fn argmax_ties_go_to_the_lowest_index() {
    let g = gpu();
    // Row 0: all equal -> argmax 0. Row 1: max 2.0 at indices 1 and 3.
    let z = [1.0, 1.0, 1.0, 1.0, 0.0, 2.0, -1.0, 2.0];
    let t = g.upload(&z, &[2, 4]).unwrap();
    assert_eq!(run(&t, &[0, 1]).correct, 2);
    assert_eq!(run(&t, &[1, 3]).correct, 0);
    assert_eq!(run(&t, &[0, 3]).correct, 1);
}

#[test]
fn out_of_range_labels_are_ignored_and_counted_wrong() {
    let g = gpu();
    let (n, k) = (4, 5);
    let z: Vec<f32> = random(n * k, 20).iter().map(|v| 2.0 * v).collect();
    let mut labels = labels_for(&z, n, k, 21);
    labels[0] = k as u32; // row 0's argmax label made invalid
    labels[2] = u32::MAX;
    let out = run(&g.upload(&z, &[n, k]).unwrap(), &labels);
    let (want_loss, want_grad, want_correct) =
        reference::softmax_cross_entropy(&to_f64(&z), &labels, n, k);
    assert_close("bad labels", &[out.loss], &[want_loss], 1e-5);
    assert_close("bad labels grad", &out.grad, &want_grad, 1e-5);
    assert_eq!(out.correct, want_correct);
    assert!(
        out.grad[..k].iter().all(|&v| v == 0.0),
        "ignored row 0 has a gradient"
    );
    assert!(out.grad[2 * k..3 * k].iter().all(|&v| v == 0.0));
    // The ignored rows add nothing: the loss equals the valid rows' sum / N.
    let valid: Vec<f64> = [1usize, 3]
        .iter()
        .map(|&r| {
            let row = to_f64(&z[r * k..(r + 1) * k]);
            reference::softmax_cross_entropy_loss(&row, &labels[r..r + 1], 1, k)
        })
        .collect();
    assert_close(
        "bad labels sum",
        &[out.loss],
        &[(valid[0] + valid[1]) / n as f64],
        1e-5,
    );
}

#[test]
fn logits_and_gradient_as_channel_slices() {
    let g = gpu();
    let (n, k) = (3, 10);
    // logits = channels 2..12 of [3, 15, 1, 1]; dlogits = channels 1..11 of
    // [3, 11, 1, 1]; loss and correct are element 2 of small buffers.
    let zbig = g.upload(&random(n * 15, 30), &[n, 15, 1, 1]).unwrap();
    let tz = zbig.channel_slice(2, 12).unwrap();
    let z = g.read(&tz).unwrap();
    let labels = labels_for(&z, n, k, 31);
    let tl = g.upload_u32(&labels, &[n]).unwrap();
    let gbig = g.zeros(&[n, 11, 1, 1]).unwrap();
    let tg = gbig.channel_slice(1, 11).unwrap();
    let lossbuf = g.zeros(&[1, 4, 1, 1]).unwrap();
    let tloss = lossbuf.channel_slice(2, 3).unwrap();
    let tc = g.zeros_u32(&[1]).unwrap();
    g.run(&[loss::softmax_cross_entropy(g, &tz, &tl, &tloss, &tc, &tg).unwrap()])
        .unwrap();
    let (want_loss, want_grad, want_correct) =
        reference::softmax_cross_entropy(&to_f64(&z), &labels, n, k);
    assert_close("slice loss", &g.read(&tloss).unwrap(), &[want_loss], 1e-5);
    assert_close("slice grad", &g.read(&tg).unwrap(), &want_grad, 1e-5);
    assert_eq!(g.read_u32(&tc).unwrap()[0], want_correct);
    let lb = g.read(&lossbuf).unwrap();
    assert_eq!([lb[0], lb[1], lb[3]], [0.0; 3]);
    let first = g.read(&gbig.channel_slice(0, 1).unwrap()).unwrap();
    assert!(first.iter().all(|&v| v == 0.0));
}

#[test]
fn bad_shapes_are_typed_errors() {
    let g = gpu();
    let z = g.zeros(&[3, 10]).unwrap();
    let loss_t = g.zeros(&[1]).unwrap();
    let correct = g.zeros_u32(&[1]).unwrap();
    let dz = g.zeros(&[3, 10]).unwrap();
    let short = g.zeros_u32(&[2]).unwrap();
    let err = loss::softmax_cross_entropy(g, &z, &short, &loss_t, &correct, &dz).unwrap_err();
    assert!(err.to_string().contains("labels"), "{err}");
    let float_labels = g.zeros(&[3]).unwrap();
    assert!(loss::softmax_cross_entropy_eval(g, &z, &float_labels, &loss_t, &correct).is_err());
    let labels = g.zeros_u32(&[3]).unwrap();
    let err = loss::softmax_cross_entropy_eval(g, &z, &labels, &loss_t, &loss_t).unwrap_err();
    assert!(err.to_string().contains("correct"), "{err}");
    let wrong_dz = g.zeros(&[3, 9]).unwrap();
    let err =
        loss::softmax_cross_entropy(g, &z, &labels, &loss_t, &correct, &wrong_dz).unwrap_err();
    assert!(err.to_string().contains("dlogits"), "{err}");
    let two = g.zeros(&[2]).unwrap();
    assert!(loss::softmax_cross_entropy_eval(g, &z, &labels, &two, &correct).is_err());
}

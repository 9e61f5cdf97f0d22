//! An evaluation-mode batch norm (and its ReLU) folded into the convolution
//! before it: `batchnorm_fold` against the f64 formula, and the convolution
//! with the `Affine` epilogue against the CPU reference convolution followed
//! by the batch norm, for every algorithm, with and without ReLU, on a shape
//! whose rows are whole vec4s (window mode's vec4 stores) and on one whose
//! rows are not.
//!
//! Shape legend: x [N, C, H, W], w [K, C/G, KH, KW], y [N, K, OH, OW].

use super::common::*;
use super::{variants, Variant};
use crate::kernels::batchnorm::{batchnorm_fold, BatchNormConfig, BatchNormLayer};
use crate::kernels::conv2d::{Conv2dEpilogue, Conv2dShape};
use crate::reference::conv2d as reference;

const TOL: f64 = 1e-4;

/// (scale, shift) per channel in f64, as PyTorch's eval batch norm.
fn folded(gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32], eps: f64) -> Vec<f64> {
    let k = gamma.len();
    let scale: Vec<f64> = (0..k)
        .map(|c| gamma[c] as f64 / (var[c] as f64 + eps).sqrt())
        .collect();
    let shift = (0..k).map(|c| beta[c] as f64 - mean[c] as f64 * scale[c]);
    scale.iter().copied().chain(shift).collect()
}

fn check(s: Conv2dShape, variant: Variant, relu: bool, seed: u64) {
    let g = gpu();
    let k = s.c_out;
    let x = random(s.input_shape().iter().product(), seed);
    let w = random(s.weight_shape().iter().product(), seed + 1);
    let gamma: Vec<f32> = random(k, seed + 2).iter().map(|v| 1.0 + 0.5 * v).collect();
    let beta = random(k, seed + 3);
    let mean: Vec<f32> = random(k, seed + 4).iter().map(|v| 0.3 * v).collect();
    let var: Vec<f32> = random(k, seed + 5).iter().map(|v| 1.0 + 0.5 * v).collect();
    let up = |v: &[f32], shape: &[usize]| g.upload(v, shape).unwrap();
    let (tg, tb, tm, tv) = (
        up(&gamma, &[k]),
        up(&beta, &[k]),
        up(&mean, &[k]),
        up(&var, &[k]),
    );
    let scale_shift = g.zeros(&[2, k]).unwrap();
    let cfg = BatchNormConfig::default();
    let layer = BatchNormLayer {
        gamma: &tg,
        beta: &tb,
        running_mean: &tm,
        running_var: &tv,
    };
    let fold = batchnorm_fold(g, &cfg, &layer, &scale_shift).unwrap();
    // Garbage in y: every element must be written.
    let ty = up(
        &random(s.output_shape().iter().product(), seed + 6),
        &s.output_shape(),
    );
    let epilogue = Conv2dEpilogue::Affine {
        scale_shift: &scale_shift,
        relu,
    };
    let (tx, tw) = (up(&x, &s.input_shape()), up(&w, &s.weight_shape()));
    let mut d = vec![fold];
    d.extend(variant.forward(&s, &tx, &tw, &ty, epilogue).unwrap());
    g.run(&d).unwrap();

    let want_fold = folded(&gamma, &beta, &mean, &var, cfg.eps as f64);
    assert_close(
        "scale_shift",
        &g.read(&scale_shift).unwrap(),
        &want_fold,
        TOL,
    );
    let conv = reference::conv2d_forward(&s, &to_f64(&x), &to_f64(&w), None);
    let plane = s.out_h() * s.out_w();
    let want: Vec<f64> = conv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / plane % k;
            let y = v * want_fold[c] + want_fold[k + c];
            if relu {
                y.max(0.0)
            } else {
                y
            }
        })
        .collect();
    let what = format!("{variant:?} {s:?} relu={relu}");
    assert_close(&what, &g.read(&ty).unwrap(), &want, TOL);
}

#[test]
fn a_folded_batch_norm_matches_convolution_then_batch_norm() {
    for variant in variants() {
        for relu in [false, true] {
            // Rows of 8 (vec4 stores), rows of 9, and a stride-2 forward.
            check(conv_shape(2, (5, 6), (6, 8), 3, 1, 1, 1), variant, relu, 10);
            check(conv_shape(3, (4, 7), (7, 9), 3, 1, 1, 1), variant, relu, 20);
            check(
                conv_shape(2, (3, 20), (9, 16), 3, 2, 1, 1),
                variant,
                relu,
                30,
            );
        }
    }
}

#[test]
fn fold_rejects_mismatched_vectors() {
    let g = gpu();
    let v = g.zeros(&[4]).unwrap();
    let wrong = g.zeros(&[2, 3]).unwrap();
    let cfg = BatchNormConfig::default();
    let layer = BatchNormLayer {
        gamma: &v,
        beta: &v,
        running_mean: &v,
        running_var: &v,
    };
    let err = batchnorm_fold(g, &cfg, &layer, &wrong).unwrap_err();
    assert!(err.to_string().contains("scale_shift"), "{err}");
}

//! Recomputing a batch-norm output from the statistics its training forward
//! saved (what a memory-saving plan does in backward) reproduces the output
//! exactly and leaves the running statistics alone.

mod common;

use common::*;
use unravel_device::kernels::batchnorm::{
    batchnorm_apply_saved, batchnorm_train_forward, BatchNormConfig, BatchNormShape,
};

fn check(d: [usize; 4], relu: bool) {
    let g = gpu();
    let s = BatchNormShape {
        n: d[0],
        c: d[1],
        h: d[2],
        w: d[3],
    };
    let cfg = BatchNormConfig {
        relu,
        ..Default::default()
    };
    let numel: usize = d.iter().product();
    let x = g.upload(&random(numel, 1), &d).unwrap();
    let gamma = g.upload(&random(d[1], 2), &[d[1]]).unwrap();
    let beta = g.upload(&random(d[1], 3), &[d[1]]).unwrap();
    let mean = g.zeros(&[d[1]]).unwrap();
    let var = g.upload(&vec![1.0; d[1]], &[d[1]]).unwrap();
    let saved = g.zeros(&[2, d[1]]).unwrap();
    let (y, again) = (g.zeros(&d).unwrap(), g.zeros(&d).unwrap());
    g.run(
        &batchnorm_train_forward(
            g,
            &s,
            &cfg,
            &layer(&gamma, &beta, &mean, &var),
            &io(&x, &saved, &y),
        )
        .unwrap(),
    )
    .unwrap();
    let stats = (g.read(&mean).unwrap(), g.read(&var).unwrap());
    let layer = layer(&gamma, &beta, &mean, &var);
    g.run(&batchnorm_apply_saved(g, &s, &cfg, &layer, &io(&x, &saved, &again)).unwrap())
        .unwrap();
    assert_eq!(
        g.read(&again).unwrap(),
        g.read(&y).unwrap(),
        "{d:?} relu={relu}"
    );
    assert_eq!((g.read(&mean).unwrap(), g.read(&var).unwrap()), stats);
}

#[test]
fn recomputed_output_equals_the_training_forward_exactly() {
    check([3, 5, 7, 9], true);
    check([3, 5, 7, 9], false);
    // H*W a multiple of 4: the vec4 path.
    check([2, 4, 8, 8], true);
}

#[test]
fn recompute_rejects_a_wrong_saved_shape() {
    let g = gpu();
    let d = [2, 3, 4, 4];
    let s = BatchNormShape {
        n: 2,
        c: 3,
        h: 4,
        w: 4,
    };
    let x = g.zeros(&d).unwrap();
    let v = g.zeros(&[3]).unwrap();
    let bad_saved = g.zeros(&[3]).unwrap();
    let cfg = BatchNormConfig::default();
    let layer = layer(&v, &v, &v, &v);
    assert!(batchnorm_apply_saved(g, &s, &cfg, &layer, &io(&x, &bad_saved, &x)).is_err());
}

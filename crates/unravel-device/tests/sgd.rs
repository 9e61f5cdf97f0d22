//! SGD over a parameter arena against a literal transcription of
//! `torch.optim.SGD`: several steps with and without Nesterov, a weight-decay
//! split, a learning-rate change between steps, an arena that is not a
//! multiple of the workgroup size, and arenas at an offset in a buffer.

mod common;

use common::*;
use unravel_device::kernels::sgd::{self, SgdConfig};
use unravel_device::reference::sgd::{self as reference, Sgd};
use unravel_device::{Dispatch, Tensor};

// 16 workgroups of 256 and 3 elements more.
const LEN: usize = 4099;
const DECAY: usize = 3001;

fn hyper(cfg: &SgdConfig) -> Sgd {
    Sgd {
        lr: cfg.lr as f64,
        momentum: cfg.momentum as f64,
        weight_decay: cfg.weight_decay as f64,
        nesterov: cfg.nesterov,
    }
}

struct Arena {
    params: Tensor,
    grads: Tensor,
    momentum: Tensor,
}

impl Arena {
    fn set_config(&self, d: &Dispatch, cfg: &SgdConfig, decay: usize) {
        sgd::sgd_set_config(
            gpu(),
            d,
            cfg,
            &self.params,
            &self.grads,
            &self.momentum,
            decay,
        )
        .unwrap();
    }
}

/// Runs `configs.len()` steps (config k for step k, set through
/// `sgd_set_config` on one dispatch) on the GPU and on the reference, then
/// compares the parameter change and the momentum buffer.
fn check(arena: &Arena, configs: &[SgdConfig], decay: usize, seed: u64) {
    let g = gpu();
    let w0 = random(LEN, seed);
    g.write(&arena.params, &w0).unwrap();
    let d = sgd::sgd_update(
        g,
        &configs[0],
        &arena.params,
        &arena.grads,
        &arena.momentum,
        decay,
    )
    .unwrap();
    let mut w = to_f64(&w0);
    let mut buf = None;
    for (step, cfg) in configs.iter().enumerate() {
        let grad = random(LEN, seed + 1 + step as u64);
        g.write(&arena.grads, &grad).unwrap();
        arena.set_config(&d, cfg, decay);
        g.run(std::slice::from_ref(&d)).unwrap();
        reference::sgd_step(&hyper(cfg), &mut w, &to_f64(&grad), &mut buf, decay);
    }
    let what = format!("{configs:?} decay_len {decay}");
    let got_delta: Vec<f32> = g
        .read(&arena.params)
        .unwrap()
        .iter()
        .zip(&w0)
        .map(|(a, b)| a - b)
        .collect();
    let want_delta: Vec<f64> = w.iter().zip(&w0).map(|(a, &b)| a - b as f64).collect();
    assert_close(&what, &got_delta, &want_delta, 1e-5);
    if let Some(buf) = buf {
        assert_close(&what, &g.read(&arena.momentum).unwrap(), &buf, 1e-5);
    }
}

fn fresh_arena() -> Arena {
    let g = gpu();
    Arena {
        params: g.zeros(&[LEN]).unwrap(),
        grads: g.zeros(&[LEN]).unwrap(),
        momentum: g.zeros(&[LEN]).unwrap(),
    }
}

const MOMENTUM: SgdConfig = SgdConfig {
    lr: 0.1,
    momentum: 0.9,
    weight_decay: 0.05,
    nesterov: false,
};

#[test]
fn momentum_steps_match_pytorch() {
    check(&fresh_arena(), &[MOMENTUM; 5], DECAY, 1);
}

#[test]
fn nesterov_steps_match_pytorch() {
    let cfg = SgdConfig {
        nesterov: true,
        ..MOMENTUM
    };
    check(&fresh_arena(), &[cfg; 5], DECAY, 11);
}

#[test]
fn decay_split_matters() {
    // All or none of the arena decayed; the reference itself tells the two
    // apart by far more than the tolerance, so the split is really tested.
    check(&fresh_arena(), &[MOMENTUM; 3], LEN, 21);
    check(&fresh_arena(), &[MOMENTUM; 3], 0, 31);
    let w0 = to_f64(&random(LEN, 41));
    let grad = to_f64(&random(LEN, 42));
    let (mut a, mut b) = (w0.clone(), w0.clone());
    reference::sgd_step(&hyper(&MOMENTUM), &mut a, &grad, &mut None, DECAY);
    reference::sgd_step(&hyper(&MOMENTUM), &mut b, &grad, &mut None, LEN);
    assert!((a[LEN - 1] - b[LEN - 1]).abs() > 1e-4);
    assert_eq!(a[DECAY - 1], b[DECAY - 1]);
}

#[test]
fn learning_rate_changes_between_steps_without_rebuilding() {
    let schedule: Vec<SgdConfig> = [0.1, 0.1, 0.05, 0.01, 0.2]
        .iter()
        .map(|&lr| SgdConfig { lr, ..MOMENTUM })
        .collect();
    check(&fresh_arena(), &schedule, DECAY, 51);
    let nesterov: Vec<SgdConfig> = schedule
        .iter()
        .map(|c| SgdConfig {
            nesterov: true,
            ..*c
        })
        .collect();
    check(&fresh_arena(), &nesterov, DECAY, 61);
}

#[test]
fn plain_sgd_without_momentum() {
    let cfg = SgdConfig {
        lr: 0.3,
        momentum: 0.0,
        weight_decay: 0.01,
        nesterov: false,
    };
    check(&fresh_arena(), &[cfg; 3], DECAY, 71);
}

#[test]
fn arenas_at_an_offset_in_larger_buffers() {
    let g = gpu();
    // Each arena is channels 5..5+LEN of a [1, LEN + 9, 1, 1] buffer.
    let bufs: Vec<Tensor> = (0..3)
        .map(|k| {
            g.upload(&random(LEN + 9, 80 + k), &[1, LEN + 9, 1, 1])
                .unwrap()
        })
        .collect();
    let slice = |t: &Tensor| t.channel_slice(5, 5 + LEN).unwrap();
    let arena = Arena {
        params: slice(&bufs[0]),
        grads: slice(&bufs[1]),
        momentum: slice(&bufs[2]),
    };
    g.write(&arena.momentum, &vec![0.0; LEN]).unwrap();
    let before = g.read(&bufs[0]).unwrap();
    check(&arena, &[MOMENTUM; 3], DECAY, 91);
    let after = g.read(&bufs[0]).unwrap();
    assert_eq!(before[..5], after[..5]);
    assert_eq!(before[5 + LEN..], after[5 + LEN..]);
}

#[test]
fn bad_shapes_and_configs_are_typed_errors() {
    let g = gpu();
    let a = fresh_arena();
    let short = g.zeros(&[LEN - 1]).unwrap();
    let err = sgd::sgd_update(g, &MOMENTUM, &a.params, &short, &a.momentum, 0).unwrap_err();
    assert!(err.to_string().contains("grads"), "{err}");
    let err = sgd::sgd_update(g, &MOMENTUM, &a.params, &a.grads, &a.momentum, LEN + 1).unwrap_err();
    assert!(err.to_string().contains("decay_len"), "{err}");
    let bad = SgdConfig {
        momentum: 0.0,
        nesterov: true,
        ..MOMENTUM
    };
    let err = sgd::sgd_update(g, &bad, &a.params, &a.grads, &a.momentum, 0).unwrap_err();
    assert!(err.to_string().contains("Nesterov"), "{err}");
    let bad = SgdConfig {
        lr: -0.1,
        ..MOMENTUM
    };
    assert!(sgd::sgd_update(g, &bad, &a.params, &a.grads, &a.momentum, 0).is_err());
    let strided = g.zeros(&[2, 8, 1, 1]).unwrap().channel_slice(0, 4).unwrap();
    let t8 = g.zeros(&[8]).unwrap();
    assert!(sgd::sgd_update(g, &MOMENTUM, &strided, &t8, &t8, 0).is_err());
    let other = unravel_device::kernels::copy::copy_forward(g, &t8, &t8).unwrap();
    let err =
        sgd::sgd_set_config(g, &other, &MOMENTUM, &a.params, &a.grads, &a.momentum, 0).unwrap_err();
    assert!(err.to_string().contains("not an SGD dispatch"), "{err}");
}

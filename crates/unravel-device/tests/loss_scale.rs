//! Dynamic loss scaling against GradScaler's rules: the loss gradient
//! scaled, every kind of non-finite gradient found (and no finite one), the
//! scale halved on a skipped step and grown after the interval, and the
//! scaled SGD step equal to plain SGD on the unscaled gradients, or no step
//! at all (bit-identical parameters and momentum) when a gradient is not
//! finite.
//!
//! Shape legend: L values in one arena (not a multiple of the workgroup).

mod common;

use common::*;
use unravel_device::kernels::loss_scale::{self, LossScaleConfig, LossScaleState};
use unravel_device::kernels::sgd::{self, SgdConfig};
use unravel_device::Tensor;

const LEN: usize = 1001;

fn state(scale: f32) -> LossScaleState {
    LossScaleState {
        scale,
        clean_steps: 0,
        skipped_steps: 0,
    }
}

fn found_inf(t: &Tensor) -> u32 {
    gpu().read_u32(t).unwrap()[3]
}

#[test]
fn the_loss_gradient_is_multiplied_by_the_scale() {
    let g = gpu();
    let host = random(LEN, 1);
    let values = g.upload(&host, &[LEN]).unwrap();
    let st = loss_scale::state_tensor(g, &state(1024.0)).unwrap();
    g.run(&[loss_scale::apply_scale(g, &values, &st).unwrap()])
        .unwrap();
    let want: Vec<f32> = host.iter().map(|v| v * 1024.0).collect();
    assert_eq!(g.read(&values).unwrap(), want);
}

#[test]
fn every_non_finite_value_is_found_and_no_finite_one() {
    let g = gpu();
    let finite: Vec<f32> = random(LEN, 2)
        .iter()
        .enumerate()
        .map(|(i, v)| match i {
            10 => f32::MAX,
            11 => -f32::MAX,
            12 => f32::MIN_POSITIVE / 8.0, // subnormal
            _ => *v,
        })
        .collect();
    let st = loss_scale::state_tensor(g, &state(1.0)).unwrap();
    let values = g.upload(&finite, &[LEN]).unwrap();
    g.run(&[loss_scale::check_finite(g, &values, &st).unwrap()])
        .unwrap();
    assert_eq!(found_inf(&st), 0, "a finite arena was flagged");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for at in [0, 777, LEN - 1] {
            let mut host = finite.clone();
            host[at] = bad;
            let st = loss_scale::state_tensor(g, &state(1.0)).unwrap();
            g.write(&values, &host).unwrap();
            g.run(&[loss_scale::check_finite(g, &values, &st).unwrap()])
                .unwrap();
            assert_eq!(found_inf(&st), 1, "{bad} at {at} not found");
        }
    }
}

#[test]
fn the_scale_halves_on_a_skipped_step_and_grows_after_the_interval() {
    let g = gpu();
    let config = LossScaleConfig {
        growth_interval: 3,
        ..Default::default()
    };
    let st = loss_scale::state_tensor(g, &LossScaleState::initial(&config)).unwrap();
    let update = loss_scale::update(g, &config, &st).unwrap();
    let nan = g.upload(&[f32::NAN], &[1]).unwrap();
    let flag = loss_scale::check_finite(g, &nan, &st).unwrap();
    let expect = |scale: f32, clean: u32, skipped: u32| LossScaleState {
        scale,
        clean_steps: clean,
        skipped_steps: skipped,
    };
    let read = || loss_scale::read_state(g, &st).unwrap();
    g.run(&[update.clone()]).unwrap();
    g.run(&[update.clone()]).unwrap();
    assert_eq!(read(), expect(65536.0, 2, 0));
    g.run(&[update.clone()]).unwrap();
    assert_eq!(read(), expect(131072.0, 0, 0), "grown after 3 clean steps");
    g.run(&[update.clone()]).unwrap();
    g.run(&[flag.clone(), update.clone()]).unwrap();
    assert_eq!(
        read(),
        expect(65536.0, 0, 1),
        "halved, and the clean count reset"
    );
    assert_eq!(found_inf(&st), 0, "the flag is cleared for the next step");
    g.run(&[flag, update]).unwrap();
    assert_eq!(read(), expect(32768.0, 0, 2));
    // A state written back (a resumed run) is what the next update starts from.
    loss_scale::write_state(g, &st, &expect(8.0, 2, 5)).unwrap();
    g.run(&[loss_scale::update(g, &config, &st).unwrap()])
        .unwrap();
    assert_eq!(read(), expect(16.0, 0, 5));
}

#[test]
fn the_scaled_step_unscales_or_skips() {
    let g = gpu();
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    let decay = 600;
    let (w0, m0) = (random(LEN, 3), random(LEN, 4));
    let grads = random(LEN, 5);
    let scale = 4096.0f32;
    let scaled: Vec<f32> = grads.iter().map(|v| v * scale).collect();
    let arena = |grads: &[f32]| {
        (
            g.upload(&w0, &[LEN]).unwrap(),
            g.upload(grads, &[LEN]).unwrap(),
            g.upload(&m0, &[LEN]).unwrap(),
        )
    };
    // Plain SGD on the true gradients, and the scaled step on scaled ones.
    let (pw, pg, pm) = arena(&grads);
    g.run(&[sgd::sgd_update(g, &cfg, &pw, &pg, &pm, decay).unwrap()])
        .unwrap();
    let (sw, sg, sm) = arena(&scaled);
    let st = loss_scale::state_tensor(g, &state(scale)).unwrap();
    let step = sgd::sgd_update_scaled(g, &cfg, &sw, &sg, &sm, decay, &st).unwrap();
    g.run(&[loss_scale::check_finite(g, &sg, &st).unwrap(), step])
        .unwrap();
    // A power-of-two scale divides out exactly.
    assert_eq!(g.read(&sw).unwrap(), g.read(&pw).unwrap());
    assert_eq!(g.read(&sm).unwrap(), g.read(&pm).unwrap());
    // One inf among the gradients: nothing moves.
    let mut bad = scaled.clone();
    bad[500] = f32::INFINITY;
    let (bw, bg, bm) = arena(&bad);
    let st = loss_scale::state_tensor(g, &state(scale)).unwrap();
    let step = sgd::sgd_update_scaled(g, &cfg, &bw, &bg, &bm, decay, &st).unwrap();
    g.run(&[loss_scale::check_finite(g, &bg, &st).unwrap(), step])
        .unwrap();
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(g.read(&bw).unwrap()), bits(w0.clone()));
    assert_eq!(bits(g.read(&bm).unwrap()), bits(m0.clone()));
}

#[test]
fn bad_settings_are_typed_errors() {
    let g = gpu();
    let st = loss_scale::state_tensor(g, &state(1.0)).unwrap();
    for config in [
        LossScaleConfig {
            init_scale: f32::NAN,
            ..Default::default()
        },
        LossScaleConfig {
            growth_factor: 1.0,
            ..Default::default()
        },
        LossScaleConfig {
            backoff_factor: 1.5,
            ..Default::default()
        },
        LossScaleConfig {
            growth_interval: 0,
            ..Default::default()
        },
    ] {
        assert!(loss_scale::update(g, &config, &st).is_err(), "{config:?}");
    }
    let not_a_state = g.zeros(&[4]).unwrap();
    let values = g.zeros(&[8]).unwrap();
    assert!(loss_scale::apply_scale(g, &values, &not_a_state).is_err());
}

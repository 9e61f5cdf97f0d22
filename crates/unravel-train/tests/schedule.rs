//! Learning-rate schedules at their corners.

use unravel_train::schedule::{Decay, Schedule, Warmup};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn multistep_divides_by_ten_at_half_and_three_quarters() {
    let s = Schedule::multistep(0.1, 1000);
    assert!(close(s.lr(0), 0.1));
    assert!(close(s.lr(499), 0.1));
    assert!(close(s.lr(500), 0.01));
    assert!(close(s.lr(749), 0.01));
    assert!(close(s.lr(750), 0.001));
    assert!(close(s.lr(999), 0.001));
}

#[test]
fn cosine_runs_from_base_to_min() {
    let s = Schedule {
        base_lr: 0.2,
        decay: Decay::Cosine { min_lr: 0.002 },
        warmup: Warmup::None,
        total_steps: 100,
    };
    assert!(close(s.lr(0), 0.2));
    assert!(close(s.lr(50), 0.101));
    assert!(close(s.lr(100), 0.002));
    assert!(s.lr(30) > s.lr(31));
}

#[test]
fn warmups_precede_the_decay() {
    let linear = Schedule {
        warmup: Warmup::Linear { steps: 4 },
        ..Schedule::multistep(0.1, 100)
    };
    let got: Vec<f64> = (0..5).map(|i| linear.lr(i)).collect();
    for (g, w) in got.iter().zip([0.025, 0.05, 0.075, 0.1, 0.1]) {
        assert!(close(*g, w), "{got:?}");
    }
    // He et al.: 0.01 (a tenth of 0.1) for the first 400 iterations.
    let constant = Schedule {
        warmup: Warmup::Constant {
            steps: 400,
            factor: 0.1,
        },
        ..Schedule::multistep(0.1, 64_000)
    };
    assert!(close(constant.lr(399), 0.01));
    assert!(close(constant.lr(400), 0.1));
}

#[test]
fn names_parse() {
    assert_eq!(
        "cosine".parse::<Decay>().unwrap(),
        Decay::Cosine { min_lr: 0.0 }
    );
    assert!("linear-ish".parse::<Decay>().is_err());
}

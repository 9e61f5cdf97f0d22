//! The trainer end to end on real Fashion-MNIST slices (the Debian package
//! `dataset-fashion-mnist`, which CI installs): learning, exact resume,
//! divergence, and configuration from TOML and flags.

mod common;

use std::path::{Path, PathBuf};

use unravel_device::Gpu;
use unravel_train::checkpoint::Checkpoint;
use unravel_train::run_folder::{latest_generation, latest_model};
use unravel_train::trainer::{self, Kept, RunOptions, TrainError, TrainOptions};

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unravel-trainer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn small(out: &Path) -> TrainOptions {
    TrainOptions {
        model: Some("resnet8".into()),
        train_subset: Some(256),
        test_subset: Some(100),
        batch_size: Some(32),
        epochs: Some(2),
        schedule: Some("constant".into()),
        lr: Some(0.05),
        out: Some(out.to_path_buf()),
        ..Default::default()
    }
}

#[test]
fn a_small_resnet_learns_fashion_mnist() {
    let gpu = Gpu::default_adapter().unwrap();
    let out = out_dir("learn");
    let config = TrainOptions {
        model: Some("resnet8".into()),
        train_subset: Some(3000),
        test_subset: Some(1000),
        batch_size: Some(50),
        epochs: Some(3),
        out: Some(out.clone()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let report = trainer::train(&gpu, &config, &RunOptions::default()).unwrap();
    assert_eq!(report.epochs.len(), 3);
    let (first, last) = (&report.epochs[0], &report.epochs[2]);
    assert!(
        last.train_loss < 0.8 * first.train_loss,
        "{first:?} -> {last:?}"
    );
    // Ten classes: chance is 10%.
    assert!(last.test_acc > 0.7, "test accuracy {}", last.test_acc);
    let generation = latest_generation(&out).unwrap().unwrap();
    for file in [generation.model(), generation.optimizer()] {
        assert!(file.is_file(), "{} missing", file.display());
    }
    for file in ["metrics.jsonl", "curves.png"] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let row: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    for key in [
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "images_per_s",
        "seconds",
    ] {
        assert!(row[key].is_number(), "{key} missing in {row}");
    }
}

#[test]
fn resuming_after_a_stop_matches_an_uninterrupted_run() {
    let gpu = Gpu::default_adapter().unwrap();
    let (a, b) = (out_dir("whole"), out_dir("split"));
    // Stochastic depth too: its draws must also resume exactly.
    let with_sd = |out: &Path| TrainOptions {
        stochastic_depth: Some(0.5),
        ..small(out)
    };
    let whole = with_sd(&a).resolve().unwrap();
    trainer::train(&gpu, &whole, &RunOptions::default()).unwrap();
    // 256 / 32 = 8 steps an epoch: stop in the middle of the first epoch.
    let split = with_sd(&b).resolve().unwrap();
    let stopped = trainer::train(
        &gpu,
        &split,
        &RunOptions {
            stop: &|step| step == 5,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(stopped.interrupted);
    let resumed = trainer::train(
        &gpu,
        &split,
        &RunOptions {
            resume: Some(&b),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!resumed.interrupted);
    assert_eq!(resumed.epochs.len(), 2);
    assert_same_checkpoints(&gpu, &a, &b);
}

/// The parameters of the latest checkpoint in `dir` (a resnet8 on
/// Fashion-MNIST), loaded as an f32 model.
fn checkpoint_params(gpu: &Gpu, dir: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let graph = common::resnet8_fashion_mnist();
    let state = unravel_graph::ModelState::new(gpu, &graph, 1).unwrap();
    Checkpoint::read(&latest_model(dir).unwrap())
        .unwrap()
        .load_model(gpu, &graph, &state)
        .unwrap();
    state.read_params(gpu).unwrap()
}

/// The latest checkpoints of two runs hold the same parameters (to f32
/// rounding).
#[track_caller]
fn assert_same_checkpoints(gpu: &Gpu, a: &Path, b: &Path) {
    for ((name, _, x), (_, _, y)) in checkpoint_params(gpu, a)
        .iter()
        .zip(checkpoint_params(gpu, b).iter())
    {
        let diff = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{name} differs by {diff}");
    }
}

/// Mixed precision: a run stopped mid-epoch resumes with its loss scaler
/// where it stood (the scale, its clean-step count and the skipped steps
/// come back from the optimizer file), so it ends where an uninterrupted
/// run does; every metrics row records the scale and the skipped steps, and
/// the checkpoint is an ordinary f32 one.
#[test]
fn a_mixed_precision_run_resumes_exactly_with_its_loss_scale() {
    let gpu = Gpu::default_adapter().unwrap();
    let (a, b) = (out_dir("mixed-whole"), out_dir("mixed-split"));
    // A scale that overflows f16 at first and an interval of 3 steps: the
    // scaler's state at the stop is neither its start nor a fixed point.
    let mixed = |out: &Path| TrainOptions {
        precision: Some("mixed".into()),
        init_loss_scale: Some(16_777_216.0),
        loss_scale_interval: Some(3),
        ..small(out)
    };
    let whole =
        trainer::train(&gpu, &mixed(&a).resolve().unwrap(), &RunOptions::default()).unwrap();
    let split = mixed(&b).resolve().unwrap();
    let stop_at_5 = RunOptions {
        stop: &|step| step == 5,
        ..Default::default()
    };
    assert!(
        trainer::train(&gpu, &split, &stop_at_5)
            .unwrap()
            .interrupted
    );
    let meta = Checkpoint::read(&latest_generation(&b).unwrap().unwrap().optimizer())
        .unwrap()
        .metadata()
        .unwrap();
    assert!(meta.contains_key("loss_scale_bits"), "{meta:?}");
    let resume = RunOptions {
        resume: Some(&b),
        ..Default::default()
    };
    let resumed = trainer::train(&gpu, &split, &resume).unwrap();
    assert_eq!(resumed.epochs.len(), 2);
    let skipped = whole.epochs[1].skipped_steps.unwrap();
    assert!(skipped > 0, "2^24 should overflow at first");
    for (w, r) in whole.epochs.iter().zip(&resumed.epochs) {
        assert!(w.loss_scale.is_some_and(|s| s > 0.0), "{w:?}");
        assert_eq!(
            (w.loss_scale, w.skipped_steps),
            (r.loss_scale, r.skipped_steps)
        );
    }
    let lines = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    for line in lines.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            row["loss_scale"].is_number() && row["skipped_steps"].is_u64(),
            "{row}"
        );
    }
    assert_same_checkpoints(&gpu, &a, &b);
    let config = trainer::checkpoint_config(&b).unwrap();
    assert_eq!(config.precision, unravel_graph::Precision::Mixed);
}

#[test]
fn a_diverging_run_stops_with_the_step_and_learning_rate() {
    let gpu = Gpu::default_adapter().unwrap();
    let out = out_dir("nan");
    // Batch norm makes the loss blind to the scale of most weights, so
    // only a step that overflows f32 turns it into NaN.
    let config = TrainOptions {
        lr: Some(3e38),
        weight_decay: Some(0.0),
        ..small(&out)
    }
    .resolve()
    .unwrap();
    match trainer::train(&gpu, &config, &RunOptions::default()) {
        Err(TrainError::Diverged { step, lr, kept, .. }) => {
            assert_eq!(lr, 3e38);
            assert!(step < 16);
            // Nothing good was reached, so nothing was saved.
            assert_eq!(kept, Kept::Nothing);
        }
        other => panic!("expected divergence, got {other:?}"),
    }
    assert!(latest_model(&out).is_err());
}

#[test]
fn flags_override_the_toml_file_and_bad_values_are_errors() {
    let dir = out_dir("toml");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("run.toml");
    std::fs::write(
        &file,
        "model = \"resnet32\"\nepochs = 7\nlr = 0.2\nstochastic_depth = 0.5\n",
    )
    .unwrap();
    let from_file = TrainOptions::from_toml_file(&file).unwrap();
    let flags = TrainOptions {
        epochs: Some(3),
        ..Default::default()
    };
    let c = from_file.overridden_by(flags).unwrap().resolve().unwrap();
    assert_eq!(
        (c.model.as_str(), c.epochs, c.lr, c.stochastic_depth),
        ("resnet32", 3, 0.2, Some(0.5))
    );
    std::fs::write(&file, "modle = \"resnet20\"\n").unwrap();
    let err = TrainOptions::from_toml_file(&file).unwrap_err().to_string();
    assert!(err.contains("modle"), "{err}");
    let bad = TrainOptions {
        dataset: Some("imagenet".into()),
        ..Default::default()
    };
    assert!(bad.resolve().unwrap_err().to_string().contains("imagenet"));
    let zero = TrainOptions {
        epochs: Some(0),
        ..Default::default()
    };
    // The error names the setting, not a flag of the CLI.
    match zero.resolve() {
        Err(TrainError::InvalidSetting { setting, .. }) => assert_eq!(setting, "epochs"),
        other => panic!("{other:?}"),
    }
    let lr = TrainOptions {
        lr: Some(-1.0),
        ..Default::default()
    };
    let err = lr.resolve().unwrap_err().to_string();
    assert!(err.starts_with("lr: "), "{err}");
    assert!(!err.contains("--"), "{err}");
    let constant = TrainOptions {
        warmup: Some("constant".into()),
        ..Default::default()
    };
    assert!(constant.resolve().unwrap().constant_warmup);
    let sideways = TrainOptions {
        warmup: Some("sideways".into()),
        ..Default::default()
    };
    assert!(sideways
        .resolve()
        .unwrap_err()
        .to_string()
        .contains("sideways"));
}

#[test]
fn a_plot_that_cannot_be_drawn_does_not_lose_the_run() {
    // curves.png is a folder, so drawing it fails (as on a machine
    // without fonts); the epoch's metrics and checkpoint are still written.
    let gpu = Gpu::default_adapter().unwrap();
    let out = out_dir("noplot");
    std::fs::create_dir_all(out.join("curves.png")).unwrap();
    let config = TrainOptions {
        epochs: Some(1),
        train_subset: Some(64),
        ..small(&out)
    }
    .resolve()
    .unwrap();
    let report = trainer::train(&gpu, &config, &RunOptions::default()).unwrap();
    assert_eq!(report.epochs.len(), 1);
    let checkpoint = Checkpoint::read(&latest_model(&out).unwrap()).unwrap();
    assert_eq!(checkpoint.metadata().unwrap()["model"], "resnet8");
    assert!(latest_generation(&out)
        .unwrap()
        .unwrap()
        .optimizer()
        .exists());
}

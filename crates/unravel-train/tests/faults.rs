//! A run cannot be lost or silently wrong: saves killed at every point of
//! the commit (through the fault hook, not timing), a full disk, two runs
//! on one folder, a stale lock, overwrite refusal, tampered or mismatched
//! optimizer state, non-finite tensors, divergence seen only by the test
//! set, duplicated metrics rows, and resumed schedules. Tiny runs on real
//! Fashion-MNIST slices (the Debian package `dataset-fashion-mnist`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use unravel_device::Gpu;
use unravel_train::checkpoint::{Checkpoint, CheckpointError};
use unravel_train::run_folder::{
    latest_generation, Fault, RunFolderError, RunLock, SavePoint, CHECKPOINTS_DIR, LOCK_FILE,
    METRICS_FILE, MODEL_FILE, OPTIMIZER_FILE,
};
use unravel_train::trainer::{self, Kept, RunOptions, TrainError, TrainOptions, TrainReport};

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unravel-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Two steps an epoch.
fn tiny(out: &Path, epochs: usize) -> trainer::TrainConfig {
    TrainOptions {
        model: Some("resnet8".into()),
        train_subset: Some(128),
        test_subset: Some(64),
        batch_size: Some(64),
        epochs: Some(epochs),
        lr: Some(0.05),
        out: Some(out.to_path_buf()),
        ..Default::default()
    }
    .resolve()
    .unwrap()
}

fn run(gpu: &Gpu, config: &trainer::TrainConfig, options: &RunOptions) -> TrainReport {
    trainer::train(gpu, config, options).unwrap()
}

fn resume(gpu: &Gpu, out: &Path) -> Result<TrainReport, TrainError> {
    trainer::train(
        gpu,
        &tiny(out, 1),
        &RunOptions {
            resume: Some(out),
            ..Default::default()
        },
    )
}

/// The epochs of metrics.jsonl's rows, in order.
fn metric_epochs(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join(METRICS_FILE))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Rewrites the safetensors file `path` with `edit` applied to its
/// metadata and `tensor` applied to each tensor's f32 values.
fn rewrite(
    path: &Path,
    edit: impl Fn(&mut HashMap<String, String>),
    tensor: impl Fn(&str, &mut Vec<f32>),
) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap_or_default();
    edit(&mut meta);
    let mut data: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in st.tensors() {
        let mut raw = t.data().to_vec();
        if t.dtype() == safetensors::Dtype::F32 {
            let mut values: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            tensor(&name, &mut values);
            raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
        data.push((name, t.dtype(), t.shape().to_vec(), raw));
    }
    let views: Vec<(&str, TensorView)> = data
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

fn set(key: &'static str, value: &'static str) -> impl Fn(&mut HashMap<String, String>) {
    move |m| {
        m.insert(key.into(), value.into());
    }
}

fn keep(_: &str, _: &mut Vec<f32>) {}

#[test]
fn a_save_killed_at_any_point_leaves_a_whole_checkpoint_and_resumes() {
    let gpu = Gpu::default_adapter().unwrap();
    let points = [
        SavePoint::FileWritten(MODEL_FILE),
        SavePoint::FileWritten(OPTIMIZER_FILE),
        SavePoint::GenerationRenamed,
        SavePoint::LatestSwitched,
    ];
    for (i, point) in points.into_iter().enumerate() {
        let out = out_dir(&format!("kill{i}"));
        // Killed in the save at the end of epoch 2 (generation 2).
        let commits = std::cell::Cell::new(0);
        let hook = |p: SavePoint| {
            if commits.get() == 1 && p == point {
                return Err(Fault::Kill);
            }
            if p == SavePoint::LatestSwitched {
                commits.set(commits.get() + 1);
            }
            Ok(())
        };
        let err = trainer::train(
            &gpu,
            &tiny(&out, 3),
            &RunOptions {
                fault: Some(&hook),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, TrainError::RunFolder(RunFolderError::Killed(p)) if p == point),
            "{err:?}"
        );
        // Epoch 2's row was written before its save was killed.
        assert_eq!(metric_epochs(&out), [1, 2], "{point:?}");
        let committed = latest_generation(&out).unwrap().unwrap().number;
        let expected = if point == SavePoint::LatestSwitched {
            2
        } else {
            1
        };
        assert_eq!(committed, expected, "{point:?}");
        let report = resume(&gpu, &out).unwrap();
        assert_eq!(report.epochs.len(), 3, "{point:?}");
        // One row an epoch, whatever was killed.
        assert_eq!(metric_epochs(&out), [1, 2, 3], "{point:?}");
        // Only the committed generation is left: no staging folder, no
        // uncommitted or superseded generation.
        let left: Vec<String> = std::fs::read_dir(out.join(CHECKPOINTS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut left = left;
        left.sort();
        let last = latest_generation(&out).unwrap().unwrap().number;
        assert_eq!(left, [format!("{last:06}"), "latest".into()], "{point:?}");
        assert!(!out.join(LOCK_FILE).exists());
    }
}

#[test]
fn a_full_disk_keeps_the_previous_generation() {
    let gpu = Gpu::default_adapter().unwrap();
    let out = out_dir("enospc");
    let full = |p: SavePoint| match p {
        SavePoint::FileWritten(OPTIMIZER_FILE) => {
            Err(Fault::Fail(std::io::Error::from_raw_os_error(28)))
        }
        _ => Ok(()),
    };
    // The first save fails: nothing is committed, nothing half-written.
    let err = trainer::train(
        &gpu,
        &tiny(&out, 1),
        &RunOptions {
            fault: Some(&full),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("checkpoints"), "{err}");
    assert_eq!(latest_generation(&out).unwrap(), None);
    let entries = std::fs::read_dir(out.join(CHECKPOINTS_DIR))
        .unwrap()
        .count();
    assert_eq!(entries, 0, "a staging folder was left");
}

#[test]
fn a_folder_holding_a_run_is_refused_unless_overwritten_or_resumed() {
    let gpu = Gpu::default_adapter().unwrap();
    let out = out_dir("overwrite");
    run(&gpu, &tiny(&out, 1), &RunOptions::default());
    let before = std::fs::read(latest_generation(&out).unwrap().unwrap().model()).unwrap();
    let err = trainer::train(&gpu, &tiny(&out, 1), &RunOptions::default()).unwrap_err();
    assert!(
        matches!(err, TrainError::RunFolder(RunFolderError::HoldsARun { .. })),
        "{err:?}"
    );
    let generation = latest_generation(&out).unwrap().unwrap();
    assert_eq!(std::fs::read(generation.model()).unwrap(), before);
    assert_eq!(metric_epochs(&out), [1]);
    // --overwrite starts again: a new run id, one row.
    let seeded = TrainOptions {
        seed: Some(7),
        ..tiny(&out, 1).to_options()
    }
    .resolve()
    .unwrap();
    let overwrite = RunOptions {
        overwrite: true,
        ..Default::default()
    };
    run(&gpu, &seeded, &overwrite);
    assert_eq!(metric_epochs(&out), [1]);
    let model = Checkpoint::read(&latest_generation(&out).unwrap().unwrap().model()).unwrap();
    assert!(model.metadata().unwrap()["config"].contains("seed = 7"));
}

#[test]
fn a_locked_folder_is_refused_and_a_stale_lock_is_taken_over() {
    let gpu = Gpu::default_adapter().unwrap();
    let out = out_dir("lock");
    std::fs::create_dir_all(&out).unwrap();
    let (held, _) = RunLock::acquire(&out).unwrap();
    let err = trainer::train(&gpu, &tiny(&out, 1), &RunOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("in use by process {}", std::process::id())),
        "{text}"
    );
    assert!(!out.join(METRICS_FILE).exists());
    drop(held);
    // A lock file whose process died (the OS lock is free) is taken over.
    std::fs::write(out.join(LOCK_FILE), "999999999\n").unwrap();
    run(&gpu, &tiny(&out, 1), &RunOptions::default());
    assert!(!out.join(LOCK_FILE).exists());
    assert_eq!(metric_epochs(&out), [1]);
}

#[test]
fn an_unwritable_folder_fails_before_training() {
    let gpu = Gpu::default_adapter().unwrap();
    let dir = out_dir("unwritable");
    std::fs::create_dir_all(&dir).unwrap();
    // A file where the folder should be (root ignores permission bits).
    std::fs::write(dir.join("file"), "").unwrap();
    let started = std::time::Instant::now();
    let err = trainer::train(
        &gpu,
        &tiny(&dir.join("file/run"), 1),
        &RunOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::RunFolder(RunFolderError::NotWritable { .. })
        ),
        "{err:?}"
    );
    // Before the data is read and the plan compiled.
    assert!(started.elapsed().as_secs_f64() < 1.0);
}

#[test]
fn tampered_or_mismatched_optimizer_state_is_refused() {
    let gpu = Gpu::default_adapter().unwrap();
    let base = out_dir("tamper");
    run(&gpu, &tiny(&base, 1), &RunOptions::default());
    let generation = latest_generation(&base).unwrap().unwrap();
    type Edit = Box<dyn Fn(&Path, &Path)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "epoch99",
            Box::new(|_, o| rewrite(o, set("epoch", "99"), keep)),
            "epoch 99 is past the run's 1 epochs",
        ),
        (
            "batch",
            Box::new(|_, o| rewrite(o, set("batch", "99999"), keep)),
            "batch 99999 is past the 2 batches",
        ),
        (
            "step",
            Box::new(|m, o| {
                rewrite(m, set("step", "4611686018427387904"), keep);
                rewrite(o, set("step", "4611686018427387904"), keep);
            }),
            "step 4611686018427387904 is not epoch 1 x 2 batches + batch 0",
        ),
        (
            "loss",
            Box::new(|_, o| rewrite(o, set("loss_sum", "NaN"), keep)),
            "loss_sum is NaN",
        ),
        (
            "run",
            Box::new(|_, o| rewrite(o, set("run_id", "0123456789abcdef"), keep)),
            "are not one checkpoint: run_id",
        ),
        (
            "momentum",
            Box::new(|_, o| {
                rewrite(
                    o,
                    |_| {},
                    |n, v| {
                        if n == "momentum.fc.bias" {
                            v[3] = f32::INFINITY;
                        }
                    },
                )
            }),
            "tensor momentum.fc.bias holds inf at index 3",
        ),
        (
            "weights",
            Box::new(|m, _| {
                rewrite(
                    m,
                    |_| {},
                    |n, v| {
                        if n == "conv1.weight" {
                            v[0] = f32::NAN;
                        }
                    },
                )
            }),
            "tensor conv1.weight holds NaN at index 0",
        ),
        (
            "variance",
            Box::new(|m, _| {
                rewrite(
                    m,
                    |_| {},
                    |n, v| {
                        if n == "bn1.running_var" {
                            v[2] = -1.0;
                        }
                    },
                )
            }),
            "bn1.running_var holds the negative variance -1 at index 2",
        ),
    ];
    for (name, edit, expected) in cases {
        let out = out_dir(&format!("tamper-{name}"));
        let copy = out
            .join(CHECKPOINTS_DIR)
            .join(format!("{:06}", generation.number));
        std::fs::create_dir_all(&copy).unwrap();
        for file in [MODEL_FILE, OPTIMIZER_FILE] {
            std::fs::copy(generation.dir.join(file), copy.join(file)).unwrap();
        }
        std::fs::copy(
            base.join(CHECKPOINTS_DIR).join("latest"),
            out.join(CHECKPOINTS_DIR).join("latest"),
        )
        .unwrap();
        std::fs::copy(base.join(METRICS_FILE), out.join(METRICS_FILE)).unwrap();
        edit(&copy.join(MODEL_FILE), &copy.join(OPTIMIZER_FILE));
        let err = resume(&gpu, &out).unwrap_err().to_string();
        assert!(err.contains(expected), "{name}: {err}");
        // Nothing was trained or written.
        assert_eq!(metric_epochs(&out), [1], "{name}");
    }
    // The model with a NaN is refused by evaluation's loader too.
    let bad = std::env::temp_dir()
        .join(format!(
            "unravel-faults-tamper-weights-{}",
            std::process::id()
        ))
        .join(CHECKPOINTS_DIR)
        .join(format!("{:06}", generation.number))
        .join(MODEL_FILE);
    let graph = common::resnet8_fashion_mnist();
    let state = unravel_graph::ModelState::new(&gpu, &graph, 0).unwrap();
    match Checkpoint::read(&bad)
        .unwrap()
        .load_model(&gpu, &graph, &state)
    {
        Err(CheckpointError::BadValues { tensor, .. }) => assert_eq!(tensor, "conv1.weight"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_run_whose_test_loss_alone_diverges_stops_and_keeps_the_last_finite_checkpoint() {
    let gpu = Gpu::default_adapter().unwrap();
    let out = out_dir("testnan");
    run(&gpu, &tiny(&out, 1), &RunOptions::default());
    // A huge (finite) running mean in the last batch norm: training uses
    // batch statistics and stays finite, evaluation overflows.
    let generation = latest_generation(&out).unwrap().unwrap();
    rewrite(
        &generation.model(),
        |_| {},
        |n, v| {
            if n == "layer3.0.bn2.running_mean" {
                v.iter_mut().for_each(|x| *x = -3e38);
            }
        },
    );
    let extended = trainer::train(
        &gpu,
        &tiny(&out, 2),
        &RunOptions {
            resume: Some(&out),
            ..Default::default()
        },
    );
    match extended {
        Err(TrainError::Diverged {
            what, epoch, kept, ..
        }) => {
            assert_eq!((what.as_str(), epoch), ("the test loss", 2));
            assert_eq!(
                kept,
                Kept::Generation {
                    dir: generation.dir.clone(),
                    epochs_done: 1,
                    step: 2
                }
            );
        }
        other => panic!("expected divergence, got {other:?}"),
    }
    // No row for the diverged epoch, no new generation.
    assert_eq!(metric_epochs(&out), [1]);
    assert_eq!(latest_generation(&out).unwrap().unwrap(), generation);
}

#[test]
fn metrics_are_cut_back_to_the_checkpoint_and_null_rows_survive() {
    let gpu = Gpu::default_adapter().unwrap();
    let out = out_dir("null");
    // Stopped in epoch 2, after epoch 1's row and checkpoint.
    let stopped = run(
        &gpu,
        &tiny(&out, 2),
        &RunOptions {
            stop: &|step| step == 3,
            ..Default::default()
        },
    );
    assert!(stopped.interrupted);
    // Epoch 1's row holding null (a NaN), then a row of epoch 2 that no
    // checkpoint has, twice, and half a line, as killed runs leave them.
    let row = |epoch: u32, loss: &str| {
        format!(
            "{{\"epoch\":{epoch},\"lr\":0.05,\"train_loss\":{loss},\"train_acc\":0.1,\
             \"test_loss\":1.0,\"test_acc\":0.1,\"images_per_s\":1.0,\"seconds\":1.0}}\n"
        )
    };
    let text = row(1, "null") + &row(2, "2.0") + &row(2, "2.0") + "{\"epoch\":2,\"lr";
    std::fs::write(out.join(METRICS_FILE), text).unwrap();
    let report = resume(&gpu, &out).unwrap();
    assert_eq!(metric_epochs(&out), [1, 2]);
    assert_eq!(report.epochs.len(), 2);
    assert!(report.epochs[0].train_loss.is_nan());
    assert!(report.epochs[1].train_loss.is_finite());
}

#[test]
fn extending_a_multistep_run_keeps_its_milestones() {
    let gpu = Gpu::default_adapter().unwrap();
    let out = out_dir("milestones");
    let config = TrainOptions {
        schedule: Some("multistep".into()),
        ..tiny(&out, 2).to_options()
    }
    .resolve()
    .unwrap();
    run(&gpu, &config, &RunOptions::default());
    let report = trainer::train(
        &gpu,
        &tiny(&out, 4),
        &RunOptions {
            resume: Some(&out),
            ..Default::default()
        },
    )
    .unwrap();
    // Milestones at epochs 1 and 1.5 of the 2-epoch run: every step of
    // epochs 3 and 4 is past both (a rescaled schedule would put them at
    // 2 and 3).
    let lrs: Vec<f64> = report.epochs.iter().map(|r| r.lr).collect();
    for lr in &lrs[1..] {
        assert!((lr - 0.0005).abs() < 1e-9, "{lrs:?}");
    }
}

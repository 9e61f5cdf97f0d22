//! The training loop: data on a background thread, one GPU submission per
//! step, a learning-rate schedule, stochastic depth, evaluation after each
//! epoch, metrics and curves, atomic checkpoints, resume, and a clean stop.
//!
//! A run's folder holds `checkpoint.safetensors` (the model, PyTorch names,
//! its configuration in the metadata), `optimizer.safetensors` (momentum,
//! and where the run stands: epoch, batch, step), `metrics.jsonl` and
//! `curves.png`.

mod config;
pub mod metrics;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use thiserror::Error;
use unravel_device::kernels::sgd::SgdConfig;
use unravel_device::Gpu;
use unravel_graph::{Graph, Mode, ModelState, Optimizer, Plan};

pub use config::{TrainConfig, TrainOptions};
pub use metrics::EpochMetrics;

use crate::checkpoint::{save_model, save_momentum, Checkpoint, CheckpointError};
use crate::data::{self, DataError, LastBatch, Loader, LoaderConfig, Normalization};
use crate::evaluate::{EvalResult, Evaluator};
use crate::models::{build, ModelConfig, ModelError};
use crate::schedule::{Schedule, Warmup};
use crate::stochastic_depth::StochasticDepth;

pub const MODEL_FILE: &str = "checkpoint.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CURVES_FILE: &str = "curves.png";

/// What can stop a run. Errors name the setting (the field of
/// [`TrainOptions`]) or the file that is wrong; the CLI maps settings to
/// its flags.
#[derive(Debug, Error)]
pub enum TrainError {
    /// A setting has a value it cannot take.
    #[error("{setting}: {reason}")]
    InvalidSetting {
        setting: &'static str,
        reason: String,
    },
    #[error("{}: {message}", path.display())]
    SettingsFile { path: PathBuf, message: String },
    #[error("the settings cannot be written down: {message}")]
    UnrepresentableSettings { message: String },
    #[error("the training set has {samples} samples, fewer than one batch of {batch_size}")]
    TooFewSamples { samples: usize, batch_size: usize },
    #[error("{} holds no {MODEL_FILE}: give a run folder written by the trainer", dir.display())]
    NotARunFolder { dir: PathBuf },
    #[error("{} has no training configuration", path.display())]
    NoStoredSettings { path: PathBuf },
    #[error("{}: the stored training configuration cannot be read: {message}", path.display())]
    BadStoredSettings { path: PathBuf, message: String },
    #[error("{}: the optimizer state lacks a valid {key:?}", path.display())]
    BadOptimizerState { path: PathBuf, key: &'static str },
    #[error("writing {}: {source}", path.display())]
    Metrics {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Graph(#[from] unravel_graph::GraphError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing {0}")]
    Plot(String),
    #[error(
        "the loss became {loss} at epoch {epoch}, step {step} (learning rate {lr}); training stopped \
         and the last good checkpoint was kept"
    )]
    Diverged {
        epoch: usize,
        step: usize,
        lr: f64,
        loss: f32,
    },
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct TrainReport {
    pub out: PathBuf,
    pub epochs: Vec<EpochMetrics>,
    /// Stopped on request (Ctrl-C) before the last epoch ended.
    pub interrupted: bool,
}

/// Where a run stands; stored in the optimizer file's metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Position {
    /// Epoch in progress, from 0.
    epoch: usize,
    /// Next batch of that epoch.
    batch: usize,
    /// Optimiser steps done.
    step: usize,
    /// Sums over the epoch so far (a resumed epoch reports all of it).
    loss_sum: f64,
    correct: u64,
    seen: u64,
    seconds: f64,
    active_sum: f64,
}

impl Position {
    fn to_metadata(self) -> HashMap<String, String> {
        HashMap::from([
            ("epoch".into(), self.epoch.to_string()),
            ("batch".into(), self.batch.to_string()),
            ("step".into(), self.step.to_string()),
            ("loss_sum".into(), self.loss_sum.to_string()),
            ("correct".into(), self.correct.to_string()),
            ("seen".into(), self.seen.to_string()),
            ("seconds".into(), self.seconds.to_string()),
            ("active_sum".into(), self.active_sum.to_string()),
        ])
    }

    /// Where the run in the optimizer file `path` stands, from its metadata.
    fn from_metadata(m: &HashMap<String, String>, path: &Path) -> Result<Position, TrainError> {
        fn field<T: std::str::FromStr>(
            m: &HashMap<String, String>,
            path: &Path,
            key: &'static str,
        ) -> Result<T, TrainError> {
            m.get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| TrainError::BadOptimizerState {
                    path: path.to_path_buf(),
                    key,
                })
        }
        Ok(Position {
            epoch: field(m, path, "epoch")?,
            batch: field(m, path, "batch")?,
            step: field(m, path, "step")?,
            loss_sum: field(m, path, "loss_sum")?,
            correct: field(m, path, "correct")?,
            seen: field(m, path, "seen")?,
            seconds: field(m, path, "seconds")?,
            active_sum: field(m, path, "active_sum")?,
        })
    }
}

/// Everything a run loads before its first step.
struct Setup {
    graph: Graph,
    train: Loader,
    test: Loader,
}

fn setup(config: &TrainConfig) -> Result<Setup, TrainError> {
    let splits = data::load(config.dataset, config.data_dir.as_deref())?;
    let mut train = splits.train;
    let mut test = splits.test;
    if let Some(n) = config.train_subset {
        train = train.random_subset(n, config.seed);
    }
    if let Some(n) = config.test_subset {
        test = test.random_subset(n, 0);
    }
    if train.n < config.batch_size {
        return Err(TrainError::TooFewSamples {
            samples: train.n,
            batch_size: config.batch_size,
        });
    }
    let norm = Normalization::from_dataset(&train);
    let graph = build(
        &config.model,
        &ModelConfig::for_dataset(config.dataset, config.shortcut),
    )?;
    let train = Loader::new(
        Arc::new(train),
        norm.clone(),
        LoaderConfig::train(config.batch_size, config.seed, config.augment),
    )?;
    let test = Loader::new(
        Arc::new(test),
        norm,
        LoaderConfig::eval(config.batch_size, LastBatch::Partial),
    )?;
    Ok(Setup { graph, train, test })
}

/// Metadata of the model checkpoint: the model and its full configuration.
fn model_metadata(config: &TrainConfig) -> Result<HashMap<String, String>, TrainError> {
    let options =
        toml::to_string(&config.to_options()).map_err(|e| TrainError::UnrepresentableSettings {
            message: e.to_string(),
        })?;
    Ok(HashMap::from([
        ("model".into(), config.model.clone()),
        ("dataset".into(), config.dataset.name().into()),
        ("config".into(), options),
        ("format".into(), "unravel-1".into()),
    ]))
}

/// The configuration a checkpoint was trained with.
pub fn checkpoint_config(dir: &Path) -> Result<TrainConfig, TrainError> {
    let path = dir.join(MODEL_FILE);
    if !path.is_file() {
        return Err(TrainError::NotARunFolder {
            dir: dir.to_path_buf(),
        });
    }
    let meta = Checkpoint::read(&path)?.metadata()?;
    let text = meta
        .get("config")
        .ok_or_else(|| TrainError::NoStoredSettings { path: path.clone() })?;
    let options: TrainOptions =
        toml::from_str(text).map_err(|e| TrainError::BadStoredSettings {
            path,
            message: e.to_string(),
        })?;
    options.resolve()
}

/// Trains as `config` says, or continues the run in `resume`. `stop` is
/// asked after every step (with the number of steps done); when it says
/// yes the run writes a checkpoint and returns (Ctrl-C in the CLI).
pub fn train(
    gpu: &Gpu,
    config: &TrainConfig,
    resume: Option<&Path>,
    stop: &dyn Fn(usize) -> bool,
    progress: bool,
) -> Result<TrainReport, TrainError> {
    let (config, out) = match resume {
        Some(dir) => {
            let mut c = checkpoint_config(dir)?;
            // A resumed run may be given more epochs.
            c.epochs = c.epochs.max(config.epochs);
            c.out = Some(dir.to_path_buf());
            (c, dir.to_path_buf())
        }
        None => {
            let out = config.out.clone().unwrap_or_else(default_run_dir);
            (config.clone(), out)
        }
    };
    std::fs::create_dir_all(&out).map_err(|e| TrainError::io(&out, e))?;
    let Setup { graph, train, test } = setup(&config)?;
    let state = ModelState::new(gpu, &graph, config.seed)?;
    let mut pos = Position::default();
    if resume.is_some() {
        Checkpoint::read(&out.join(MODEL_FILE))?.load_model(gpu, &graph, &state)?;
        let opt = Checkpoint::read(&out.join(OPTIMIZER_FILE))?;
        opt.load_momentum(gpu, &graph, &state)?;
        pos = Position::from_metadata(&opt.metadata()?, &out.join(OPTIMIZER_FILE))?;
    } else {
        // A fresh run starts a fresh metrics file.
        let _ = std::fs::remove_file(out.join(METRICS_FILE));
    }

    let per_epoch = train.batches_per_epoch();
    let total = per_epoch * config.epochs;
    let schedule = Schedule {
        base_lr: config.lr,
        decay: config.schedule.clone(),
        warmup: {
            let steps = (config.warmup_epochs * per_epoch as f64).round() as usize;
            match (steps, config.constant_warmup) {
                (0, _) => Warmup::None,
                (steps, true) => Warmup::Constant { steps, factor: 0.1 },
                (steps, false) => Warmup::Linear { steps },
            }
        },
        total_steps: total,
    };
    let sgd = |lr: f64| SgdConfig {
        lr: lr as f32,
        momentum: config.momentum as f32,
        weight_decay: config.weight_decay as f32,
        nesterov: config.nesterov,
    };
    let plan = Plan::compile(gpu, &graph, &state, config.batch_size, Mode::Train)?;
    let mut optimizer = Optimizer::new(gpu, &state, sgd(schedule.lr(pos.step)))?;
    let sd = config
        .stochastic_depth
        .map(|p| StochasticDepth::new(&graph, p));
    let blocks = graph.residual_blocks().count() as f64;
    let meta = model_metadata(&config)?;
    // Evaluation plans are compiled on the first evaluation and reused.
    let mut evaluator = Evaluator::new(gpu, &graph, &state, sd.clone());
    let mut report = TrainReport {
        out: out.clone(),
        epochs: metrics::read_all(&out.join(METRICS_FILE)),
        interrupted: false,
    };
    let mut plot_failed = false;

    while pos.epoch < config.epochs {
        let bar = progress_bar(progress, per_epoch, pos);
        // Without a terminal (a run in the background, output to a file) the
        // bar is hidden: a plain line every tenth of the epoch instead.
        let line_every = (progress && bar.is_hidden()).then(|| per_epoch.div_ceil(10).max(1));
        let mut lr = schedule.lr(pos.step);
        for batch in train.batches(pos.epoch as u64, pos.batch) {
            let started = Instant::now();
            lr = schedule.lr(pos.step);
            optimizer.set_config(gpu, &state, sgd(lr))?;
            // One Bernoulli draw per block per step, reproducible from
            // (seed, step) so a resumed run draws the same blocks.
            let dropped = match &sd {
                Some(sd) => {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(
                        config.seed ^ (pos.step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    );
                    sd.sample_dropped(&mut rng)
                }
                None => Vec::new(),
            };
            let stats = plan.train_step(
                gpu,
                &batch.images,
                &batch.labels,
                &dropped,
                Some(&optimizer),
            )?;
            if !stats.loss.is_finite() {
                bar.abandon();
                return Err(TrainError::Diverged {
                    epoch: pos.epoch + 1,
                    step: pos.step,
                    lr,
                    loss: stats.loss,
                });
            }
            state.count_batch();
            pos.batch += 1;
            pos.step += 1;
            pos.loss_sum += stats.loss as f64 * batch.valid as f64;
            pos.correct += stats.correct as u64;
            pos.seen += batch.valid as u64;
            pos.seconds += started.elapsed().as_secs_f64();
            pos.active_sum += blocks - dropped.len() as f64;
            let message = format!(
                "loss {:.4} acc {:.3} {:.0} img/s lr {lr:.4}",
                pos.loss_sum / pos.seen as f64,
                pos.correct as f64 / pos.seen as f64,
                pos.seen as f64 / pos.seconds.max(1e-9),
            );
            if line_every.is_some_and(|n| pos.batch % n == 0 || pos.batch == per_epoch) {
                eprintln!(
                    "epoch {} {}/{per_epoch} {message}",
                    pos.epoch + 1,
                    pos.batch
                );
            }
            bar.inc(1);
            bar.set_message(message);
            if stop(pos.step) {
                bar.abandon_with_message("stopped: checkpoint saved");
                save(gpu, &out, &graph, &state, &meta, pos)?;
                report.interrupted = true;
                return Ok(report);
            }
        }
        bar.finish_and_clear();
        let eval = evaluator.run(&test, &[])?;
        let row = epoch_row(pos, lr, eval, sd.is_some());
        if progress {
            eprintln!(
                "epoch {:>3}/{}  lr {:.4}  train loss {:.4} acc {:.4}  test loss {:.4} acc {:.4}  {:.0} img/s  {:.1} s",
                row.epoch, config.epochs, row.lr, row.train_loss, row.train_acc, row.test_loss, row.test_acc,
                row.images_per_s, row.seconds
            );
        }
        metrics::append(&out.join(METRICS_FILE), &row)?;
        report.epochs.push(row);
        pos = Position {
            epoch: pos.epoch + 1,
            step: pos.step,
            ..Position::default()
        };
        save(gpu, &out, &graph, &state, &meta, pos)?;
        // The plot is a convenience: a machine without fonts (a bare
        // container) must not lose the run over it.
        if let Err(e) = metrics::plot(&out.join(CURVES_FILE), &report.epochs) {
            if !plot_failed {
                eprintln!(
                    "warning: {e}; the metrics and checkpoints are written (a font such as \
                     fonts-dejavu-core draws the plot)"
                );
            }
            plot_failed = true;
        }
    }
    gpu.save_pipeline_cache();
    Ok(report)
}

fn epoch_row(pos: Position, lr: f64, eval: EvalResult, stochastic: bool) -> EpochMetrics {
    let steps = pos.batch.max(1) as f64;
    EpochMetrics {
        epoch: pos.epoch + 1,
        lr,
        train_loss: pos.loss_sum / pos.seen.max(1) as f64,
        train_acc: pos.correct as f64 / pos.seen.max(1) as f64,
        test_loss: eval.loss,
        test_acc: eval.accuracy,
        images_per_s: pos.seen as f64 / pos.seconds.max(1e-9),
        seconds: pos.seconds,
        active_blocks: stochastic.then_some(pos.active_sum / steps),
    }
}

/// Model first, then optimizer: both atomic, and the optimizer's position
/// only ever points at a model file at least as new.
fn save(
    gpu: &Gpu,
    out: &Path,
    graph: &Graph,
    state: &ModelState,
    meta: &HashMap<String, String>,
    pos: Position,
) -> Result<(), TrainError> {
    save_model(&out.join(MODEL_FILE), gpu, graph, state, meta.clone())?;
    save_momentum(
        &out.join(OPTIMIZER_FILE),
        gpu,
        graph,
        state,
        pos.to_metadata(),
    )?;
    Ok(())
}

fn progress_bar(visible: bool, per_epoch: usize, pos: Position) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(per_epoch as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix((pos.epoch + 1).to_string());
    bar.set_position(pos.batch as u64);
    bar
}

/// `runs/<UTC timestamp>`.
pub fn default_run_dir() -> PathBuf {
    PathBuf::from("runs").join(chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string())
}

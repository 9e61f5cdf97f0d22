//! The training loop: data on a background thread, one GPU submission per
//! step, a learning-rate schedule, stochastic depth, evaluation after each
//! epoch, metrics and curves, checkpoints committed as generations, resume,
//! and a clean stop.
//!
//! A run's folder ([`crate::run_folder`]) holds the committed generation
//! (`checkpoints/NNNNNN/model.safetensors`: the model, PyTorch names, its
//! configuration in the metadata; `optimizer.safetensors`: momentum and
//! where the run stands), `metrics.jsonl` and `curves.png`. The run holds
//! the folder's lock from start to end.
//!
//! A run stops with [`TrainError::Diverged`] as soon as the training loss,
//! the test loss, or any tensor about to be saved (weights, batch-norm
//! statistics, momentum) is not finite; only finite checkpoints are ever
//! committed, and the error says which one was kept.

mod config;
pub mod metrics;
mod position;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use thiserror::Error;
use unravel_device::kernels::loss_scale::LossScaleState;
use unravel_device::kernels::sgd::SgdConfig;
use unravel_device::Gpu;
use unravel_graph::{Graph, Mode, ModelState, Optimizer, Plan, PlanOptions, Precision};

pub use config::{TrainConfig, TrainOptions};
pub use metrics::EpochMetrics;
pub use position::GENERATION_KEYS;

use crate::checkpoint::{model_bytes, momentum_bytes, Checkpoint, CheckpointError};
use crate::data::{self, DataError, LastBatch, Loader, LoaderConfig, Normalization};
use crate::evaluate::{EvalResult, Evaluator};
use crate::models::{build, ModelConfig, ModelError};
use crate::run_folder::{
    latest_model, FaultHook, Generation, Opening, RunFolder, RunFolderError, CURVES_FILE,
    METRICS_FILE, MODEL_FILE, OPTIMIZER_FILE,
};
use crate::schedule::{Decay, Schedule, Warmup};
use crate::stochastic_depth::StochasticDepth;
use position::{Bounds, Position};

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
    #[error("the test set has no images: there is nothing to evaluate on")]
    EmptyTestSet,
    #[error("{} has no training configuration", path.display())]
    NoStoredSettings { path: PathBuf },
    #[error("{}: the stored training configuration is not valid: {message}", path.display())]
    BadStoredSettings { path: PathBuf, message: String },
    #[error("{}: the optimizer state lacks a valid {key:?}", path.display())]
    BadOptimizerState { path: PathBuf, key: &'static str },
    #[error("{}: impossible position of the run: {message}", path.display())]
    ImpossiblePosition { path: PathBuf, message: String },
    #[error(
        "{} and {} are not one checkpoint: {message}",
        model.display(),
        optimizer.display()
    )]
    MismatchedCheckpoint {
        model: PathBuf,
        optimizer: PathBuf,
        message: String,
    },
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
    #[error(transparent)]
    RunFolder(#[from] RunFolderError),
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing {0}")]
    Plot(String),
    #[error(
        "{what} became {value} at epoch {epoch}, step {step} (learning rate {lr}); training \
         stopped and {kept}"
    )]
    Diverged {
        /// "the training loss", "the test loss" or "tensor <name>".
        what: String,
        value: f32,
        epoch: usize,
        step: usize,
        lr: f64,
        kept: Kept,
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

/// The checkpoint a diverged run left as its last good one.
#[derive(Clone, Debug, PartialEq)]
pub enum Kept {
    Nothing,
    Generation {
        dir: PathBuf,
        epochs_done: usize,
        step: usize,
    },
}

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kept::Nothing => write!(f, "no checkpoint was kept: none had been saved"),
            Kept::Generation {
                dir,
                epochs_done,
                step,
            } => write!(
                f,
                "the last good checkpoint ({epochs_done} epochs done, step {step}) is {}",
                dir.display()
            ),
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

/// How to run: a new run or the continuation of one, when to stop, and
/// whether to show progress.
pub struct RunOptions<'a> {
    /// Continue the run in this folder (its own configuration; a larger
    /// `epochs` extends it).
    pub resume: Option<&'a Path>,
    /// Replace the run in the output folder instead of refusing to.
    pub overwrite: bool,
    /// Asked after every step with the number of steps done; when it says
    /// yes the run commits a checkpoint and returns (Ctrl-C in the CLI).
    pub stop: &'a dyn Fn(usize) -> bool,
    /// A progress bar (or, without a terminal, a line every tenth of an
    /// epoch) and a line per epoch on stderr.
    pub progress: bool,
    /// Fault injection into every save (tests).
    pub fault: Option<FaultHook<'a>>,
}

fn never(_: usize) -> bool {
    false
}

impl Default for RunOptions<'_> {
    fn default() -> Self {
        RunOptions {
            resume: None,
            overwrite: false,
            stop: &never,
            progress: false,
            fault: None,
        }
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
    if test.n == 0 {
        return Err(TrainError::EmptyTestSet);
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

/// The configuration the checkpoint of the run in `dir` was trained with;
/// an error in it names the checkpoint file.
pub fn checkpoint_config(dir: &Path) -> Result<TrainConfig, TrainError> {
    let path = latest_model(dir)?;
    let meta = Checkpoint::read(&path)?.metadata()?;
    let text = meta
        .get("config")
        .ok_or_else(|| TrainError::NoStoredSettings { path: path.clone() })?;
    let bad = |message: String| TrainError::BadStoredSettings {
        path: path.clone(),
        message,
    };
    let options: TrainOptions = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    options.resolve().map_err(|e| bad(e.to_string()))
}

/// `config` for the run to be resumed in `dir`: its stored configuration,
/// with `epochs` extended when `config` asks for more. The milestones of a
/// multistep schedule stay where they were (the last phase is extended); a
/// cosine schedule is stretched over the new length, so the run then
/// matches no uninterrupted one (a warning says so).
fn resumed_config(
    dir: &Path,
    config: &TrainConfig,
    progress: bool,
) -> Result<TrainConfig, TrainError> {
    let mut c = checkpoint_config(dir)?;
    if config.epochs > c.epochs {
        if matches!(c.schedule, Decay::Cosine { .. }) && progress {
            eprintln!(
                "warning: the cosine schedule of this {}-epoch run is stretched to {} epochs; \
                 the rest of the run follows the stretched curve",
                c.epochs, config.epochs
            );
        }
        c.epochs = config.epochs;
    }
    c.out = Some(dir.to_path_buf());
    Ok(c)
}

/// Checks that the model and optimizer files of `generation` are one
/// checkpoint and returns the run's id.
fn check_pair(
    generation: &Generation,
    model: &HashMap<String, String>,
    optimizer: &HashMap<String, String>,
) -> Result<String, TrainError> {
    let mismatch = |message: String| TrainError::MismatchedCheckpoint {
        model: generation.model(),
        optimizer: generation.optimizer(),
        message,
    };
    for key in GENERATION_KEYS {
        let (a, b) = (model.get(key), optimizer.get(key));
        if a.is_none() || a != b {
            return Err(mismatch(format!(
                "{key} is {} in the model and {} in the optimizer state",
                a.map_or("missing", |v| v.as_str()),
                b.map_or("missing", |v| v.as_str())
            )));
        }
    }
    if model["generation"] != generation.number.to_string() {
        return Err(mismatch(format!(
            "they say generation {}, their folder is generation {}",
            model["generation"], generation.number
        )));
    }
    Ok(model["run_id"].clone())
}

/// Trains as `config` says (into `config.out`, by default
/// `runs/<timestamp>`), or continues the run `options.resume` names.
pub fn train(
    gpu: &Gpu,
    config: &TrainConfig,
    options: &RunOptions,
) -> Result<TrainReport, TrainError> {
    let (config, opening) = match options.resume {
        Some(dir) => (
            resumed_config(dir, config, options.progress)?,
            Opening::Resume,
        ),
        None => {
            let mut c = config.clone();
            c.out = Some(c.out.unwrap_or_else(default_run_dir));
            let opening = if options.overwrite {
                Opening::Overwrite
            } else {
                Opening::New
            };
            (c, opening)
        }
    };
    let out = config.out.clone().expect("set above");
    // Locked, writable and free of a previous run before anything is loaded.
    let (folder, notes) = RunFolder::open(&out, opening)?;
    for note in notes {
        eprintln!("note: {note}");
    }
    let Setup { graph, train, test } = setup(&config)?;
    let state = ModelState::new(gpu, &graph, config.seed)?;
    let per_epoch = train.batches_per_epoch();
    let blocks = graph.residual_blocks().count();
    let metrics_path = out.join(METRICS_FILE);
    let mut pos = Position::default();
    let mut kept = Kept::Nothing;
    let run_id = match folder.latest() {
        Some(generation) => {
            let model = Checkpoint::read(&generation.model())?;
            let optimizer = Checkpoint::read(&generation.optimizer())?;
            let optimizer_meta = optimizer.metadata()?;
            let run_id = check_pair(&generation, &model.metadata()?, &optimizer_meta)?;
            pos = Position::from_metadata(&optimizer_meta, &generation.optimizer())?;
            let bounds = Bounds {
                epochs: config.epochs,
                batches_per_epoch: per_epoch,
                batch_size: config.batch_size,
                residual_blocks: blocks,
            };
            pos.check(&bounds, &generation.optimizer())?;
            model.load_model(gpu, &graph, &state)?;
            optimizer.load_momentum(gpu, &graph, &state)?;
            // Rows written after this checkpoint (by a run killed before its
            // save) are dropped, so every epoch has one row.
            metrics::keep_epochs(&metrics_path, pos.epoch)?;
            kept = Kept::Generation {
                dir: generation.dir.clone(),
                epochs_done: pos.epoch,
                step: pos.step,
            };
            run_id
        }
        None => format!("{:016x}", rand::rng().random::<u64>()),
    };

    let total = per_epoch * config.epochs;
    let schedule = Schedule {
        base_lr: config.lr,
        decay: config.decay(),
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
    let plan_options = PlanOptions {
        precision: config.precision,
        ..Default::default()
    };
    let plan = Plan::compile_with(
        gpu,
        &graph,
        &state,
        config.batch_size,
        Mode::Train,
        &plan_options,
    )?;
    let mut optimizer = match config.precision {
        Precision::F32 => Optimizer::new(gpu, &state, sgd(schedule.lr(pos.step)))?,
        Precision::Mixed => {
            let scaling = config.loss_scale;
            let o =
                Optimizer::with_loss_scaling(gpu, &state, sgd(schedule.lr(pos.step)), &scaling)?;
            // A resumed run continues with the scaler where it stood.
            let scaler = *pos
                .loss_scale
                .get_or_insert(LossScaleState::initial(&scaling));
            o.set_loss_scale(gpu, &scaler)?;
            o
        }
    };
    let sd = config
        .stochastic_depth
        .map(|p| StochasticDepth::new(&graph, p));
    let saver = Saver {
        gpu,
        graph: &graph,
        state: &state,
        folder: &folder,
        model_meta: model_metadata(&config)?,
        run_id,
        fault: options.fault,
    };
    // Evaluation plans are compiled on the first evaluation and reused.
    let mut evaluator =
        Evaluator::new(gpu, &graph, &state, sd.clone()).with_precision(config.precision);
    let mut report = TrainReport {
        out: out.clone(),
        epochs: metrics::read_all(&metrics_path),
        interrupted: false,
    };
    let mut plot_failed = false;

    while pos.epoch < config.epochs {
        let bar = progress_bar(options.progress, per_epoch, pos);
        // Without a terminal (a run in the background, output to a file) the
        // bar is hidden: a plain line every tenth of the epoch instead.
        let line_every =
            (options.progress && bar.is_hidden()).then(|| per_epoch.div_ceil(10).max(1));
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
                    what: "the training loss".into(),
                    value: stats.loss,
                    epoch: pos.epoch + 1,
                    step: pos.step,
                    lr,
                    kept,
                });
            }
            state.count_batch();
            pos.loss_scale = stats.loss_scale;
            pos.batch += 1;
            pos.step += 1;
            pos.loss_sum += stats.loss as f64 * batch.valid as f64;
            pos.correct += stats.correct as u64;
            pos.seen += batch.valid as u64;
            pos.seconds += started.elapsed().as_secs_f64();
            pos.active_sum += (blocks - dropped.len()) as f64;
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
            if (options.stop)(pos.step) {
                bar.abandon_with_message("stopped: checkpoint saved");
                let files = saver.stage(pos, pos.epoch + 1, lr, &kept)?;
                saver.commit(files)?;
                report.interrupted = true;
                return Ok(report);
            }
        }
        bar.finish_and_clear();
        let eval = evaluator.run(&test, &[])?;
        if !eval.loss.is_finite() {
            return Err(TrainError::Diverged {
                what: "the test loss".into(),
                value: eval.loss as f32,
                epoch: pos.epoch + 1,
                step: pos.step,
                lr,
                kept,
            });
        }
        let row = epoch_row(pos, lr, eval, sd.is_some());
        if options.progress {
            eprintln!(
                "epoch {:>3}/{}  lr {:.4}  train loss {:.4} acc {:.4}  test loss {:.4} acc {:.4}  {:.0} img/s  {:.1} s",
                row.epoch, config.epochs, row.lr, row.train_loss, row.train_acc, row.test_loss, row.test_acc,
                row.images_per_s, row.seconds
            );
        }
        pos = Position {
            epoch: pos.epoch + 1,
            step: pos.step,
            loss_scale: pos.loss_scale,
            ..Position::default()
        };
        // Read and checked before the row is written: a non-finite model
        // ends the run with the previous checkpoint and no row for this epoch.
        let files = saver.stage(pos, pos.epoch, lr, &kept)?;
        metrics::append(&metrics_path, &row)?;
        report.epochs.push(row);
        let generation = saver.commit(files)?;
        kept = Kept::Generation {
            dir: generation.dir,
            epochs_done: pos.epoch,
            step: pos.step,
        };
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
        loss_scale: pos.loss_scale.map(|s| s.scale as f64),
        skipped_steps: pos.loss_scale.map(|s| s.skipped_steps as u64),
    }
}

/// Writes checkpoints of one run as generations of its folder.
struct Saver<'a> {
    gpu: &'a Gpu,
    graph: &'a Graph,
    state: &'a ModelState,
    folder: &'a RunFolder,
    model_meta: HashMap<String, String>,
    run_id: String,
    fault: Option<FaultHook<'a>>,
}

type Files = Vec<(&'static str, Vec<u8>)>;

impl Saver<'_> {
    /// The next generation's two files, both stamped with it; a tensor
    /// that is not finite ends the run (`kept` says what stays).
    fn stage(
        &self,
        pos: Position,
        epoch: usize,
        lr: f64,
        kept: &Kept,
    ) -> Result<Files, TrainError> {
        let generation = HashMap::from([
            ("run_id".to_string(), self.run_id.clone()),
            (
                "generation".to_string(),
                self.folder.next_generation().to_string(),
            ),
            ("step".to_string(), pos.step.to_string()),
        ]);
        let diverged = |e: CheckpointError| match e {
            CheckpointError::NonFiniteState { tensor, value } => TrainError::Diverged {
                what: format!("tensor {tensor}"),
                value,
                epoch,
                step: pos.step,
                lr,
                kept: kept.clone(),
            },
            other => other.into(),
        };
        let mut model_meta = self.model_meta.clone();
        model_meta.extend(generation.clone());
        let mut optimizer_meta = pos.to_metadata();
        optimizer_meta.extend(generation);
        let model = model_bytes(self.gpu, self.graph, self.state, model_meta).map_err(diverged)?;
        let optimizer =
            momentum_bytes(self.gpu, self.graph, self.state, optimizer_meta).map_err(diverged)?;
        Ok(vec![(MODEL_FILE, model), (OPTIMIZER_FILE, optimizer)])
    }

    fn commit(&self, files: Files) -> Result<Generation, TrainError> {
        Ok(self.folder.commit(&files, self.fault)?)
    }
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

//! `unravel train`: train a model, writing metrics, curves and checkpoints
//! into a run folder. Every flag can also come from a TOML file (`--config`);
//! flags win.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use unravel_device::{AdapterOptions, Gpu};
use unravel_train::trainer::{self, TrainOptions};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// TOML file with any of the settings below (flags win).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint (same data order and
    /// schedule); --epochs may extend it.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Model name (see `unravel models`) [default: resnet20].
    #[arg(long)]
    model: Option<String>,
    /// fashion-mnist, mnist, cifar10 or cifar100 [default: fashion-mnist].
    #[arg(long)]
    dataset: Option<String>,
    /// Folder with the dataset's files [default for fashion-mnist:
    /// /usr/share/datasets/fashion-mnist].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// [default: 20]
    #[arg(long)]
    epochs: Option<usize>,
    /// [default: 128]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Base learning rate [default: 0.1].
    #[arg(long)]
    lr: Option<f64>,
    /// [default: 0.9]
    #[arg(long)]
    momentum: Option<f64>,
    /// [default: 5e-4]
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Nesterov momentum [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    nesterov: Option<bool>,
    /// constant, multistep (divide by 10 at 50% and 75%) or cosine
    /// [default: multistep].
    #[arg(long)]
    schedule: Option<String>,
    /// Epochs of learning-rate warm-up [default: 0].
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// linear (from 0 to the base rate) or constant (a tenth of the base
    /// rate, He et al.'s ResNet-110 recipe) [default: linear].
    #[arg(long)]
    warmup: Option<String>,
    /// Seed of initialisation, data order, augmentation and stochastic
    /// depth [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Stochastic depth with this survival probability for the last block
    /// (e.g. 0.5) [default: off].
    #[arg(long, value_name = "P_L")]
    stochastic_depth: Option<f64>,
    /// a (zero-padded identity), b (projection) or highway [default: a].
    #[arg(long)]
    shortcut: Option<String>,
    /// Train on N samples of the training set.
    #[arg(long, value_name = "N")]
    train_subset: Option<usize>,
    /// Evaluate on N samples of the test set.
    #[arg(long, value_name = "N")]
    test_subset: Option<usize>,
    /// Zero-pad 4 and random crop [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pad_crop: Option<bool>,
    /// Random horizontal flip [default: true for CIFAR, false for digits].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    flip: Option<bool>,
    /// Run folder [default: runs/<timestamp>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// No progress bar or epoch lines.
    #[arg(long)]
    quiet: bool,
}

impl TrainArgs {
    fn options(&self) -> TrainOptions {
        TrainOptions {
            model: self.model.clone(),
            dataset: self.dataset.clone(),
            data_dir: self.data_dir.clone(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            schedule: self.schedule.clone(),
            warmup_epochs: self.warmup_epochs,
            warmup: self.warmup.clone(),
            seed: self.seed,
            stochastic_depth: self.stochastic_depth,
            shortcut: self.shortcut.clone(),
            train_subset: self.train_subset,
            test_subset: self.test_subset,
            pad_crop: self.pad_crop,
            flip: self.flip,
            out: self.out.clone(),
        }
    }
}

pub fn run(adapter: &AdapterOptions, args: &TrainArgs) -> anyhow::Result<()> {
    let config = match &args.resume {
        // A resumed run keeps the configuration it was started with (the
        // defaults must not replace it); only --epochs may extend it.
        Some(dir) => {
            let mut c = trainer::checkpoint_config(dir)?;
            c.epochs = c.epochs.max(args.epochs.unwrap_or(0));
            c
        }
        None => {
            let file = match &args.config {
                Some(path) => TrainOptions::from_toml_file(path)?,
                None => TrainOptions::default(),
            };
            file.overridden_by(args.options()).resolve()?
        }
    };
    let gpu = Gpu::new(adapter).context("opening the GPU adapter")?;

    // Ctrl-C finishes the current step, saves a checkpoint and exits 0; a
    // second Ctrl-C exits at once.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step (Ctrl-C again to quit at once)");
    })
    .context("installing the Ctrl-C handler")?;

    let stop_requested = |_: usize| stop.load(Ordering::SeqCst);
    let report = trainer::train(
        &gpu,
        &config,
        args.resume.as_deref(),
        &stop_requested,
        !args.quiet,
    )?;
    let last = report.epochs.last();
    if report.interrupted {
        eprintln!(
            "stopped; resume with: unravel train --resume {}",
            report.out.display()
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "out": report.out,
            "epochs": report.epochs.len(),
            "interrupted": report.interrupted,
            "test_acc": last.map(|m| m.test_acc),
            "test_loss": last.map(|m| m.test_loss),
        })
    );
    Ok(())
}

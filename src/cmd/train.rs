//! `unravel train`: train a model, writing metrics, curves and checkpoints
//! into a run folder. The settings are the library's `TrainOptions` (its
//! fields are the flags); every one can also come from a TOML file
//! (`--config`), and flags win.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use unravel_device::{AdapterOptions, Gpu};
use unravel_train::trainer::{self, RunOptions, TrainOptions};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// TOML file with any of the settings below (flags win).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint (same data order and
    /// schedule); --epochs may extend it (multistep keeps its milestones and
    /// lengthens its last phase; cosine is stretched over the new length,
    /// with a warning).
    #[arg(long, value_name = "DIR", conflicts_with = "overwrite")]
    resume: Option<PathBuf>,
    /// Replace the run already in --out (its checkpoints, metrics and
    /// curves) instead of refusing to.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    settings: TrainOptions,
    /// No progress bar or epoch lines.
    #[arg(long)]
    quiet: bool,
}

pub fn run(adapter: &AdapterOptions, args: &TrainArgs) -> anyhow::Result<()> {
    let config = match &args.resume {
        // A resumed run keeps the configuration it was started with (the
        // defaults must not replace it); only --epochs may extend it.
        Some(dir) => {
            let mut c = trainer::checkpoint_config(dir)?;
            c.epochs = c.epochs.max(args.settings.epochs.unwrap_or(0));
            c
        }
        None => {
            let file = match &args.config {
                Some(path) => TrainOptions::from_toml_file(path)?,
                None => TrainOptions::default(),
            };
            file.overridden_by(args.settings.clone())?.resolve()?
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
    let options = RunOptions {
        resume: args.resume.as_deref(),
        overwrite: args.overwrite,
        stop: &stop_requested,
        progress: !args.quiet,
        fault: None,
    };
    let report = trainer::train(&gpu, &config, &options)?;
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

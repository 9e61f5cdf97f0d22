//! `unravel eval`: test loss and accuracy of a checkpoint.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use unravel_device::{AdapterOptions, Gpu};
use unravel_graph::ModelState;
use unravel_train::checkpoint::Checkpoint;
use unravel_train::data::{self, LastBatch, Loader, LoaderConfig, Normalization};
use unravel_train::evaluate::Evaluator;
use unravel_train::models::{build, ModelConfig};
use unravel_train::run_folder::latest_model;
use unravel_train::stochastic_depth::StochasticDepth;
use unravel_train::trainer::{checkpoint_config, TrainConfig};
use unravel_train::DatasetKind;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A run folder written by `unravel train`.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Evaluate on another dataset of the same input shape [default: the
    /// one the model was trained on].
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Evaluate on N samples of the test set.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub test_subset: Option<usize>,
    #[arg(long, default_value_t = 256, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// f32 or mixed (f16 activations) [default: the precision the model
    /// was trained in].
    #[arg(long, value_parser = super::parse_precision)]
    pub precision: Option<unravel_graph::Precision>,
}

/// The test set a checkpoint is evaluated on, normalised with the statistics
/// of the training set the model saw.
pub fn test_loader(config: &TrainConfig, args: &EvalArgs) -> anyhow::Result<Loader> {
    let dataset = args.dataset.unwrap_or(config.dataset);
    let data_dir = args.data_dir.clone().or(config.data_dir.clone());
    anyhow::ensure!(
        dataset.input() == config.dataset.input() && dataset.classes() == config.dataset.classes(),
        "the model was trained on {} ({} inputs, {} classes) and cannot read {dataset}",
        config.dataset,
        config.dataset.input(),
        config.dataset.classes()
    );
    let mut train = data::load_split(dataset, data_dir.as_deref(), data::Split::Train)?;
    if let Some(n) = config.train_subset {
        train = train.random_subset(n, config.seed);
    }
    let norm = Normalization::from_dataset(&train);
    anyhow::ensure!(
        args.test_subset != Some(0),
        "--test-subset: must be positive"
    );
    anyhow::ensure!(args.batch_size > 0, "--batch-size: must be positive");
    let mut test = data::load_split(dataset, data_dir.as_deref(), data::Split::Test)?;
    if let Some(n) = args.test_subset {
        test = test.random_subset(n, 0);
    }
    Ok(Loader::new(
        Arc::new(test),
        norm,
        LoaderConfig::eval(args.batch_size, LastBatch::Partial),
    )?)
}

pub fn run(adapter: &AdapterOptions, args: &EvalArgs) -> anyhow::Result<()> {
    let config = checkpoint_config(&args.checkpoint)?;
    let loader = test_loader(&config, args)?;
    let dataset = args.dataset.unwrap_or(config.dataset);
    let gpu = Gpu::new(adapter).context("opening the GPU adapter")?;
    let graph = build(
        &config.model,
        &ModelConfig::for_dataset(dataset, config.shortcut),
    )?;
    let state = ModelState::new(&gpu, &graph, 0)?;
    Checkpoint::read(&latest_model(&args.checkpoint)?)?.load_model(&gpu, &graph, &state)?;
    let scaling = config
        .stochastic_depth
        .map(|p| StochasticDepth::new(&graph, p));
    let precision = args.precision.unwrap_or(config.precision);
    let result = Evaluator::new(&gpu, &graph, &state, scaling)
        .with_precision(precision)
        .run(&loader, &[])?;
    println!(
        "{} on {dataset} test ({} images): loss {:.4}, accuracy {:.2}%",
        config.model,
        result.samples,
        result.loss,
        100.0 * result.accuracy
    );
    println!(
        "{}",
        serde_json::json!({
            "model": config.model,
            "dataset": dataset.name(),
            "samples": result.samples,
            "test_loss": result.loss,
            "test_acc": result.accuracy,
        })
    );
    Ok(())
}

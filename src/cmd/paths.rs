//! `unravel paths`: how many paths of each length run through a residual
//! network's blocks (the ensemble view of Veit et al. 2016).

use std::path::PathBuf;

use anyhow::Context;
use plotters::prelude::*;
use rand::SeedableRng;
use unravel_device::{AdapterOptions, Gpu};
use unravel_graph::{Mode, ModelState, Plan, PlanOptions};
use unravel_train::analysis::gradient::{
    contributions, first_block_input, gradient_by_length, shortest_share,
};
use unravel_train::analysis::paths::{fraction, path_counts, shortest_range};
use unravel_train::checkpoint::Checkpoint;
use unravel_train::run_folder::latest_model;
use unravel_train::trainer::checkpoint_config;

use super::eval::{test_loader, EvalArgs};
use unravel_train::models::{build, ModelConfig, ShortcutKind};
use unravel_train::DatasetKind;

#[derive(clap::Args, Debug)]
pub struct PathsArgs {
    /// Model name (see `unravel models`); or give --checkpoint.
    #[arg(long, required_unless_present = "checkpoint")]
    model: Option<String>,
    /// A run folder: the model it trained (and, with --gradient, its weights).
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Measure the gradient magnitude by path length on a test batch.
    #[arg(long, requires = "checkpoint")]
    gradient: bool,
    /// With --gradient: measure the run's network as its training began
    /// (weights drawn from the run's seed), not its trained weights.
    #[arg(long, requires = "gradient")]
    at_init: bool,
    /// With --gradient: batch norms normalise with the batch's statistics,
    /// as in training, or with their running ones held constant, as the
    /// network is evaluated.
    #[arg(long, value_enum, default_value_t = BnStats::Batch, requires = "gradient")]
    bn_stats: BnStats,
    /// Random draws of k blocks for each path length k.
    #[arg(long, default_value_t = 5)]
    samples: usize,
    #[arg(long)]
    dataset: Option<DatasetKind>,
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Draw the measured batch from N samples of the test set.
    #[arg(long, value_name = "N")]
    test_subset: Option<usize>,
    /// Images in the measured batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder [default: runs/paths-<model>, or <checkpoint>/paths].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Which statistics the measured network's batch norms use.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnStats {
    Batch,
    Running,
}

pub fn run(adapter: &AdapterOptions, args: &PathsArgs) -> anyhow::Result<()> {
    let (name, config) = match &args.checkpoint {
        Some(dir) => {
            let c = checkpoint_config(dir)?;
            (
                c.model.clone(),
                ModelConfig::for_dataset(c.dataset, c.shortcut),
            )
        }
        None => (
            args.model.clone().unwrap_or_default(),
            ModelConfig::for_dataset(DatasetKind::Cifar10, ShortcutKind::A),
        ),
    };
    let graph = build(&name, &config)?;
    let n = graph.residual_blocks().count();
    anyhow::ensure!(
        n > 0,
        "{name} has no residual blocks, so it has a single path"
    );
    let counts = path_counts(n);
    let out = args.out.clone().unwrap_or_else(|| match &args.checkpoint {
        Some(dir) => dir.join("paths"),
        None => PathBuf::from(format!("runs/paths-{name}")),
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut csv = String::from("length,count,fraction\n");
    for (k, c) in counts.iter().enumerate() {
        csv += &format!("{k},{c},{:e}\n", fraction(c, n));
    }
    let csv_path = out.join("paths.csv");
    std::fs::write(&csv_path, csv).with_context(|| format!("writing {}", csv_path.display()))?;
    let plot_path = out.join("paths.png");
    plot(
        &plot_path,
        &counts.iter().map(|c| fraction(c, n)).collect::<Vec<_>>(),
    )
    .map_err(|e| anyhow::anyhow!("drawing {}: {e}", plot_path.display()))?;
    let (lo, hi) = shortest_range(&counts, 0.95);
    println!("{name}: {n} residual blocks, 2^{n} paths");
    println!("95% of paths have between {lo} and {hi} blocks (the shortest such range)");
    println!("wrote {} and {}", csv_path.display(), plot_path.display());
    let mut json = serde_json::json!({"model": name, "blocks": n, "range_95": [lo, hi]});
    if args.gradient {
        let dir = args
            .checkpoint
            .as_ref()
            .expect("clap requires --checkpoint");
        json["gradient_range_90"] = gradient(adapter, args, dir, &graph, &out)?;
        json["gradient_at_init"] = args.at_init.into();
        json["bn_stats"] = format!("{:?}", args.bn_stats).to_lowercase().into();
    }
    println!("{json}");
    Ok(())
}

/// Gradient magnitude by path length and each length's share; returns the
/// shortest range of lengths carrying 90% of the gradient.
fn gradient(
    adapter: &AdapterOptions,
    args: &PathsArgs,
    dir: &std::path::Path,
    graph: &unravel_graph::Graph,
    out: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let config = checkpoint_config(dir)?;
    let gpu = Gpu::new(adapter).context("opening the GPU adapter")?;
    // The trainer draws its initial weights from the run's seed.
    let state = ModelState::new(&gpu, graph, config.seed)?;
    if !args.at_init {
        Checkpoint::read(&latest_model(dir)?)?.load_model(&gpu, graph, &state)?;
    }
    let eval_args = EvalArgs {
        checkpoint: dir.to_path_buf(),
        dataset: args.dataset,
        data_dir: args.data_dir.clone(),
        test_subset: args.test_subset,
        batch_size: args.batch_size,
        precision: None,
    };
    let batch = test_loader(&config, &eval_args)?
        .batches(0, 0)
        .next()
        .context("the test set is empty")?;
    let n = batch.valid;
    let per = batch.images.len() / batch.labels.len();
    let keep = first_block_input(graph).context("the model has no residual blocks")?;
    let options = PlanOptions {
        keep: vec![keep],
        frozen_batch_norm: args.bn_stats == BnStats::Running,
        ..Default::default()
    };
    let plan = Plan::compile_with(&gpu, graph, &state, n, Mode::Train, &options)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let by_length = gradient_by_length(
        &gpu,
        graph,
        &plan,
        &batch.images[..n * per],
        &batch.labels[..n],
        args.samples,
        &mut rng,
    )?;
    let shares = contributions(&by_length);
    let (lo, hi) = shortest_share(&shares, 0.9);
    let mut g_csv = String::from("length,mean_grad_norm,std\n");
    let mut c_csv = String::from("length,contribution\n");
    for (g, c) in by_length.iter().zip(&shares) {
        g_csv += &format!("{},{:e},{:e}\n", g.k, g.mean, g.std);
        c_csv += &format!("{},{:e}\n", g.k, c);
    }
    let g_path = out.join("gradient_by_length.csv");
    let c_path = out.join("contribution.csv");
    std::fs::write(&g_path, g_csv).with_context(|| format!("writing {}", g_path.display()))?;
    std::fs::write(&c_path, c_csv).with_context(|| format!("writing {}", c_path.display()))?;
    let series = |v: Vec<f64>| {
        v.into_iter()
            .enumerate()
            .map(|(k, y)| (k as f64, y))
            .collect::<Vec<_>>()
    };
    log_scatter(
        &out.join("gradient_by_length.png"),
        "gradient magnitude of one path",
        "mean gradient norm (log scale)",
        &series(by_length.iter().map(|g| g.mean).collect()),
    )
    .map_err(|e| anyhow::anyhow!("drawing: {e}"))?;
    scatter(
        &out.join("contribution.png"),
        "share of the total gradient by path length",
        "share",
        &series(shares.clone()),
    )
    .map_err(|e| anyhow::anyhow!("drawing: {e}"))?;
    let weights = if args.at_init {
        "at initialisation"
    } else {
        "trained"
    };
    let stats = match args.bn_stats {
        BnStats::Batch => "batch statistics",
        BnStats::Running => "running statistics",
    };
    println!(
        "90% of the gradient ({weights}, {stats}, measured at the first block's input, {} draws per length) comes from paths of {lo} to {hi} blocks",
        args.samples
    );
    println!(
        "wrote {}, {} and their plots",
        g_path.display(),
        c_path.display()
    );
    Ok(serde_json::json!([lo, hi]))
}

fn plot(path: &std::path::Path, fractions: &[f64]) -> Result<(), Box<dyn std::error::Error>> {
    let points: Vec<(f64, f64)> = fractions
        .iter()
        .enumerate()
        .map(|(k, f)| (k as f64, *f))
        .collect();
    scatter(
        path,
        "distribution of path lengths",
        "fraction of paths",
        &points,
    )
}

/// Points over path length, on a linear y axis from 0.
fn scatter(
    path: &std::path::Path,
    title: &str,
    y_desc: &str,
    points: &[(f64, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
    let top = points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.1;
    scatter_on(
        path,
        title,
        y_desc,
        0f64..top.max(f64::MIN_POSITIVE),
        points,
    )
}

/// Points over path length, on a logarithmic y axis: gradients that fall
/// by orders of magnitude along a deep network stay readable.
fn log_scatter(
    path: &std::path::Path,
    title: &str,
    y_desc: &str,
    points: &[(f64, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
    let positive = points.iter().map(|p| p.1).filter(|&y| y > 0.0);
    let low = positive.clone().fold(f64::MAX, f64::min).min(1.0) / 2.0;
    let high = positive.fold(f64::MIN_POSITIVE, f64::max) * 2.0;
    scatter_on(path, title, y_desc, (low..high).log_scale(), points)
}

fn scatter_on<Y>(
    path: &std::path::Path,
    title: &str,
    y_desc: &str,
    y_range: Y,
    points: &[(f64, f64)],
) -> Result<(), Box<dyn std::error::Error>>
where
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let right = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..right, y_range)?;
    chart
        .configure_mesh()
        .x_desc("path length (blocks)")
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .draw()?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    root.present()?;
    Ok(())
}

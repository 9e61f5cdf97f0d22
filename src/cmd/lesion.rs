//! `unravel lesion`: the test error of a trained residual network with
//! blocks deleted or reordered at test time (Veit et al. 2016, section 4).

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;
use rand::SeedableRng;
use unravel_device::{AdapterOptions, Gpu};
use unravel_graph::ModelState;
use unravel_train::analysis::lesion::{
    k_deletions, k_reorderings, single_deletions, ErrorStats, SingleLesion,
};
use unravel_train::checkpoint::Checkpoint;
use unravel_train::evaluate::Evaluator;
use unravel_train::models::{build, ModelConfig};
use unravel_train::run_folder::latest_model;
use unravel_train::stochastic_depth::StochasticDepth;
use unravel_train::trainer::checkpoint_config;

use super::eval::{test_loader, EvalArgs};

#[derive(clap::Args, Debug)]
pub struct LesionArgs {
    #[command(flatten)]
    eval: EvalArgs,
    /// Random draws for each number of deleted or swapped blocks.
    #[arg(long, default_value_t = 5)]
    samples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for the CSV files and plots [default: <checkpoint>/lesion].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// A second run folder (e.g. a `plain20` run on the same dataset) studied
    /// the same way and drawn in the same plots; its CSV files go to
    /// OUT/compare.
    #[arg(long, value_name = "DIR")]
    compare: Option<PathBuf>,
}

/// Every measurement of one checkpoint.
struct Study {
    model: String,
    intact: f64,
    single: Vec<SingleLesion>,
    deleted: Vec<ErrorStats>,
    reordered: Vec<ErrorStats>,
}

/// The lesion and reordering study of the run in `dir` on `eval`'s test data.
fn study(
    gpu: &Gpu,
    dir: &Path,
    eval_args: &EvalArgs,
    samples: usize,
    seed: u64,
) -> anyhow::Result<Study> {
    let config = checkpoint_config(dir)?;
    let graph = build(
        &config.model,
        &ModelConfig::for_dataset(config.dataset, config.shortcut),
    )?;
    anyhow::ensure!(
        graph.residual_blocks().count() > 0,
        "{} has no residual blocks to delete",
        config.model
    );
    let state = ModelState::new(gpu, &graph, 0)?;
    Checkpoint::read(&latest_model(dir)?)?.load_model(gpu, &graph, &state)?;
    let test = test_loader(&config, eval_args)?;
    let scaling = || {
        config
            .stochastic_depth
            .map(|p| StochasticDepth::new(&graph, p))
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut eval = Evaluator::new(gpu, &graph, &state, scaling());
    let (intact, single) = single_deletions(&mut eval, &graph, &test)?;
    let deleted = k_deletions(&mut eval, &graph, &test, samples, &mut rng)?;
    drop(eval);
    // Reordering swaps parameters in `state`, which a fresh evaluator reads.
    let mut eval = Evaluator::new(gpu, &graph, &state, scaling());
    let reordered = k_reorderings(&mut eval, gpu, &graph, &state, &test, samples, &mut rng)?;
    Ok(Study {
        model: config.model,
        intact,
        single,
        deleted,
        reordered,
    })
}

impl Study {
    fn write_csv(&self, out: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let mut csv = String::from("block,stage,downsampling,error\n");
        for r in &self.single {
            csv += &format!("{},{},{},{}\n", r.block, r.stage, r.downsampling, r.error);
        }
        write(&out.join("lesion_single.csv"), &csv)?;
        write(&out.join("lesion_k.csv"), &stats_csv(&self.deleted))?;
        write(&out.join("reorder_k.csv"), &stats_csv(&self.reordered))
    }

    fn print(&self) {
        println!(
            "{}: test error {:.2}% intact",
            self.model,
            100.0 * self.intact
        );
        for r in &self.single {
            println!(
                "  without {:<12} (stage {}{}): {:.2}%",
                r.block,
                r.stage,
                if r.downsampling { ", downsampling" } else { "" },
                100.0 * r.error
            );
        }
    }

    fn json(&self) -> serde_json::Value {
        let stats = |s: &[ErrorStats]| {
            s.iter()
                .map(|e| serde_json::json!([e.k, e.mean, e.std]))
                .collect::<Vec<_>>()
        };
        serde_json::json!({
            "model": self.model,
            "intact_error": self.intact,
            "single": self.single.iter().map(|r| serde_json::json!({"block": r.block, "error": r.error})).collect::<Vec<_>>(),
            "k_deleted": stats(&self.deleted),
            "k_reordered": stats(&self.reordered),
        })
    }
}

pub fn run(adapter: &AdapterOptions, args: &LesionArgs) -> anyhow::Result<()> {
    let dir = &args.eval.checkpoint;
    let gpu = Gpu::new(adapter).context("opening the GPU adapter")?;
    let out = args.out.clone().unwrap_or_else(|| dir.join("lesion"));
    if let Some(other) = &args.compare {
        let config = checkpoint_config(dir)?;
        let other_config = checkpoint_config(other)?;
        anyhow::ensure!(
            other_config.dataset == config.dataset,
            "--compare {}: trained on {}, but {} was trained on {}; compare models of one dataset",
            other.display(),
            other_config.dataset,
            dir.display(),
            config.dataset
        );
    }
    let main = study(&gpu, dir, &args.eval, args.samples, args.seed)?;
    main.write_csv(&out)?;
    let mut studies = vec![main];
    if let Some(other) = &args.compare {
        let compared = study(&gpu, other, &args.eval, args.samples, args.seed)?;
        compared.write_csv(&out.join("compare"))?;
        studies.push(compared);
    }

    let single = |s: &Study| {
        let points = s.single.iter().enumerate();
        points.map(|(i, r)| ((i + 1) as f64, r.error)).collect()
    };
    let curve = |s: &[ErrorStats]| s.iter().map(|e| (e.k as f64, e.mean)).collect();
    let spread = |s: &[ErrorStats]| Some(s.iter().map(|e| e.std).collect());
    let series = |points: &dyn Fn(&Study) -> Series| studies.iter().map(points).collect::<Vec<_>>();
    plot(
        &out.join("lesion_single.png"),
        "error with one block deleted",
        "block",
        &series(&|s| (s.model.clone(), single(s), None, s.intact)),
    )?;
    plot(
        &out.join("lesion_k.png"),
        "error with k blocks deleted",
        "k",
        &series(&|s| {
            (
                s.model.clone(),
                curve(&s.deleted),
                spread(&s.deleted),
                s.intact,
            )
        }),
    )?;
    plot(
        &out.join("reorder_k.png"),
        "error with k pairs of blocks swapped",
        "k",
        &series(&|s| {
            let reordered = &s.reordered;
            (
                s.model.clone(),
                curve(reordered),
                spread(reordered),
                s.intact,
            )
        }),
    )?;

    for s in &studies {
        s.print();
    }
    println!("wrote {}", out.display());
    let mut json = studies[0].json();
    if let Some(compared) = studies.get(1) {
        json["compare"] = compared.json();
    }
    println!("{json}");
    Ok(())
}

fn stats_csv(rows: &[ErrorStats]) -> String {
    let mut csv = String::from("k,mean_error,std_error\n");
    for e in rows {
        csv += &format!("{},{},{}\n", e.k, e.mean, e.std);
    }
    csv
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A named error curve: points, optional standard deviations, and the
/// model's intact error (drawn dashed).
type Series = (String, Vec<(f64, f64)>, Option<Vec<f64>>, f64);

const COLORS: [RGBColor; 2] = [BLUE, RED];

/// Error curves with optional standard-deviation bars, each with its
/// model's intact error as a dashed line of its colour.
fn plot(path: &Path, title: &str, x_desc: &str, series: &[Series]) -> anyhow::Result<()> {
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let x_max = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d(0.5..x_max + 0.5, 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("test error")
            .draw()?;
        for ((name, points, std, intact), color) in series.iter().zip(COLORS.iter().cycle()) {
            chart.draw_series(DashedLineSeries::new(
                [(0.5, *intact), (x_max + 0.5, *intact)],
                6,
                4,
                color.stroke_width(1),
            ))?;
            chart
                .draw_series(
                    LineSeries::new(points.iter().copied(), color.stroke_width(2)).point_size(3),
                )?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], *color));
            if let Some(std) = std {
                chart.draw_series(points.iter().zip(std).map(|(&(x, y), s)| {
                    ErrorBar::new_vertical(x, (y - s).max(0.0), y, (y + s).min(1.0), *color, 6)
                }))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

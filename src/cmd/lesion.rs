//! `unravel lesion`: the test error of a trained residual network with
//! blocks deleted or reordered at test time (Veit et al. 2016, section 4).

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;
use rand::SeedableRng;
use unravel_device::{AdapterOptions, Gpu};
use unravel_graph::ModelState;
use unravel_train::analysis::lesion::{k_deletions, k_reorderings, single_deletions, ErrorStats};
use unravel_train::checkpoint::Checkpoint;
use unravel_train::evaluate::Evaluator;
use unravel_train::models::{build, ModelConfig};
use unravel_train::stochastic_depth::StochasticDepth;
use unravel_train::trainer::{checkpoint_config, MODEL_FILE};

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
}

pub fn run(adapter: &AdapterOptions, args: &LesionArgs) -> anyhow::Result<()> {
    let dir = &args.eval.checkpoint;
    let config = checkpoint_config(dir)?;
    let gpu = Gpu::new(adapter).context("opening the GPU adapter")?;
    let graph = build(
        &config.model,
        &ModelConfig::for_dataset(config.dataset, config.shortcut),
    )?;
    anyhow::ensure!(
        graph.residual_blocks().count() > 0,
        "{} has no residual blocks to delete",
        config.model
    );
    let state = ModelState::new(&gpu, &graph, 0)?;
    Checkpoint::read(&dir.join(MODEL_FILE))?.load_model(&gpu, &graph, &state)?;
    let test = test_loader(&config, &args.eval)?;
    let out = args.out.clone().unwrap_or_else(|| dir.join("lesion"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let scaling = config
        .stochastic_depth
        .map(|p| StochasticDepth::new(&graph, p));
    let mut eval = Evaluator::new(&gpu, &graph, &state, scaling);
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);

    let (intact, single) = single_deletions(&mut eval, &graph, &test)?;
    let mut csv = String::from("block,stage,downsampling,error\n");
    for r in &single {
        csv += &format!("{},{},{},{}\n", r.block, r.stage, r.downsampling, r.error);
    }
    write(&out.join("lesion_single.csv"), &csv)?;
    let deleted = k_deletions(&mut eval, &graph, &test, args.samples, &mut rng)?;
    write(&out.join("lesion_k.csv"), &stats_csv(&deleted))?;
    drop(eval);
    let mut eval = Evaluator::new(
        &gpu,
        &graph,
        &state,
        config
            .stochastic_depth
            .map(|p| StochasticDepth::new(&graph, p)),
    );
    let reordered = k_reorderings(
        &mut eval,
        &gpu,
        &graph,
        &state,
        &test,
        args.samples,
        &mut rng,
    )?;
    write(&out.join("reorder_k.csv"), &stats_csv(&reordered))?;

    let single_points: Vec<(f64, f64)> = single
        .iter()
        .enumerate()
        .map(|(i, r)| ((i + 1) as f64, r.error))
        .collect();
    plot(
        &out.join("lesion_single.png"),
        "error with one block deleted",
        "block",
        &[("deleted", single_points, None)],
        intact,
    )?;
    let curve = |s: &[ErrorStats]| s.iter().map(|e| (e.k as f64, e.mean)).collect::<Vec<_>>();
    let spread = |s: &[ErrorStats]| Some(s.iter().map(|e| e.std).collect::<Vec<_>>());
    plot(
        &out.join("lesion_k.png"),
        "error with k blocks deleted",
        "k",
        &[("deleted", curve(&deleted), spread(&deleted))],
        intact,
    )?;
    plot(
        &out.join("reorder_k.png"),
        "error with k pairs of blocks swapped",
        "k",
        &[("reordered", curve(&reordered), spread(&reordered))],
        intact,
    )?;

    println!("{}: test error {:.2}% intact", config.model, 100.0 * intact);
    for r in &single {
        println!(
            "  without {:<12} (stage {}{}): {:.2}%",
            r.block,
            r.stage,
            if r.downsampling { ", downsampling" } else { "" },
            100.0 * r.error
        );
    }
    println!("wrote {}", out.display());
    println!(
        "{}",
        serde_json::json!({
            "intact_error": intact,
            "single": single.iter().map(|r| serde_json::json!({"block": r.block, "error": r.error})).collect::<Vec<_>>(),
            "k_deleted": deleted.iter().map(|e| serde_json::json!([e.k, e.mean, e.std])).collect::<Vec<_>>(),
            "k_reordered": reordered.iter().map(|e| serde_json::json!([e.k, e.mean, e.std])).collect::<Vec<_>>(),
        })
    );
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

type Series<'a> = (&'a str, Vec<(f64, f64)>, Option<Vec<f64>>);

/// Error curves with optional standard-deviation bars and the intact error
/// as a dashed line.
fn plot(
    path: &Path,
    title: &str,
    x_desc: &str,
    series: &[Series],
    intact: f64,
) -> anyhow::Result<()> {
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
        chart.draw_series(DashedLineSeries::new(
            [(0.5, intact), (x_max + 0.5, intact)],
            6,
            4,
            BLACK.stroke_width(1),
        ))?;
        for (name, points, std) in series {
            chart
                .draw_series(
                    LineSeries::new(points.iter().copied(), BLUE.stroke_width(2)).point_size(3),
                )?
                .label(*name)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
            if let Some(std) = std {
                chart.draw_series(points.iter().zip(std).map(|(&(x, y), s)| {
                    ErrorBar::new_vertical(x, (y - s).max(0.0), y, (y + s).min(1.0), BLUE, 6)
                }))?;
            }
        }
        chart.configure_series_labels().border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

//! `unravel paths`: how many paths of each length run through a residual
//! network's blocks (the ensemble view of Veit et al. 2016).

use std::path::PathBuf;

use anyhow::Context;
use plotters::prelude::*;
use unravel_train::analysis::paths::{fraction, path_counts, shortest_range};
use unravel_train::models::{build, ModelConfig, ShortcutKind};
use unravel_train::DatasetKind;

#[derive(clap::Args, Debug)]
pub struct PathsArgs {
    /// Model name (see `unravel models`).
    #[arg(long)]
    model: String,
    /// Folder for paths.csv and paths.png [default: runs/paths-<model>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(args: &PathsArgs) -> anyhow::Result<()> {
    let config = ModelConfig::for_dataset(DatasetKind::Cifar10, ShortcutKind::A);
    let graph = build(&args.model, &config)?;
    let n = graph.residual_blocks().count();
    anyhow::ensure!(
        n > 0,
        "{} has no residual blocks, so it has a single path",
        args.model
    );
    let counts = path_counts(n);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/paths-{}", args.model)));
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
    println!("{}: {n} residual blocks, 2^{n} paths", args.model);
    println!("95% of paths have between {lo} and {hi} blocks (the shortest such range)");
    println!("wrote {} and {}", csv_path.display(), plot_path.display());
    println!(
        "{}",
        serde_json::json!({"model": args.model, "blocks": n, "range_95": [lo, hi]})
    );
    Ok(())
}

fn plot(path: &std::path::Path, fractions: &[f64]) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = fractions.iter().cloned().fold(0.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("distribution of path lengths", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..(fractions.len() - 1) as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("path length (blocks)")
        .y_desc("fraction of paths")
        .draw()?;
    chart.draw_series(
        fractions
            .iter()
            .enumerate()
            .map(|(k, f)| Circle::new((k as f64, *f), 3, BLUE.filled())),
    )?;
    root.present()?;
    Ok(())
}

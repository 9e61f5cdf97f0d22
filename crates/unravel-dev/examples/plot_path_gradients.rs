//! Draws several runs' gradient by path length in one chart, each relative
//! to its path through no branch, on a logarithmic axis: networks of
//! different depths, trained or not, side by side (docs/reproductions.md).
//!
//! `cargo run --release -p unravel-dev --example plot_path_gradients -- OUT.png LABEL=DIR ...`
//!
//! Each DIR is the folder `unravel paths --gradient` wrote
//! (`gradient_by_length.csv`: `length,mean_grad_norm,std`).

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;

/// (length, gradient norm relative to length 0) of one run.
fn relative_gradients(dir: &Path) -> Result<Vec<(f64, f64)>, Box<dyn Error>> {
    let file = dir.join("gradient_by_length.csv");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let [k, g, _] = cols[..] else {
            return Err(format!("{}: bad line {line:?}", file.display()).into());
        };
        rows.push((k.parse::<f64>()?, g.parse::<f64>()?));
    }
    let first = rows.first().ok_or("no rows")?.1;
    Ok(rows.into_iter().map(|(k, g)| (k, g / first)).collect())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, runs)) = args.split_first() else {
        return Err("usage: plot_path_gradients OUT.png LABEL=DIR ...".into());
    };
    let mut series = Vec::new();
    for run in runs {
        let (label, dir) = run.split_once('=').ok_or("each run is LABEL=DIR")?;
        series.push((label.to_string(), relative_gradients(Path::new(dir))?));
    }
    let values = || series.iter().flat_map(|s| s.1.iter()).filter(|p| p.1 > 0.0);
    let low = values().map(|p| p.1).fold(1.0, f64::min) / 2.0;
    let high = values().map(|p| p.1).fold(1.0, f64::max) * 2.0;
    let right = values().map(|p| p.0).fold(1.0, f64::max);

    let root = BitMapBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "gradient of one path, relative to the path through no branch",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..right, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("path length (blocks)")
        .y_desc("gradient norm / length 0's (log scale)")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let shown: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1 > 0.0).collect();
        chart
            .draw_series(LineSeries::new(shown.clone(), color.stroke_width(2)))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(shown.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()?;
    root.present()?;
    println!("wrote {out}");
    Ok(())
}

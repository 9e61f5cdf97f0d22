//! Per-epoch metrics: one JSON object a line in `metrics.jsonl`, and the
//! loss and accuracy curves drawn into `curves.png`.

use std::io::Write;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::TrainError;

/// JSON has no NaN: serde_json writes it as `null`, read back as NaN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Counted from 1.
    pub epoch: usize,
    /// Learning rate of the epoch's last step.
    #[serde(deserialize_with = "nan_if_null")]
    pub lr: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    /// Fractions in 0..1.
    #[serde(deserialize_with = "nan_if_null")]
    pub train_acc: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub test_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub test_acc: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub images_per_s: f64,
    /// Wall time of the epoch's training steps.
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds: f64,
    /// Mean number of residual blocks active per step (stochastic depth).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub active_blocks: Option<f64>,
    /// Mixed precision: the loss scale after the epoch's last step.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub loss_scale: Option<f64>,
    /// Mixed precision: steps skipped for inf or NaN gradients, since the
    /// run began.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub skipped_steps: Option<u64>,
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

pub fn append(path: &Path, m: &EpochMetrics) -> Result<(), TrainError> {
    let line = serde_json::to_string(m).map_err(|source| TrainError::Metrics {
        path: path.to_path_buf(),
        source,
    })?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| TrainError::io(path, e))
}

/// Cuts `path` back to the rows of the first `epochs` epochs, one row an
/// epoch (the last written, which belongs to the committed checkpoint),
/// in order. Run on resume: a run killed after writing a row but before
/// committing its checkpoint trains that epoch again.
pub fn keep_epochs(path: &Path, epochs: usize) -> Result<(), TrainError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let mut rows: Vec<Option<&str>> = vec![None; epochs];
    for line in text.lines() {
        let epoch = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("epoch").and_then(|e| e.as_u64()));
        if let Some(e) = epoch.filter(|&e| (1..=epochs as u64).contains(&e)) {
            rows[e as usize - 1] = Some(line);
        }
    }
    let kept: String = rows.iter().flatten().map(|l| format!("{l}\n")).collect();
    if kept != text {
        crate::checkpoint::write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}

/// Every epoch recorded so far (lines that do not parse are skipped: a
/// run killed mid-write leaves at most one).
pub fn read_all(path: &Path) -> Vec<EpochMetrics> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

type Pick = fn(&EpochMetrics) -> f64;

/// One panel: a train and a test curve over the epochs.
fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    rows: &[EpochMetrics],
    y_max: f64,
    curves: [(&str, RGBColor, Pick); 2],
    legend: SeriesLabelPosition,
) -> Result<(), Box<dyn std::error::Error>> {
    let last = rows.iter().map(|r| r.epoch).max().unwrap_or(1).max(2) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(1.0..last, 0.0..y_max)?;
    chart.configure_mesh().x_desc("epoch").draw()?;
    for (name, color, pick) in curves {
        chart
            .draw_series(LineSeries::new(
                rows.iter().map(|r| (r.epoch as f64, pick(r))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Loss (left) and accuracy (right) per epoch, train and test.
pub fn plot(path: &Path, rows: &[EpochMetrics]) -> Result<(), TrainError> {
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);
        let max_loss = rows
            .iter()
            .flat_map(|r| [r.train_loss, r.test_loss])
            .filter(|v| v.is_finite())
            .fold(0.1f64, f64::max);
        panel(
            &left,
            "loss",
            rows,
            max_loss * 1.05,
            [
                ("train", BLUE, |r| r.train_loss),
                ("test", RED, |r| r.test_loss),
            ],
            SeriesLabelPosition::UpperRight,
        )?;
        panel(
            &right,
            "accuracy",
            rows,
            1.0,
            [
                ("train", BLUE, |r| r.train_acc),
                ("test", RED, |r| r.test_acc),
            ],
            SeriesLabelPosition::LowerRight,
        )?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| TrainError::Plot(format!("{}: {e}", path.display())))
}

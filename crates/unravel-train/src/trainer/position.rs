//! Where a run stands (epoch, batch, step and the epoch's running sums),
//! stored in the optimizer file's metadata with the generation that ties
//! the optimizer file to its model file, and checked on resume against
//! what the run's configuration and data make possible.

use std::collections::HashMap;
use std::path::Path;

use unravel_graph::device::kernels::loss_scale::LossScaleState;

use super::TrainError;

/// Metadata keys both files of a generation carry, with equal values.
pub const GENERATION_KEYS: [&str; 3] = ["run_id", "generation", "step"];

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Position {
    /// Epoch in progress, from 0 (= epochs done).
    pub epoch: usize,
    /// Next batch of that epoch.
    pub batch: usize,
    /// Optimiser steps done.
    pub step: usize,
    /// Sums over the epoch so far (a resumed epoch reports all of it).
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
    pub seconds: f64,
    pub active_sum: f64,
    /// The loss scaler of a mixed-precision run after the last step.
    pub loss_scale: Option<LossScaleState>,
}

/// What the run's configuration and data allow a position to be.
pub(super) struct Bounds {
    pub epochs: usize,
    pub batches_per_epoch: usize,
    pub batch_size: usize,
    pub residual_blocks: usize,
}

impl Position {
    pub fn to_metadata(self) -> HashMap<String, String> {
        let mut m = HashMap::from([
            ("epoch".into(), self.epoch.to_string()),
            ("batch".into(), self.batch.to_string()),
            ("step".into(), self.step.to_string()),
            ("loss_sum".into(), self.loss_sum.to_string()),
            ("correct".into(), self.correct.to_string()),
            ("seen".into(), self.seen.to_string()),
            ("seconds".into(), self.seconds.to_string()),
            ("active_sum".into(), self.active_sum.to_string()),
        ]);
        if let Some(s) = self.loss_scale {
            // The scale as its bits: a resumed run continues from exactly it.
            m.insert("loss_scale_bits".into(), s.scale.to_bits().to_string());
            m.insert("loss_scale_clean_steps".into(), s.clean_steps.to_string());
            m.insert(
                "loss_scale_skipped_steps".into(),
                s.skipped_steps.to_string(),
            );
        }
        m
    }

    /// Where the run in the optimizer file `path` stands, from its metadata.
    pub fn from_metadata(m: &HashMap<String, String>, path: &Path) -> Result<Position, TrainError> {
        fn field<T: std::str::FromStr>(
            m: &HashMap<String, String>,
            path: &Path,
            key: &'static str,
        ) -> Result<T, TrainError> {
            m.get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| TrainError::BadOptimizerState {
                    path: path.to_path_buf(),
                    key,
                })
        }
        Ok(Position {
            epoch: field(m, path, "epoch")?,
            batch: field(m, path, "batch")?,
            step: field(m, path, "step")?,
            loss_sum: field(m, path, "loss_sum")?,
            correct: field(m, path, "correct")?,
            seen: field(m, path, "seen")?,
            seconds: field(m, path, "seconds")?,
            active_sum: field(m, path, "active_sum")?,
            loss_scale: match m.contains_key("loss_scale_bits") {
                false => None,
                true => Some(LossScaleState {
                    scale: f32::from_bits(field(m, path, "loss_scale_bits")?),
                    clean_steps: field(m, path, "loss_scale_clean_steps")?,
                    skipped_steps: field(m, path, "loss_scale_skipped_steps")?,
                }),
            },
        })
    }

    /// Refuses a position the run cannot have reached (a file edited by
    /// hand or damaged): the message says which value is impossible.
    pub fn check(&self, bounds: &Bounds, path: &Path) -> Result<(), TrainError> {
        let impossible = |message: String| TrainError::ImpossiblePosition {
            path: path.to_path_buf(),
            message,
        };
        let per_epoch = bounds.batches_per_epoch;
        if self.epoch > bounds.epochs {
            return Err(impossible(format!(
                "epoch {} is past the run's {} epochs",
                self.epoch, bounds.epochs
            )));
        }
        if self.batch > per_epoch {
            return Err(impossible(format!(
                "batch {} is past the {per_epoch} batches of an epoch",
                self.batch
            )));
        }
        let step = self
            .epoch
            .checked_mul(per_epoch)
            .and_then(|s| s.checked_add(self.batch));
        if step != Some(self.step) {
            return Err(impossible(format!(
                "step {} is not epoch {} x {per_epoch} batches + batch {}",
                self.step, self.epoch, self.batch
            )));
        }
        // Training batches are whole (the last partial one is dropped).
        let seen = self.batch as u64 * bounds.batch_size as u64;
        if self.seen != seen || self.correct > self.seen {
            return Err(impossible(format!(
                "{} images seen ({} correct) after {} batches of {}",
                self.seen, self.correct, self.batch, bounds.batch_size
            )));
        }
        let sums = [
            ("loss_sum", self.loss_sum, f64::INFINITY),
            ("seconds", self.seconds, f64::INFINITY),
            (
                "active_sum",
                self.active_sum,
                (bounds.residual_blocks * self.batch) as f64,
            ),
        ];
        for (key, value, most) in sums {
            if !(value.is_finite() && (0.0..=most).contains(&value)) {
                return Err(impossible(format!("{key} is {value}")));
            }
        }
        if let Some(s) = self.loss_scale {
            if !(s.scale.is_finite() && s.scale > 0.0) || s.skipped_steps as usize > self.step {
                return Err(impossible(format!(
                    "loss scale {} with {} of {} steps skipped",
                    s.scale, s.skipped_steps, self.step
                )));
            }
        }
        Ok(())
    }
}

//! What a training run needs, from defaults, a TOML file and flags (flags
//! win over the file, the file over the defaults).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::data::Augment;
use crate::models::ShortcutKind;
use crate::schedule::Decay;
use crate::DatasetKind;

/// Every setting optional: what a TOML file or the command line gives.
/// Field names are the flags' names with `_` for `-`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    pub model: Option<String>,
    pub dataset: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub momentum: Option<f64>,
    pub weight_decay: Option<f64>,
    pub nesterov: Option<bool>,
    /// constant, multistep or cosine.
    pub schedule: Option<String>,
    /// Epochs of warm-up before the schedule.
    pub warmup_epochs: Option<f64>,
    /// linear (from 0 up to the base rate) or constant (a tenth of it, as
    /// He et al. warmed ResNet-110 up with 0.01).
    pub warmup: Option<String>,
    pub seed: Option<u64>,
    /// Survival probability of the last residual block; none = off.
    pub stochastic_depth: Option<f64>,
    /// a, b or highway.
    pub shortcut: Option<String>,
    pub train_subset: Option<usize>,
    pub test_subset: Option<usize>,
    pub pad_crop: Option<bool>,
    pub flip: Option<bool>,
    pub out: Option<PathBuf>,
}

impl TrainOptions {
    /// `self` with every setting `over` gives replaced.
    pub fn overridden_by(self, over: TrainOptions) -> TrainOptions {
        macro_rules! pick {
            ($($f:ident),*) => { TrainOptions { $($f: over.$f.or(self.$f)),* } };
        }
        pick!(
            model,
            dataset,
            data_dir,
            epochs,
            batch_size,
            lr,
            momentum,
            weight_decay,
            nesterov,
            schedule,
            warmup_epochs,
            warmup,
            seed,
            stochastic_depth,
            shortcut,
            train_subset,
            test_subset,
            pad_crop,
            flip,
            out
        )
    }

    /// Reads a TOML file of settings.
    pub fn from_toml_file(path: &std::path::Path) -> Result<TrainOptions, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        toml::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
    }

    /// Fills in the defaults and checks every value.
    pub fn resolve(self) -> Result<TrainConfig, TrainError> {
        let bad = |what: &str, why: String| TrainError::Config(format!("{what}: {why}"));
        let dataset: DatasetKind = match &self.dataset {
            Some(d) => d.parse().map_err(|e| bad("dataset", e))?,
            None => DatasetKind::FashionMnist,
        };
        let shortcut: ShortcutKind = match &self.shortcut {
            Some(s) => s
                .parse()
                .map_err(|e: crate::models::ModelError| bad("shortcut", e.to_string()))?,
            None => ShortcutKind::A,
        };
        let schedule: Decay = match &self.schedule {
            Some(s) => s.parse().map_err(|e| bad("schedule", e))?,
            None => Decay::MultiStep {
                milestones: vec![0.5, 0.75],
                gamma: 0.1,
            },
        };
        let defaults = Augment::default_for(dataset);
        let config = TrainConfig {
            model: self.model.unwrap_or_else(|| "resnet20".into()),
            dataset,
            data_dir: self.data_dir,
            epochs: self.epochs.unwrap_or(20),
            batch_size: self.batch_size.unwrap_or(128),
            lr: self.lr.unwrap_or(0.1),
            momentum: self.momentum.unwrap_or(0.9),
            weight_decay: self.weight_decay.unwrap_or(5e-4),
            nesterov: self.nesterov.unwrap_or(false),
            schedule,
            warmup_epochs: self.warmup_epochs.unwrap_or(0.0),
            constant_warmup: match self.warmup.as_deref() {
                None | Some("linear") => false,
                Some("constant") => true,
                Some(other) => {
                    return Err(bad(
                        "warmup",
                        format!("{other:?} is not linear or constant"),
                    ))
                }
            },
            seed: self.seed.unwrap_or(0),
            stochastic_depth: self.stochastic_depth,
            shortcut,
            train_subset: self.train_subset,
            test_subset: self.test_subset,
            augment: Augment {
                pad_crop: self.pad_crop.unwrap_or(defaults.pad_crop),
                flip: self.flip.unwrap_or(defaults.flip),
            },
            out: self.out,
        };
        if config.epochs == 0 || config.batch_size == 0 {
            return Err(bad("epochs and batch-size", "must be positive".into()));
        }
        if !(config.lr > 0.0 && (config.lr as f32).is_finite()) {
            return Err(bad("lr", format!("{} is not a positive number", config.lr)));
        }
        if let Some(p) = config.stochastic_depth {
            if !(0.0..=1.0).contains(&p) {
                return Err(bad("stochastic-depth", format!("{p} is not a probability")));
            }
        }
        Ok(config)
    }
}

/// A resolved training configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub model: String,
    pub dataset: DatasetKind,
    pub data_dir: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    pub schedule: Decay,
    pub warmup_epochs: f64,
    /// Warm up at a tenth of the base rate instead of ramping up linearly.
    pub constant_warmup: bool,
    pub seed: u64,
    pub stochastic_depth: Option<f64>,
    pub shortcut: ShortcutKind,
    pub train_subset: Option<usize>,
    pub test_subset: Option<usize>,
    pub augment: Augment,
    pub out: Option<PathBuf>,
}

impl TrainConfig {
    /// Back to options (what a checkpoint stores to resume the run).
    pub fn to_options(&self) -> TrainOptions {
        TrainOptions {
            model: Some(self.model.clone()),
            dataset: Some(self.dataset.name().into()),
            data_dir: self.data_dir.clone(),
            epochs: Some(self.epochs),
            batch_size: Some(self.batch_size),
            lr: Some(self.lr),
            momentum: Some(self.momentum),
            weight_decay: Some(self.weight_decay),
            nesterov: Some(self.nesterov),
            schedule: Some(
                match self.schedule {
                    Decay::Constant => "constant",
                    Decay::MultiStep { .. } => "multistep",
                    Decay::Cosine { .. } => "cosine",
                }
                .into(),
            ),
            warmup_epochs: Some(self.warmup_epochs),
            warmup: Some(
                if self.constant_warmup {
                    "constant"
                } else {
                    "linear"
                }
                .into(),
            ),
            seed: Some(self.seed),
            stochastic_depth: self.stochastic_depth,
            shortcut: Some(
                match self.shortcut {
                    ShortcutKind::A => "a",
                    ShortcutKind::B => "b",
                    ShortcutKind::Highway => "highway",
                }
                .into(),
            ),
            train_subset: self.train_subset,
            test_subset: self.test_subset,
            pad_crop: Some(self.augment.pad_crop),
            flip: Some(self.augment.flip),
            out: self.out.clone(),
        }
    }
}

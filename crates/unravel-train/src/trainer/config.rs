//! What a training run needs, from defaults, a TOML file and flags (flags
//! win over the file, the file over the defaults).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::data::Augment;
use crate::models::ShortcutKind;
use crate::schedule::Decay;
use crate::DatasetKind;
use unravel_graph::device::kernels::loss_scale::LossScaleConfig;
use unravel_graph::Precision;

/// Every training setting, each optional: what a TOML settings file, a
/// checkpoint or the command line gives (the CLI's `unravel train` flags
/// are these fields, `_` written `-`; flags win over the file, the file
/// over the defaults, see [`TrainOptions::overridden_by`]). The doc
/// comments are the flags' help.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// Model name (see `unravel models`) [default: resnet20].
    #[cfg_attr(feature = "clap", arg(long))]
    pub model: Option<String>,
    /// fashion-mnist, mnist, cifar10 or cifar100 [default: fashion-mnist].
    #[cfg_attr(feature = "clap", arg(long))]
    pub dataset: Option<String>,
    /// Folder with the dataset's files [default for fashion-mnist:
    /// /usr/share/datasets/fashion-mnist].
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub data_dir: Option<PathBuf>,
    /// [default: 20]
    #[cfg_attr(feature = "clap", arg(long, allow_negative_numbers = true))]
    pub epochs: Option<usize>,
    /// [default: 128]
    #[cfg_attr(feature = "clap", arg(long, allow_negative_numbers = true))]
    pub batch_size: Option<usize>,
    /// Base learning rate [default: 0.1].
    #[cfg_attr(feature = "clap", arg(long, allow_negative_numbers = true))]
    pub lr: Option<f64>,
    /// [default: 0.9]
    #[cfg_attr(feature = "clap", arg(long, allow_negative_numbers = true))]
    pub momentum: Option<f64>,
    /// [default: 5e-4]
    #[cfg_attr(feature = "clap", arg(long, allow_negative_numbers = true))]
    pub weight_decay: Option<f64>,
    /// Nesterov momentum [default: false].
    #[cfg_attr(
        feature = "clap",
        arg(long, num_args = 0..=1, default_missing_value = "true")
    )]
    pub nesterov: Option<bool>,
    /// constant, multistep (divide by 10 at each of --milestones) or
    /// cosine [default: multistep].
    #[cfg_attr(feature = "clap", arg(long))]
    pub schedule: Option<String>,
    /// Epochs at which multistep divides the learning rate by 10, e.g.
    /// 100,150 [default: 50% and 75% of --epochs]. A resumed run keeps
    /// them when --epochs extends it: the last phase gets longer.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            value_delimiter = ',',
            value_name = "EPOCHS",
            allow_negative_numbers = true
        )
    )]
    pub milestones: Option<Vec<f64>>,
    /// Epochs of learning-rate warm-up [default: 0].
    #[cfg_attr(feature = "clap", arg(long, allow_negative_numbers = true))]
    pub warmup_epochs: Option<f64>,
    /// linear (from 0 to the base rate) or constant (a tenth of the base
    /// rate, He et al.'s ResNet-110 recipe) [default: linear].
    #[cfg_attr(feature = "clap", arg(long))]
    pub warmup: Option<String>,
    /// Seed of initialisation, data order, augmentation and stochastic
    /// depth [default: 0].
    #[cfg_attr(feature = "clap", arg(long, allow_negative_numbers = true))]
    pub seed: Option<u64>,
    /// Stochastic depth with this survival probability for the last block
    /// (e.g. 0.5) [default: off].
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "P_L", allow_negative_numbers = true)
    )]
    pub stochastic_depth: Option<f64>,
    /// a (zero-padded identity), b (projection) or highway [default: a].
    #[cfg_attr(feature = "clap", arg(long))]
    pub shortcut: Option<String>,
    /// Train on N samples of the training set.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "N", allow_negative_numbers = true)
    )]
    pub train_subset: Option<usize>,
    /// Evaluate on N samples of the test set.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "N", allow_negative_numbers = true)
    )]
    pub test_subset: Option<usize>,
    /// Zero-pad 4 and random crop [default: true].
    #[cfg_attr(
        feature = "clap",
        arg(long, num_args = 0..=1, default_missing_value = "true")
    )]
    pub pad_crop: Option<bool>,
    /// Random horizontal flip [default: true for CIFAR, false for digits].
    #[cfg_attr(
        feature = "clap",
        arg(long, num_args = 0..=1, default_missing_value = "true")
    )]
    pub flip: Option<bool>,
    /// f32, or mixed: f16 activations and gradients with f32 weights,
    /// statistics and optimiser, and dynamic loss scaling; needs an adapter
    /// with SHADER_F16 [default: f32].
    #[cfg_attr(feature = "clap", arg(long))]
    pub precision: Option<String>,
    /// Mixed precision: the loss scale a run starts with (GradScaler's
    /// init_scale) [default: 65536].
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "SCALE", allow_negative_numbers = true)
    )]
    pub init_loss_scale: Option<f32>,
    /// Mixed precision: clean steps in a row after which the loss scale
    /// doubles (GradScaler's growth_interval) [default: 2000].
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "STEPS", allow_negative_numbers = true)
    )]
    pub loss_scale_interval: Option<u32>,
    /// Run folder [default: runs/<timestamp>].
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub out: Option<PathBuf>,
}

impl TrainOptions {
    /// `self` with every setting `over` gives replaced. Fails only for
    /// a setting that cannot be written down (a path that is not UTF-8).
    pub fn overridden_by(self, over: TrainOptions) -> Result<TrainOptions, TrainError> {
        let unrepresentable = |message: String| TrainError::UnrepresentableSettings { message };
        // Through TOML rather than JSON: it keeps NaN and infinities (which
        // must reach the checks), and an unset setting is simply absent.
        let table = |o: &TrainOptions| match toml::Value::try_from(o) {
            Ok(toml::Value::Table(t)) => Ok(t),
            Ok(_) => unreachable!("a struct serialises to a table"),
            Err(e) => Err(unrepresentable(e.to_string())),
        };
        let mut merged = table(&self)?;
        merged.extend(table(&over)?);
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| unrepresentable(e.to_string()))
    }

    /// Reads a TOML file of settings.
    pub fn from_toml_file(path: &std::path::Path) -> Result<TrainOptions, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        toml::from_str(&text).map_err(|e| TrainError::SettingsFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Fills in the defaults and checks every value; an error names the
    /// setting (the field) that is wrong.
    pub fn resolve(self) -> Result<TrainConfig, TrainError> {
        let bad =
            |setting: &'static str, reason: String| TrainError::InvalidSetting { setting, reason };
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
        let precision = match self.precision.as_deref() {
            None => Precision::F32,
            Some(p) => Precision::from_name(p)
                .ok_or_else(|| bad("precision", format!("{p:?} is not f32 or mixed")))?,
        };
        let defaults = Augment::default_for(dataset);
        let epochs = self.epochs.unwrap_or(20);
        // In a configuration, multistep's milestones are epochs.
        let schedule = match schedule {
            Decay::MultiStep { milestones, gamma } => Decay::MultiStep {
                milestones: match self.milestones {
                    Some(m) => m,
                    None => milestones.iter().map(|f| f * epochs as f64).collect(),
                },
                gamma,
            },
            other if self.milestones.is_some() => {
                return Err(bad(
                    "milestones",
                    format!("only the multistep schedule has milestones, not {other:?}"),
                ))
            }
            other => other,
        };
        let config = TrainConfig {
            model: self.model.unwrap_or_else(|| "resnet20".into()),
            dataset,
            data_dir: self.data_dir,
            epochs,
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
            precision,
            loss_scale: LossScaleConfig {
                init_scale: self.init_loss_scale.unwrap_or(65536.0),
                growth_interval: self.loss_scale_interval.unwrap_or(2000),
                ..LossScaleConfig::default()
            },
            out: self.out,
        };
        config.check()?;
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
    /// The decay; multistep's milestones are in epochs here (see
    /// [`TrainConfig::decay`]).
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
    pub precision: Precision,
    /// Dynamic loss scaling of a mixed-precision run.
    pub loss_scale: LossScaleConfig,
    pub out: Option<PathBuf>,
}

impl TrainConfig {
    /// Every value in its range, else an error naming the setting (the
    /// same checks for flags, a settings file and a checkpoint's stored
    /// configuration).
    pub fn check(&self) -> Result<(), TrainError> {
        let bad =
            |setting: &'static str, reason: String| TrainError::InvalidSetting { setting, reason };
        let positive = [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("train_subset", self.train_subset.unwrap_or(1)),
            ("test_subset", self.test_subset.unwrap_or(1)),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(bad(setting, "must be positive".into()));
            }
        }
        let f32_range = f32::MAX as f64;
        if !(self.lr > 0.0 && self.lr <= f32_range) {
            return Err(bad("lr", format!("{} is not a positive number", self.lr)));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(bad(
                "momentum",
                format!("{} is not in [0, 1)", self.momentum),
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay <= f32_range) {
            return Err(bad(
                "weight_decay",
                format!("{} is not a number >= 0", self.weight_decay),
            ));
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs.is_finite()) {
            return Err(bad(
                "warmup_epochs",
                format!("{} is not a number of epochs >= 0", self.warmup_epochs),
            ));
        }
        if let Some(p) = self.stochastic_depth {
            if !(0.0..=1.0).contains(&p) {
                return Err(bad("stochastic_depth", format!("{p} is not a probability")));
            }
        }
        let scale = &self.loss_scale;
        if !(scale.init_scale.is_finite() && scale.init_scale > 0.0) {
            return Err(bad(
                "init_loss_scale",
                format!("{} is not a positive number", scale.init_scale),
            ));
        }
        if scale.growth_interval == 0 {
            return Err(bad("loss_scale_interval", "must be positive".into()));
        }
        if let Decay::MultiStep { milestones, .. } = &self.schedule {
            let increasing = milestones.windows(2).all(|w| w[0] < w[1]);
            if !increasing || milestones.iter().any(|m| !(m.is_finite() && *m > 0.0)) {
                return Err(bad(
                    "milestones",
                    format!("{milestones:?} are not increasing positive epochs"),
                ));
            }
        }
        Ok(())
    }

    /// The decay as [`crate::schedule::Schedule`] takes it: multistep's
    /// milestones as fractions of this run's `epochs`.
    pub fn decay(&self) -> Decay {
        match &self.schedule {
            Decay::MultiStep { milestones, gamma } => Decay::MultiStep {
                milestones: milestones.iter().map(|m| m / self.epochs as f64).collect(),
                gamma: *gamma,
            },
            other => other.clone(),
        }
    }

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
            milestones: match &self.schedule {
                Decay::MultiStep { milestones, .. } => Some(milestones.clone()),
                _ => None,
            },
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
            precision: Some(self.precision.name().into()),
            init_loss_scale: Some(self.loss_scale.init_scale),
            loss_scale_interval: Some(self.loss_scale.growth_interval),
            out: self.out.clone(),
        }
    }
}

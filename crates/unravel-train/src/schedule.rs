//! Learning-rate schedules, evaluated per optimiser step: constant,
//! multistep (the ResNet papers' "divide by 10 at 50% and 75% of training"),
//! cosine, each optionally after a linear or constant warm-up (the ResNet
//! paper's 0.01 warm-up for ResNet-110).

/// The decay after warm-up.
#[derive(Clone, Debug, PartialEq)]
pub enum Decay {
    Constant,
    /// Multiply by `gamma` at each milestone, given as fractions of the
    /// whole run (0.5 and 0.75 in the papers).
    MultiStep {
        milestones: Vec<f64>,
        gamma: f64,
    },
    /// Half a cosine from the base rate down to `min_lr` at the last step.
    Cosine {
        min_lr: f64,
    },
}

/// The warm-up before the decay.
#[derive(Clone, Debug, PartialEq)]
pub enum Warmup {
    None,
    /// From 0 up to the base rate over `steps` steps.
    Linear {
        steps: usize,
    },
    /// `factor` times the base rate for `steps` steps.
    Constant {
        steps: usize,
        factor: f64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub base_lr: f64,
    pub decay: Decay,
    pub warmup: Warmup,
    /// Optimiser steps in the whole run.
    pub total_steps: usize,
}

impl Schedule {
    /// The papers' recipe: multistep at 50% and 75%, divide by 10.
    pub fn multistep(base_lr: f64, total_steps: usize) -> Schedule {
        Schedule {
            base_lr,
            decay: Decay::MultiStep {
                milestones: vec![0.5, 0.75],
                gamma: 0.1,
            },
            warmup: Warmup::None,
            total_steps,
        }
    }

    /// The learning rate of step `step` (counted from 0).
    pub fn lr(&self, step: usize) -> f64 {
        match self.warmup {
            Warmup::Linear { steps } if step < steps => {
                return self.base_lr * (step + 1) as f64 / steps as f64
            }
            Warmup::Constant { steps, factor } if step < steps => return self.base_lr * factor,
            _ => {}
        }
        let progress = step as f64 / self.total_steps.max(1) as f64;
        match &self.decay {
            Decay::Constant => self.base_lr,
            Decay::MultiStep { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| progress >= m).count();
                self.base_lr * gamma.powi(passed as i32)
            }
            Decay::Cosine { min_lr } => {
                let t = progress.clamp(0.0, 1.0);
                min_lr + (self.base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

impl std::str::FromStr for Decay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => Ok(Decay::Constant),
            "multistep" => Ok(Decay::MultiStep {
                milestones: vec![0.5, 0.75],
                gamma: 0.1,
            }),
            "cosine" => Ok(Decay::Cosine { min_lr: 0.0 }),
            other => Err(format!(
                "unknown schedule {other:?}; use constant, multistep or cosine"
            )),
        }
    }
}

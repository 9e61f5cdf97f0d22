//! The model zoo, named as the community names the models:
//! `resnet20`..`resnet1202` (CIFAR, He et al. 2015), `resnet18`..`resnet152`
//! (ImageNet), `preact-resnet{20,110,164,1001}` (He et al. 2016),
//! `resnext29-{C}x{W}d` (Xie et al. 2017), `densenet{L}-k{k}` and
//! `densenet-bc{L}-k{k}` (Huang et al. 2017), and `plain{6n+2}`, the CIFAR
//! ResNet without shortcuts.

mod densenet;
mod resnet_cifar;
mod resnet_imagenet;
mod resnext;

use thiserror::Error;
use unravel_graph::{Graph, GraphError, Shape};

pub use densenet::{densenet, densenet_layers};
pub use resnet_cifar::{
    plain_cifar, preact_blocks, preact_resnet, resnet_cifar, resnet_cifar_blocks,
};
pub use resnet_imagenet::resnet_imagenet;
pub use resnext::{resnext29, resnext_blocks};

/// How residual blocks that change shape build their shortcut, and how
/// blocks merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ShortcutKind {
    /// Option A: stride-2 subsampling, zero-padded channels, no parameters
    /// (the CIFAR ResNet paper's choice).
    #[default]
    A,
    /// Option B: 1x1 convolution + batch norm projection.
    B,
    /// Highway gate T * F(x) + (1 - T) * x (with option A where the shape
    /// changes).
    Highway,
}

impl std::str::FromStr for ShortcutKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s.to_ascii_lowercase().as_str() {
            "a" => Ok(ShortcutKind::A),
            "b" => Ok(ShortcutKind::B),
            "highway" => Ok(ShortcutKind::Highway),
            other => Err(ModelError::UnknownShortcut {
                name: other.to_string(),
            }),
        }
    }
}

/// What the dataset dictates and the user chooses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelConfig {
    /// One input sample (e.g. 3x32x32 for CIFAR, 1x28x28 for Fashion-MNIST).
    pub input: Shape,
    pub classes: usize,
    pub shortcut: ShortcutKind,
}

impl ModelConfig {
    /// The input and classes of `dataset`, with `shortcut`.
    pub fn for_dataset(dataset: crate::DatasetKind, shortcut: ShortcutKind) -> ModelConfig {
        ModelConfig {
            input: dataset.input(),
            classes: dataset.classes(),
            shortcut,
        }
    }

    /// CIFAR-10: 3x32x32, 10 classes, option A shortcuts.
    pub fn cifar10() -> ModelConfig {
        ModelConfig {
            input: Shape::new(3, 32, 32),
            classes: 10,
            shortcut: ShortcutKind::A,
        }
    }
}

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("unknown model {name:?} ({hint}); models::NAMED_MODELS lists the named ones")]
    UnknownModel { name: String, hint: String },
    #[error("unknown shortcut {name:?}; use a, b or highway")]
    UnknownShortcut { name: String },
    /// A family's depth that its recipe cannot build.
    #[error("{family} depth must be {allowed}, got {depth}")]
    Depth {
        family: &'static str,
        allowed: String,
        depth: usize,
    },
    /// Deeper than [`MAX_DEPTH`].
    #[error("{name}: depth {depth} is above the largest supported depth, {MAX_DEPTH} layers")]
    TooDeep { name: String, depth: usize },
    #[error("ResNeXt cardinality and width must be positive")]
    ResNeXtWidth,
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// The named models (what `unravel models` lists).
pub const NAMED_MODELS: &[&str] = &[
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet1202",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "preact-resnet20",
    "preact-resnet110",
    "preact-resnet164",
    "preact-resnet1001",
    "resnext29-8x64d",
    "resnext29-16x64d",
    "densenet40-k12",
    "densenet100-k12",
    "densenet-bc100-k12",
    "densenet-bc250-k24",
    "densenet-bc190-k40",
    "plain20",
    "plain56",
];

/// The deepest model [`build`] makes (ten times the deepest network of
/// the papers, ResNet-1202), so that any name is answered at once instead
/// of building a graph for minutes and exhausting memory.
pub const MAX_DEPTH: usize = 10_000;

const IMAGENET_DEPTHS: [usize; 5] = [18, 34, 50, 101, 152];

/// Builds the model called `name` for `config`.
pub fn build(name: &str, config: &ModelConfig) -> Result<Graph, ModelError> {
    let lower = name.to_ascii_lowercase();
    let unknown = |hint: &str| ModelError::UnknownModel {
        name: name.to_string(),
        hint: hint.to_string(),
    };
    let bounded = |depth: usize| {
        if depth > MAX_DEPTH {
            Err(ModelError::TooDeep {
                name: name.to_string(),
                depth,
            })
        } else {
            Ok(depth)
        }
    };
    if let Some(rest) = lower.strip_prefix("preact-resnet") {
        let depth = bounded(rest.parse().map_err(|_| unknown("preact-resnet<depth>"))?)?;
        return preact_resnet(depth, config);
    }
    if let Some(rest) = lower.strip_prefix("resnext29-") {
        let (c, w) = rest
            .strip_suffix('d')
            .and_then(|r| r.split_once('x'))
            .and_then(|(c, w)| Some((c.parse().ok()?, w.parse().ok()?)))
            .ok_or_else(|| unknown("resnext29-<cardinality>x<width>d, e.g. resnext29-8x64d"))?;
        return resnext29(c, w, config);
    }
    if let Some(rest) = lower.strip_prefix("densenet") {
        let (bc, rest) = match rest.strip_prefix("-bc") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (depth, k) = rest
            .split_once("-k")
            .and_then(|(d, k)| Some((d.parse().ok()?, k.parse().ok()?)))
            .ok_or_else(|| unknown("densenet<depth>-k<growth> or densenet-bc<depth>-k<growth>"))?;
        return densenet(bounded(depth)?, k, bc, config);
    }
    if let Some(rest) = lower.strip_prefix("plain") {
        let depth = bounded(rest.parse().map_err(|_| unknown("plain<depth>"))?)?;
        return plain_cifar(depth, config);
    }
    if let Some(rest) = lower.strip_prefix("resnet") {
        let depth = bounded(rest.parse().map_err(|_| unknown("resnet<depth>"))?)?;
        return if IMAGENET_DEPTHS.contains(&depth) {
            resnet_imagenet(depth, config)
        } else {
            resnet_cifar(depth, config)
        };
    }
    Err(unknown(
        "resnet, preact-resnet, resnext29, densenet, densenet-bc",
    ))
}

//! ResNeXt-29 for CIFAR (Xie et al. 2017): a 3x3 stem of 64 channels, three
//! stages of three bottleneck blocks; cardinality C through a grouped 3x3
//! convolution of inner width C * W * 2^stage; outputs 256, 512, 1024.

use unravel_graph::{Conv2d, Graph, GraphBuilder, Merge};

use super::resnet_cifar::{bottleneck_branch, classifier, merge_of, Stages};
use super::{ModelConfig, ModelError, ShortcutKind};

pub fn resnext29(
    cardinality: usize,
    width: usize,
    config: &ModelConfig,
) -> Result<Graph, ModelError> {
    if cardinality == 0 || width == 0 {
        return Err(ModelError::ResNeXtWidth);
    }
    Ok(resnext_blocks(3, cardinality, width, 64, config)?)
}

/// ResNeXt with `per_stage` blocks in each of the three stages, a stem of
/// `stem` channels and stage outputs 4 * stem * 2^stage (64 gives the
/// paper's 256, 512, 1024; tests use smaller).
pub fn resnext_blocks(
    per_stage: usize,
    cardinality: usize,
    width: usize,
    stem: usize,
    config: &ModelConfig,
) -> unravel_graph::Result<Graph> {
    let kind = match config.shortcut {
        ShortcutKind::A => ShortcutKind::B,
        k => k,
    };
    let mut b = GraphBuilder::new(config.input);
    let x = b.input();
    let x = b.conv2d(x, "conv1", Conv2d::new(stem, 3))?;
    let x = b.batchnorm(x, "bn1", true)?;
    let counts = [per_stage; 3];
    let c_out = [0, 1, 2].map(|stage| (4 * stem) << stage);
    let stages = Stages {
        counts: &counts,
        c_out: &c_out,
        merge: merge_of(kind, Merge::AddRelu),
        kind,
        post_activation: true,
    };
    let x = stages.record(&mut b, x, |b, x, stage, stride| {
        let inner = (cardinality * width) << stage;
        bottleneck_branch(b, x, (inner, c_out[stage]), stride, cardinality)
    })?;
    classifier(b, x, "fc", config.classes)
}

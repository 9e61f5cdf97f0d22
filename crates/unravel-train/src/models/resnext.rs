//! ResNeXt-29 for CIFAR (Xie et al. 2017): a 3x3 stem of 64 channels, three
//! stages of three bottleneck blocks; cardinality C through a grouped 3x3
//! convolution of inner width C * W * 2^stage; outputs 256, 512, 1024.

use unravel_graph::{Conv2d, Graph, GraphBuilder, Merge};

use super::resnet_cifar::{merge_of, shortcut, unit};
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
    let mut x = b.batchnorm(x, "bn1", true)?;
    let merge = merge_of(kind, Merge::AddRelu);
    for stage in 0..3 {
        let inner = (cardinality * width) << stage;
        let c_out = (4 * stem) << stage;
        for i in 0..per_stage {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            x = unit(
                &mut b,
                x,
                (stage, i),
                merge,
                true,
                |b, x| shortcut(b, x, c_out, stride, kind, true),
                |b, x| {
                    let h = b.conv2d(x, "conv1", Conv2d::new(inner, 1))?;
                    let h = b.batchnorm(h, "bn1", true)?;
                    let h = b.conv2d(
                        h,
                        "conv2",
                        Conv2d::new(inner, 3).stride(stride).groups(cardinality),
                    )?;
                    let h = b.batchnorm(h, "bn2", true)?;
                    let h = b.conv2d(h, "conv3", Conv2d::new(c_out, 1))?;
                    b.batchnorm(h, "bn3", false)
                },
            )?;
        }
    }
    let x = b.global_avgpool(x, "avgpool")?;
    let y = b.linear(x, "fc", config.classes)?;
    Ok(b.finish(y))
}

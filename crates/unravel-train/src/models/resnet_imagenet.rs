//! The ImageNet ResNets of He et al. 2015 as torchvision builds them: 7x7
//! stride-2 stem, 3x3 stride-2 max pool, four stages of basic (18, 34) or
//! bottleneck (50, 101, 152) blocks, projection shortcuts. Any input size
//! of at least 32x32 works.

use unravel_graph::{Conv2d, Graph, GraphBuilder, Merge};

use super::resnet_cifar::{basic_branch, bottleneck_branch, classifier, merge_of, Stages};
use super::{ModelConfig, ModelError, ShortcutKind};

pub fn resnet_imagenet(depth: usize, config: &ModelConfig) -> Result<Graph, ModelError> {
    let (blocks, bottleneck): ([usize; 4], bool) = match depth {
        18 => ([2, 2, 2, 2], false),
        34 => ([3, 4, 6, 3], false),
        50 => ([3, 4, 6, 3], true),
        101 => ([3, 4, 23, 3], true),
        152 => ([3, 8, 36, 3], true),
        _ => {
            return Err(ModelError::Depth {
                family: "ImageNet ResNet",
                allowed: "18, 34, 50, 101 or 152".into(),
                depth,
            })
        }
    };
    let expansion = if bottleneck { 4 } else { 1 };
    // torchvision's ImageNet ResNets project with 1x1 conv + BN.
    let kind = match config.shortcut {
        ShortcutKind::A => ShortcutKind::B,
        k => k,
    };
    let mut b = GraphBuilder::new(config.input);
    let x = b.input();
    let x = b.conv2d(x, "conv1", Conv2d::new(64, 7).stride(2))?;
    let x = b.batchnorm(x, "bn1", true)?;
    let x = b.maxpool3x3s2(x, "maxpool")?;
    let widths = [64, 128, 256, 512];
    let c_out = widths.map(|w| w * expansion);
    let stages = Stages {
        counts: &blocks,
        c_out: &c_out,
        merge: merge_of(kind, Merge::AddRelu),
        kind,
        post_activation: true,
    };
    let x = stages.record(&mut b, x, |b, x, stage, stride| match bottleneck {
        true => bottleneck_branch(b, x, (widths[stage], c_out[stage]), stride, 1),
        false => basic_branch(b, x, widths[stage], stride),
    })?;
    Ok(classifier(b, x, "fc", config.classes)?)
}

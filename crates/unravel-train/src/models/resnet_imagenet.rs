//! The ImageNet ResNets of He et al. 2015 as torchvision builds them: 7x7
//! stride-2 stem, 3x3 stride-2 max pool, four stages of basic (18, 34) or
//! bottleneck (50, 101, 152) blocks, projection shortcuts. Any input size
//! of at least 32x32 works.

use unravel_graph::{Conv2d, Graph, GraphBuilder, Merge};

use super::resnet_cifar::{merge_of, shortcut, unit};
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
    let mut x = b.maxpool3x3s2(x, "maxpool")?;
    let merge = merge_of(kind, Merge::AddRelu);
    for (stage, (&count, width)) in blocks.iter().zip([64, 128, 256, 512]).enumerate() {
        for i in 0..count {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let c_out = width * expansion;
            x = unit(
                &mut b,
                x,
                (stage, i),
                merge,
                true,
                |b, x| shortcut(b, x, c_out, stride, kind, true),
                |b, x| {
                    if bottleneck {
                        let h = b.conv2d(x, "conv1", Conv2d::new(width, 1))?;
                        let h = b.batchnorm(h, "bn1", true)?;
                        let h = b.conv2d(h, "conv2", Conv2d::new(width, 3).stride(stride))?;
                        let h = b.batchnorm(h, "bn2", true)?;
                        let h = b.conv2d(h, "conv3", Conv2d::new(c_out, 1))?;
                        b.batchnorm(h, "bn3", false)
                    } else {
                        let h = b.conv2d(x, "conv1", Conv2d::new(width, 3).stride(stride))?;
                        let h = b.batchnorm(h, "bn1", true)?;
                        let h = b.conv2d(h, "conv2", Conv2d::new(width, 3))?;
                        b.batchnorm(h, "bn2", false)
                    }
                },
            )?;
        }
    }
    let x = b.global_avgpool(x, "avgpool")?;
    let y = b.linear(x, "fc", config.classes)?;
    Ok(b.finish(y))
}

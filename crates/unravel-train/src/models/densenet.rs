//! DenseNet for CIFAR (Huang et al. 2017): three dense blocks of BN-ReLU-conv
//! layers with growth rate k, transitions of BN-ReLU-1x1 conv and 2x2
//! average pooling. DenseNet-BC adds a 1x1 bottleneck to 4k channels in each
//! layer and halves the channels at each transition. Names follow
//! torchvision (`features.denseblock1.denselayer1.conv1.weight`, ...).

use unravel_graph::{Conv2d, Graph, GraphBuilder};

use super::resnet_cifar::classifier;
use super::{ModelConfig, ModelError};

pub fn densenet(
    depth: usize,
    growth: usize,
    bc: bool,
    config: &ModelConfig,
) -> Result<Graph, ModelError> {
    let per_layer = if bc { 6 } else { 3 };
    if depth < 4 + per_layer || !(depth - 4).is_multiple_of(per_layer) || growth == 0 {
        return Err(ModelError::Depth {
            family: if bc { "DenseNet-BC" } else { "DenseNet" },
            allowed: format!("{per_layer}n+4 with a positive growth rate (growth {growth})"),
            depth,
        });
    }
    let n = (depth - 4) / per_layer;
    Ok(densenet_layers(n, growth, bc, config)?)
}

/// A DenseNet with `layers` layers per dense block.
pub fn densenet_layers(
    layers: usize,
    growth: usize,
    bc: bool,
    config: &ModelConfig,
) -> unravel_graph::Result<Graph> {
    let mut b = GraphBuilder::new(config.input);
    let x = b.input();
    let stem = if bc { 2 * growth } else { 16 };
    let y = b.scoped("features", |b| {
        let mut x = b.conv2d(x, "conv0", Conv2d::new(stem, 3))?;
        for block in 1..=3 {
            x = b.scoped(&format!("denseblock{block}"), |b| {
                b.dense_block(x, block, layers, growth, |b, x, _| {
                    if bc {
                        let h = b.batchnorm(x, "norm1", true)?;
                        let h = b.conv2d(h, "conv1", Conv2d::new(4 * growth, 1))?;
                        let h = b.batchnorm(h, "norm2", true)?;
                        b.conv2d(h, "conv2", Conv2d::new(growth, 3))
                    } else {
                        let h = b.batchnorm(x, "norm1", true)?;
                        b.conv2d(h, "conv1", Conv2d::new(growth, 3))
                    }
                })
            })?;
            if block < 3 {
                x = b.scoped(&format!("transition{block}"), |b| {
                    let c = b.shape(x).c;
                    let out = if bc { c / 2 } else { c };
                    let h = b.batchnorm(x, "norm", true)?;
                    let h = b.conv2d(h, "conv", Conv2d::new(out, 1))?;
                    b.avgpool2x2(h, "pool")
                })?;
            }
        }
        b.batchnorm(x, "norm5", true)
    })?;
    classifier(b, y, "classifier", config.classes)
}

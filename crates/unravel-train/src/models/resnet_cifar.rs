//! The CIFAR ResNets of He et al. 2015 (6n+2 layers, basic blocks,
//! 16/32/64 channels) and the pre-activation ResNets of He et al. 2016
//! (BN-ReLU-conv units; 164 and 1001 with 4x bottlenecks, 9n+2 layers).

use unravel_graph::{Conv2d, Graph, GraphBuilder, Merge, Result as GraphResult, ValueId};

use super::{ModelConfig, ModelError, ShortcutKind};

const WIDTHS: [usize; 3] = [16, 32, 64];

/// Shortcut of a block from `x` to `c_out` channels at `stride`.
pub(super) fn shortcut(
    b: &mut GraphBuilder,
    x: ValueId,
    c_out: usize,
    stride: usize,
    kind: ShortcutKind,
    projection_bn: bool,
) -> GraphResult<ValueId> {
    let s = b.shape(x);
    if s.c == c_out && stride == 1 {
        return Ok(x);
    }
    match kind {
        ShortcutKind::A | ShortcutKind::Highway => b.shortcut_a(x, "shortcut", c_out, stride),
        ShortcutKind::B => b.scoped("downsample", |b| {
            let y = b.conv2d(x, "0", Conv2d::new(c_out, 1).stride(stride))?;
            if projection_bn {
                b.batchnorm(y, "1", false)
            } else {
                Ok(y)
            }
        }),
    }
}

/// Residual unit `layer{stage + 1}.{index}` (stage from 0). After a highway
/// merge comes the ReLU that `Merge::AddRelu` would have fused, where the
/// architecture has one (`post_relu`; pre-activation units do not).
fn unit(
    b: &mut GraphBuilder,
    x: ValueId,
    (stage, index): (usize, usize),
    merge: Merge,
    post_relu: bool,
    shortcut: impl FnOnce(&mut GraphBuilder, ValueId) -> GraphResult<ValueId>,
    branch: impl FnOnce(&mut GraphBuilder, ValueId) -> GraphResult<ValueId>,
) -> GraphResult<ValueId> {
    b.scoped(&format!("layer{}", stage + 1), |b| {
        b.scoped(&index.to_string(), |b| {
            let y = b.residual(x, stage + 1, merge, shortcut, branch)?;
            if post_relu && matches!(merge, Merge::Highway { .. }) {
                b.relu(y, "relu")
            } else {
                Ok(y)
            }
        })
    })
}

/// How a network's residual units are laid out: `counts[s]` units in stage
/// s, ending in `c_out[s]` channels, merged by `merge` with shortcuts of
/// `kind`; post-activation units (the original ResNet) also take the ReLU
/// after a highway merge and a batch norm after a projection, pre-activation
/// ones neither.
pub(super) struct Stages<'a> {
    pub counts: &'a [usize],
    pub c_out: &'a [usize],
    pub merge: Merge,
    pub kind: ShortcutKind,
    pub post_activation: bool,
}

impl Stages<'_> {
    /// Records every unit from `x`, with the branch `branch(b, x, stage,
    /// stride)`; the first unit of every stage but the first has stride 2.
    pub(super) fn record(
        &self,
        b: &mut GraphBuilder,
        mut x: ValueId,
        branch: impl Fn(&mut GraphBuilder, ValueId, usize, usize) -> GraphResult<ValueId>,
    ) -> GraphResult<ValueId> {
        for (stage, (&count, &c_out)) in self.counts.iter().zip(self.c_out).enumerate() {
            for i in 0..count {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let post = self.post_activation;
                x = unit(
                    b,
                    x,
                    (stage, i),
                    self.merge,
                    post,
                    |b, x| shortcut(b, x, c_out, stride, self.kind, post),
                    |b, x| branch(b, x, stage, stride),
                )?;
            }
        }
        Ok(x)
    }
}

/// The basic unit's branch (post-activation): 3x3 conv at `stride`,
/// BN + ReLU, 3x3 conv, BN.
pub(super) fn basic_branch(
    b: &mut GraphBuilder,
    x: ValueId,
    width: usize,
    stride: usize,
) -> GraphResult<ValueId> {
    let h = b.conv2d(x, "conv1", Conv2d::new(width, 3).stride(stride))?;
    let h = b.batchnorm(h, "bn1", true)?;
    let h = b.conv2d(h, "conv2", Conv2d::new(width, 3))?;
    b.batchnorm(h, "bn2", false)
}

/// The bottleneck branch (post-activation): 1x1 conv to `width`, BN +
/// ReLU, 3x3 conv at `stride` in `groups` groups, BN + ReLU, 1x1 conv to
/// `c_out`, BN.
pub(super) fn bottleneck_branch(
    b: &mut GraphBuilder,
    x: ValueId,
    (width, c_out): (usize, usize),
    stride: usize,
    groups: usize,
) -> GraphResult<ValueId> {
    let h = b.conv2d(x, "conv1", Conv2d::new(width, 1))?;
    let h = b.batchnorm(h, "bn1", true)?;
    let middle = Conv2d::new(width, 3).stride(stride).groups(groups);
    let h = b.conv2d(h, "conv2", middle)?;
    let h = b.batchnorm(h, "bn2", true)?;
    let h = b.conv2d(h, "conv3", Conv2d::new(c_out, 1))?;
    b.batchnorm(h, "bn3", false)
}

/// The classifier every model ends with: global average pooling and a
/// linear layer named `fc_name` to `classes` scores.
pub(super) fn classifier(
    mut b: GraphBuilder,
    x: ValueId,
    fc_name: &str,
    classes: usize,
) -> GraphResult<Graph> {
    let x = b.global_avgpool(x, "avgpool")?;
    let y = b.linear(x, fc_name, classes)?;
    Ok(b.finish(y))
}

pub(super) fn merge_of(kind: ShortcutKind, default: Merge) -> Merge {
    match kind {
        ShortcutKind::Highway => Merge::Highway { gate_bias: -1.0 },
        _ => default,
    }
}

/// `resnet{6n+2}` for CIFAR.
pub fn resnet_cifar(depth: usize, config: &ModelConfig) -> Result<Graph, ModelError> {
    if depth < 8 || !(depth - 2).is_multiple_of(6) {
        return Err(ModelError::Depth {
            family: "CIFAR ResNet",
            allowed: "6n+2 (20, 32, 44, 56, 110, 1202)".into(),
            depth,
        });
    }
    let n = (depth - 2) / 6;
    Ok(resnet_cifar_blocks([n, n, n], config)?)
}

/// `plain{6n+2}`: the CIFAR ResNet without its shortcuts (He et al.'s plain
/// baseline), for the lesion comparison: each block is recorded as a
/// residual block whose merge ignores the shortcut, so deleting it replaces
/// the block by an identity (option A where the shape changes).
pub fn plain_cifar(depth: usize, config: &ModelConfig) -> Result<Graph, ModelError> {
    if depth < 8 || !(depth - 2).is_multiple_of(6) {
        return Err(ModelError::Depth {
            family: "plain network",
            allowed: "6n+2 (20, 32, 44, 56, 110)".into(),
            depth,
        });
    }
    let n = (depth - 2) / 6;
    Ok(cifar_blocks([n, n, n], config, Some(Merge::Plain))?)
}

/// A CIFAR ResNet with `blocks[i]` basic blocks in stage i (tests use one).
pub fn resnet_cifar_blocks(blocks: [usize; 3], config: &ModelConfig) -> GraphResult<Graph> {
    cifar_blocks(blocks, config, None)
}

fn cifar_blocks(
    blocks: [usize; 3],
    config: &ModelConfig,
    merge: Option<Merge>,
) -> GraphResult<Graph> {
    let mut b = GraphBuilder::new(config.input);
    let x = b.input();
    let x = b.conv2d(x, "conv1", Conv2d::new(WIDTHS[0], 3))?;
    let x = b.batchnorm(x, "bn1", true)?;
    let stages = Stages {
        counts: &blocks,
        c_out: &WIDTHS,
        merge: merge.unwrap_or_else(|| merge_of(config.shortcut, Merge::AddRelu)),
        kind: config.shortcut,
        post_activation: true,
    };
    let x = stages.record(&mut b, x, |b, x, stage, stride| {
        basic_branch(b, x, WIDTHS[stage], stride)
    })?;
    classifier(b, x, "fc", config.classes)
}

/// `preact-resnet{depth}`: basic units for 6n+2 depths other than 164 and
/// 1001, bottleneck units (4x expansion) for 9n+2 depths 164 and 1001.
pub fn preact_resnet(depth: usize, config: &ModelConfig) -> Result<Graph, ModelError> {
    let bottleneck = depth == 164 || depth == 1001;
    let per_block = if bottleneck { 9 } else { 6 };
    if depth < 8 || !(depth - 2).is_multiple_of(per_block) {
        return Err(ModelError::Depth {
            family: "pre-activation ResNet",
            allowed: "6n+2 (basic) or 164/1001 (bottleneck)".into(),
            depth,
        });
    }
    let n = (depth - 2) / per_block;
    Ok(preact_blocks([n, n, n], bottleneck, config)?)
}

/// A pre-activation ResNet with `blocks[i]` units in stage i.
pub fn preact_blocks(
    blocks: [usize; 3],
    bottleneck: bool,
    config: &ModelConfig,
) -> GraphResult<Graph> {
    let expansion = if bottleneck { 4 } else { 1 };
    // Pre-activation units keep the projection shortcut for shape changes
    // (He et al. 2016), unless option A is asked for explicitly.
    let kind = match config.shortcut {
        ShortcutKind::A if bottleneck => ShortcutKind::B,
        k => k,
    };
    let mut b = GraphBuilder::new(config.input);
    let x = b.input();
    let x = b.conv2d(x, "conv1", Conv2d::new(WIDTHS[0], 3))?;
    let c_out = WIDTHS.map(|w| w * expansion);
    let stages = Stages {
        counts: &blocks,
        c_out: &c_out,
        merge: merge_of(kind, Merge::Add),
        kind,
        post_activation: false,
    };
    let x = stages.record(&mut b, x, |b, x, stage, stride| {
        let (width, c_out) = (WIDTHS[stage], c_out[stage]);
        let h = b.batchnorm(x, "bn1", true)?;
        if bottleneck {
            let h = b.conv2d(h, "conv1", Conv2d::new(width, 1))?;
            let h = b.batchnorm(h, "bn2", true)?;
            let h = b.conv2d(h, "conv2", Conv2d::new(width, 3).stride(stride))?;
            let h = b.batchnorm(h, "bn3", true)?;
            b.conv2d(h, "conv3", Conv2d::new(c_out, 1))
        } else {
            let h = b.conv2d(h, "conv1", Conv2d::new(width, 3).stride(stride))?;
            let h = b.batchnorm(h, "bn2", true)?;
            b.conv2d(h, "conv2", Conv2d::new(width, 3))
        }
    })?;
    let x = b.batchnorm(x, "bn_final", true)?;
    classifier(b, x, "fc", config.classes)
}

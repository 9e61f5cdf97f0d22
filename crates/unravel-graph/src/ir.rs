//! The graph IR: values (per-sample tensors with static shapes), nodes (ops),
//! parameters with PyTorch names, and named blocks.
//!
//! Shape legend: an activation is one sample's C x H x W (the batch size N is
//! bound later, when a plan is compiled); a vector is C x 1 x 1. Conv weights
//! are OIHW = [C_out, C_in / G, K, K], linear weights [out, in], as in PyTorch.

/// Index of a value in [`Graph::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

/// Index of a node in [`Graph::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// Index of a parameter in [`Graph::params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

/// Index of a block in [`Graph::blocks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub usize);

/// One sample's shape: channels, height, width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub const fn new(c: usize, h: usize, w: usize) -> Shape {
        Shape { c, h, w }
    }

    pub fn numel(&self) -> usize {
        self.c * self.h * self.w
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.c, self.h, self.w)
    }
}

/// Where a value's elements live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A buffer of its own (assigned by the planner).
    Own,
    /// Channels `c0..c0 + shape.c` of another value: a DenseNet layer's
    /// share of its block's concatenation buffer, or the prefix a layer reads.
    ChannelsOf { parent: ValueId, c0: usize },
}

#[derive(Clone, Debug)]
pub struct Value {
    pub shape: Shape,
    pub storage: Storage,
    /// The node that writes it; `None` for the graph input and for a
    /// concatenation buffer (written through its slices).
    pub producer: Option<NodeId>,
}

/// How a parameter starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// He et al. 2015: normal with std sqrt(2 / fan), fan = fan_out (PyTorch's
    /// `kaiming_normal_(mode="fan_out")`, the torchvision ResNet choice).
    KaimingNormal {
        fan: usize,
    },
    /// Uniform in [-bound, bound] (PyTorch's default for linear layers).
    Uniform {
        bound: f32,
    },
    Constant(f32),
}

/// A learned tensor.
#[derive(Clone, Debug)]
pub struct Param {
    /// PyTorch state-dict name, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    /// Whether weight decay applies (conv and linear weights; not BN
    /// parameters or biases).
    pub decay: bool,
}

impl Param {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Batch-norm running statistics, named like PyTorch's buffers
/// (`{prefix}.running_mean`, `.running_var`, `.num_batches_tracked`).
#[derive(Clone, Debug)]
pub struct BnState {
    pub prefix: String,
    pub channels: usize,
}

/// An operation. Shapes are checked when the node is added.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Conv2d {
        weight: ParamId,
        bias: Option<ParamId>,
        kernel: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    },
    /// Batch norm (training: batch statistics; eval: running ones),
    /// optionally fused with the ReLU that follows it.
    BatchNorm {
        weight: ParamId,
        bias: ParamId,
        state: usize,
        relu: bool,
    },
    Relu,
    /// Sum of two values (the residual sum), optionally fused with a ReLU.
    Add {
        relu: bool,
    },
    Sigmoid,
    /// Highway gate y = t * h + (1 - t) * x; inputs [t, h, x].
    Highway,
    /// Option A shortcut: stride-s subsampling, zero-padded extra channels.
    ShortcutA {
        stride: usize,
    },
    /// Copies its input into a channel slice (the start of a dense block).
    Copy,
    AvgPool2x2,
    MaxPool3x3s2,
    GlobalAvgPool,
    Linear {
        weight: ParamId,
        bias: ParamId,
    },
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv2d { .. } => "conv2d",
            Op::BatchNorm { relu: false, .. } => "batchnorm",
            Op::BatchNorm { relu: true, .. } => "batchnorm+relu",
            Op::Relu => "relu",
            Op::Add { relu: false } => "add",
            Op::Add { relu: true } => "add+relu",
            Op::Sigmoid => "sigmoid",
            Op::Highway => "highway",
            Op::ShortcutA { .. } => "shortcut-a",
            Op::Copy => "copy",
            Op::AvgPool2x2 => "avgpool2x2",
            Op::MaxPool3x3s2 => "maxpool3x3s2",
            Op::GlobalAvgPool => "global-avgpool",
            Op::Linear { .. } => "linear",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    /// Scope-qualified name, e.g. `layer2.0.conv1`.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    /// The innermost block whose branch holds this node.
    pub block: Option<BlockId>,
}

/// What kind of named block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// y = merge(shortcut(x), branch(x)). Dropping the block (stochastic
    /// depth, lesion) keeps the shortcut and skips the branch's nodes.
    Residual {
        /// The merge node (add, add+relu or highway).
        merge: NodeId,
        /// The value the branch produced (the merge's branch input).
        branch_output: ValueId,
        /// The shortcut's value (x itself, or a projection / option A).
        shortcut: ValueId,
        /// Whether the block changes the shape (stride 2 or more channels).
        downsampling: bool,
    },
    /// DenseNet dense block: layers append their outputs to one buffer.
    Dense { layers: usize, growth: usize },
}

#[derive(Clone, Debug)]
pub struct Block {
    pub name: String,
    /// Stage (group of blocks at one resolution), counted from 1.
    pub stage: usize,
    pub kind: BlockKind,
    pub input: ValueId,
    pub output: ValueId,
    /// The nodes of the branch (for a dense block: all its nodes).
    pub nodes: Vec<NodeId>,
}

/// A recorded network: input -> ... -> logits.
#[derive(Clone, Debug)]
pub struct Graph {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub params: Vec<Param>,
    pub bn_states: Vec<BnState>,
    pub blocks: Vec<Block>,
    pub input: ValueId,
    pub output: ValueId,
}

impl Graph {
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0]
    }

    pub fn shape(&self, id: ValueId) -> Shape {
        self.values[id.0].shape
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    pub fn param(&self, id: ParamId) -> &Param {
        &self.params[id.0]
    }

    /// Learned parameters (the count the papers report).
    pub fn parameter_count(&self) -> usize {
        self.params.iter().map(Param::numel).sum()
    }

    /// Residual blocks in order (what stochastic depth and lesions address).
    pub fn residual_blocks(&self) -> impl Iterator<Item = (BlockId, &Block)> {
        self.blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| matches!(b.kind, BlockKind::Residual { .. }))
            .map(|(i, b)| (BlockId(i), b))
    }

    pub fn block_by_name(&self, name: &str) -> Option<BlockId> {
        self.blocks.iter().position(|b| b.name == name).map(BlockId)
    }

    /// Forward multiply-adds for one sample.
    pub fn macs(&self) -> u64 {
        self.nodes.iter().map(|n| self.node_macs(n)).sum()
    }

    /// Multiply-adds of one node for one sample (convolutions and linear
    /// layers; element-wise work is not counted, as in the papers).
    pub fn node_macs(&self, node: &Node) -> u64 {
        match &node.op {
            Op::Conv2d { weight, .. } => {
                let out = self.shape(node.output);
                let w = &self.param(*weight).shape;
                (out.numel() * w[1] * w[2] * w[3]) as u64
            }
            Op::Linear { weight, .. } => self.param(*weight).numel() as u64,
            _ => 0,
        }
    }

    /// The convolution a `Conv2d` node performs on a batch of `batch`.
    pub fn conv_shape(
        &self,
        node: &Node,
        batch: usize,
    ) -> Option<unravel_device::kernels::conv2d::Conv2dShape> {
        let Op::Conv2d {
            kernel,
            stride,
            pad,
            groups,
            ..
        } = node.op
        else {
            return None;
        };
        let x = self.shape(node.inputs[0]);
        Some(unravel_device::kernels::conv2d::Conv2dShape {
            n: batch,
            c_in: x.c,
            h: x.h,
            w: x.w,
            c_out: self.shape(node.output).c,
            kh: kernel,
            kw: kernel,
            stride,
            pad,
            groups,
        })
    }

    /// Parameters a node owns.
    pub fn node_params(&self, node: &Node) -> Vec<ParamId> {
        match &node.op {
            Op::Conv2d { weight, bias, .. } => std::iter::once(*weight).chain(*bias).collect(),
            Op::BatchNorm { weight, bias, .. } | Op::Linear { weight, bias } => {
                vec![*weight, *bias]
            }
            _ => Vec::new(),
        }
    }
}

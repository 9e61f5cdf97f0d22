//! The number formats of a plan's tensors.
//!
//! In [`Precision::Mixed`], the activations and their gradients are stored
//! as f16 (half the memory and memory traffic); everything else stays f32:
//! the parameters (master weights), their gradients and momentum, batch-norm
//! statistics, the input images, and the logits and their gradient, where
//! the loss is computed. Kernels load f16 into f32, accumulate in f32 and
//! round once when they store.

use unravel_device::kernels::conv2d::{Conv2dAlgo, CoopTile};
use unravel_device::{DType, Gpu};

use crate::ir::{Graph, Op};

/// How a plan stores activations and their gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Everything f32.
    #[default]
    F32,
    /// f16 activations and activation gradients, f32 everything else; the
    /// loss is scaled (see [`crate::LossScaler`]) so small gradients survive f16.
    Mixed,
}

impl Precision {
    /// The name the command line and the settings files use.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Mixed => "mixed",
        }
    }

    /// The precision called `name` (`f32` or `mixed`).
    pub fn from_name(name: &str) -> Option<Precision> {
        match name {
            "f32" => Some(Precision::F32),
            "mixed" => Some(Precision::Mixed),
            _ => None,
        }
    }

    /// The convolution algorithm of a plan in this precision whose caller
    /// chose none: in mixed precision, cooperative matrices (tensor cores)
    /// where the device's pass their check ([`CoopTile::verified`]), for
    /// every convolution and the linear layer; otherwise none, so each
    /// convolution gets the adapter's choice for its shape.
    pub fn default_conv_algo(self, gpu: &Gpu) -> Option<Conv2dAlgo> {
        (self == Precision::Mixed && CoopTile::verified(gpu).is_ok())
            .then_some(Conv2dAlgo::CoopMatrix)
    }

    /// The element type of every value of `graph` (and of its gradient):
    /// in mixed precision f16, except the input and a linear layer's output
    /// (the logits), and a ReLU's output takes its input's (it may run in
    /// place). Values come in topological order, so inputs are decided first.
    pub fn value_dtypes(self, graph: &Graph) -> Vec<DType> {
        let mut dtypes: Vec<DType> = Vec::with_capacity(graph.values.len());
        for (i, v) in graph.values.iter().enumerate() {
            let op = v.producer.map(|n| graph.node(n));
            let dtype = match op {
                _ if self == Precision::F32 || i == graph.input.0 => DType::F32,
                Some(node) => match node.op {
                    Op::Linear { .. } => DType::F32,
                    Op::Relu => dtypes[node.inputs[0].0],
                    _ => DType::F16,
                },
                None => DType::F16,
            };
            dtypes.push(dtype);
        }
        dtypes
    }
}

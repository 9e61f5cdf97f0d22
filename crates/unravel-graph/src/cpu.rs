//! A CPU reference interpreter of a graph, composed of the device crate's
//! reference ops (f64). Tests check the GPU executor against it, and whole-
//! model gradients against its finite differences.
//!
//! Shape legend: N batch; values are N x C x H x W, row-major.

use std::collections::HashMap;

use unravel_device::reference as r;
use unravel_device::reference::copy::{channels, put_channels};

use crate::error::{GraphError, Result};
use crate::ir::*;
use crate::plan::Mode;

/// Host copies of a model's tensors, indexed like the graph's params and
/// batch-norm states.
#[derive(Clone, Debug)]
pub struct CpuModel {
    pub params: Vec<Vec<f64>>,
    pub bn: BnStats,
}

/// (running mean, running var) of each batch-norm layer.
pub type BnStats = Vec<(Vec<f64>, Vec<f64>)>;

impl CpuModel {
    /// Reads a model's parameters and statistics back from the GPU.
    pub fn from_state(
        gpu: &unravel_device::Gpu,
        graph: &Graph,
        state: &crate::ModelState,
    ) -> Result<CpuModel> {
        let widen = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let params = state
            .read_params(gpu)?
            .iter()
            .map(|(_, _, v)| widen(v))
            .collect();
        let bn = (0..graph.bn_states.len())
            .map(|i| {
                let (_, m, v) = state.read_bn(gpu, i)?;
                Ok((widen(&m), widen(&v)))
            })
            .collect::<Result<_>>()?;
        Ok(CpuModel { params, bn })
    }
}

/// Per-step settings of the interpreter, as for the GPU plan.
#[derive(Clone, Debug, Default)]
pub struct CpuStep {
    pub dropped: Vec<BlockId>,
    pub scales: HashMap<BlockId, f64>,
}

const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

fn dims(n: usize, s: Shape) -> [usize; 4] {
    [n, s.c, s.h, s.w]
}

struct Values<'g> {
    graph: &'g Graph,
    n: usize,
    data: Vec<Vec<f64>>,
}

impl Values<'_> {
    fn get(&self, v: ValueId) -> Vec<f64> {
        match self.graph.value(v).storage {
            Storage::Own => self.data[v.0].clone(),
            Storage::ChannelsOf { parent, c0 } => {
                let p = self.graph.shape(parent);
                let whole = self.get(parent);
                channels(&whole, self.n, p.c, p.h * p.w, c0, self.graph.shape(v).c)
            }
        }
    }

    fn set(&mut self, v: ValueId, x: Vec<f64>) {
        if let Storage::ChannelsOf { parent, c0 } = self.graph.value(v).storage {
            let p = self.graph.shape(parent);
            let mut whole = self.get(parent);
            put_channels(
                &mut whole,
                &x,
                self.n,
                p.c,
                p.h * p.w,
                c0,
                self.graph.shape(v).c,
            );
            self.set(parent, whole);
        }
        self.data[v.0] = x;
    }
}

/// Runs the graph on `input` (N samples) and returns every value (channel
/// views resolved) and the updated batch-norm statistics (train mode).
pub fn forward(
    graph: &Graph,
    model: &CpuModel,
    input: &[f64],
    n: usize,
    mode: Mode,
    step: &CpuStep,
) -> Result<(Vec<Vec<f64>>, BnStats)> {
    let mut vals = Values {
        graph,
        n,
        data: graph
            .values
            .iter()
            .map(|v| vec![0.0; n * v.shape.numel()])
            .collect(),
    };
    let expected = n * graph.shape(graph.input).numel();
    if input.len() != expected {
        return Err(GraphError::InputLength {
            got: input.len(),
            expected,
            samples: n,
        });
    }
    vals.set(graph.input, input.to_vec());
    let mut bn_out = model.bn.clone();
    let mut skip = vec![false; graph.nodes.len()];
    let mut merges: HashMap<NodeId, (BlockId, ValueId, ValueId)> = HashMap::new();
    for (id, block) in graph.residual_blocks() {
        if let BlockKind::Residual {
            merge,
            shortcut,
            branch_output,
            ..
        } = block.kind
        {
            merges.insert(merge, (id, shortcut, branch_output));
            if step.dropped.contains(&id) {
                for nd in &block.nodes {
                    skip[nd.0] = true;
                }
            }
        }
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        if skip[i] {
            continue;
        }
        let x = vals.get(node.inputs[0]);
        let xs = dims(n, graph.shape(node.inputs[0]));
        let p = |id: ParamId| &model.params[id.0];
        let y = if let Some(&(block, s, h)) = merges.get(&NodeId(i)) {
            let shortcut = vals.get(s);
            let relu = matches!(node.op, Op::Add { relu: true } | Op::Relu);
            let out = if step.dropped.contains(&block) {
                shortcut
            } else {
                let scale = step.scales.get(&block).copied().unwrap_or(1.0);
                let branch = r::elementwise::scale(&vals.get(h), scale);
                match node.op {
                    Op::Highway => r::elementwise::highway_forward(
                        &vals.get(node.inputs[0]),
                        &branch,
                        &shortcut,
                    ),
                    Op::Relu => branch,
                    _ => r::elementwise::add_forward(&shortcut, &branch),
                }
            };
            if relu {
                r::elementwise::relu_forward(&out)
            } else {
                out
            }
        } else {
            match &node.op {
                Op::Conv2d { weight, bias, .. } => {
                    let s = graph.conv_shape(node, n).expect("a Conv2d node");
                    r::conv2d::conv2d_forward(&s, &x, p(*weight), bias.map(|b| p(b).as_slice()))
                }
                Op::BatchNorm {
                    weight,
                    bias,
                    state,
                    relu,
                } => {
                    let (rm, rv) = &model.bn[*state];
                    let layer = r::batchnorm::Layer {
                        gamma: p(*weight),
                        beta: p(*bias),
                        running_mean: rm,
                        running_var: rv,
                        eps: EPS,
                        momentum: MOMENTUM,
                        relu: *relu,
                    };
                    match mode {
                        Mode::Train => {
                            let t = r::batchnorm::train_forward(&x, xs, &layer);
                            bn_out[*state] = (t.running_mean, t.running_var);
                            t.y
                        }
                        Mode::Eval => r::batchnorm::eval_forward(&x, xs, &layer),
                    }
                }
                Op::Relu => r::elementwise::relu_forward(&x),
                Op::Add { relu } => {
                    let y = r::elementwise::add_forward(&x, &vals.get(node.inputs[1]));
                    if *relu {
                        r::elementwise::relu_forward(&y)
                    } else {
                        y
                    }
                }
                Op::Sigmoid => r::elementwise::sigmoid_forward(&x),
                Op::Highway => r::elementwise::highway_forward(
                    &x,
                    &vals.get(node.inputs[1]),
                    &vals.get(node.inputs[2]),
                ),
                Op::ShortcutA { stride } => {
                    r::shortcut::shortcut_forward(&x, xs, graph.shape(node.output).c, *stride)
                }
                Op::Copy => x,
                Op::AvgPool2x2 => r::pool::avg_pool2x2_forward(&x, xs),
                Op::MaxPool3x3s2 => r::pool::max_pool3x3s2_forward(&x, xs).0,
                Op::GlobalAvgPool => r::pool::global_avg_pool_forward(&x, xs),
                Op::Linear { weight, bias } => {
                    let fin = xs[1] * xs[2] * xs[3];
                    let fout = graph.shape(node.output).c;
                    r::linear::linear_forward(&x, p(*weight), Some(p(*bias)), n, fin, fout)
                }
            }
        };
        vals.set(node.output, y);
    }
    let all = (0..graph.values.len())
        .map(|v| vals.get(ValueId(v)))
        .collect();
    Ok((all, bn_out))
}

/// Mean cross-entropy of the graph's scores against `labels`.
pub fn loss(
    graph: &Graph,
    model: &CpuModel,
    input: &[f64],
    labels: &[u32],
    mode: Mode,
    step: &CpuStep,
) -> Result<f64> {
    let n = labels.len();
    let (values, _) = forward(graph, model, input, n, mode, step)?;
    let k = graph.shape(graph.output).c;
    Ok(r::loss::softmax_cross_entropy_loss(
        &values[graph.output.0],
        labels,
        n,
        k,
    ))
}

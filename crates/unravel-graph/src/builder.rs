//! Records a [`Graph`]: ops with shape inference, PyTorch-style names from a
//! scope stack, and residual units and dense blocks as named blocks.

use crate::error::{GraphError, Result};
use crate::ir::*;

/// How a residual block merges its shortcut and branch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Merge {
    /// y = s + F(x) (pre-activation units).
    Add,
    /// y = relu(s + F(x)) (the original ResNet units).
    AddRelu,
    /// y = T * F(x) + (1 - T) * s with T = sigmoid(conv1x1(s) + b), b
    /// initialised to `gate_bias` (negative: start close to the shortcut).
    Highway { gate_bias: f32 },
    /// y = relu(F(x)): no shortcut at all (a plain network, for the lesion
    /// comparison); the shortcut is only what replaces a deleted block.
    Plain,
}

/// A convolution layer, as PyTorch's `nn.Conv2d` describes it (the input
/// channels come from the input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub out_channels: usize,
    /// K of a K x K kernel.
    pub kernel: usize,
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    pub groups: usize,
    /// A learned bias per output channel (off where a batch norm follows).
    pub bias: bool,
}

impl Conv2d {
    /// `kernel` x `kernel`, stride 1, padding `kernel / 2` (the same size
    /// out as in for odd kernels), one group, no bias.
    pub fn new(out_channels: usize, kernel: usize) -> Conv2d {
        Conv2d {
            out_channels,
            kernel,
            stride: 1,
            padding: kernel / 2,
            groups: 1,
            bias: false,
        }
    }

    pub fn stride(self, stride: usize) -> Conv2d {
        Conv2d { stride, ..self }
    }

    pub fn padding(self, padding: usize) -> Conv2d {
        Conv2d { padding, ..self }
    }

    pub fn groups(self, groups: usize) -> Conv2d {
        Conv2d { groups, ..self }
    }

    pub fn with_bias(self) -> Conv2d {
        Conv2d { bias: true, ..self }
    }
}

pub struct GraphBuilder {
    graph: Graph,
    scope: Vec<String>,
    open_blocks: Vec<BlockId>,
    /// Parameter names taken so far (a scan of `graph.params` per new
    /// parameter made building quadratic in depth).
    param_names: std::collections::HashSet<String>,
}

impl GraphBuilder {
    /// A graph whose input is one sample of `input`.
    pub fn new(input: Shape) -> GraphBuilder {
        let graph = Graph {
            values: vec![Value {
                shape: input,
                storage: Storage::Own,
                producer: None,
            }],
            nodes: Vec::new(),
            params: Vec::new(),
            bn_states: Vec::new(),
            blocks: Vec::new(),
            input: ValueId(0),
            output: ValueId(0),
        };
        GraphBuilder {
            graph,
            scope: Vec::new(),
            open_blocks: Vec::new(),
            param_names: std::collections::HashSet::new(),
        }
    }

    pub fn input(&self) -> ValueId {
        self.graph.input
    }

    pub fn shape(&self, v: ValueId) -> Shape {
        self.graph.shape(v)
    }

    /// Finishes the graph with `output` (the logits).
    pub fn finish(mut self, output: ValueId) -> Graph {
        self.graph.output = output;
        self.graph
    }

    /// Records `f` with `name` appended to the naming scope.
    pub fn scoped<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.scope.push(name.to_string());
        let out = f(self);
        self.scope.pop();
        out
    }

    fn qualified(&self, local: &str) -> String {
        let mut parts: Vec<&str> = self.scope.iter().map(String::as_str).collect();
        if !local.is_empty() {
            parts.push(local);
        }
        parts.join(".")
    }

    fn param(
        &mut self,
        node: &str,
        local: &str,
        shape: Vec<usize>,
        init: Init,
        decay: bool,
    ) -> Result<ParamId> {
        let name = format!("{node}.{local}");
        if !self.param_names.insert(name.clone()) {
            return Err(GraphError::DuplicateName(name));
        }
        self.graph.params.push(Param {
            name,
            shape,
            init,
            decay,
        });
        Ok(ParamId(self.graph.params.len() - 1))
    }

    fn push(&mut self, name: String, op: Op, inputs: Vec<ValueId>, shape: Shape) -> ValueId {
        let node = NodeId(self.graph.nodes.len());
        let output = ValueId(self.graph.values.len());
        self.graph.values.push(Value {
            shape,
            storage: Storage::Own,
            producer: Some(node),
        });
        let block = self.open_blocks.last().copied();
        self.graph.nodes.push(Node {
            name,
            op,
            inputs,
            output,
            block,
        });
        for b in &self.open_blocks {
            self.graph.blocks[b.0].nodes.push(node);
        }
        output
    }

    fn shape_error(name: &str, op: &'static str, message: String) -> GraphError {
        GraphError::Shape {
            node: name.to_string(),
            op,
            message,
        }
    }

    /// K x K convolution with PyTorch padding semantics.
    pub fn conv2d(&mut self, x: ValueId, name: &str, spec: Conv2d) -> Result<ValueId> {
        let Conv2d {
            out_channels: c_out,
            kernel,
            stride,
            padding: pad,
            groups,
            bias,
        } = spec;
        let name = self.qualified(name);
        let s = self.shape(x);
        if groups == 0 || !s.c.is_multiple_of(groups) || !c_out.is_multiple_of(groups) {
            return Err(Self::shape_error(
                &name,
                "conv2d",
                format!(
                    "{} input and {c_out} output channels do not split into {groups} groups",
                    s.c
                ),
            ));
        }
        if stride == 0 || s.h + 2 * pad < kernel || s.w + 2 * pad < kernel {
            return Err(Self::shape_error(
                &name,
                "conv2d",
                format!("a {kernel}x{kernel} kernel (stride {stride}, pad {pad}) does not fit input {s}"),
            ));
        }
        let out = Shape::new(
            c_out,
            (s.h + 2 * pad - kernel) / stride + 1,
            (s.w + 2 * pad - kernel) / stride + 1,
        );
        let fan_out = c_out * kernel * kernel;
        let weight = self.param(
            &name,
            "weight",
            vec![c_out, s.c / groups, kernel, kernel],
            Init::KaimingNormal { fan: fan_out },
            true,
        )?;
        let bias = if bias {
            let fan_in = s.c / groups * kernel * kernel;
            let bound = 1.0 / (fan_in as f32).sqrt();
            Some(self.param(&name, "bias", vec![c_out], Init::Uniform { bound }, false)?)
        } else {
            None
        };
        let op = Op::Conv2d {
            weight,
            bias,
            kernel,
            stride,
            pad,
            groups,
        };
        Ok(self.push(name, op, vec![x], out))
    }

    /// Batch norm over the channels of `x`, optionally fused with a ReLU.
    pub fn batchnorm(&mut self, x: ValueId, name: &str, relu: bool) -> Result<ValueId> {
        let name = self.qualified(name);
        let s = self.shape(x);
        let weight = self.param(&name, "weight", vec![s.c], Init::Constant(1.0), false)?;
        let bias = self.param(&name, "bias", vec![s.c], Init::Constant(0.0), false)?;
        self.graph.bn_states.push(BnState {
            prefix: name.clone(),
            channels: s.c,
        });
        let state = self.graph.bn_states.len() - 1;
        let op = Op::BatchNorm {
            weight,
            bias,
            state,
            relu,
        };
        Ok(self.push(name, op, vec![x], s))
    }

    pub fn relu(&mut self, x: ValueId, name: &str) -> Result<ValueId> {
        let name = self.qualified(name);
        let s = self.shape(x);
        Ok(self.push(name, Op::Relu, vec![x], s))
    }

    pub fn add(&mut self, a: ValueId, b: ValueId, name: &str, relu: bool) -> Result<ValueId> {
        let name = self.qualified(name);
        let (sa, sb) = (self.shape(a), self.shape(b));
        if sa != sb {
            return Err(Self::shape_error(
                &name,
                "add",
                format!("operands {sa} and {sb} differ"),
            ));
        }
        Ok(self.push(name, Op::Add { relu }, vec![a, b], sa))
    }

    pub fn sigmoid(&mut self, x: ValueId, name: &str) -> Result<ValueId> {
        let name = self.qualified(name);
        let s = self.shape(x);
        Ok(self.push(name, Op::Sigmoid, vec![x], s))
    }

    /// y = t * h + (1 - t) * x.
    pub fn highway(&mut self, t: ValueId, h: ValueId, x: ValueId, name: &str) -> Result<ValueId> {
        let name = self.qualified(name);
        let (st, sh, sx) = (self.shape(t), self.shape(h), self.shape(x));
        if st != sh || sh != sx {
            return Err(Self::shape_error(
                &name,
                "highway",
                format!("gate {st}, branch {sh} and shortcut {sx} must agree"),
            ));
        }
        Ok(self.push(name, Op::Highway, vec![t, h, x], sx))
    }

    /// Option A shortcut to `c_out` channels with stride `stride`.
    pub fn shortcut_a(
        &mut self,
        x: ValueId,
        name: &str,
        c_out: usize,
        stride: usize,
    ) -> Result<ValueId> {
        let name = self.qualified(name);
        let s = self.shape(x);
        if c_out < s.c || stride == 0 {
            return Err(Self::shape_error(
                &name,
                "shortcut-a",
                format!("cannot map {s} to {c_out} channels with stride {stride}"),
            ));
        }
        let out = Shape::new(c_out, s.h.div_ceil(stride), s.w.div_ceil(stride));
        Ok(self.push(name, Op::ShortcutA { stride }, vec![x], out))
    }

    pub fn avgpool2x2(&mut self, x: ValueId, name: &str) -> Result<ValueId> {
        let name = self.qualified(name);
        let s = self.shape(x);
        if s.h < 2 || s.w < 2 {
            return Err(Self::shape_error(
                &name,
                "avgpool2x2",
                format!("input {s} is smaller than 2x2"),
            ));
        }
        Ok(self.push(
            name,
            Op::AvgPool2x2,
            vec![x],
            Shape::new(s.c, s.h / 2, s.w / 2),
        ))
    }

    /// 3x3 max pooling, stride 2, padding 1 (the ImageNet stem).
    pub fn maxpool3x3s2(&mut self, x: ValueId, name: &str) -> Result<ValueId> {
        let name = self.qualified(name);
        let s = self.shape(x);
        let out = Shape::new(s.c, (s.h - 1) / 2 + 1, (s.w - 1) / 2 + 1);
        Ok(self.push(name, Op::MaxPool3x3s2, vec![x], out))
    }

    pub fn global_avgpool(&mut self, x: ValueId, name: &str) -> Result<ValueId> {
        let name = self.qualified(name);
        let s = self.shape(x);
        Ok(self.push(name, Op::GlobalAvgPool, vec![x], Shape::new(s.c, 1, 1)))
    }

    /// Fully connected layer over all of `x`'s elements.
    pub fn linear(&mut self, x: ValueId, name: &str, out: usize) -> Result<ValueId> {
        let name = self.qualified(name);
        let input = self.shape(x).numel();
        let bound = 1.0 / (input as f32).sqrt();
        let weight = self.param(
            &name,
            "weight",
            vec![out, input],
            Init::Uniform { bound },
            true,
        )?;
        let bias = self.param(&name, "bias", vec![out], Init::Uniform { bound }, false)?;
        Ok(self.push(
            name,
            Op::Linear { weight, bias },
            vec![x],
            Shape::new(out, 1, 1),
        ))
    }

    /// A residual block named by the current scope: `branch` and `shortcut`
    /// are recorded from `x`, then merged. The branch's nodes (and a highway
    /// gate's) belong to the block, so it can be switched off by name.
    pub fn residual(
        &mut self,
        x: ValueId,
        stage: usize,
        merge: Merge,
        shortcut: impl FnOnce(&mut Self, ValueId) -> Result<ValueId>,
        branch: impl FnOnce(&mut Self, ValueId) -> Result<ValueId>,
    ) -> Result<ValueId> {
        let name = self.qualified("");
        // The shortcut is recorded outside the block: it runs when the
        // block is dropped.
        let s = shortcut(self, x)?;
        let id = BlockId(self.graph.blocks.len());
        self.graph.blocks.push(Block {
            name: name.clone(),
            stage,
            kind: BlockKind::Dense {
                layers: 0,
                growth: 0,
            },
            input: x,
            output: x,
            nodes: Vec::new(),
        });
        self.open_blocks.push(id);
        let recorded = (|| {
            let h = branch(self, x)?;
            let gate = match merge {
                Merge::Highway { gate_bias } => {
                    let c = self.shape(s).c;
                    let z = self.conv2d(s, "gate", Conv2d::new(c, 1).with_bias())?;
                    // conv2d recorded its bias last; the gate starts
                    // mostly closed (carrying the shortcut), as in the
                    // Highway Networks paper.
                    let bias = self.graph.params.len() - 1;
                    self.graph.params[bias].init = Init::Constant(gate_bias);
                    Some(self.sigmoid(z, "gate_sigmoid")?)
                }
                _ => None,
            };
            Ok::<_, GraphError>((h, gate))
        })();
        self.open_blocks.pop();
        let (h, gate) = recorded?;
        let y = match (merge, gate) {
            (Merge::Highway { .. }, Some(t)) => self.highway(t, h, s, "merge")?,
            (Merge::AddRelu, _) => self.add(s, h, "merge", true)?,
            (Merge::Plain, _) => {
                // The shortcut rides along as an unused input so that it
                // stays alive for the moment the block is deleted.
                let name = self.qualified("merge");
                let shape = self.shape(h);
                self.push(name, Op::Relu, vec![h, s], shape)
            }
            _ => self.add(s, h, "merge", false)?,
        };
        let merge_id = self.graph.value(y).producer.expect("merge node");
        let downsampling = self.shape(y) != self.shape(x);
        let block = &mut self.graph.blocks[id.0];
        block.kind = BlockKind::Residual {
            merge: merge_id,
            branch_output: h,
            shortcut: s,
            downsampling,
        };
        block.output = y;
        Ok(y)
    }

    /// A dense block named by the current scope: one buffer of
    /// C_in + layers * growth channels; `x` is copied to its first channels
    /// and layer i reads channels 0..C_in + i * growth and writes its growth
    /// channels straight into the next slice (no per-layer concatenation).
    pub fn dense_block(
        &mut self,
        x: ValueId,
        stage: usize,
        layers: usize,
        growth: usize,
        mut layer: impl FnMut(&mut Self, ValueId, usize) -> Result<ValueId>,
    ) -> Result<ValueId> {
        let name = self.qualified("");
        let s = self.shape(x);
        let total = Shape::new(s.c + layers * growth, s.h, s.w);
        let concat = ValueId(self.graph.values.len());
        self.graph.values.push(Value {
            shape: total,
            storage: Storage::Own,
            producer: None,
        });
        let id = BlockId(self.graph.blocks.len());
        self.graph.blocks.push(Block {
            name: name.clone(),
            stage,
            kind: BlockKind::Dense { layers, growth },
            input: x,
            output: concat,
            nodes: Vec::new(),
        });
        self.open_blocks.push(id);
        let result = (|| {
            let first = self.push(self.qualified("input"), Op::Copy, vec![x], s);
            self.graph.values[first.0].storage = Storage::ChannelsOf {
                parent: concat,
                c0: 0,
            };
            for i in 0..layers {
                let c_in = s.c + i * growth;
                let prefix = self.view(concat, 0, c_in);
                let out = self.scoped(&format!("denselayer{}", i + 1), |b| layer(b, prefix, i))?;
                let got = self.shape(out);
                if got != Shape::new(growth, s.h, s.w) {
                    return Err(Self::shape_error(
                        &self.qualified(&format!("denselayer{}", i + 1)),
                        "dense layer",
                        format!("produced {got}, the block needs {growth}x{}x{}", s.h, s.w),
                    ));
                }
                let v = &self.graph.values[out.0];
                if v.producer.is_none() || v.storage != Storage::Own {
                    return Err(Self::shape_error(
                        &self.qualified(&format!("denselayer{}", i + 1)),
                        "dense layer",
                        "must end with a new value, not its input or a view".into(),
                    ));
                }
                self.graph.values[out.0].storage = Storage::ChannelsOf {
                    parent: concat,
                    c0: c_in,
                };
            }
            Ok(())
        })();
        self.open_blocks.pop();
        result?;
        Ok(concat)
    }

    /// A value aliasing channels c0..c1 of `parent`.
    fn view(&mut self, parent: ValueId, c0: usize, c1: usize) -> ValueId {
        let p = self.shape(parent);
        self.graph.values.push(Value {
            shape: Shape::new(c1 - c0, p.h, p.w),
            storage: Storage::ChannelsOf { parent, c0 },
            producer: None,
        });
        ValueId(self.graph.values.len() - 1)
    }
}

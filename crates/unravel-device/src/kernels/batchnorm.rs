//! Batch normalisation (`shaders/batchnorm.wgsl`) with PyTorch BatchNorm2d
//! semantics and an optional fused ReLU: training forward, eval forward and
//! the training backward.
//!
//! Shape legend: x, y, dy, dx are NCHW views [N, C, H, W] (any may be a
//! channel slice of a larger buffer, e.g. the prefix of a DenseNet
//! concatenation); gamma, beta, running_mean, running_var, dgamma, dbeta are
//! [C]; saved is [2, C] = (batch mean, 1 / sqrt(biased var + eps)).
//!
//! Each direction is two passes over the data: a reduction with several
//! workgroups per channel writing partial statistics to a scratch buffer,
//! then an element-wise pass whose workgroups each merge their channel's
//! partials first (the per-channel finalisation costs no extra dispatch).
//! When H*W and every view's offset and stride are multiples of 4 the
//! kernels move vec4s: lavapipe issues storage loads lane by lane, so a vec4
//! per lane moves four times the data per load.

use crate::context::Gpu;
use crate::dispatch::Dispatch;
use crate::error::{shape_error, Result};
use crate::kernels::checks;
use crate::tensor::Tensor;

const FILE: &str = "batchnorm.wgsl";
/// Threads per workgroup (`WG` in the shader). Small on purpose: lavapipe
/// pays per 8-lane block at every barrier, so fewer threads with more units
/// each beat 256 threads on small channels (measured: the statistics pass on
/// 64x64x8x8 went from ~630 to ~280 us).
const GROUP: usize = 64;
/// Units (vec4s or scalars) each thread handles per pass, at most. On CPU
/// adapters every workgroup has a fixed cost (lavapipe switches through its
/// invocation blocks at each barrier) and two cores need few workgroups, so
/// chunks are long; a GPU needs many workgroups in flight.
const UNITS_PER_THREAD_CPU: usize = 64;
const UNITS_PER_THREAD_GPU: usize = 8;
/// Threads that step through memory together (`LANES` in the shader).
const LANES: usize = 8;

/// NCHW extent of a batch-norm operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchNormShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl BatchNormShape {
    fn dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
}

/// Hyper-parameters, PyTorch's defaults by [`Default`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    pub eps: f32,
    /// r = (1 - momentum) * r + momentum * batch statistic.
    pub momentum: f32,
    /// Apply ReLU to the output (the backward then needs the output y).
    pub relu: bool,
    /// Whether the training forward updates the running statistics (off
    /// for a forward that only measures: an evaluation or an analysis on a
    /// training plan).
    pub update_running: bool,
    /// Normalise with the running statistics in the training forward and
    /// hold them constant in backward (PyTorch's BatchNorm2d in eval mode
    /// under autograd): the forward is one dispatch, saves them as (mean,
    /// invstd) and updates nothing; backward's dx = gamma * invstd * dy.
    pub frozen_stats: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig {
            eps: 1e-5,
            momentum: 0.1,
            relu: false,
            update_running: true,
            frozen_stats: false,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    units: u32,
    per_chunk: u32,
    chunks: u32,
    step_n: u32,
    step_k: u32,
    relu: u32,
    count: f32,
    eps: f32,
    momentum: f32,
    inv_units: f32,
    /// (offset, batch stride) in units of x, y, dy, dx.
    views: [[u32; 2]; 4],
    /// Offsets of gamma, beta, running_mean, running_var, saved, dgamma, dbeta.
    vec_offs: [u32; 7],
    update_running: u32,
}

/// How one channel's elements are split among workgroups.
struct Plan {
    /// Elements per unit: 4 (vec4 entry points) or 1.
    vec: usize,
    units: usize,
    chunks: usize,
    per_chunk: usize,
}

impl Plan {
    fn new(gpu: &Gpu, s: &BatchNormShape, views: &[&Tensor]) -> Plan {
        let hw = s.h * s.w;
        let aligned = hw.is_multiple_of(4)
            && views
                .iter()
                .all(|t| t.offset().is_multiple_of(4) && t.batch_stride().is_multiple_of(4));
        let vec = if aligned { 4 } else { 1 };
        let units = hw / vec;
        let per_channel = s.n * units;
        let per_thread = if gpu.is_cpu() {
            UNITS_PER_THREAD_CPU
        } else {
            UNITS_PER_THREAD_GPU
        };
        let chunks = per_channel.div_ceil(GROUP * per_thread).max(1);
        let per_chunk = per_channel.div_ceil(chunks).div_ceil(GROUP) * GROUP;
        Plan {
            vec,
            units,
            chunks,
            per_chunk,
        }
    }

    fn entry(&self, name: &'static str, name4: &'static str) -> &'static str {
        if self.vec == 4 {
            name4
        } else {
            name
        }
    }

    fn grid(&self, s: &BatchNormShape) -> [u32; 3] {
        [self.chunks as u32, s.c as u32, 1]
    }
}

/// The tensors one dispatch binds, in binding order (x, y, dy, dx, gamma,
/// beta, running_mean, running_var, saved, part, dgamma, dbeta); operands an
/// entry point does not use are filled with `x`.
#[derive(Clone, Copy)]
struct Operands<'a> {
    x: &'a Tensor,
    y: Option<&'a Tensor>,
    dy: Option<&'a Tensor>,
    dx: Option<&'a Tensor>,
    gamma: &'a Tensor,
    beta: Option<&'a Tensor>,
    running_mean: Option<&'a Tensor>,
    running_var: Option<&'a Tensor>,
    saved: Option<&'a Tensor>,
    part: Option<&'a Tensor>,
    dgamma: Option<&'a Tensor>,
    dbeta: Option<&'a Tensor>,
}

impl<'a> Operands<'a> {
    fn new(x: &'a Tensor, gamma: &'a Tensor) -> Self {
        Operands {
            x,
            y: None,
            dy: None,
            dx: None,
            gamma,
            beta: None,
            running_mean: None,
            running_var: None,
            saved: None,
            part: None,
            dgamma: None,
            dbeta: None,
        }
    }

    fn list(&self) -> [&'a Tensor; 12] {
        let x = self.x;
        [
            x,
            self.y.unwrap_or(x),
            self.dy.unwrap_or(x),
            self.dx.unwrap_or(x),
            self.gamma,
            self.beta.unwrap_or(x),
            self.running_mean.unwrap_or(x),
            self.running_var.unwrap_or(x),
            self.saved.unwrap_or(x),
            self.part.unwrap_or(x),
            self.dgamma.unwrap_or(x),
            self.dbeta.unwrap_or(x),
        ]
    }

    fn params(&self, s: &BatchNormShape, cfg: &BatchNormConfig, plan: &Plan) -> Params {
        let unit_view = |t: Option<&Tensor>| {
            let [off, stride] = t.unwrap_or(self.x).view_params();
            [off / plan.vec as u32, stride / plan.vec as u32]
        };
        let off = |t: Option<&Tensor>| t.map_or(0, |t| t.offset() as u32);
        Params {
            n: s.n as u32,
            c: s.c as u32,
            units: plan.units as u32,
            per_chunk: plan.per_chunk as u32,
            chunks: plan.chunks as u32,
            step_n: (LANES / plan.units) as u32,
            step_k: (LANES % plan.units) as u32,
            relu: cfg.relu as u32,
            count: (s.n * s.h * s.w) as f32,
            eps: cfg.eps,
            momentum: cfg.momentum,
            inv_units: 1.0 / plan.units as f32,
            views: [
                unit_view(Some(self.x)),
                unit_view(self.y),
                unit_view(self.dy),
                unit_view(self.dx),
            ],
            vec_offs: [
                off(Some(self.gamma)),
                off(self.beta),
                off(self.running_mean),
                off(self.running_var),
                off(self.saved),
                off(self.dgamma),
                off(self.dbeta),
            ],
            update_running: cfg.update_running as u32,
        }
    }

    fn dispatch(
        &self,
        gpu: &Gpu,
        entry: &'static str,
        s: &BatchNormShape,
        cfg: &BatchNormConfig,
        plan: &Plan,
    ) -> Result<Dispatch> {
        let params = self.params(s, cfg, plan);
        // Only the frozen pipelines differ; the rest keep the default.
        let frozen = [("FROZEN_STATS", 1.0)];
        let constants: &[(&str, f64)] = if cfg.frozen_stats { &frozen } else { &[] };
        gpu.dispatch_with(FILE, entry, constants, &params, &self.list(), plan.grid(s))
    }
}

fn check_shape(op: &'static str, s: &BatchNormShape) -> Result<()> {
    if s.n == 0 || s.c == 0 || s.h == 0 || s.w == 0 {
        return Err(shape_error(op, format!("empty shape {:?}", s.dims())));
    }
    if s.c > 65535 {
        return Err(shape_error(op, format!("{} channels exceed 65535", s.c)));
    }
    // The shader splits unit indices through f32 and counts in f32.
    if s.n * s.h * s.w >= 1 << 24 {
        return Err(shape_error(
            op,
            format!("{} values per channel exceed 2^24", s.n * s.h * s.w),
        ));
    }
    Ok(())
}

/// A batch-norm layer's tensors, [C] each: PyTorch's weight (gamma), bias
/// (beta) and running statistics.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormLayer<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
}

impl BatchNormLayer<'_> {
    fn check(&self, op: &'static str, c: usize) -> Result<()> {
        for (what, t) in [
            ("gamma", self.gamma),
            ("beta", self.beta),
            ("running_mean", self.running_mean),
            ("running_var", self.running_var),
        ] {
            checks::contiguous(op, what, t, &[c])?;
        }
        Ok(())
    }
}

/// A training forward's activations: `x` in, `y` out (y may be x), and
/// `saved` [2, C], where the batch's (mean, 1/std) are kept for backward.
#[derive(Clone, Copy, Debug)]
pub struct TrainActivations<'a> {
    pub x: &'a Tensor,
    pub saved: &'a Tensor,
    pub y: &'a Tensor,
}

impl TrainActivations<'_> {
    fn check(&self, op: &'static str, s: &BatchNormShape) -> Result<()> {
        checks::activation(op, "x", self.x, &s.dims())?;
        checks::activation(op, "y", self.y, &s.dims())?;
        checks::contiguous(op, "saved", self.saved, &[2, s.c])
    }
}

/// Training-mode forward: normalises x with its batch statistics into y,
/// updates the layer's running statistics in place (running_var with the
/// unbiased variance) unless `cfg.update_running` is off, and saves (mean,
/// invstd) for [`batchnorm_backward`]. Two dispatches; with
/// `cfg.frozen_stats` one, normalising with the running statistics.
pub fn batchnorm_train_forward(
    gpu: &Gpu,
    s: &BatchNormShape,
    cfg: &BatchNormConfig,
    layer: &BatchNormLayer,
    io: &TrainActivations,
) -> Result<Vec<Dispatch>> {
    train_forward(gpu, s, cfg, layer, io, None)
}

/// [`batchnorm_train_forward`] fused with the residual merge that follows
/// it: y = max(bn(x) + residual, 0) (`cfg.relu` must be off: the ReLU comes
/// after the sum). The normalised x itself is not stored; backward needs
/// only x, `saved` and the gradient the merge passes back. Two dispatches.
pub fn batchnorm_train_forward_add_relu(
    gpu: &Gpu,
    s: &BatchNormShape,
    cfg: &BatchNormConfig,
    layer: &BatchNormLayer,
    io: &TrainActivations,
    residual: &Tensor,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "batchnorm_train_forward_add_relu";
    if cfg.relu {
        return Err(shape_error(
            OP,
            "the ReLU follows the sum: cfg.relu must be off",
        ));
    }
    checks::activation(OP, "residual", residual, &s.dims())?;
    train_forward(gpu, s, cfg, layer, io, Some(residual))
}

fn train_forward(
    gpu: &Gpu,
    s: &BatchNormShape,
    cfg: &BatchNormConfig,
    layer: &BatchNormLayer,
    io: &TrainActivations,
    residual: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "batchnorm_train_forward";
    check_shape(OP, s)?;
    if s.n * s.h * s.w < 2 && !cfg.frozen_stats {
        // PyTorch refuses too: the unbiased variance of one value is undefined.
        return Err(shape_error(
            OP,
            "training needs more than 1 value per channel",
        ));
    }
    io.check(OP, s)?;
    layer.check(OP, s.c)?;
    let views: Vec<&Tensor> = [Some(io.x), Some(io.y), residual]
        .into_iter()
        .flatten()
        .collect();
    let plan = Plan::new(gpu, s, &views);
    let part = gpu.zeros(&[s.c * plan.chunks * 4])?;
    let ops = Operands {
        y: Some(io.y),
        dy: residual,
        beta: Some(layer.beta),
        running_mean: Some(layer.running_mean),
        running_var: Some(layer.running_var),
        saved: Some(io.saved),
        part: Some(&part),
        ..Operands::new(io.x, layer.gamma)
    };
    let apply = match residual {
        None => plan.entry("bn_apply_train", "bn_apply_train4"),
        Some(_) => plan.entry("bn_apply_train_add", "bn_apply_train_add4"),
    };
    let apply = ops.dispatch(gpu, apply, s, cfg, &plan)?;
    if cfg.frozen_stats {
        return Ok(vec![apply]);
    }
    Ok(vec![
        ops.dispatch(gpu, plan.entry("bn_stats", "bn_stats4"), s, cfg, &plan)?,
        apply,
    ])
}

/// Eval-mode forward with the layer's running statistics (y may be x). One
/// dispatch.
pub fn batchnorm_eval_forward(
    gpu: &Gpu,
    s: &BatchNormShape,
    cfg: &BatchNormConfig,
    layer: &BatchNormLayer,
    x: &Tensor,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "batchnorm_eval_forward";
    check_shape(OP, s)?;
    checks::activation(OP, "x", x, &s.dims())?;
    checks::activation(OP, "y", y, &s.dims())?;
    layer.check(OP, s.c)?;
    let ops = Operands {
        running_mean: Some(layer.running_mean),
        running_var: Some(layer.running_var),
        ..Operands::new(x, layer.gamma)
    };
    normalise_only(
        gpu,
        s,
        cfg,
        ops,
        layer.beta,
        y,
        ("bn_apply_eval", "bn_apply_eval4"),
    )
}

/// The evaluation forward folded into coefficients: `scale_shift` [2, C]
/// gets scale = gamma / sqrt(running_var + eps) and shift = beta -
/// running_mean * scale, so that a convolution's epilogue (`Conv2dEpilogue::
/// Affine`) computes what [`batchnorm_eval_forward`] would from its output,
/// without the pass over it. One dispatch.
pub fn batchnorm_fold(
    gpu: &Gpu,
    cfg: &BatchNormConfig,
    layer: &BatchNormLayer,
    scale_shift: &Tensor,
) -> Result<Dispatch> {
    const OP: &str = "batchnorm_fold";
    let c = layer.gamma.shape().iter().product::<usize>();
    layer.check(OP, c)?;
    checks::contiguous(OP, "scale_shift", scale_shift, &[2, c])?;
    let s = BatchNormShape {
        n: 1,
        c,
        h: 1,
        w: 1,
    };
    let ops = Operands {
        beta: Some(layer.beta),
        running_mean: Some(layer.running_mean),
        running_var: Some(layer.running_var),
        saved: Some(scale_shift),
        ..Operands::new(layer.gamma, layer.gamma)
    };
    let plan = Plan::new(gpu, &s, &[]);
    gpu.dispatch(
        FILE,
        "bn_fold_eval",
        &ops.params(&s, cfg, &plan),
        &ops.list(),
        [1, c as u32, 1],
    )
}

/// The one-pass normalisations with known statistics (eval, recompute):
/// `ops` names where the statistics come from.
fn normalise_only(
    gpu: &Gpu,
    s: &BatchNormShape,
    cfg: &BatchNormConfig,
    ops: Operands,
    beta: &Tensor,
    y: &Tensor,
    (scalar, vec4): (&'static str, &'static str),
) -> Result<Vec<Dispatch>> {
    let plan = Plan::new(gpu, s, &[ops.x, y]);
    let ops = Operands {
        y: Some(y),
        beta: Some(beta),
        ..ops
    };
    Ok(vec![ops.dispatch(
        gpu,
        plan.entry(scalar, vec4),
        s,
        cfg,
        &plan,
    )?])
}

/// Recomputes a training forward's output y from x and its saved (mean,
/// 1/std) with the layer's gamma and beta; the running statistics are
/// neither read nor touched. y is bit-for-bit what
/// [`batchnorm_train_forward`] wrote. One dispatch.
pub fn batchnorm_apply_saved(
    gpu: &Gpu,
    s: &BatchNormShape,
    cfg: &BatchNormConfig,
    layer: &BatchNormLayer,
    io: &TrainActivations,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "batchnorm_apply_saved";
    check_shape(OP, s)?;
    io.check(OP, s)?;
    checks::contiguous(OP, "gamma", layer.gamma, &[s.c])?;
    checks::contiguous(OP, "beta", layer.beta, &[s.c])?;
    let ops = Operands {
        saved: Some(io.saved),
        ..Operands::new(io.x, layer.gamma)
    };
    normalise_only(
        gpu,
        s,
        cfg,
        ops,
        layer.beta,
        io.y,
        ("bn_apply_saved", "bn_apply_saved4"),
    )
}

/// What a batch norm's backward reads and writes: the forward's input `x`
/// and (with a fused ReLU) output `y`, its saved (mean, 1/std), the output
/// gradient `dy`, the input gradient `dx` (which may be dy) and the
/// parameter gradients `dgamma`, `dbeta` (overwritten, not accumulated).
#[derive(Clone, Copy, Debug)]
pub struct BackwardOperands<'a> {
    pub x: &'a Tensor,
    pub y: Option<&'a Tensor>,
    pub saved: &'a Tensor,
    pub dy: &'a Tensor,
    pub dx: &'a Tensor,
    pub dgamma: &'a Tensor,
    pub dbeta: &'a Tensor,
}

/// Backward of [`batchnorm_train_forward`] (batch statistics depend on x,
/// unless `cfg.frozen_stats` held the running ones constant) with the
/// layer's `gamma`: see [`BackwardOperands`]; with `cfg.relu` the forward
/// output y is required and dy is masked by y > 0. Two dispatches.
pub fn batchnorm_backward(
    gpu: &Gpu,
    s: &BatchNormShape,
    cfg: &BatchNormConfig,
    gamma: &Tensor,
    ops: &BackwardOperands,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "batchnorm_backward";
    let BackwardOperands {
        x,
        y,
        saved,
        dy,
        dx,
        dgamma,
        dbeta,
    } = *ops;
    check_shape(OP, s)?;
    checks::activation(OP, "x", x, &s.dims())?;
    checks::activation(OP, "dy", dy, &s.dims())?;
    checks::activation(OP, "dx", dx, &s.dims())?;
    let y = match (cfg.relu, y) {
        (true, None) => return Err(shape_error(OP, "the fused ReLU needs the output y")),
        (true, Some(y)) => {
            checks::activation(OP, "y", y, &s.dims())?;
            Some(y)
        }
        (false, _) => None,
    };
    for (what, t) in [("gamma", gamma), ("dgamma", dgamma), ("dbeta", dbeta)] {
        checks::contiguous(OP, what, t, &[s.c])?;
    }
    checks::contiguous(OP, "saved", saved, &[2, s.c])?;
    let mut views = vec![x, dy, dx];
    views.extend(y);
    let plan = Plan::new(gpu, s, &views);
    let part = gpu.zeros(&[s.c * plan.chunks * 4])?;
    let ops = Operands {
        y,
        dy: Some(dy),
        dx: Some(dx),
        saved: Some(saved),
        part: Some(&part),
        dgamma: Some(dgamma),
        dbeta: Some(dbeta),
        ..Operands::new(x, gamma)
    };
    Ok(vec![
        ops.dispatch(
            gpu,
            plan.entry("bn_grad_stats", "bn_grad_stats4"),
            s,
            cfg,
            &plan,
        )?,
        ops.dispatch(
            gpu,
            plan.entry("bn_grad_apply", "bn_grad_apply4"),
            s,
            cfg,
            &plan,
        )?,
    ])
}

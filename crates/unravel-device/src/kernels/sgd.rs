//! SGD with momentum (`shaders/sgd.wgsl`), `torch.optim.SGD` semantics with
//! dampening 0, over whole parameter arenas in one dispatch.
//!
//! Shape legend: L = elements of the arena; D = `decay_len`, the leading
//! elements that get weight decay. Parameters, gradients and momentum live in
//! three flat f32 buffers of L elements each, laid out alike, so a single
//! dispatch steps every layer. The executor places BN and bias parameters
//! after the first D elements to exempt them from decay.
//!
//! PyTorch creates the momentum buffer as a copy of the first step's
//! gradient; here the buffer starts at zero (a fresh tensor from
//! [`Gpu::zeros`]) and v = momentum * 0 + g gives exactly the same value.

use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::{shape_error, Result};
use crate::tensor::{DType, Tensor};

const FILE: &str = "sgd.wgsl";
const GROUP: u32 = 256;

/// Hyper-parameters of one step, as in `torch.optim.SGD(lr=..,
/// momentum=.., weight_decay=.., nesterov=..)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    decay_len: u32,
    nesterov: u32,
    _pad0: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    _pad1: u32,
    p_off: u32,
    g_off: u32,
    m_off: u32,
    _pad2: u32,
}

/// A flat run of elements: contiguous, or a single row at any stride.
fn is_flat(t: &Tensor) -> bool {
    t.is_contiguous() || t.shape().first() == Some(&1)
}

/// Rejects what PyTorch rejects (negative values, Nesterov without
/// momentum) and non-finite values.
fn check_config(cfg: &SgdConfig) -> Result<()> {
    let values = [cfg.lr, cfg.momentum, cfg.weight_decay];
    if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(shape_error(
            "sgd_update",
            format!("lr, momentum and weight decay must be finite and >= 0: {cfg:?}"),
        ));
    }
    if cfg.nesterov && cfg.momentum == 0.0 {
        return Err(shape_error("sgd_update", "Nesterov needs momentum > 0"));
    }
    Ok(())
}

fn params(
    cfg: &SgdConfig,
    weights: &Tensor,
    grads: &Tensor,
    momentum_buf: &Tensor,
    decay_len: usize,
) -> Result<Params> {
    check_config(cfg)?;
    let len = weights.numel();
    for (what, t) in [
        ("params", weights),
        ("grads", grads),
        ("momentum", momentum_buf),
    ] {
        if t.dtype() != DType::F32 || t.numel() != len || !is_flat(t) {
            return Err(shape_error(
                "sgd_update",
                format!(
                    "{what} {:?} must be {len} contiguous f32 values like params {:?}",
                    t.shape(),
                    weights.shape()
                ),
            ));
        }
    }
    if decay_len > len {
        return Err(shape_error(
            "sgd_update",
            format!("decay_len {decay_len} exceeds the {len} parameters"),
        ));
    }
    Ok(Params {
        len: len as u32,
        decay_len: decay_len as u32,
        nesterov: cfg.nesterov as u32,
        _pad0: 0,
        lr: cfg.lr,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        _pad1: 0,
        p_off: weights.offset() as u32,
        g_off: grads.offset() as u32,
        m_off: momentum_buf.offset() as u32,
        _pad2: 0,
    })
}

/// One SGD step over the whole arena: updates `params` and `momentum_buf`
/// in place from `grads`; weight decay applies to the first `decay_len`
/// elements only. `momentum_buf` must start at zero.
pub fn sgd_update(
    gpu: &Gpu,
    cfg: &SgdConfig,
    params_buf: &Tensor,
    grads: &Tensor,
    momentum_buf: &Tensor,
    decay_len: usize,
) -> Result<Dispatch> {
    let p = params(cfg, params_buf, grads, momentum_buf, decay_len)?;
    let tensors = [params_buf, grads, momentum_buf];
    gpu.dispatch(
        FILE,
        "sgd_update",
        &p,
        &tensors,
        grid_1d(params_buf.numel(), GROUP),
    )
}

/// [`sgd_update`] on the gradients of a scaled loss (mixed precision): each
/// gradient is multiplied by 1 / scale first, and nothing changes (momentum
/// included) when the loss scaler's found_inf is raised; `scaler` is the
/// state tensor of [`crate::kernels::loss_scale`].
pub fn sgd_update_scaled(
    gpu: &Gpu,
    cfg: &SgdConfig,
    params_buf: &Tensor,
    grads: &Tensor,
    momentum_buf: &Tensor,
    decay_len: usize,
    scaler: &Tensor,
) -> Result<Dispatch> {
    let p = params(cfg, params_buf, grads, momentum_buf, decay_len)?;
    super::loss_scale::check_state(scaler)?;
    let tensors = [params_buf, grads, momentum_buf, scaler];
    let grid = grid_1d(params_buf.numel(), GROUP);
    gpu.dispatch(FILE, "sgd_update_scaled", &p, &tensors, grid)
}

/// Rewrites the hyper-parameters of a dispatch made by [`sgd_update`] (or
/// [`sgd_update_scaled`]) with
/// the same tensors and `decay_len` (e.g. a scheduled learning rate), without
/// rebuilding it. Takes effect for submissions made after this call.
pub fn sgd_set_config(
    gpu: &Gpu,
    dispatch: &Dispatch,
    cfg: &SgdConfig,
    params_buf: &Tensor,
    grads: &Tensor,
    momentum_buf: &Tensor,
    decay_len: usize,
) -> Result<()> {
    let p = params(cfg, params_buf, grads, momentum_buf, decay_len)?;
    let name = dispatch.kernel().name();
    if name != format!("{FILE}::sgd_update") && name != format!("{FILE}::sgd_update_scaled") {
        return Err(shape_error(
            "sgd_set_config",
            format!("{} is not an SGD dispatch", dispatch.kernel().name()),
        ));
    }
    dispatch.update_params(gpu, &p);
    Ok(())
}

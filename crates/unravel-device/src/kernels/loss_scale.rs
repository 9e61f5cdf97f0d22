//! Dynamic loss scaling (`shaders/loss_scale.wgsl`) for mixed precision,
//! with the semantics of PyTorch's `torch.amp.GradScaler`: the loss
//! gradient is multiplied by the scale, the optimiser divides it out
//! ([`crate::kernels::sgd::sgd_update_scaled`]) and skips a step whose
//! gradients hold an inf or a NaN; then the scale is halved after a skipped
//! step and doubled after `growth_interval` clean steps in a row. All of it
//! runs on the GPU inside the step's command buffer.
//!
//! Shape legend: L values (the logits' gradient, N x classes, or the
//! parameter-gradient arena); the state is 4 u32 words: scale (f32 bits),
//! clean steps since the scale last changed, skipped steps, found_inf.

use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::{shape_error, Result};
use crate::tensor::{DType, Tensor};

const FILE: &str = "loss_scale.wgsl";
const GROUP: u32 = 256;

/// GradScaler's settings; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaleConfig {
    pub init_scale: f32,
    pub growth_factor: f32,
    pub backoff_factor: f32,
    pub growth_interval: u32,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        LossScaleConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl LossScaleConfig {
    fn check(&self) -> Result<()> {
        let ok = self.init_scale.is_finite()
            && self.init_scale > 0.0
            && self.growth_factor.is_finite()
            && self.growth_factor > 1.0
            && self.backoff_factor > 0.0
            && self.backoff_factor < 1.0
            && self.growth_interval > 0;
        if !ok {
            return Err(shape_error(
                "loss_scale",
                format!("a finite positive scale, growth > 1, 0 < backoff < 1 and an interval >= 1: {self:?}"),
            ));
        }
        Ok(())
    }
}

/// The scaler's state as the host sees it (and a checkpoint stores it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaleState {
    pub scale: f32,
    /// Clean steps since the scale last changed.
    pub clean_steps: u32,
    /// Steps skipped since the run began.
    pub skipped_steps: u32,
}

impl LossScaleState {
    /// The state a run starts from.
    pub fn initial(config: &LossScaleConfig) -> Self {
        LossScaleState {
            scale: config.init_scale,
            clean_steps: 0,
            skipped_steps: 0,
        }
    }

    fn words(&self) -> [u32; 4] {
        [
            self.scale.to_bits(),
            self.clean_steps,
            self.skipped_steps,
            0,
        ]
    }

    /// The state from the 4 words of a state tensor.
    pub fn from_words(words: &[u32]) -> Result<Self> {
        match words {
            [scale, clean, skipped, _] => Ok(LossScaleState {
                scale: f32::from_bits(*scale),
                clean_steps: *clean,
                skipped_steps: *skipped,
            }),
            _ => Err(shape_error("loss_scale", "a state is 4 words")),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    off: u32,
    interval: u32,
    _pad0: u32,
    growth: f32,
    backoff: f32,
    _pad1: [u32; 2],
}

/// A state tensor holding `state` (4 u32 words).
pub fn state_tensor(gpu: &Gpu, state: &LossScaleState) -> Result<Tensor> {
    gpu.upload_u32(&state.words(), &[4])
}

/// Overwrites a state tensor (resuming a run).
pub fn write_state(gpu: &Gpu, tensor: &Tensor, state: &LossScaleState) -> Result<()> {
    check_state(tensor)?;
    gpu.queue().write_buffer(
        tensor.buffer(),
        tensor.offset() as u64 * 4,
        bytemuck::cast_slice(&state.words()),
    );
    Ok(())
}

/// Reads a state tensor back (blocking).
pub fn read_state(gpu: &Gpu, tensor: &Tensor) -> Result<LossScaleState> {
    check_state(tensor)?;
    LossScaleState::from_words(&gpu.read_u32(tensor)?)
}

/// `t` is a loss scaler's state: 4 contiguous u32 words.
pub(crate) fn check_state(t: &Tensor) -> Result<()> {
    if t.dtype() != DType::U32 || t.numel() != 4 || !t.is_contiguous() {
        return Err(shape_error(
            "loss_scale",
            format!(
                "the state must be 4 contiguous u32 words, not {:?}",
                t.shape()
            ),
        ));
    }
    Ok(())
}

fn values_params(op: &'static str, values: &Tensor, state: &Tensor) -> Result<Params> {
    check_state(state)?;
    if values.dtype() != DType::F32 || !values.is_contiguous() {
        return Err(shape_error(op, "the values must be contiguous f32"));
    }
    Ok(Params {
        len: values.numel() as u32,
        off: values.offset() as u32,
        interval: 0,
        _pad0: 0,
        growth: 0.0,
        backoff: 0.0,
        _pad1: [0; 2],
    })
}

/// values *= scale (the loss gradient, before backward).
pub fn apply_scale(gpu: &Gpu, values: &Tensor, state: &Tensor) -> Result<Dispatch> {
    let p = values_params("loss_scale_apply", values, state)?;
    let grid = grid_1d(values.numel(), GROUP);
    gpu.dispatch(FILE, "loss_scale_apply", &p, &[values, state], grid)
}

/// Raises the state's found_inf if any of `values` (the parameter
/// gradients, after backward) is an inf or a NaN.
pub fn check_finite(gpu: &Gpu, values: &Tensor, state: &Tensor) -> Result<Dispatch> {
    let p = values_params("loss_scale_check", values, state)?;
    let grid = grid_1d(values.numel(), GROUP);
    gpu.dispatch(FILE, "loss_scale_check", &p, &[values, state], grid)
}

/// After the optimiser: the new scale (halved after a skipped step,
/// multiplied by the growth factor after `growth_interval` clean steps),
/// and found_inf cleared.
pub fn update(gpu: &Gpu, config: &LossScaleConfig, state: &Tensor) -> Result<Dispatch> {
    config.check()?;
    check_state(state)?;
    let p = Params {
        len: 0,
        off: 0,
        interval: config.growth_interval,
        _pad0: 0,
        growth: config.growth_factor,
        backoff: config.backoff_factor,
        _pad1: [0; 2],
    };
    // Binding 1 is unused; the state fills it.
    gpu.dispatch(FILE, "loss_scale_update", &p, &[state, state], [1, 1, 1])
}

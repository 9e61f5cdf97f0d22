//! Softmax cross-entropy with the accuracy count (`shaders/loss.wgsl`).
//!
//! Shape legend: logits [N, K] (any [N, ...] whose rows hold K values, e.g.
//! [N, K, 1, 1]), labels [N] u32, loss one f32, correct one u32, dlogits like
//! logits. One dispatch of one workgroup does the whole batch, so the
//! training step needs no separate accuracy or reduction kernels.
//!
//! The loss is the batch mean of -log softmax(z)[label], computed from the
//! max-subtracted log-sum-exp so logits of any magnitude stay finite; the
//! gradient is (softmax(z) - onehot(label)) / N; `correct` counts samples
//! whose argmax (lowest index on ties) equals the label. A label >= K cannot
//! be caught on the host (labels live on the GPU): the kernel ignores that
//! sample, i.e. it adds 0 to the loss sum (the mean still divides by N), gets
//! a zero gradient row and counts as wrong.

use crate::context::Gpu;
use crate::dispatch::Dispatch;
use crate::error::{shape_error, Result};
use crate::tensor::{DType, Tensor};

const FILE: &str = "loss.wgsl";

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    k: u32,
    inv_n: f32,
    _pad0: u32,
    z: [u32; 2],
    g: [u32; 2],
    label_off: u32,
    loss_off: u32,
    correct_off: u32,
    _pad1: u32,
}

fn params(
    op: &'static str,
    logits: &Tensor,
    labels: &Tensor,
    loss: &Tensor,
    correct: &Tensor,
) -> Result<Params> {
    let shape = logits.shape();
    if logits.dtype() != DType::F32 || shape.len() < 2 || shape[0] == 0 || logits.sample_len() == 0
    {
        return Err(shape_error(
            op,
            format!("logits {shape:?} must be a non-empty f32 [N, K]"),
        ));
    }
    let (n, k) = (shape[0], logits.sample_len());
    if labels.dtype() != DType::U32 || labels.numel() != n || !labels.is_contiguous() {
        return Err(shape_error(
            op,
            format!(
                "labels {:?} must be {n} contiguous u32 values for logits {shape:?}",
                labels.shape()
            ),
        ));
    }
    if loss.dtype() != DType::F32 || loss.numel() != 1 {
        return Err(shape_error(
            op,
            format!("loss {:?} must be one f32", loss.shape()),
        ));
    }
    if correct.dtype() != DType::U32 || correct.numel() != 1 {
        return Err(shape_error(
            op,
            format!("correct {:?} must be one u32", correct.shape()),
        ));
    }
    Ok(Params {
        n: n as u32,
        k: k as u32,
        inv_n: 1.0 / n as f32,
        _pad0: 0,
        z: logits.view_params(),
        g: [0; 2],
        label_off: labels.offset() as u32,
        loss_off: loss.offset() as u32,
        correct_off: correct.offset() as u32,
        _pad1: 0,
    })
}

/// Mean loss into `loss`, the correct count into `correct` and the gradient
/// of the mean loss into `dlogits` (same shape as `logits`, may be a view).
/// All three are overwritten.
pub fn softmax_cross_entropy(
    gpu: &Gpu,
    logits: &Tensor,
    labels: &Tensor,
    loss: &Tensor,
    correct: &Tensor,
    dlogits: &Tensor,
) -> Result<Dispatch> {
    let op = "softmax_cross_entropy";
    let mut p = params(op, logits, labels, loss, correct)?;
    if dlogits.dtype() != DType::F32 || dlogits.shape() != logits.shape() {
        return Err(shape_error(
            op,
            format!(
                "dlogits {:?} must be f32 like logits {:?}",
                dlogits.shape(),
                logits.shape()
            ),
        ));
    }
    p.g = dlogits.view_params();
    gpu.dispatch(
        FILE,
        "softmax_cross_entropy",
        &p,
        &[logits, labels, loss, correct, dlogits],
        [1, 1, 1],
    )
}

/// Mean loss and correct count only, for evaluation.
pub fn softmax_cross_entropy_eval(
    gpu: &Gpu,
    logits: &Tensor,
    labels: &Tensor,
    loss: &Tensor,
    correct: &Tensor,
) -> Result<Dispatch> {
    let p = params("softmax_cross_entropy_eval", logits, labels, loss, correct)?;
    gpu.dispatch(
        FILE,
        "softmax_cross_entropy_eval",
        &p,
        &[logits, labels, loss, correct],
        [1, 1, 1],
    )
}

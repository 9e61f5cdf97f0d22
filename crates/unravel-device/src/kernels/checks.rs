//! Operand checks shared by the kernels' host functions: each names the op
//! and the operand that is wrong, and what was expected.

use crate::error::{shape_error, Result};
use crate::tensor::{DType, Tensor};

/// `t` holds `dtype` elements.
pub(crate) fn dtype(op: &'static str, what: &str, t: &Tensor, dtype: DType) -> Result<()> {
    if t.dtype() != dtype {
        return Err(shape_error(op, format!("{what} must be {}", dtype.name())));
    }
    Ok(())
}

/// `t` holds f32 or f16 elements (an activation or its gradient).
pub(crate) fn float(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(shape_error(op, format!("{what} must be f32 or f16")));
    }
    Ok(())
}

/// `t` is an f32 or f16 view (contiguous or a channel slice) of exactly
/// `shape`: an activation or its gradient.
pub(crate) fn activation(op: &'static str, what: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    float(op, what, t)?;
    view(op, what, t, t.dtype(), shape)
}

/// `t` is a view of `dtype` of exactly `shape`.
pub(crate) fn view(
    op: &'static str,
    what: &str,
    t: &Tensor,
    dtype: DType,
    shape: &[usize],
) -> Result<()> {
    self::dtype(op, what, t, dtype)?;
    if t.shape() != shape {
        return Err(shape_error(
            op,
            format!("{what} has shape {:?}, expected {shape:?}", t.shape()),
        ));
    }
    Ok(())
}

/// `t` is a contiguous f32 tensor of exactly `shape` (weights, biases,
/// per-channel vectors).
pub(crate) fn contiguous(op: &'static str, what: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    dtype(op, what, t, DType::F32)?;
    if t.shape() != shape || !t.is_contiguous() {
        return Err(shape_error(
            op,
            format!(
                "{what} must be a contiguous {shape:?}, got {:?}{}",
                t.shape(),
                if t.is_contiguous() { "" } else { " (strided)" }
            ),
        ));
    }
    Ok(())
}

//! Pooling nodes: forward and backward dispatches. Max pooling keeps its
//! argmax (u32, one per output) from forward for backward.
//!
//! Shape legend: x is N x C x H x W, y N x C x HO x WO (1 x 1 for global).

use std::collections::HashMap;

use unravel_device::kernels::pool::{self, PoolShape};
use unravel_device::{Dispatch, Gpu, Tensor};

use crate::error::{GraphError, Result};
use crate::ir::{NodeId, Op};

fn shape_of(x: &Tensor) -> PoolShape {
    let s = x.shape();
    PoolShape {
        n: s[0],
        c: s[1],
        h: s[2],
        w: s[3],
    }
}

pub(crate) fn forward(
    gpu: &Gpu,
    op: &Op,
    x: &Tensor,
    y: &Tensor,
    saved: &mut HashMap<NodeId, Tensor>,
    id: NodeId,
) -> Result<Vec<Dispatch>> {
    let s = shape_of(x);
    Ok(vec![match op {
        Op::AvgPool2x2 => pool::avg_pool2x2_forward(gpu, &s, x, y)?,
        Op::MaxPool3x3s2 => {
            let argmax = gpu.zeros_u32(y.shape())?;
            saved.insert(id, argmax.clone());
            pool::max_pool3x3s2_forward(gpu, &s, x, y, &argmax)?
        }
        Op::GlobalAvgPool => pool::global_avg_pool_forward(gpu, &s, x, y)?,
        other => {
            return Err(GraphError::Invalid(format!(
                "{} is not a pooling op",
                other.kind()
            )))
        }
    }])
}

pub(crate) fn backward(
    gpu: &Gpu,
    op: &Op,
    x: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    saved: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    let s = shape_of(x);
    Ok(vec![match (op, saved) {
        (Op::AvgPool2x2, _) => pool::avg_pool2x2_backward(gpu, &s, dy, dx)?,
        (Op::MaxPool3x3s2, Some(argmax)) => pool::max_pool3x3s2_backward(gpu, &s, dy, argmax, dx)?,
        (Op::GlobalAvgPool, _) => pool::global_avg_pool_backward(gpu, &s, dy, dx)?,
        (other, _) => {
            return Err(GraphError::Invalid(format!(
                "no backward for pooling op {}",
                other.kind()
            )))
        }
    }])
}

//! Element-wise kernels (`shaders/elementwise.wgsl`): ReLU, residual add,
//! gradient accumulation, scaling (stochastic depth's test-time rule, which
//! has no backward), sigmoid and the highway gate, each forward next to its
//! backward.
//!
//! Shape legend: operands are views of N rows of PER elements (PER = C*H*W);
//! all operands of one op have the same shape, and any may be a channel slice.

use crate::context::Gpu;
use crate::dispatch::Dispatch;
use crate::error::{shape_error, Result};
use crate::tensor::Tensor;

const FILE: &str = "elementwise.wgsl";
const GROUP: u32 = 256;
const MAX_GROUPS_PER_ROW: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    per: u32,
    scale: f32,
    _pad: u32,
    views: [[u32; 2]; 6],
}

/// Entry points with a vec4 twin named `<entry>4`.
const VEC4: [&str; 6] = [
    "relu_forward",
    "relu_backward",
    "add_forward",
    "add_relu_forward",
    "scale_forward",
    "accumulate",
];

fn prepare(gpu: &Gpu, entry: &'static str, scale: f32, operands: &[&Tensor]) -> Result<Dispatch> {
    let (entry, params) = specialize(entry, params_of(entry, scale, operands)?, operands.len());
    let grid = grid_of(params.rows as usize, params.per as usize);
    gpu.dispatch(FILE, &entry, &params, operands, grid)
}

/// The vec4 twin, with params in vec4 units, where the entry has one and
/// every row length, offset and stride is a multiple of 4.
fn specialize(entry: &str, mut params: Params, operands: usize) -> (String, Params) {
    let aligned = params.per.is_multiple_of(4)
        && params.views[..operands]
            .iter()
            .all(|[off, stride]| off.is_multiple_of(4) && stride.is_multiple_of(4));
    if !(aligned && VEC4.contains(&entry)) {
        return (entry.to_string(), params);
    }
    params.per /= 4;
    for v in params.views.iter_mut() {
        v[0] /= 4;
        v[1] /= 4;
    }
    (format!("{entry}4"), params)
}

/// y: one row each; x: enough groups to keep every core busy, each
/// invocation striding along its row.
fn grid_of(rows: usize, per: usize) -> [u32; 3] {
    let groups_x = per.div_ceil(GROUP as usize).clamp(1, MAX_GROUPS_PER_ROW);
    [groups_x as u32, rows as u32, 1]
}

fn params_of(entry: &'static str, scale: f32, operands: &[&Tensor]) -> Result<Params> {
    let first = operands[0];
    for t in &operands[1..] {
        if t.shape() != first.shape() {
            return Err(shape_error(
                entry,
                format!(
                    "operand shapes differ: {:?} and {:?}",
                    first.shape(),
                    t.shape()
                ),
            ));
        }
    }
    let mut views = [[0u32; 2]; 6];
    for (slot, t) in views.iter_mut().zip(operands) {
        *slot = t.view_params();
    }
    let (rows, per) = match first.shape() {
        [] => (1, 1),
        [len] => (1, *len),
        [n, ..] => (*n, first.sample_len()),
    };
    let params = Params {
        rows: rows as u32,
        per: per as u32,
        scale,
        _pad: 0,
        views,
    };
    Ok(params)
}

/// y = max(x, 0); `y` may be `x` (in place).
pub fn relu_forward(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    prepare(gpu, "relu_forward", 0.0, &[x, y])
}

/// dx = dy * [y > 0], from the forward output `y`; `dx` may be `dy`.
pub fn relu_backward(gpu: &Gpu, y: &Tensor, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    prepare(gpu, "relu_backward", 0.0, &[y, dy, dx])
}

/// y = a + b (the residual sum). Its backward passes dy to both inputs.
pub fn add_forward(gpu: &Gpu, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<Dispatch> {
    prepare(gpu, "add_forward", 0.0, &[a, b, y])
}

/// y = max(a + b, 0): residual sum fused with the unit's final ReLU. Its
/// backward is [`relu_backward`] on `y`, then dy to both inputs.
pub fn add_relu_forward(gpu: &Gpu, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<Dispatch> {
    prepare(gpu, "add_relu_forward", 0.0, &[a, b, y])
}

/// y += x: accumulates the gradient of a value used more than once.
pub fn accumulate(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    prepare(gpu, "accumulate", 0.0, &[x, y])
}

/// y = scale * x (stochastic depth's test-time scaling of a branch).
pub fn scale_forward(gpu: &Gpu, x: &Tensor, scale: f32, y: &Tensor) -> Result<Dispatch> {
    prepare(gpu, "scale_forward", scale, &[x, y])
}

/// Changes the factor of a prepared [`scale_forward`] (a per-step setting:
/// stochastic depth's test-time scale) without rebuilding it.
pub fn set_scale(gpu: &Gpu, dispatch: &Dispatch, x: &Tensor, scale: f32, y: &Tensor) -> Result<()> {
    let (_, params) = specialize(
        "scale_forward",
        params_of("scale_forward", scale, &[x, y])?,
        2,
    );
    dispatch.update_params(gpu, &params);
    Ok(())
}

/// t = sigmoid(z).
pub fn sigmoid_forward(gpu: &Gpu, z: &Tensor, t: &Tensor) -> Result<Dispatch> {
    prepare(gpu, "sigmoid_forward", 0.0, &[z, t])
}

/// dz = dt * t * (1 - t), from the forward output `t`.
pub fn sigmoid_backward(gpu: &Gpu, t: &Tensor, dt: &Tensor, dz: &Tensor) -> Result<Dispatch> {
    prepare(gpu, "sigmoid_backward", 0.0, &[t, dt, dz])
}

/// Highway gate: y = t * h + (1 - t) * x, with t the gate, h the branch and
/// x the shortcut.
pub fn highway_forward(
    gpu: &Gpu,
    t: &Tensor,
    h: &Tensor,
    x: &Tensor,
    y: &Tensor,
) -> Result<Dispatch> {
    prepare(gpu, "highway_forward", 0.0, &[t, h, x, y])
}

/// Backward of the highway gate: dt = dy * (h - x), dh = dy * t, and
/// `dy_dx` is overwritten in place from dy to dx = dy * (1 - t).
pub fn highway_backward(
    gpu: &Gpu,
    t: &Tensor,
    h: &Tensor,
    x: &Tensor,
    dy_dx: &Tensor,
    dt: &Tensor,
    dh: &Tensor,
) -> Result<Dispatch> {
    prepare(gpu, "highway_backward", 0.0, &[t, h, x, dy_dx, dt, dh])
}

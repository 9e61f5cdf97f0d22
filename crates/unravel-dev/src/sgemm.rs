//! Dense matrix multiply (`shaders/matmul.wgsl`): the SGEMM ceiling the
//! kernel bench compares convolutions with. Nothing in training uses it.
//!
//! Shape legend: A is M x K, B is K x N, C is M x N, row-major.

use unravel_device::{DeviceError, Dispatch, Gpu, Result, Tensor};

const FILE: &str = "matmul.wgsl";
const SOURCE: &str = include_str!("../shaders/matmul.wgsl");

fn shape_error(message: impl Into<String>) -> DeviceError {
    DeviceError::Shape {
        op: "matmul",
        message: message.into(),
    }
}

/// Which matmul kernel runs; [`MatmulAlgo::for_device`] picks one per adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulAlgo {
    /// Subgroup-broadcast register blocking (CPU adapters, 8-lane subgroups);
    /// a wider variant with vec4 loads of A where N % 64 == 0 and K % 4 == 0.
    Subgroup8,
    /// Workgroup-memory tiling (GPUs).
    Tiled,
}

/// Whether the device runs subgroups of exactly 8 lanes (what
/// [`MatmulAlgo::Subgroup8`] is written for).
pub fn has_8_lane_subgroups(gpu: &Gpu) -> bool {
    let info = gpu.adapter_info();
    let eight = info.subgroup_min_size == 8 && info.subgroup_max_size == 8;
    eight
        && gpu
            .features()
            .contains(unravel_device::wgpu::Features::SUBGROUP)
}

impl MatmulAlgo {
    /// Subgroup8 where the adapter has exactly 8-lane subgroups and is a CPU
    /// (loads are the bottleneck there), Tiled everywhere else.
    pub fn for_device(gpu: &Gpu) -> MatmulAlgo {
        if gpu.is_cpu() && has_8_lane_subgroups(gpu) {
            MatmulAlgo::Subgroup8
        } else {
            MatmulAlgo::Tiled
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

/// C = A B with the device's preferred kernel.
pub fn matmul(gpu: &Gpu, a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Dispatch> {
    matmul_with(gpu, MatmulAlgo::for_device(gpu), a, b, c)
}

/// C = A B with a chosen kernel (tests run both).
pub fn matmul_with(
    gpu: &Gpu,
    algo: MatmulAlgo,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
) -> Result<Dispatch> {
    gpu.add_shader(FILE, SOURCE)?;
    let (m, k, n) = match (a.shape(), b.shape(), c.shape()) {
        ([m, k], [k2, n], [m2, n2]) if k == k2 && m == m2 && n == n2 => (*m, *k, *n),
        (sa, sb, sc) => {
            return Err(shape_error(format!(
                "A {sa:?} x B {sb:?} cannot give C {sc:?}"
            )))
        }
    };
    if !(a.is_contiguous() && b.is_contiguous() && c.is_contiguous())
        || a.offset() + b.offset() + c.offset() != 0
    {
        return Err(shape_error("operands must be whole contiguous tensors"));
    }
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        _pad: 0,
    };
    match algo {
        MatmulAlgo::Subgroup8 => {
            if !has_8_lane_subgroups(gpu) {
                return Err(DeviceError::MissingFeature {
                    op: "matmul",
                    what: "MatmulAlgo::Subgroup8".into(),
                    feature: "SUBGROUP with exactly 8 lanes",
                });
            }
            if m % 16 != 0 || n % 32 != 0 {
                return Err(shape_error(format!(
                    "the subgroup kernel needs M % 16 == 0 and N % 32 == 0, got M={m} N={n}"
                )));
            }
            if n % 64 == 0 && k % 4 == 0 {
                // Wider tiles and vec4 loads of A (see the shader).
                let grid = [(n / 64) as u32, m.div_ceil(128) as u32, 1];
                let tensors = [a, b, c, b, c, a];
                gpu.dispatch(FILE, "matmul_subgroup8_wide", &params, &tensors, grid)
            } else {
                let grid = [(n / 32) as u32, m.div_ceil(128) as u32, 1];
                gpu.dispatch(FILE, "matmul_subgroup8", &params, &[a, b, c], grid)
            }
        }
        MatmulAlgo::Tiled => {
            let grid = [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1];
            gpu.dispatch(FILE, "matmul_tiled", &params, &[a, b, c, b, c], grid)
        }
    }
}

/// CPU reference: C = A B with A m x k and B k x n, row-major, in f64.
pub fn reference(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for kk in 0..k {
            let av = a[i * k + kk];
            for j in 0..n {
                c[i * n + j] += av * b[kk * n + j];
            }
        }
    }
    c
}

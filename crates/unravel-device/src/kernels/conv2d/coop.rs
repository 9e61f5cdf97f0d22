//! The convolution on cooperative matrices (tensor cores), all three passes
//! (`shaders/conv2d_coop.wgsl`): which tile an adapter gets, and the
//! dispatches. Experimental, as wgpu's cooperative matrices are: a plan in
//! mixed precision chooses them where [`CoopTile::verified`] passes;
//! otherwise only [`Conv2dAlgo::CoopMatrix`] chooses them.
//!
//! Shape legend: x [N, C, H, W], w [K, C/G, KH, KW], y [N, K, OH, OW];
//! T the tile (T x T x T, f16 operands, f32 accumulation).

use wgpu::{CooperativeMatrixProperties, CooperativeScalarType};

use super::params::Params;
use super::shape::Conv2dShape;
use super::Conv2dAlgo;
use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::{DeviceError, Result};
use crate::shaders;
use crate::tensor::Tensor;

/// Invocations per workgroup (WG in the shader).
const GROUP: usize = 64;
/// Subgroups of workgroup memory the shader holds (MAX_SUBGROUPS).
const MAX_SUBGROUPS: usize = 2;

/// The tile of the cooperative-matrix convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopTile {
    /// T: tiles are T x T, the reduction steps T at a time.
    pub size: u32,
}

impl CoopTile {
    /// The tile to use among the configurations an adapter offers: square
    /// f16 x f16 + f32 ones, 16 before 8 (NVIDIA and AMD offer 16, Apple 8);
    /// none where subgroups may have fewer than 32 lanes (the shader keeps
    /// workgroup memory for 2 subgroups of its 64 invocations).
    pub fn choose(offered: &[CooperativeMatrixProperties], subgroup_min: u32) -> Option<CoopTile> {
        if subgroup_min < (GROUP / MAX_SUBGROUPS) as u32 {
            return None;
        }
        [16, 8]
            .into_iter()
            .find(|&t| {
                offered.iter().any(|p| {
                    p.m_size == t
                        && p.n_size == t
                        && p.k_size == t
                        && p.ab_type == CooperativeScalarType::F16
                        && p.cr_type == CooperativeScalarType::F32
                })
            })
            .map(|size| CoopTile { size })
    }

    /// The adapter's tile, if the device was opened with cooperative
    /// matrices, subgroups and f16.
    pub fn for_gpu(gpu: &Gpu) -> Option<CoopTile> {
        let needed = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
            | wgpu::Features::SUBGROUP
            | wgpu::Features::SHADER_F16;
        if !gpu.features().contains(needed) {
            return None;
        }
        let min = gpu.adapter_info().subgroup_min_size;
        CoopTile::choose(&gpu.cooperative_matrix_properties(), min)
    }

    /// The adapter's tile if its cooperative-matrix kernels agree with the
    /// direct ones on a small convolution on this device (checked once per
    /// device), else why not: what plans choose by default in mixed
    /// precision.
    pub fn verified(gpu: &Gpu) -> std::result::Result<CoopTile, String> {
        gpu.coop_verdict
            .get_or_init(|| super::coop_check::verify(gpu))
            .clone()
    }

    /// The error for an adapter without a tile.
    pub(super) fn missing(op: &'static str) -> DeviceError {
        DeviceError::MissingFeature {
            op,
            what: format!("Conv2dAlgo::{:?}", Conv2dAlgo::CoopMatrix),
            feature: "EXPERIMENTAL_COOPERATIVE_MATRIX (f16 tiles with an f32 accumulator, subgroups of 32+)",
        }
    }

    fn shader(self, gpu: &Gpu) -> Result<String> {
        let name = format!("conv2d_coop{}.wgsl", self.size);
        gpu.add_shader(&name, &shaders::coop_source(self.size))?;
        Ok(name)
    }
}

/// Which GEMM of the shader (PASS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pass {
    Forward = 0,
    InputGrad = 1,
    WeightGrad = 2,
}

/// One pass as a dispatch. `tensors` are bindings 1-4 (a, b, v, out) as
/// conv2d.wgsl binds them; `m` x `nc` is the pass's output matrix per group
/// and split.
pub(super) fn dispatch(
    gpu: &Gpu,
    pass: Pass,
    params: &Params,
    tensors: [&Tensor; 4],
    (m, nc): (usize, usize),
    accumulate: bool,
) -> Result<Dispatch> {
    let tile = CoopTile::for_gpu(gpu).ok_or_else(|| CoopTile::missing("conv2d"))?;
    let t = tile.size as usize;
    let tiles = m.div_ceil(t) * nc.div_ceil(t);
    // Fewest subgroups a workgroup may hold: each takes one tile.
    let per_group = (GROUP / gpu.adapter_info().subgroup_max_size.max(1) as usize).max(1);
    let [gx, gy, _] = grid_1d(tiles.div_ceil(per_group), 1);
    let z = params.groups * params.splits;
    let constants = [
        ("PASS", pass as u32 as f64),
        ("ACCUMULATE", accumulate as u8 as f64),
    ];
    let file = tile.shader(gpu)?;
    gpu.dispatch_with(
        &file,
        "conv2d_coop",
        &constants,
        params,
        &tensors,
        [gx, gy, z],
    )
}

/// The output matrix of each pass per group (and split): rows x columns.
pub(super) fn extent(s: &Conv2dShape, pass: Pass, has_bias: bool) -> (usize, usize) {
    match pass {
        Pass::Forward => (s.n * s.out_h() * s.out_w(), s.cout_g()),
        Pass::InputGrad => (s.n * s.h * s.w, s.cin_g()),
        Pass::WeightGrad => (s.cout_g(), s.cin_g() * s.kh * s.kw + has_bias as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(
        t: u32,
        ab: CooperativeScalarType,
        cr: CooperativeScalarType,
    ) -> CooperativeMatrixProperties {
        CooperativeMatrixProperties {
            m_size: t,
            n_size: t,
            k_size: t,
            ab_type: ab,
            cr_type: cr,
            saturating_accumulation: false,
        }
    }

    use CooperativeScalarType::{F16, F32, I32};

    #[test]
    fn the_tile_follows_what_the_adapter_offers() {
        // NVIDIA through Vulkan: 16x16x16 f16 -> f16 and f16 -> f32, among others.
        let nvidia = [
            offer(16, F16, F16),
            offer(16, F16, F32),
            offer(16, I32, I32),
        ];
        assert_eq!(CoopTile::choose(&nvidia, 32), Some(CoopTile { size: 16 }));
        // Apple: 8x8 f32 and f16 with both accumulators.
        let apple = [offer(8, F32, F32), offer(8, F16, F16), offer(8, F16, F32)];
        assert_eq!(CoopTile::choose(&apple, 32), Some(CoopTile { size: 8 }));
        // Both: the larger tile.
        let both = [offer(8, F16, F32), offer(16, F16, F32)];
        assert_eq!(CoopTile::choose(&both, 64), Some(CoopTile { size: 16 }));
        // An f16 accumulator only, or f32 operands only: none (accumulation stays f32).
        assert_eq!(CoopTile::choose(&[offer(16, F16, F16)], 32), None);
        assert_eq!(CoopTile::choose(&[offer(8, F32, F32)], 32), None);
        // Subgroups that may have 8 or 16 lanes (Intel): none.
        assert_eq!(CoopTile::choose(&nvidia, 16), None);
        assert_eq!(CoopTile::choose(&[], 32), None);
    }
}

//! Which convolution algorithm an adapter gets, and the pipeline constants
//! of the subgroup kernels.
//!
//! Shape legend: K output channels, G groups; `cout_g` = K / G.

use super::TILE;
use crate::context::Gpu;
use crate::error::{DeviceError, Result};

/// How a convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv2dAlgo {
    /// One invocation per output element; needs no optional feature.
    Direct,
    /// Register-blocked, operand B shared through subgroup broadcasts (or
    /// shuffles where subgroups may have fewer than 8 lanes); needs the
    /// SUBGROUP feature. About 10x faster than `Direct` on lavapipe.
    Subgroup,
    /// `Subgroup` with more work a lane, which pays where registers are
    /// memory (CPU adapters, the choice there): 8 pixels a lane in window
    /// mode, the stride-2 input gradient's and the weight gradient's windows.
    /// On a GPU those lanes spill registers (H200: the 32->32 input gradient
    /// at 0.4 TFLOP/s against 11.8 with `Subgroup`).
    SubgroupWide,
    /// Workgroup-memory tiles (64 pixels x 64 channels) for the forward, the
    /// faster one on an H200 where a layer has 64+ output channels; the
    /// backward passes run `Subgroup` (or `Direct` without the SUBGROUP
    /// feature).
    Tiled,
    /// Implicit GEMMs on cooperative matrices (tensor cores): f16 operand
    /// tiles, f32 accumulation, every pass. Experimental (wgpu's
    /// EXPERIMENTAL_COOPERATIVE_MATRIX), so only when chosen; needs an
    /// adapter with a [`super::CoopTile`].
    CoopMatrix,
}

impl std::str::FromStr for Conv2dAlgo {
    type Err = String;

    /// `direct`, `subgroup`, `subgroup-wide`, `tiled` or `coop-matrix`.
    fn from_str(name: &str) -> std::result::Result<Conv2dAlgo, String> {
        match name.to_ascii_lowercase().as_str() {
            "direct" => Ok(Conv2dAlgo::Direct),
            "subgroup" => Ok(Conv2dAlgo::Subgroup),
            "subgroup-wide" => Ok(Conv2dAlgo::SubgroupWide),
            "tiled" => Ok(Conv2dAlgo::Tiled),
            "coop-matrix" => Ok(Conv2dAlgo::CoopMatrix),
            _ => Err(format!(
                "unknown convolution algorithm {name:?}: use direct, subgroup, subgroup-wide, tiled or coop-matrix"
            )),
        }
    }
}

fn has_subgroups(gpu: &Gpu) -> bool {
    gpu.features().contains(wgpu::Features::SUBGROUP)
}

impl Conv2dAlgo {
    /// The algorithm for this adapter: tiles on GPUs, wide subgroup lanes
    /// on CPUs (lavapipe), where workgroup memory is as slow as storage.
    pub fn for_adapter(gpu: &Gpu) -> Conv2dAlgo {
        if !gpu.is_cpu() {
            Conv2dAlgo::Tiled
        } else if has_subgroups(gpu) {
            Conv2dAlgo::SubgroupWide
        } else {
            Conv2dAlgo::Direct
        }
    }

    /// The forward's algorithm: the caller's `choice`, else the adapter's,
    /// except that tiles hold 64 output channels, so a group of fewer runs
    /// `Subgroup` where the adapter has subgroups. On an H200 at batch 256
    /// the tiled forward reached 3.5 / 6.6 / 11.4 TFLOP/s at 16 / 32 / 64
    /// channels and the subgroup one 17.4 / 11.4 / 6.2 (docs/performance.md).
    pub(crate) fn for_forward(choice: Option<Conv2dAlgo>, gpu: &Gpu, cout_g: usize) -> Conv2dAlgo {
        match choice {
            Some(chosen) => chosen,
            None => Conv2dAlgo::for_adapter(gpu).narrowed(cout_g, has_subgroups(gpu)),
        }
    }

    /// [`Conv2dAlgo::for_forward`]'s rule for an algorithm nobody chose.
    pub(crate) fn narrowed(self, cout_g: usize, subgroups: bool) -> Conv2dAlgo {
        if self == Conv2dAlgo::Tiled && cout_g < TILE as usize && subgroups {
            Conv2dAlgo::Subgroup
        } else {
            self
        }
    }

    /// A backward pass's algorithm: the caller's `choice`, else the
    /// adapter's; tiles exist for the forward only.
    pub(crate) fn for_backward(choice: Option<Conv2dAlgo>, gpu: &Gpu) -> Conv2dAlgo {
        match choice.unwrap_or_else(|| Conv2dAlgo::for_adapter(gpu)) {
            Conv2dAlgo::Tiled if has_subgroups(gpu) => Conv2dAlgo::Subgroup,
            Conv2dAlgo::Tiled => Conv2dAlgo::Direct,
            other => other,
        }
    }

    /// Whether this algorithm runs the subgroup kernels.
    pub(crate) fn uses_subgroups(self) -> bool {
        matches!(self, Conv2dAlgo::Subgroup | Conv2dAlgo::SubgroupWide)
    }

    /// An error naming the missing feature where the adapter cannot run it.
    pub(crate) fn require(self, gpu: &Gpu, op: &'static str) -> Result<()> {
        if self.uses_subgroups() && !has_subgroups(gpu) {
            return Err(DeviceError::MissingFeature {
                op,
                what: format!("Conv2dAlgo::{self:?}"),
                feature: "SUBGROUP",
            });
        }
        if self == Conv2dAlgo::CoopMatrix && super::CoopTile::for_gpu(gpu).is_none() {
            return Err(super::coop::CoopTile::missing(op));
        }
        Ok(())
    }
}

/// How the lanes of a subgroup kernel share operand B (SHUFFLE_CHUNK in
/// WGSL): broadcasts from 8 lanes, or shuffles in chunks of `chunk` lanes
/// where subgroups may be narrower than 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lanes {
    Broadcast,
    Shuffle { chunk: u32 },
}

#[cfg(test)]
thread_local! {
    /// Lanes the crate's tests force on this thread (the shuffle path on an
    /// adapter whose subgroups have 8 lanes); no such choice exists outside
    /// the tests.
    pub(crate) static FORCED_LANES: std::cell::Cell<Option<Lanes>> =
        const { std::cell::Cell::new(None) };
}

impl Lanes {
    pub(crate) fn for_adapter(gpu: &Gpu) -> Lanes {
        #[cfg(test)]
        if let Some(forced) = FORCED_LANES.get() {
            return forced;
        }
        if gpu.adapter_info().subgroup_min_size < 8 {
            Lanes::Shuffle { chunk: 8 }
        } else {
            Lanes::Broadcast
        }
    }

    fn chunk(self) -> u32 {
        match self {
            Lanes::Broadcast => 0,
            Lanes::Shuffle { chunk } => chunk,
        }
    }
}

/// The pipeline constants every subgroup kernel takes: `nv` vec4 column
/// blocks and `rows` rows a lane, and how lanes share B.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SubgroupConstants {
    pub nv: u32,
    pub rows: u32,
    pub lanes: Lanes,
}

impl SubgroupConstants {
    pub(crate) fn pipeline_constants(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("NV", self.nv as f64),
            ("SHUFFLE_CHUNK", self.lanes.chunk() as f64),
            ("ROWS", self.rows as f64),
        ]
    }
}

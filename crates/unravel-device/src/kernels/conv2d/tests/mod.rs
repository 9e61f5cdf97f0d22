//! The GPU convolution against the CPU reference, for every variant an
//! adapter may run: the public algorithms and, forced here, the shuffle
//! path of adapters whose subgroups may have fewer than 8 lanes (not a
//! choice a caller makes, so not public API). The public entry points'
//! own behaviour (views, errors, names) is tested in tests/conv2d.rs.
//!
//! Shape legend: x [N, C, H, W], w [K, C/G, KH, KW], y [N, K, OH, OW].

#[path = "../../../../tests/common/mod.rs"]
pub(super) mod common;

mod against_reference;
mod folded_batch_norm;

use super::algo::{Conv2dAlgo, Lanes, FORCED_LANES};
use super::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2dEpilogue, Conv2dShape,
    ForwardOptions, InputGradOptions, WeightGradOptions,
};
use crate::kernels::Store;
use crate::{Dispatch, Result, Tensor};
use common::gpu;

/// An algorithm with a way of sharing B between lanes.
#[derive(Clone, Copy, Debug)]
struct Variant {
    algo: Conv2dAlgo,
    lanes: Lanes,
}

/// Every algorithm with the adapter's lanes, and the subgroup kernels on
/// their shuffle path in chunks of 5 lanes.
fn variants() -> Vec<Variant> {
    let g = gpu();
    assert!(
        g.features().contains(wgpu::Features::SUBGROUP),
        "the convolution tests need an adapter with the SUBGROUP feature"
    );
    let lanes = Lanes::for_adapter(g);
    let algos = [
        Conv2dAlgo::Direct,
        Conv2dAlgo::Tiled,
        Conv2dAlgo::Subgroup,
        Conv2dAlgo::SubgroupWide,
    ];
    let mut all: Vec<Variant> = algos.map(|algo| Variant { algo, lanes }).to_vec();
    all.push(Variant {
        algo: Conv2dAlgo::Subgroup,
        lanes: Lanes::Shuffle { chunk: 5 },
    });
    all
}

/// The passes through the public entry points, with the variant's
/// algorithm chosen and its lanes forced on this thread (the backward
/// passes run what the choice gives them: tiles are forward only).
impl Variant {
    fn forced<T>(&self, pass: impl FnOnce() -> T) -> T {
        FORCED_LANES.set(Some(self.lanes));
        let out = pass();
        FORCED_LANES.set(None);
        out
    }

    fn forward(
        &self,
        s: &Conv2dShape,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        epilogue: Conv2dEpilogue,
    ) -> Result<Vec<Dispatch>> {
        let algo = Some(self.algo);
        let options = ForwardOptions { algo, epilogue };
        self.forced(|| conv2d_forward(gpu(), s, x, w, y, &options))
    }

    fn backward_input(
        &self,
        s: &Conv2dShape,
        dy: &Tensor,
        w: &Tensor,
        dx: &Tensor,
        store: Store,
    ) -> Result<Vec<Dispatch>> {
        let algo = Some(self.algo);
        let options = InputGradOptions { algo, store };
        self.forced(|| conv2d_backward_input(gpu(), s, dy, w, dx, &options))
    }

    fn backward_weight(
        &self,
        s: &Conv2dShape,
        x: &Tensor,
        dy: &Tensor,
        dw: &Tensor,
        dbias: Option<&Tensor>,
    ) -> Result<Vec<Dispatch>> {
        let options = WeightGradOptions {
            algo: Some(self.algo),
        };
        self.forced(|| conv2d_backward_weight(gpu(), s, x, dy, dw, dbias, &options))
    }
}

#[test]
fn tiles_are_kept_for_layers_that_fill_them() {
    use Conv2dAlgo::*;
    assert_eq!(Tiled.narrowed(16, true), Subgroup);
    assert_eq!(Tiled.narrowed(63, true), Subgroup);
    assert_eq!(Tiled.narrowed(64, true), Tiled);
    // Without subgroups the tiles still beat the direct kernel.
    assert_eq!(Tiled.narrowed(16, false), Tiled);
    assert_eq!(Subgroup.narrowed(256, true), Subgroup);
    // A chosen algorithm stays: `--conv-algo tiled` means tiles everywhere.
    assert_eq!(Conv2dAlgo::for_forward(Some(Tiled), gpu(), 16), Tiled);
}

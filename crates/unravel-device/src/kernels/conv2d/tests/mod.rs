//! The GPU convolution against the CPU reference, for every variant an
//! adapter may run: the public algorithms and, forced here, the shuffle
//! path of adapters whose subgroups may have fewer than 8 lanes (not a
//! choice a caller makes, so not public API). The public entry points'
//! own behaviour (views, errors, names) is tested in tests/conv2d.rs.
//!
//! Shape legend: x [N, C, H, W], w [K, C/G, KH, KW], y [N, K, OH, OW].

#[path = "../../../../tests/common/mod.rs"]
mod common;

mod against_reference;
mod folded_batch_norm;

use super::algo::{Conv2dAlgo, Lanes, Variant};
use super::backward_input::backward_input;
use super::backward_weight::backward_weight;
use super::forward::forward;
use super::{Conv2dEpilogue, Conv2dShape};
use crate::kernels::Store;
use crate::{Dispatch, Result, Tensor};
use common::gpu;

/// Every algorithm with the adapter's lanes, and the subgroup kernels on
/// their shuffle path in chunks of 5 lanes.
fn variants() -> Vec<Variant> {
    let g = gpu();
    let lanes = Lanes::for_adapter(g);
    let mut algos = vec![Conv2dAlgo::Direct, Conv2dAlgo::Tiled];
    assert!(
        g.features().contains(wgpu::Features::SUBGROUP),
        "the convolution tests need an adapter with the SUBGROUP feature"
    );
    algos.extend([Conv2dAlgo::Subgroup, Conv2dAlgo::SubgroupWide]);
    let mut all: Vec<Variant> = algos
        .into_iter()
        .map(|algo| Variant { algo, lanes })
        .collect();
    all.push(Variant {
        algo: Conv2dAlgo::Subgroup,
        lanes: Lanes::Shuffle { chunk: 5 },
    });
    all
}

/// A variant's passes as the tests run them: the backward passes with
/// the algorithm the variant's choice gives them (tiles are forward only).
impl Variant {
    fn forward(
        &self,
        s: &Conv2dShape,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        epilogue: Conv2dEpilogue,
    ) -> Result<Vec<Dispatch>> {
        forward(gpu(), s, x, w, y, epilogue, *self)
    }

    fn backward_input(
        &self,
        s: &Conv2dShape,
        dy: &Tensor,
        w: &Tensor,
        dx: &Tensor,
        store: Store,
    ) -> Result<Vec<Dispatch>> {
        let algo = Conv2dAlgo::for_backward(Some(self.algo), gpu());
        backward_input(gpu(), s, dy, w, dx, store, Variant { algo, ..*self })
    }

    fn backward_weight(
        &self,
        s: &Conv2dShape,
        x: &Tensor,
        dy: &Tensor,
        dw: &Tensor,
        dbias: Option<&Tensor>,
    ) -> Result<Vec<Dispatch>> {
        let algo = Conv2dAlgo::for_backward(Some(self.algo), gpu());
        backward_weight(gpu(), s, x, dy, dw, dbias, Variant { algo, ..*self })
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

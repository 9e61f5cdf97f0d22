//! Window modes of the subgroup kernels and their geometry: which pixels a
//! lane holds, whether its window loads and stores may move vec4s, and the
//! grids that cover a pass.
//!
//! Shape legend: a lane holds ROWS adjacent pixels of one image row (window
//! modes) or ROWS pixels in flat order (off); NV vec4 blocks of channels.

use super::shape::Conv2dShape;
use super::{GROUP, MAX_COLS, PIXEL_ROWS};
use crate::dispatch::grid_1d;
use crate::tensor::Tensor;

/// WINDOW in WGSL. For 3-wide kernels a lane's adjacent pixels share the
/// loads of their taps along x, and the weights are shared by
/// constant-index broadcasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WindowMode {
    Off,
    /// The forward at stride 1 or 2.
    ForwardS1,
    ForwardS2,
    /// The input gradient at stride 1, and at stride 2 (whose lanes hold 8
    /// pixels: `SubgroupWide` only).
    InputGradS1,
    InputGradS2,
    /// The weight gradient at stride 1 or 2: a lane's rows are the 3 taps
    /// of 2 (ci, ky) pairs, and each pair loads the x values a chunk of up
    /// to 8 pixels of one output row reads once (`SubgroupWide` only).
    WeightGradS1,
    WeightGradS2,
}

impl WindowMode {
    /// The value of WINDOW in WGSL.
    pub(crate) fn wgsl(self) -> u32 {
        match self {
            WindowMode::Off => 0,
            WindowMode::ForwardS1 | WindowMode::WeightGradS1 => 1,
            WindowMode::ForwardS2 | WindowMode::WeightGradS2 => 2,
            WindowMode::InputGradS1 => 3,
            WindowMode::InputGradS2 => 4,
        }
    }

    pub(crate) fn is_on(self) -> bool {
        self != WindowMode::Off
    }

    /// The forward's or input gradient's window mode for `s`, where B is
    /// shared by `broadcasts` and lanes are `wide` (`SubgroupWide`).
    pub(crate) fn for_pixels(
        s: &Conv2dShape,
        input_gradient: bool,
        broadcasts: bool,
        wide: bool,
    ) -> WindowMode {
        if s.kw != 3 || !broadcasts || PIXEL_ROWS != 4 {
            return WindowMode::Off;
        }
        match (input_gradient, s.stride) {
            (false, 1) => WindowMode::ForwardS1,
            (false, 2) => WindowMode::ForwardS2,
            (true, 1) => WindowMode::InputGradS1,
            (true, 2) if wide => WindowMode::InputGradS2,
            _ => WindowMode::Off,
        }
    }

    /// The weight gradient's window mode: not with a bias (its row is no
    /// tap), and only where lanes share B by broadcasts and are wide.
    pub(crate) fn for_weights(
        s: &Conv2dShape,
        bias: bool,
        broadcasts_and_wide: bool,
    ) -> WindowMode {
        if s.kw != 3 || bias || !broadcasts_and_wide {
            return WindowMode::Off;
        }
        match s.stride {
            1 => WindowMode::WeightGradS1,
            2 => WindowMode::WeightGradS2,
            _ => WindowMode::Off,
        }
    }

    /// Pixels a lane holds with `nv` column blocks (more only where lanes
    /// are `wide`): per window a pair's multiply-adds cost less than its
    /// loads, broadcasts and bookkeeping, so the input gradient's lanes take
    /// 8 adjacent pixels (at stride 2, with half the taps per pixel, +20%;
    /// at stride 1 +6% with 8 column blocks), and the forward's where they
    /// have few columns (NV <= 4, +20%; with 8 blocks 64 accumulators were
    /// slower).
    pub(crate) fn rows(self, nv: u32, wide: bool) -> u32 {
        match self {
            WindowMode::ForwardS1 if wide && nv <= 4 => 8,
            WindowMode::InputGradS1 if wide => 8,
            WindowMode::InputGradS2 => 8,
            _ => PIXEL_ROWS,
        }
    }
}

/// The window constants of the forward and input gradient.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowConstants {
    pub mode: WindowMode,
    /// STORE4: a lane stores its 4 pixels of a channel as one vec4.
    pub store4: bool,
    /// A4_SHIFT: see [`vec4_shift`].
    pub a4_shift: u32,
}

impl WindowConstants {
    pub(crate) fn pipeline_constants(&self) -> [(&'static str, f64); 3] {
        [
            ("WINDOW", self.mode.wgsl() as f64),
            ("STORE4", self.store4 as u8 as f64),
            ("A4_SHIFT", self.a4_shift as f64),
        ]
    }
}

/// Whether window mode may store a lane's 4 pixels of a channel as one vec4
/// (STORE4 in WGSL): the output view's offset, batch stride, plane and rows
/// must all be whole vec4s, and rows whole lanes of `rows` pixels.
pub(crate) fn vec4_stores(
    mode: WindowMode,
    out: &Tensor,
    plane: usize,
    width: usize,
    rows: u32,
) -> bool {
    let [offset, batch_stride] = out.view_params();
    mode.is_on()
        && width.is_multiple_of(rows as usize)
        && plane.is_multiple_of(4)
        && offset.is_multiple_of(4)
        && batch_stride.is_multiple_of(4)
}

/// A4_SHIFT in WGSL: where window mode may load a lane's window as vec4s,
/// the offset of its first element in its vec4, else 4 (scalar loads).
/// `first_x` is a window's first column for a lane whose first pixel is
/// column 0 (every lane's first pixel is a multiple of 4 columns on; at
/// stride 2 of 8). The view `a`'s offset, batch stride, planes and rows must
/// be whole vec4s, so that no vec4 straddles the edge of a row.
pub(crate) fn vec4_shift(
    mode: WindowMode,
    a: &Tensor,
    plane: usize,
    width: usize,
    first_x: i64,
) -> u32 {
    let [offset, batch_stride] = a.view_params();
    let aligned = mode.is_on()
        && width.is_multiple_of(4)
        && plane.is_multiple_of(4)
        && offset.is_multiple_of(4)
        && batch_stride.is_multiple_of(4);
    if aligned {
        first_x.rem_euclid(4) as u32
    } else {
        4
    }
}

/// The x/y grid of a subgroup kernel over `pixels` pixels in `image_rows`
/// rows of `width`: ROWS*GROUP pixels a workgroup, or in window mode
/// `rows` adjacent pixels of an image row a lane.
pub(crate) fn pixel_grid(
    mode: WindowMode,
    pixels: usize,
    image_rows: usize,
    width: usize,
    rows: u32,
) -> [u32; 3] {
    if mode.is_on() {
        grid_1d(image_rows * width.div_ceil(rows as usize), GROUP)
    } else {
        grid_1d(pixels, rows * GROUP)
    }
}

/// Vec4 blocks of output columns per invocation and blocks per group, for
/// `cols` columns per group.
pub(crate) fn column_blocks(cols: usize) -> (u32, u32) {
    let nv = cols.div_ceil(4).clamp(1, MAX_COLS / 4);
    (nv as u32, cols.div_ceil(nv * 4) as u32)
}

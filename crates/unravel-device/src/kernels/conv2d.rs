//! 2-D convolution (`shaders/conv2d.wgsl`): forward, input gradient and
//! weight (+ bias) gradient, with PyTorch's semantics and layouts.
//!
//! Shape legend: x `[N, C, H, W]`, w `[K, C/G, KH, KW]` (OIHW), bias `[K]`,
//! y `[N, K, OH, OW]`, with stride S, zero padding P and G groups. x, y, dy
//! and dx may be channel slices of larger NCHW buffers (DenseNet reads a
//! channel prefix of its concatenation buffer and writes into a slice of
//! it); weights and biases must be contiguous.
//!
//! Algorithms: [`Conv2dAlgo::Direct`] (one invocation per output, works on
//! any adapter), [`Conv2dAlgo::Subgroup`] and [`Conv2dAlgo::SubgroupWide`]
//! (register-blocked GEMM whose
//! packed weight / dy operand is shared by subgroup broadcasts, the fast one
//! on lavapipe: 20-27 GFLOP/s at ResNet-20's shapes) and
//! [`Conv2dAlgo::Tiled`] (workgroup-memory tiles for GPUs, forward only).
//! The plain entry points pick one with [`Conv2dAlgo::for_gpu`] (the
//! forward with [`Conv2dAlgo::for_shape`]). Each call
//! returns its dispatches in order (packing passes first, then the conv,
//! then the weight gradient's split reduction); the scratch buffers they
//! use live as long as the dispatches.

use crate::context::Gpu;
use crate::dispatch::{grid_1d, Dispatch};
use crate::error::{shape_error, Result};
use crate::tensor::{DType, Tensor};

const FILE: &str = "conv2d.wgsl";
const GROUP: u32 = 64;
/// Rows (pixels) per invocation of the forward and input-gradient subgroup
/// kernels: each B value a lane receives feeds that many FMAs.
const PIXEL_ROWS: u32 = 4;
/// Rows (weight columns) per invocation of the weight gradient.
const WEIGHT_ROWS: u32 = 4;
/// In the weight gradient's window mode: the 3 taps of 2 (ci, ky) pairs.
const WINDOW_WEIGHT_ROWS: u32 = 6;
/// Pixels and channels of a tile of the tiled forward (TM, TN in WGSL).
const TILE: u32 = 64;
/// Output channels one invocation of the subgroup kernels keeps in registers.
/// 32 (8 vec4 blocks; with 4 rows, 32 vec4 accumulators a lane) halves the
/// loads of A per FMA where a group has 32+ channels; on lavapipe that was
/// worth 0-5% over 16 (and 16 columns x 8 rows was 10-20% slower than x 4).
const MAX_COLS: usize = 32;

impl std::str::FromStr for Conv2dAlgo {
    type Err = String;

    /// `direct`, `subgroup`, `subgroup-shuffle`, `subgroup-wide` or `tiled`.
    fn from_str(name: &str) -> std::result::Result<Conv2dAlgo, String> {
        match name.to_ascii_lowercase().as_str() {
            "direct" => Ok(Conv2dAlgo::Direct),
            "subgroup" => Ok(Conv2dAlgo::Subgroup),
            "subgroup-shuffle" => Ok(Conv2dAlgo::SubgroupShuffle),
            "subgroup-wide" => Ok(Conv2dAlgo::SubgroupWide),
            "tiled" => Ok(Conv2dAlgo::Tiled),
            _ => Err(format!(
                "unknown convolution algorithm {name:?}: use direct, subgroup, subgroup-shuffle, subgroup-wide or tiled"
            )),
        }
    }
}

/// The geometry of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
}

impl Conv2dShape {
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }

    /// `[c_out, c_in / groups, kh, kw]`, PyTorch's OIHW.
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.c_out, self.c_in / self.groups, self.kh, self.kw]
    }

    pub fn input_shape(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }

    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.out_h(), self.out_w()]
    }

    /// Multiply-adds of the forward (each backward does as many).
    pub fn macs(&self) -> u64 {
        let per_output = (self.c_in / self.groups * self.kh * self.kw) as u64;
        self.output_shape()
            .iter()
            .map(|&d| d as u64)
            .product::<u64>()
            * per_output
    }

    /// Checks that the geometry is a valid convolution whose indices fit u32.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(shape_error("conv2d", format!("{msg} in {self:?}")));
        if [
            self.n, self.c_in, self.h, self.w, self.c_out, self.kh, self.kw,
        ]
        .contains(&0)
        {
            return fail("zero-sized dimension".into());
        }
        if self.stride == 0 || self.groups == 0 {
            return fail("stride and groups must be at least 1".into());
        }
        if !self.c_in.is_multiple_of(self.groups) || !self.c_out.is_multiple_of(self.groups) {
            return fail(format!(
                "channels {} -> {} are not divisible by {} groups",
                self.c_in, self.c_out, self.groups
            ));
        }
        if self.kh > self.h + 2 * self.pad || self.kw > self.w + 2 * self.pad {
            return fail("kernel larger than the padded input".into());
        }
        let biggest = [
            self.input_shape().iter().product::<usize>(),
            self.output_shape().iter().product::<usize>(),
            self.weight_shape().iter().product::<usize>(),
        ];
        // Channel blocks (times S*S phases) form the z axis of the grids.
        if self.c_in.max(self.c_out) * self.stride * self.stride > 65535 {
            return fail("too many channels x stride^2 for one grid".into());
        }
        // The subgroup kernels' setup divides in f32 (exact for quotients
        // below 2^22; the largest is about N * H).
        let rows = self.n * self.h.max(self.out_h());
        if biggest.iter().any(|&e| e >= u32::MAX as usize / 2)
            || self.pad > 1 << 20
            || rows >= 1 << 22
        {
            return fail("too large for 32-bit indexing".into());
        }
        Ok(())
    }
}

/// How a convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv2dAlgo {
    /// One invocation per output element; needs no optional feature.
    Direct,
    /// Register-blocked, operands shared through subgroup broadcasts
    /// (shuffles where subgroups may have fewer than 8 lanes); needs the
    /// SUBGROUP feature. About 10x faster than `Direct` on lavapipe.
    Subgroup,
    /// `Subgroup` forced onto its shuffle path, in chunks of 5 lanes: the
    /// path of adapters with narrow subgroups, for tests elsewhere.
    SubgroupShuffle,
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
}

impl Conv2dAlgo {
    /// The algorithm for this adapter: the one chosen in
    /// [`AdapterOptions::conv_algo`](crate::AdapterOptions::conv_algo) if
    /// any, else tiles on GPUs and subgroup broadcasts on CPUs (lavapipe),
    /// where workgroup memory is as slow as storage.
    pub fn for_gpu(gpu: &Gpu) -> Conv2dAlgo {
        if let Some(chosen) = gpu.conv_algo_override() {
            chosen
        } else if !gpu.is_cpu() {
            Conv2dAlgo::Tiled
        } else if gpu.features().contains(wgpu::Features::SUBGROUP) {
            Conv2dAlgo::SubgroupWide
        } else {
            Conv2dAlgo::Direct
        }
    }

    /// The algorithm for the forward of `s`: [`Conv2dAlgo::for_gpu`]'s,
    /// except that tiles hold 64 output channels, so a group of fewer runs
    /// `Subgroup` where the adapter has subgroups. On an H200 at batch 256
    /// the tiled forward reached 3.5 / 6.6 / 11.4 TFLOP/s at 16 / 32 / 64
    /// channels and the subgroup one 17.4 / 11.4 / 6.2 (docs/performance.md).
    pub fn for_shape(gpu: &Gpu, s: &Conv2dShape) -> Conv2dAlgo {
        let subgroups = gpu.features().contains(wgpu::Features::SUBGROUP);
        let chosen = gpu.conv_algo_override().is_some();
        let cout_g = s.c_out / s.groups.max(1);
        Conv2dAlgo::for_gpu(gpu).for_width(chosen, cout_g, subgroups)
    }

    /// [`Conv2dAlgo::for_shape`]'s rule: an algorithm the caller `chosen`
    /// stays; tiles need `cout_g` >= 64.
    fn for_width(self, chosen: bool, cout_g: usize, subgroups: bool) -> Conv2dAlgo {
        if self == Conv2dAlgo::Tiled && !chosen && cout_g < TILE as usize && subgroups {
            Conv2dAlgo::Subgroup
        } else {
            self
        }
    }

    fn subgroup_or_direct(gpu: &Gpu) -> Conv2dAlgo {
        if gpu.features().contains(wgpu::Features::SUBGROUP) {
            Conv2dAlgo::Subgroup
        } else {
            Conv2dAlgo::Direct
        }
    }

    /// What a backward pass runs for this choice (tiles exist for the
    /// forward only).
    fn for_backward(self, gpu: &Gpu) -> Conv2dAlgo {
        match self {
            Conv2dAlgo::Tiled => Conv2dAlgo::subgroup_or_direct(gpu),
            other => other,
        }
    }

    fn check(self, gpu: &Gpu, op: &'static str) -> Result<()> {
        let needs_subgroups = matches!(
            self,
            Conv2dAlgo::Subgroup | Conv2dAlgo::SubgroupShuffle | Conv2dAlgo::SubgroupWide
        );
        if needs_subgroups && !gpu.features().contains(wgpu::Features::SUBGROUP) {
            return Err(shape_error(
                op,
                format!("Conv2dAlgo::{self:?} needs the SUBGROUP feature"),
            ));
        }
        Ok(())
    }

    /// [`Conv2dAlgo::constants`] and the window mode's (forward and input
    /// gradient).
    fn window_constants(
        self,
        gpu: &Gpu,
        nv: u32,
        rows: u32,
        window: u32,
        store4: bool,
        a4_shift: u32,
    ) -> [(&'static str, f64); 6] {
        let [nv_c, chunk_c, rows_c] = self.constants(gpu, nv, rows);
        let store4 = ("STORE4", store4 as u8 as f64);
        let a4 = ("A4_SHIFT", a4_shift as f64);
        [nv_c, chunk_c, rows_c, ("WINDOW", window as f64), store4, a4]
    }

    /// The pipeline constants of the subgroup kernels for `nv` vec4 column
    /// blocks and `rows` rows per lane: broadcasts need subgroups of at
    /// least 8 lanes.
    fn constants(self, gpu: &Gpu, nv: u32, rows: u32) -> [(&'static str, f64); 3] {
        let shuffle_chunk = match self {
            Conv2dAlgo::SubgroupShuffle => 5,
            _ if gpu.adapter_info().subgroup_min_size < 8 => 8,
            _ => 0,
        };
        [
            ("NV", nv as f64),
            ("SHUFFLE_CHUNK", shuffle_chunk as f64),
            ("ROWS", rows as f64),
        ]
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c_in: u32,
    h: u32,
    w: u32,
    c_out: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    groups: u32,
    oh: u32,
    ow: u32,
    cin_g: u32,
    cout_g: u32,
    has_bias: u32,
    blocks: u32,
    a: [u32; 2],
    b: [u32; 2],
    o: [u32; 2],
    v_off: u32,
    chunk: u32,
    splits: u32,
    affine: u32,
    relu: u32,
    _pad: u32,
}

impl Params {
    fn new(s: &Conv2dShape) -> Params {
        let u = |v: usize| v as u32;
        Params {
            n: u(s.n),
            c_in: u(s.c_in),
            h: u(s.h),
            w: u(s.w),
            c_out: u(s.c_out),
            kh: u(s.kh),
            kw: u(s.kw),
            stride: u(s.stride),
            pad: u(s.pad),
            groups: u(s.groups),
            oh: u(s.out_h()),
            ow: u(s.out_w()),
            cin_g: u(s.c_in / s.groups),
            cout_g: u(s.c_out / s.groups),
            has_bias: 0,
            blocks: 1,
            a: [0; 2],
            b: [0; 2],
            o: [0; 2],
            v_off: 0,
            chunk: 0,
            splits: 1,
            affine: 0,
            relu: 0,
            _pad: 0,
        }
    }
}

fn check_f32(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(shape_error(op, format!("{what} must be f32")));
    }
    Ok(())
}

/// An NCHW activation operand: any view of exactly `shape`.
fn check_activation(op: &'static str, what: &str, t: &Tensor, shape: [usize; 4]) -> Result<()> {
    check_f32(op, what, t)?;
    if t.shape() != shape {
        return Err(shape_error(
            op,
            format!("{what} has shape {:?}, expected {shape:?}", t.shape()),
        ));
    }
    Ok(())
}

/// A parameter operand (weights, bias): contiguous, of exactly `shape`.
fn check_param(op: &'static str, what: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    check_f32(op, what, t)?;
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

fn check_bias(op: &'static str, s: &Conv2dShape, bias: Option<&Tensor>) -> Result<()> {
    match bias {
        Some(b) => check_param(op, "bias", b, &[s.c_out]),
        None => Ok(()),
    }
}

/// The window mode of a pass (WINDOW in WGSL): for 3-wide kernels a lane's 4
/// adjacent pixels share the loads of their taps along x, and the weights
/// are shared by constant-index broadcasts. The forward at stride S in {1, 2}
/// is WINDOW = S, the input gradient at stride 1 is 3 and at stride 2 is 4
/// (`SubgroupWide` only: its lanes hold 8 pixels); 0 is off.
fn window_mode(s: &Conv2dShape, input_gradient: bool, broadcasts: bool, wide: bool) -> u32 {
    if s.kw != 3 || !broadcasts || PIXEL_ROWS != 4 {
        return 0;
    }
    match (input_gradient, s.stride) {
        (false, 1 | 2) => s.stride as u32,
        (true, 1) => 3,
        (true, 2) if wide => 4,
        _ => 0,
    }
}

/// The weight gradient's window mode (WINDOW in WGSL, = S): for 3-wide
/// kernels at stride 1 or 2, a lane's rows are the 3 taps of 2 (ci, ky)
/// pairs, and each pair loads the x values a chunk of up to 8 pixels of one
/// output row reads once (`SubgroupWide` only). Not with
/// a bias (its row is no tap); 0 is off.
fn weight_window_mode(s: &Conv2dShape, bias: bool, broadcasts: bool) -> u32 {
    let fits = s.kw == 3 && matches!(s.stride, 1 | 2);
    if fits && !bias && broadcasts {
        s.stride as u32
    } else {
        0
    }
}

/// Whether window mode may store a lane's 4 pixels of a channel as one vec4
/// (STORE4 in WGSL): the output view's offset, batch stride, plane and rows
/// must all be whole vec4s, and rows whole lanes of `rows` pixels.
fn vec4_stores(window: u32, out: &Tensor, plane: usize, width: usize, rows: u32) -> bool {
    let [offset, batch_stride] = out.view_params();
    window != 0
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
fn window_vec4_shift(window: u32, a: &Tensor, plane: usize, width: usize, first_x: i64) -> u32 {
    let [offset, batch_stride] = a.view_params();
    let aligned = window != 0
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

/// Pixels a lane holds in window mode `window` with `nv` column blocks
/// (more only for `SubgroupWide`, `wide`): per window a pair's multiply-adds cost less than its loads, broadcasts
/// and bookkeeping, so the input gradient's lanes take 8 adjacent pixels
/// (at stride 2, with half the taps per pixel, +20%; at stride 1 +6% with
/// 8 column blocks), and the forward's where they have few columns (NV <= 4,
/// +20%; with 8 blocks 64 accumulators were slower).
fn window_rows(window: u32, nv: u32, wide: bool) -> u32 {
    match window {
        1 if wide && nv <= 4 => 8,
        3 if wide => 8,
        4 => 8,
        _ => PIXEL_ROWS,
    }
}

/// The x/y grid of a subgroup kernel over `pixels` pixels in `image_rows`
/// rows of `width`: ROWS*GROUP pixels a workgroup, or in window mode 4
/// adjacent pixels of an image row a lane.
fn pixel_grid(window: u32, pixels: usize, image_rows: usize, width: usize, rows: u32) -> [u32; 3] {
    if window == 0 {
        grid_1d(pixels, rows * GROUP)
    } else {
        grid_1d(image_rows * width.div_ceil(rows as usize), GROUP)
    }
}

/// Vec4 blocks of output columns per invocation and blocks per group, for
/// `cols` columns per group.
fn column_blocks(cols: usize) -> (u32, u32) {
    let nv = cols.div_ceil(4).clamp(1, MAX_COLS / 4);
    (nv as u32, cols.div_ceil(nv * 4) as u32)
}

/// What the forward applies to each output y[n, k, ..] as it stores it.
#[derive(Clone, Copy, Debug)]
pub enum Conv2dEpilogue<'a> {
    /// y = conv.
    None,
    /// y = conv + bias[k].
    Bias(&'a Tensor),
    /// y = conv * scale_shift[0, k] + scale_shift[1, k], then max(y, 0) if
    /// `relu`: an evaluation-mode batch norm (and its ReLU) folded into the
    /// convolution, see `batchnorm_fold`.
    Affine { scale_shift: &'a Tensor, relu: bool },
}

impl<'a> Conv2dEpilogue<'a> {
    fn from_bias(bias: Option<&'a Tensor>) -> Self {
        bias.map_or(Conv2dEpilogue::None, Conv2dEpilogue::Bias)
    }
}

/// y = conv(x, w) + bias, with the algorithm [`Conv2dAlgo::for_shape`] picks.
pub fn conv2d_forward(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    let epilogue = Conv2dEpilogue::from_bias(bias);
    conv2d_forward_fused(gpu, Conv2dAlgo::for_shape(gpu, s), s, x, w, epilogue, y)
}

/// [`conv2d_forward`] with a chosen algorithm.
pub fn conv2d_forward_with(
    gpu: &Gpu,
    algo: Conv2dAlgo,
    s: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    conv2d_forward_fused(gpu, algo, s, x, w, Conv2dEpilogue::from_bias(bias), y)
}

/// y = epilogue(conv(x, w)) with a chosen algorithm.
pub fn conv2d_forward_fused(
    gpu: &Gpu,
    algo: Conv2dAlgo,
    s: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    epilogue: Conv2dEpilogue,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "conv2d_forward";
    s.validate()?;
    algo.check(gpu, OP)?;
    check_activation(OP, "x", x, s.input_shape())?;
    check_param(OP, "w", w, &s.weight_shape())?;
    check_activation(OP, "y", y, s.output_shape())?;
    let mut params = Params::new(s);
    params.a = x.view_params();
    params.b = [w.offset() as u32, 0];
    params.o = y.view_params();
    let v = match epilogue {
        Conv2dEpilogue::None => None,
        Conv2dEpilogue::Bias(bias) => {
            check_bias(OP, s, Some(bias))?;
            params.has_bias = 1;
            Some(bias)
        }
        Conv2dEpilogue::Affine { scale_shift, relu } => {
            check_param(OP, "scale_shift", scale_shift, &[2, s.c_out])?;
            params.affine = 1;
            params.relu = relu as u32;
            Some(scale_shift)
        }
    };
    params.v_off = v.map_or(0, |t| t.offset() as u32);
    // Without a bias, any buffer fills the unused binding.
    let tensors = [x, w, v.unwrap_or(w), y];
    let pixels = s.n * s.out_h() * s.out_w();
    match algo {
        Conv2dAlgo::Direct => {
            let grid = grid_1d(pixels * s.c_out, GROUP);
            let entry = "conv2d_forward_direct";
            Ok(vec![gpu.dispatch(FILE, entry, &params, &tensors, grid)?])
        }
        Conv2dAlgo::Tiled => {
            let tiles = (s.c_out / s.groups).div_ceil(TILE as usize) as u32;
            params.blocks = tiles;
            let [gx, gy, _] = grid_1d(pixels.div_ceil(TILE as usize), 1);
            let grid = [gx, gy, tiles * s.groups as u32];
            let entry = "conv2d_forward_tiled";
            Ok(vec![gpu.dispatch(FILE, entry, &params, &tensors, grid)?])
        }
        Conv2dAlgo::Subgroup | Conv2dAlgo::SubgroupShuffle | Conv2dAlgo::SubgroupWide => {
            let (nv, blocks) = column_blocks(s.c_out / s.groups);
            params.blocks = blocks;
            let r_len = s.c_in / s.groups * s.kh * s.kw;
            let packed = pack(
                gpu,
                "conv2d_pack_forward_weights",
                &params,
                nv,
                0,
                [x, w],
                r_len,
            )?;
            let broadcasts = algo.constants(gpu, nv, PIXEL_ROWS)[1].1 == 0.0;
            let wide = algo == Conv2dAlgo::SubgroupWide;
            let window = window_mode(s, false, broadcasts, wide);
            let rows = window_rows(window, nv, wide);
            let store4 = vec4_stores(window, y, s.out_h() * s.out_w(), s.out_w(), rows);
            let [gx, gy, _] = pixel_grid(window, pixels, s.n * s.out_h(), s.out_w(), rows);
            let grid = [gx, gy, blocks * s.groups as u32];
            // Bindings 6 and 7 are y and x again, as vec4s.
            let tensors = [x, w, v.unwrap_or(w), y, &packed.1, y, x];
            let entry = if window == 0 {
                "conv2d_forward_sg"
            } else {
                "conv2d_forward_window"
            };
            // A window starts at x = ox*S - P.
            let a4_shift = window_vec4_shift(window, x, s.h * s.w, s.w, -(s.pad as i64));
            let constants = algo.window_constants(gpu, nv, rows, window, store4, a4_shift);
            let conv = gpu.dispatch_with(FILE, entry, &constants, &params, &tensors, grid)?;
            Ok(vec![packed.0, conv])
        }
    }
}

/// dx = the input gradient for output gradient dy (overwrites dx).
pub fn conv2d_backward_input(
    gpu: &Gpu,
    s: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Dispatch>> {
    conv2d_backward_input_with(gpu, Conv2dAlgo::for_gpu(gpu), s, dy, w, dx)
}

/// dx += the input gradient for output gradient dy: how a value read by
/// several nodes sums their gradients without an extra pass.
pub fn conv2d_backward_input_accumulate(
    gpu: &Gpu,
    s: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Dispatch>> {
    conv2d_backward_input_accumulate_with(gpu, Conv2dAlgo::for_gpu(gpu), s, dy, w, dx)
}

/// [`conv2d_backward_input_accumulate`] with a chosen algorithm.
pub fn conv2d_backward_input_accumulate_with(
    gpu: &Gpu,
    algo: Conv2dAlgo,
    s: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Dispatch>> {
    backward_input(gpu, algo, s, dy, w, dx, true)
}

/// [`conv2d_backward_input`] with a chosen algorithm.
pub fn conv2d_backward_input_with(
    gpu: &Gpu,
    algo: Conv2dAlgo,
    s: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Dispatch>> {
    backward_input(gpu, algo, s, dy, w, dx, false)
}

fn backward_input(
    gpu: &Gpu,
    algo: Conv2dAlgo,
    s: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "conv2d_backward_input";
    let accumulate_c = ("ACCUMULATE", accumulate as u8 as f64);
    let algo = algo.for_backward(gpu);
    s.validate()?;
    algo.check(gpu, OP)?;
    check_activation(OP, "dy", dy, s.output_shape())?;
    check_param(OP, "w", w, &s.weight_shape())?;
    check_activation(OP, "dx", dx, s.input_shape())?;
    let mut params = Params::new(s);
    params.a = dy.view_params();
    params.b = [w.offset() as u32, 0];
    params.o = dx.view_params();
    let tensors = [dy, w, w, dx];
    match algo {
        Conv2dAlgo::Direct => {
            let grid = grid_1d(s.n * s.c_in * s.h * s.w, GROUP);
            let entry = "conv2d_backward_input_direct";
            let constants = [accumulate_c];
            Ok(vec![gpu.dispatch_with(
                FILE, entry, &constants, &params, &tensors, grid,
            )?])
        }
        Conv2dAlgo::Subgroup
        | Conv2dAlgo::SubgroupShuffle
        | Conv2dAlgo::SubgroupWide
        | Conv2dAlgo::Tiled => {
            let (nv, blocks) = column_blocks(s.c_in / s.groups);
            params.blocks = blocks;
            let k_len = s.c_out / s.groups * s.kh * s.kw;
            let broadcasts = algo.constants(gpu, nv, PIXEL_ROWS)[1].1 == 0.0;
            let wide = algo == Conv2dAlgo::SubgroupWide;
            let window = window_mode(s, true, broadcasts, wide);
            // At stride 2 a lane's pixels share half as many multiply-adds
            // per window: 8 of them (4 with two taps, 4 with one).
            let rows = window_rows(window, nv, wide);
            let entry = "conv2d_pack_backward_input_weights";
            let packed = pack(gpu, entry, &params, nv, window, [dy, w], k_len)?;
            // Window 4 puts its rows into pixel order first.
            let store4 = vec4_stores(window, dx, s.h * s.w, s.w, rows);
            let blocks_z = blocks * s.groups as u32;
            let grid = if window == 4 {
                // S phases (in y only), alternating along the workgroups
                // (see the shader), each a whole number of workgroups.
                let lanes = s.n * s.h.div_ceil(s.stride) * s.w.div_ceil(rows as usize);
                let per_phase = lanes.div_ceil(GROUP as usize) * GROUP as usize;
                let [gx, gy, _] = grid_1d(s.stride * per_phase, GROUP);
                [gx, gy, blocks_z]
            } else {
                // S*S phases, one per z slice.
                let per_phase = s.n * s.h.div_ceil(s.stride) * s.w.div_ceil(s.stride);
                let [gx, gy, _] = pixel_grid(window, per_phase, s.n * s.h, s.w, rows);
                [gx, gy, blocks_z * (s.stride * s.stride) as u32]
            };
            let tensors = [dy, w, w, dx, &packed.1, dx, dy];
            let entry = match window {
                0 => "conv2d_backward_input_sg",
                4 => "conv2d_backward_input_window_s2",
                _ => "conv2d_backward_input_window",
            };
            // A window starts at column ox0 - 2 = ix + P - 2 at stride 1
            // and (ix0 + P + 1) / 2 - 1 at stride 2 (dy's columns).
            let first_x = match window {
                4 => (s.pad as i64 + 1) / 2 - 1,
                _ => s.pad as i64 - 2,
            };
            let plane = s.out_h() * s.out_w();
            let a4_shift = window_vec4_shift(window, dy, plane, s.out_w(), first_x);
            let [nv_c, chunk_c, rows_c, window_c, store4_c, a4_c] =
                algo.window_constants(gpu, nv, rows, window, store4, a4_shift);
            let constants = [
                nv_c,
                chunk_c,
                rows_c,
                window_c,
                store4_c,
                a4_c,
                accumulate_c,
            ];
            let conv = gpu.dispatch_with(FILE, entry, &constants, &params, &tensors, grid)?;
            Ok(vec![packed.0, conv])
        }
    }
}

/// dw (and dbias when given) = the parameter gradients for output gradient
/// dy (overwritten, not accumulated).
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    s: &Conv2dShape,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    dbias: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    conv2d_backward_weight_with(gpu, Conv2dAlgo::for_gpu(gpu), s, x, dy, dw, dbias)
}

/// [`conv2d_backward_weight`] with a chosen algorithm.
pub fn conv2d_backward_weight_with(
    gpu: &Gpu,
    algo: Conv2dAlgo,
    s: &Conv2dShape,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    dbias: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "conv2d_backward_weight";
    let algo = algo.for_backward(gpu);
    s.validate()?;
    algo.check(gpu, OP)?;
    check_activation(OP, "x", x, s.input_shape())?;
    check_activation(OP, "dy", dy, s.output_shape())?;
    check_param(OP, "dw", dw, &s.weight_shape())?;
    check_bias(OP, s, dbias)?;
    let mut params = Params::new(s);
    params.a = x.view_params();
    params.b = dy.view_params();
    params.o = [dw.offset() as u32, 0];
    params.has_bias = dbias.is_some() as u32;
    params.v_off = dbias.map_or(0, |b| b.offset() as u32);
    let dbias = dbias.unwrap_or(dw);
    // The bias gradient is one more row of ones.
    let r1 = s.c_in / s.groups * s.kh * s.kw + params.has_bias as usize;
    match algo {
        Conv2dAlgo::Direct => {
            let grid = grid_1d(s.c_out * r1, GROUP);
            let entry = "conv2d_backward_weight_direct";
            let tensors = [x, dy, dbias, dw];
            Ok(vec![gpu.dispatch(FILE, entry, &params, &tensors, grid)?])
        }
        Conv2dAlgo::Subgroup
        | Conv2dAlgo::SubgroupShuffle
        | Conv2dAlgo::SubgroupWide
        | Conv2dAlgo::Tiled => {
            let (nv, blocks) = column_blocks(s.c_out / s.groups);
            params.blocks = blocks;
            let pixels = s.n * s.out_h() * s.out_w();
            let broadcasts = algo.constants(gpu, nv, WEIGHT_ROWS)[1].1 == 0.0;
            let wide = algo == Conv2dAlgo::SubgroupWide;
            let window = weight_window_mode(s, params.has_bias != 0, broadcasts && wide);
            let mut chunk = split_chunk(pixels);
            if window != 0 {
                // Splits of whole output rows: chunks stop at a row's end.
                chunk = chunk.next_multiple_of(s.out_w());
            }
            params.chunk = chunk as u32;
            params.splits = pixels.div_ceil(chunk) as u32;
            let packed = pack_dy(gpu, &params, nv, dy, pixels)?;
            let partials = gpu.zeros(&[params.splits as usize, s.c_out, r1])?;
            let rows = if window != 0 {
                WINDOW_WEIGHT_ROWS
            } else {
                WEIGHT_ROWS
            };
            let grid = [
                r1.div_ceil((rows * GROUP) as usize) as u32,
                blocks * s.groups as u32,
                params.splits,
            ];
            let entry = if window == 0 {
                "conv2d_backward_weight_sg"
            } else {
                "conv2d_backward_weight_window"
            };
            // Binding 6 (vec4 stores) is unused here; 7 is x as vec4s.
            let tensors = [x, dy, dy, &partials, &packed.1, &partials, x];
            let [nv_c, chunk_c, rows_c] = algo.constants(gpu, nv, rows);
            // A chunk starts at a multiple of 8 output columns, its windows
            // at x = ox*S - P.
            let a4_shift = window_vec4_shift(window, x, s.h * s.w, s.w, -(s.pad as i64));
            let constants = [
                nv_c,
                chunk_c,
                rows_c,
                ("WINDOW", window as f64),
                ("A4_SHIFT", a4_shift as f64),
            ];
            let pass1 = gpu.dispatch_with(FILE, entry, &constants, &params, &tensors, grid)?;
            let grid = grid_1d(s.c_out * r1, GROUP);
            let entry = "conv2d_backward_weight_reduce";
            let pass2 = gpu.dispatch(FILE, entry, &params, &[&partials, dy, dbias, dw], grid)?;
            Ok(vec![packed.0, pass1, pass2])
        }
    }
}

fn nv_constant(nv: u32) -> [(&'static str, f64); 1] {
    [("NV", nv as f64)]
}

/// Packs operand B of a subgroup kernel (`b`, read through binding 2) as
/// [groups * blocks][k_len][4 * nv] columns, zero-padded, for vec4 loads,
/// for window mode `window`.
/// Returns the packing dispatch and the packed buffer.
fn pack(
    gpu: &Gpu,
    entry: &str,
    params: &Params,
    nv: u32,
    window: u32,
    [a, b]: [&Tensor; 2],
    k_len: usize,
) -> Result<(Dispatch, Tensor)> {
    let len = (params.groups * params.blocks) as usize * k_len * 4 * nv as usize;
    let packed = gpu.zeros(&[len])?;
    let grid = grid_1d(len, GROUP);
    let tensors = [a, b, b, &packed];
    // The window mode decides the input gradient's order of taps.
    let constants = [("NV", nv as f64), ("WINDOW", window as f64)];
    let d = gpu.dispatch_with(FILE, entry, &constants, params, &tensors, grid)?;
    Ok((d, packed))
}

/// Packs dy for the weight gradient ([`pack`]'s layout, `k` = pixels).
fn pack_dy(
    gpu: &Gpu,
    params: &Params,
    nv: u32,
    dy: &Tensor,
    pixels: usize,
) -> Result<(Dispatch, Tensor)> {
    let gb = params.groups * params.blocks;
    let packed = gpu.zeros(&[gb as usize * pixels * 4 * nv as usize])?;
    let [gx, gy, _] = grid_1d(pixels, GROUP);
    let tensors = [dy, dy, dy, dy, &packed];
    let grid = [gx, gy, gb];
    let d = gpu.dispatch_with(
        FILE,
        "conv2d_pack_dy",
        &nv_constant(nv),
        params,
        &tensors,
        grid,
    )?;
    Ok((d, packed))
}

/// Output pixels per split of the weight-gradient reduction: long enough to
/// amortise each split's partial sums, short enough to give both the CPU's
/// cores (or a GPU's many) enough workgroups.
fn split_chunk(pixels: usize) -> usize {
    (pixels / 16).clamp(64, 1024)
}

#[cfg(test)]
mod tests {
    use super::Conv2dAlgo::{self, *};

    #[test]
    fn tiles_are_kept_for_layers_that_fill_them() {
        let rule =
            |algo: Conv2dAlgo, chosen, cout_g, subgroups| algo.for_width(chosen, cout_g, subgroups);
        assert_eq!(rule(Tiled, false, 16, true), Subgroup);
        assert_eq!(rule(Tiled, false, 63, true), Subgroup);
        assert_eq!(rule(Tiled, false, 64, true), Tiled);
        // Without subgroups the tiles still beat the direct kernel.
        assert_eq!(rule(Tiled, false, 16, false), Tiled);
        // `--conv-algo tiled` means tiles everywhere.
        assert_eq!(rule(Tiled, true, 16, true), Tiled);
        assert_eq!(rule(Subgroup, false, 256, true), Subgroup);
    }
}

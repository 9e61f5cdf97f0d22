//! The geometry of one convolution and the checks every pass makes of it.
//!
//! Shape legend: x [N, C, H, W], w [K, C/G, KH, KW], y [N, K, OH, OW].

use crate::error::{shape_error, Result};

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

    /// Input channels per group.
    pub(crate) fn cin_g(&self) -> usize {
        self.c_in / self.groups
    }

    /// Output channels per group.
    pub(crate) fn cout_g(&self) -> usize {
        self.c_out / self.groups
    }

    /// Multiply-adds of the forward (each backward does as many).
    pub fn macs(&self) -> u64 {
        let per_output = (self.cin_g() * self.kh * self.kw) as u64;
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

//! The uniform parameters every conv2d entry point reads (`Params` in
//! `shaders/conv2d.wgsl`; the two layouts must agree field by field).

use super::shape::Conv2dShape;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct Params {
    pub n: u32,
    pub c_in: u32,
    pub h: u32,
    pub w: u32,
    pub c_out: u32,
    pub kh: u32,
    pub kw: u32,
    pub stride: u32,
    pub pad: u32,
    pub groups: u32,
    pub oh: u32,
    pub ow: u32,
    pub cin_g: u32,
    pub cout_g: u32,
    pub has_bias: u32,
    /// Column blocks per group of the subgroup and tiled kernels.
    pub blocks: u32,
    /// (offset, batch stride) of operand A, B and the output.
    pub a: [u32; 2],
    pub b: [u32; 2],
    pub o: [u32; 2],
    /// Offset of the epilogue's vector (bias or scale-and-shift).
    pub v_off: u32,
    /// Output pixels per split of the weight gradient.
    pub chunk: u32,
    pub splits: u32,
    pub affine: u32,
    pub relu: u32,
    pub _pad: u32,
}

impl Params {
    /// The geometry of `s`; each pass sets its operands' views.
    pub fn new(s: &Conv2dShape) -> Params {
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
            cin_g: u(s.cin_g()),
            cout_g: u(s.cout_g()),
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

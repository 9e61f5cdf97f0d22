//! CPU reference of copies between channel slices.
//!
//! Shape legend: N batch, C channels of HW = H*W pixels; `a` is a contiguous
//! N x TOTAL x HW array and a slice is its channels c0..c0 + C.

/// Channels `c0..c0 + c` of the N x `total` x `hw` array `a`.
pub fn channels(a: &[f64], n: usize, total: usize, hw: usize, c0: usize, c: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n * c * hw);
    for b in 0..n {
        let start = (b * total + c0) * hw;
        out.extend_from_slice(&a[start..start + c * hw]);
    }
    out
}

/// Writes the N x `c` x `hw` array `v` into channels `c0..c0 + c` of `a`.
pub fn put_channels(
    a: &mut [f64],
    v: &[f64],
    n: usize,
    total: usize,
    hw: usize,
    c0: usize,
    c: usize,
) {
    for b in 0..n {
        let start = (b * total + c0) * hw;
        a[start..start + c * hw].copy_from_slice(&v[b * c * hw..(b + 1) * c * hw]);
    }
}

//! CPU reference of the option-A shortcut: subsample by the stride, then
//! zero-pad the channels with (CO - CI) / 2 zero channels first and the rest
//! (one more when CO - CI is odd) last.
//!
//! Shape legend: x [N, CI, H, W], y [N, CO, ceil(H/S), ceil(W/S)].

/// (index in x, index in y) of every element the shortcut copies.
fn copied(
    [n, ci, h, w]: [usize; 4],
    co: usize,
    stride: usize,
) -> impl Iterator<Item = (usize, usize)> {
    let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
    let lo = (co - ci) / 2;
    (0..n * ci).flat_map(move |bc| {
        let (b, c) = (bc / ci, bc % ci);
        (0..ho * wo).map(move |p| {
            let (i, j) = (p / wo, p % wo);
            let x = ((b * ci + c) * h + i * stride) * w + j * stride;
            let y = ((b * co + c + lo) * ho + i) * wo + j;
            (x, y)
        })
    })
}

/// y = F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, lo, co - ci - lo)).
pub fn shortcut_forward(x: &[f64], dims: [usize; 4], co: usize, stride: usize) -> Vec<f64> {
    let [n, _, h, w] = dims;
    let mut y = vec![0.0; n * co * h.div_ceil(stride) * w.div_ceil(stride)];
    for (xi, yi) in copied(dims, co, stride) {
        y[yi] = x[xi];
    }
    y
}

/// dx for the shortcut: dy's copied channels back at the sampled pixels.
pub fn shortcut_backward(dy: &[f64], dims: [usize; 4], co: usize, stride: usize) -> Vec<f64> {
    let mut dx = vec![0.0; dims.iter().product()];
    for (xi, yi) in copied(dims, co, stride) {
        dx[xi] = dy[yi];
    }
    dx
}

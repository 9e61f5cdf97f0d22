//! CPU reference of the option-A shortcut: subsample by the stride, then
//! zero-pad the channels with (CO - CI) / 2 zero channels first and the rest
//! (one more when CO - CI is odd) last.
//!
//! Shape legend: x [N, CI, H, W], y [N, CO, ceil(H/S), ceil(W/S)].

/// y = F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, lo, co - ci - lo)).
pub fn shortcut_forward(
    x: &[f64],
    [n, ci, h, w]: [usize; 4],
    co: usize,
    stride: usize,
) -> Vec<f64> {
    let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
    let lo = (co - ci) / 2;
    let mut y = vec![0.0; n * co * ho * wo];
    for b in 0..n {
        for c in 0..ci {
            for i in 0..ho {
                for j in 0..wo {
                    y[((b * co + c + lo) * ho + i) * wo + j] =
                        x[((b * ci + c) * h + i * stride) * w + j * stride];
                }
            }
        }
    }
    y
}

/// dx for the shortcut: dy's copied channels back at the sampled pixels.
pub fn shortcut_backward(
    dy: &[f64],
    [n, ci, h, w]: [usize; 4],
    co: usize,
    stride: usize,
) -> Vec<f64> {
    let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
    let lo = (co - ci) / 2;
    let mut dx = vec![0.0; n * ci * h * w];
    for b in 0..n {
        for c in 0..ci {
            for i in 0..ho {
                for j in 0..wo {
                    dx[((b * ci + c) * h + i * stride) * w + j * stride] =
                        dy[((b * co + c + lo) * ho + i) * wo + j];
                }
            }
        }
    }
    dx
}

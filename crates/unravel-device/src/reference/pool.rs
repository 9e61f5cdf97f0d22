//! CPU reference of the pooling kernels (PyTorch semantics). Operands are
//! contiguous NCHW f64 slices; `shape` is the input's [n, c, h, w].

/// 2x2 average, stride 2, floor: [n, c, h / 2, w / 2].
pub fn avg_pool2x2_forward(x: &[f64], shape: [usize; 4]) -> Vec<f64> {
    let [n, c, h, w] = shape;
    let (ho, wo) = (h / 2, w / 2);
    let mut y = Vec::with_capacity(n * c * ho * wo);
    for plane in x.chunks(h * w).take(n * c) {
        for oh in 0..ho {
            for ow in 0..wo {
                let at = |dh: usize, dw: usize| plane[(2 * oh + dh) * w + 2 * ow + dw];
                y.push((at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4.0);
            }
        }
    }
    y
}

/// Backward of [`avg_pool2x2_forward`]; dropped rows/columns get 0.
pub fn avg_pool2x2_backward(dy: &[f64], shape: [usize; 4]) -> Vec<f64> {
    let [n, c, h, w] = shape;
    let (ho, wo) = (h / 2, w / 2);
    let mut dx = vec![0.0; n * c * h * w];
    for (p, g) in dy.chunks(ho * wo).enumerate() {
        for oh in 0..ho {
            for ow in 0..wo {
                for (dh, dw) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    dx[p * h * w + (2 * oh + dh) * w + 2 * ow + dw] += g[oh * wo + ow] / 4.0;
                }
            }
        }
    }
    dx
}

/// Output extent of the 3x3 / stride 2 / padding 1 max pool.
pub fn max_pool3x3s2_out(h: usize, w: usize) -> (usize, usize) {
    ((h - 1) / 2 + 1, (w - 1) / 2 + 1)
}

/// 3x3 max, stride 2, padding 1 (padding never wins): returns y and, per
/// output, the in-plane index h * W + w of the first maximum in row-major
/// order.
pub fn max_pool3x3s2_forward(x: &[f64], shape: [usize; 4]) -> (Vec<f64>, Vec<usize>) {
    let [n, c, h, w] = shape;
    let (ho, wo) = max_pool3x3s2_out(h, w);
    let mut y = Vec::with_capacity(n * c * ho * wo);
    let mut arg = Vec::with_capacity(n * c * ho * wo);
    for plane in x.chunks(h * w).take(n * c) {
        for oh in 0..ho {
            for ow in 0..wo {
                let mut best = (f64::NEG_INFINITY, usize::MAX);
                for hh in (2 * oh).saturating_sub(1)..(2 * oh + 2).min(h) {
                    for ww in (2 * ow).saturating_sub(1)..(2 * ow + 2).min(w) {
                        let v = plane[hh * w + ww];
                        if best.1 == usize::MAX || v > best.0 {
                            best = (v, hh * w + ww);
                        }
                    }
                }
                y.push(best.0);
                arg.push(best.1);
            }
        }
    }
    (y, arg)
}

/// Backward of [`max_pool3x3s2_forward`] from its argmax: gradients of
/// overlapping windows that chose the same pixel add up.
pub fn max_pool3x3s2_backward(dy: &[f64], argmax: &[usize], shape: [usize; 4]) -> Vec<f64> {
    let [n, c, h, w] = shape;
    let (ho, wo) = max_pool3x3s2_out(h, w);
    let mut dx = vec![0.0; n * c * h * w];
    for (k, (&g, &a)) in dy.iter().zip(argmax).enumerate() {
        let p = k / (ho * wo);
        dx[p * h * w + a] += g;
    }
    dx
}

/// Mean over H, W: [n, c].
pub fn global_avg_pool_forward(x: &[f64], shape: [usize; 4]) -> Vec<f64> {
    let [n, c, h, w] = shape;
    x.chunks(h * w)
        .take(n * c)
        .map(|plane| plane.iter().sum::<f64>() / (h * w) as f64)
        .collect()
}

/// dx = dy / (H * W) broadcast over each plane.
pub fn global_avg_pool_backward(dy: &[f64], shape: [usize; 4]) -> Vec<f64> {
    let [_, _, h, w] = shape;
    dy.iter()
        .flat_map(|&g| std::iter::repeat_n(g / (h * w) as f64, h * w))
        .collect()
}

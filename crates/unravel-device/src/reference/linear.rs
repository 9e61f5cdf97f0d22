//! CPU reference of the fully connected layer, PyTorch's `nn.Linear`
//! layout.
//!
//! Shape legend: x [N, I], W [O, I], b [O], y [N, O], all row-major.

/// y = x W^T + b.
pub fn linear_forward(
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    n: usize,
    fin: usize,
    fout: usize,
) -> Vec<f64> {
    let mut y = vec![0.0; n * fout];
    for r in 0..n {
        for o in 0..fout {
            let dot: f64 = (0..fin).map(|i| x[r * fin + i] * w[o * fin + i]).sum();
            y[r * fout + o] = dot + b.map_or(0.0, |b| b[o]);
        }
    }
    y
}

/// dx = dy W.
pub fn linear_backward_input(dy: &[f64], w: &[f64], n: usize, fin: usize, fout: usize) -> Vec<f64> {
    let mut dx = vec![0.0; n * fin];
    for r in 0..n {
        for i in 0..fin {
            dx[r * fin + i] = (0..fout).map(|o| dy[r * fout + o] * w[o * fin + i]).sum();
        }
    }
    dx
}

/// (dW, db) = (dy^T x, sum over rows of dy).
pub fn linear_backward_weight(
    x: &[f64],
    dy: &[f64],
    n: usize,
    fin: usize,
    fout: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut dw = vec![0.0; fout * fin];
    for o in 0..fout {
        for i in 0..fin {
            dw[o * fin + i] = (0..n).map(|r| dy[r * fout + o] * x[r * fin + i]).sum();
        }
    }
    let db = (0..fout)
        .map(|o| (0..n).map(|r| dy[r * fout + o]).sum())
        .collect();
    (dw, db)
}

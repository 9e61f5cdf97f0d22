//! CPU reference of the element-wise kernels.

pub fn relu_forward(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v.max(0.0)).collect()
}

pub fn relu_backward(y: &[f64], dy: &[f64]) -> Vec<f64> {
    y.iter()
        .zip(dy)
        .map(|(&y, &g)| if y > 0.0 { g } else { 0.0 })
        .collect()
}

pub fn add_forward(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

pub fn scale(x: &[f64], s: f64) -> Vec<f64> {
    x.iter().map(|v| v * s).collect()
}

pub fn sigmoid_forward(z: &[f64]) -> Vec<f64> {
    z.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect()
}

pub fn sigmoid_backward(t: &[f64], dt: &[f64]) -> Vec<f64> {
    t.iter().zip(dt).map(|(&t, &g)| g * t * (1.0 - t)).collect()
}

/// y = t * h + (1 - t) * x.
pub fn highway_forward(t: &[f64], h: &[f64], x: &[f64]) -> Vec<f64> {
    (0..t.len())
        .map(|i| t[i] * h[i] + (1.0 - t[i]) * x[i])
        .collect()
}

/// Returns (dt, dh, dx).
pub fn highway_backward(
    t: &[f64],
    h: &[f64],
    x: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dt = (0..t.len()).map(|i| dy[i] * (h[i] - x[i])).collect();
    let dh = (0..t.len()).map(|i| dy[i] * t[i]).collect();
    let dx = (0..t.len()).map(|i| dy[i] * (1.0 - t[i])).collect();
    (dt, dh, dx)
}

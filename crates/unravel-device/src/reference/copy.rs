//! CPU reference of channel concatenation and its backward (split).
//!
//! Shape legend: N batch, C channels, HW = H*W pixels per channel; every
//! tensor is a contiguous NCHW slice.

/// Concatenates contiguous NCHW tensors along channels. `parts` gives each
/// input with its channel count; all share `n` and `hw`.
pub fn concat_forward(parts: &[(&[f64], usize)], n: usize, hw: usize) -> Vec<f64> {
    let c_out: usize = parts.iter().map(|&(_, c)| c).sum();
    let mut out = Vec::with_capacity(n * c_out * hw);
    for b in 0..n {
        for &(x, c) in parts {
            out.extend_from_slice(&x[b * c * hw..(b + 1) * c * hw]);
        }
    }
    out
}

/// Splits the output gradient back into one gradient per input, the inputs
/// having `channels[k]` channels each.
pub fn concat_backward(dout: &[f64], channels: &[usize], n: usize, hw: usize) -> Vec<Vec<f64>> {
    let c_out: usize = channels.iter().sum();
    let mut grads: Vec<Vec<f64>> = channels
        .iter()
        .map(|&c| Vec::with_capacity(n * c * hw))
        .collect();
    for b in 0..n {
        let mut c0 = 0;
        for (g, &c) in grads.iter_mut().zip(channels) {
            let start = (b * c_out + c0) * hw;
            g.extend_from_slice(&dout[start..start + c * hw]);
            c0 += c;
        }
    }
    grads
}

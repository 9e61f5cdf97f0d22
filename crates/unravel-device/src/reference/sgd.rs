//! CPU reference of `torch.optim.SGD` (dampening 0), written the way
//! PyTorch's `_single_tensor_sgd` is, including its lazily created momentum
//! buffer, so the tests also check that the GPU's zero-initialised buffer is
//! equivalent.
//!
//! Shape legend: L parameters, the first D (`decay_len`) with weight decay.

/// Hyper-parameters, as given to `torch.optim.SGD`.
#[derive(Clone, Copy, Debug)]
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

/// One step: updates `params` and the momentum buffer, which is `None`
/// before the first step (PyTorch's `momentum_buffer_list` entry).
pub fn sgd_step(
    h: &Sgd,
    params: &mut [f64],
    grads: &[f64],
    buffer: &mut Option<Vec<f64>>,
    decay_len: usize,
) {
    let mut d_p: Vec<f64> = grads.to_vec();
    if h.weight_decay != 0.0 {
        for i in 0..decay_len {
            d_p[i] += h.weight_decay * params[i];
        }
    }
    if h.momentum != 0.0 {
        let buf = match buffer {
            None => buffer.insert(d_p.clone()),
            Some(buf) => {
                for (b, g) in buf.iter_mut().zip(&d_p) {
                    *b = h.momentum * *b + g;
                }
                buf
            }
        };
        if h.nesterov {
            for (g, b) in d_p.iter_mut().zip(buf.iter()) {
                *g += h.momentum * b;
            }
        } else {
            d_p.copy_from_slice(buf);
        }
    }
    for (w, g) in params.iter_mut().zip(&d_p) {
        *w -= h.lr * g;
    }
}

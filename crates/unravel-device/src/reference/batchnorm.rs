//! CPU reference of batch normalisation (PyTorch's BatchNorm2d semantics),
//! with the optional fused ReLU. Operands are contiguous NCHW f64 slices of
//! shape `[n, c, h, w]`; per-channel vectors have length `c`.

/// What a training-mode forward produces besides `y`.
#[derive(Clone, Debug)]
pub struct TrainForward {
    pub y: Vec<f64>,
    /// Batch mean per channel.
    pub mean: Vec<f64>,
    /// Biased batch variance (the one used to normalise).
    pub var: Vec<f64>,
    /// 1 / sqrt(var + eps), the value saved for backward.
    pub invstd: Vec<f64>,
    /// running_mean after the momentum update.
    pub running_mean: Vec<f64>,
    /// running_var after the momentum update (with the unbiased variance).
    pub running_var: Vec<f64>,
}

fn channel_values(x: &[f64], shape: [usize; 4], ch: usize) -> impl Iterator<Item = f64> + '_ {
    let [n, c, h, w] = shape;
    let hw = h * w;
    (0..n).flat_map(move |i| x[(i * c + ch) * hw..(i * c + ch + 1) * hw].iter().copied())
}

/// Two-pass mean and biased variance of each channel.
pub fn channel_moments(x: &[f64], shape: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
    let [n, c, h, w] = shape;
    let count = (n * h * w) as f64;
    (0..c)
        .map(|ch| {
            let mean = channel_values(x, shape, ch).sum::<f64>() / count;
            let var = channel_values(x, shape, ch)
                .map(|v| (v - mean) * (v - mean))
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .unzip()
}

/// y = gamma * (x - mean) * invstd + beta per channel, then ReLU if `relu`.
fn normalise(x: &[f64], shape: [usize; 4], scale: &[f64], shift: &[f64], relu: bool) -> Vec<f64> {
    let [_, c, h, w] = shape;
    let hw = h * w;
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / hw) % c;
            let y = v * scale[ch] + shift[ch];
            if relu {
                y.max(0.0)
            } else {
                y
            }
        })
        .collect()
}

/// A batch-norm layer: its [C] parameters and running statistics, and its
/// settings (PyTorch's eps and momentum, and whether a ReLU follows).
#[derive(Clone, Copy, Debug)]
pub struct Layer<'a> {
    pub gamma: &'a [f64],
    pub beta: &'a [f64],
    pub running_mean: &'a [f64],
    pub running_var: &'a [f64],
    pub eps: f64,
    pub momentum: f64,
    pub relu: bool,
}

/// Training-mode forward: normalises with the batch statistics and updates
/// the running statistics with `momentum` (r = (1 - m) r + m stat).
pub fn train_forward(x: &[f64], shape: [usize; 4], layer: &Layer) -> TrainForward {
    let (gamma, beta, eps, momentum) = (layer.gamma, layer.beta, layer.eps, layer.momentum);
    let [n, _, h, w] = shape;
    let count = (n * h * w) as f64;
    let (mean, var) = channel_moments(x, shape);
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let scale: Vec<f64> = gamma.iter().zip(&invstd).map(|(g, s)| g * s).collect();
    let shift: Vec<f64> = (0..gamma.len())
        .map(|ch| beta[ch] - mean[ch] * scale[ch])
        .collect();
    let y = normalise(x, shape, &scale, &shift, layer.relu);
    let running_mean = layer
        .running_mean
        .iter()
        .zip(&mean)
        .map(|(r, m)| (1.0 - momentum) * r + momentum * m)
        .collect();
    let running_var = layer
        .running_var
        .iter()
        .zip(&var)
        .map(|(r, v)| (1.0 - momentum) * r + momentum * v * count / (count - 1.0))
        .collect();
    TrainForward {
        y,
        mean,
        var,
        invstd,
        running_mean,
        running_var,
    }
}

/// Eval-mode forward with the running statistics (`layer.momentum` unused).
pub fn eval_forward(x: &[f64], shape: [usize; 4], layer: &Layer) -> Vec<f64> {
    let (gamma, beta, eps) = (layer.gamma, layer.beta, layer.eps);
    let scale: Vec<f64> = gamma
        .iter()
        .zip(layer.running_var)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect();
    let shift: Vec<f64> = (0..gamma.len())
        .map(|ch| beta[ch] - layer.running_mean[ch] * scale[ch])
        .collect();
    normalise(x, shape, &scale, &shift, layer.relu)
}

/// Gradients of the training-mode forward (batch statistics depend on x).
#[derive(Clone, Debug)]
pub struct Backward {
    pub dx: Vec<f64>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
}

/// Backward of [`train_forward`]: `y` is its output, used only with `relu`
/// (dy is masked by y > 0 first).
pub fn train_backward(
    x: &[f64],
    y: &[f64],
    dy: &[f64],
    shape: [usize; 4],
    gamma: &[f64],
    eps: f64,
    relu: bool,
) -> Backward {
    let [n, c, h, w] = shape;
    let hw = h * w;
    let count = (n * hw) as f64;
    let g: Vec<f64> = if relu {
        dy.iter()
            .zip(y)
            .map(|(&g, &y)| if y > 0.0 { g } else { 0.0 })
            .collect()
    } else {
        dy.to_vec()
    };
    let (mean, var) = channel_moments(x, shape);
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let mut dbeta = vec![0.0; c];
    let mut dgamma = vec![0.0; c];
    for (i, (&gi, &xi)) in g.iter().zip(x).enumerate() {
        let ch = (i / hw) % c;
        dbeta[ch] += gi;
        dgamma[ch] += gi * (xi - mean[ch]) * invstd[ch];
    }
    let dx = g
        .iter()
        .zip(x)
        .enumerate()
        .map(|(i, (&gi, &xi))| {
            let ch = (i / hw) % c;
            let xhat = (xi - mean[ch]) * invstd[ch];
            gamma[ch] * invstd[ch] * (gi - dbeta[ch] / count - xhat * dgamma[ch] / count)
        })
        .collect();
    Backward { dx, dgamma, dbeta }
}

/// Backward of [`eval_forward`] (the running statistics held constant, as a
/// training plan with `frozen_stats` computes it): `y` is its output, used
/// only with `relu`.
pub fn frozen_backward(
    x: &[f64],
    y: &[f64],
    dy: &[f64],
    shape: [usize; 4],
    layer: &Layer,
) -> Backward {
    let [_, c, h, w] = shape;
    let hw = h * w;
    let invstd: Vec<f64> = layer
        .running_var
        .iter()
        .map(|v| 1.0 / (v + layer.eps).sqrt())
        .collect();
    let mut back = Backward {
        dx: Vec::with_capacity(x.len()),
        dgamma: vec![0.0; c],
        dbeta: vec![0.0; c],
    };
    for (i, ((&gi, &xi), &yi)) in dy.iter().zip(x).zip(y).enumerate() {
        let ch = (i / hw) % c;
        let g = if layer.relu && yi <= 0.0 { 0.0 } else { gi };
        back.dbeta[ch] += g;
        back.dgamma[ch] += g * (xi - layer.running_mean[ch]) * invstd[ch];
        back.dx.push(layer.gamma[ch] * invstd[ch] * g);
    }
    back
}

//! Per-channel input normalisation, `(x / 255 - mean) / std`, with the
//! statistics taken from the training set only (the test set must not
//! leak into preprocessing). Centred, unit-scale inputs keep the first
//! convolution's activations in the range its initialisation assumes.
//!
//! Sums are accumulated in f64: 60000 x 784 terms would lose digits in f32.
//! The standard deviation is the population one (divided by the count).

use super::Dataset;

/// Per-channel mean and standard deviation of pixel values scaled to
/// [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Mean 0 and std 1 for each of `channels`: `x / 255` only.
    pub fn identity(channels: usize) -> Normalization {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// The statistics of `train`. A channel with no spread (possible only
    /// in tiny or synthetic sets) gets std 1 instead of a division by zero;
    /// an empty set gives [`Normalization::identity`].
    pub fn from_dataset(train: &Dataset) -> Normalization {
        let c = train.shape.c;
        let plane = train.shape.h * train.shape.w;
        if train.n == 0 || plane == 0 {
            return Normalization::identity(c);
        }
        let mut sum = vec![0f64; c];
        let mut sum_sq = vec![0f64; c];
        for image in train.images.chunks_exact(c * plane) {
            for (ch, pixels) in image.chunks_exact(plane).enumerate() {
                // Integer sums per plane are exact; f64 across planes.
                let (s, q) = pixels.iter().fold((0u64, 0u64), |(s, q), &p| {
                    (s + p as u64, q + (p as u64) * (p as u64))
                });
                sum[ch] += s as f64;
                sum_sq[ch] += q as f64;
            }
        }
        let count = (train.n * plane) as f64;
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for ch in 0..c {
            let m = sum[ch] / count / 255.0;
            let var = (sum_sq[ch] / count / (255.0 * 255.0) - m * m).max(0.0);
            let s = var.sqrt();
            mean.push(m as f32);
            std.push(if s > 1e-12 { s as f32 } else { 1.0 });
        }
        Normalization { mean, std }
    }

    /// Writes the normalised `image` (CHW bytes, `channels` planes) into
    /// `out`, which must be as long as `image`.
    pub fn apply(&self, image: &[u8], out: &mut [f32]) {
        let c = self.mean.len();
        let plane = image.len() / c.max(1);
        for ch in 0..c {
            let scale = 1.0 / (255.0 * self.std[ch]);
            let shift = self.mean[ch] / self.std[ch];
            let src = &image[ch * plane..(ch + 1) * plane];
            let dst = &mut out[ch * plane..(ch + 1) * plane];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s as f32 * scale - shift;
            }
        }
    }
}

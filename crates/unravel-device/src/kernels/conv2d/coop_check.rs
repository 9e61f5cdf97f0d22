//! The check that decides whether a device's cooperative matrices are used
//! by default: one small convolution, every pass, on the cooperative-matrix
//! kernels against the direct ones. wgpu's cooperative matrices are
//! experimental and drivers differ, so tensor cores are chosen only where
//! they were seen to compute right on this device.
//!
//! Shape legend: x [N, C, H, W], w [K, C, KH, KW], y and dy [N, K, H, W]
//! (stride 1, padding 1).

use super::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2dAlgo, Conv2dEpilogue,
    Conv2dShape, CoopTile, ForwardOptions, InputGradOptions, WeightGradOptions,
};
use crate::context::Gpu;
use crate::tensor::{DType, Tensor};

/// The largest difference allowed, relative to the largest reference value:
/// the cooperative kernels round operands to f16 (2^-11 each), the direct
/// ones do not, over reductions of 180 to 72 terms.
const TOLERANCE: f64 = 1e-2;

/// The check's convolution: channel counts that fill no 16 x 16 tile
/// evenly, a bias, f16 activations as mixed precision has them.
const SHAPE: Conv2dShape = Conv2dShape {
    n: 2,
    c_in: 20,
    h: 6,
    w: 6,
    c_out: 36,
    kh: 3,
    kw: 3,
    stride: 1,
    pad: 1,
    groups: 1,
};

/// The adapter's tile if its cooperative matrices pass the check, else why
/// not (no tile offered, or what went wrong). Run once per device.
pub(crate) fn verify(gpu: &Gpu) -> Result<CoopTile, String> {
    let tile = CoopTile::for_gpu(gpu).ok_or_else(|| {
        format!(
            "{} offers no cooperative-matrix tile (f16 operands, f32 accumulator, subgroups of 32+)",
            gpu.adapter_info().name
        )
    })?;
    agrees_with_direct(gpu, Conv2dAlgo::CoopMatrix).map_err(|why| {
        format!(
            "the {0}x{0} cooperative-matrix kernels failed their check: {why}",
            tile.size
        )
    })?;
    Ok(tile)
}

/// Values in [-1, 1) from a fixed sequence.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// y, dx, dw and dbias of [`SHAPE`] computed with `algo`.
fn passes(gpu: &Gpu, algo: Conv2dAlgo) -> crate::error::Result<[Vec<f32>; 4]> {
    let s = SHAPE;
    let f16 = DType::F16;
    let x = gpu.upload_as(&values(s.c_in * 72, 1), &s.input_shape(), f16)?;
    let w = gpu.upload(&values(s.c_out * s.c_in * 9, 2), &s.weight_shape())?;
    let bias = gpu.upload(&values(s.c_out, 3), &[s.c_out])?;
    let dy = gpu.upload_as(&values(s.c_out * 72, 4), &s.output_shape(), f16)?;
    let y = gpu.zeros_of(&s.output_shape(), f16)?;
    let dx = gpu.zeros_of(&s.input_shape(), f16)?;
    let dw = gpu.zeros(&s.weight_shape())?;
    let dbias = gpu.zeros(&[s.c_out])?;
    let forward = ForwardOptions {
        algo: Some(algo),
        epilogue: Conv2dEpilogue::Bias(&bias),
    };
    let mut dispatches = conv2d_forward(gpu, &s, &x, &w, &y, &forward)?;
    let input = InputGradOptions::with_algo(Some(algo));
    dispatches.extend(conv2d_backward_input(gpu, &s, &dy, &w, &dx, &input)?);
    let weight = WeightGradOptions { algo: Some(algo) };
    dispatches.extend(conv2d_backward_weight(
        gpu,
        &s,
        &x,
        &dy,
        &dw,
        Some(&dbias),
        &weight,
    )?);
    gpu.run(&dispatches)?;
    let read = |t: &Tensor| gpu.read(t);
    Ok([read(&y)?, read(&dx)?, read(&dw)?, read(&dbias)?])
}

/// Whether `algo` computes [`SHAPE`]'s passes as the direct kernels do.
pub(crate) fn agrees_with_direct(gpu: &Gpu, algo: Conv2dAlgo) -> Result<(), String> {
    let want = passes(gpu, Conv2dAlgo::Direct).map_err(|e| e.to_string())?;
    let got = passes(gpu, algo).map_err(|e| e.to_string())?;
    for ((name, got), want) in ["y", "dx", "dw", "dbias"].iter().zip(&got).zip(&want) {
        compare(name, got, want)?;
    }
    Ok(())
}

/// `got` against `want`: largest difference over largest |want|, and no
/// value that is not finite.
fn compare(name: &str, got: &[f32], want: &[f32]) -> Result<(), String> {
    let scale = want
        .iter()
        .fold(0f64, |m, &v| m.max((v as f64).abs()))
        .max(1e-30);
    let mut worst = 0f64;
    for (&g, &w) in got.iter().zip(want) {
        let d = (g as f64 - w as f64).abs() / scale;
        if !d.is_finite() {
            return Err(format!("{name} holds {g} where {w} was expected"));
        }
        worst = worst.max(d);
    }
    if got.len() != want.len() || worst > TOLERANCE {
        return Err(format!(
            "{name} differs from the direct kernel's by {worst:.2e} of its largest value (allowed {TOLERANCE:e})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv2d::tests::common::gpu;

    #[test]
    fn the_comparison_catches_a_wrong_value() {
        let want = values(50, 7);
        assert!(compare("y", &want, &want).is_ok());
        let mut wrong = want.clone();
        wrong[17] += 0.05;
        let err = compare("y", &wrong, &want).unwrap_err();
        assert!(err.contains("y differs"), "{err}");
        wrong[17] = f32::NAN;
        assert!(compare("y", &wrong, &want).unwrap_err().contains("NaN"));
    }

    /// The check itself on kernels that compute right (the subgroup ones),
    /// and its verdict on an adapter without cooperative matrices.
    #[test]
    fn the_check_passes_right_kernels_and_names_a_missing_tile() {
        let g = gpu();
        agrees_with_direct(g, Conv2dAlgo::SubgroupWide).unwrap();
        if CoopTile::for_gpu(g).is_none() {
            let why = verify(g).unwrap_err();
            assert!(why.contains("offers no cooperative-matrix tile"), "{why}");
        }
    }
}

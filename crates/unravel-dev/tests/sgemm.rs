//! Both SGEMM kernels against the CPU reference. The 8-lane kernel either
//! runs and matches (adapters with 8-lane subgroups, lavapipe among them)
//! or is refused with the missing feature named: the test checks one or the
//! other on every adapter.

use rand::{Rng, SeedableRng};
use unravel_dev::sgemm::{self, has_8_lane_subgroups, matmul_with, MatmulAlgo};
use unravel_device::{DeviceError, Gpu};

fn gpu() -> &'static Gpu {
    static GPU: std::sync::OnceLock<Gpu> = std::sync::OnceLock::new();
    GPU.get_or_init(|| Gpu::default_adapter().expect("a GPU adapter (lavapipe in CI)"))
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn check(algo: MatmulAlgo, m: usize, k: usize, n: usize) {
    let g = gpu();
    let (a, b) = (random(m * k, 1), random(k * n, 2));
    let ta = g.upload(&a, &[m, k]).unwrap();
    let tb = g.upload(&b, &[k, n]).unwrap();
    let tc = g.zeros(&[m, n]).unwrap();
    g.run(&[matmul_with(g, algo, &ta, &tb, &tc).unwrap()])
        .unwrap();
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let want = sgemm::reference(&wide(&a), &wide(&b), m, k, n);
    let got = g.read(&tc).unwrap();
    let scale = want.iter().fold(1e-3f64, |s, w| s.max(w.abs()));
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let err = (g as f64 - w).abs() / scale;
        assert!(err <= 1e-5, "{algo:?} {m}x{k}x{n} [{i}]: {g} vs {w}");
    }
}

#[test]
fn tiled_matmul_matches_reference_on_awkward_shapes() {
    check(MatmulAlgo::Tiled, 70, 37, 65);
    check(MatmulAlgo::Tiled, 1, 5, 3);
    check(MatmulAlgo::Tiled, 128, 64, 64);
}

#[test]
fn subgroup_matmul_matches_reference_or_is_refused() {
    let g = gpu();
    if has_8_lane_subgroups(g) {
        check(MatmulAlgo::Subgroup8, 144, 37, 96);
        check(MatmulAlgo::Subgroup8, 16, 1, 32);
        // The wide variant (N % 64 == 0, K % 4 == 0).
        check(MatmulAlgo::Subgroup8, 144, 36, 192);
        check(MatmulAlgo::Subgroup8, 16, 4, 64);
    } else {
        let a = g.zeros(&[16, 4]).unwrap();
        let b = g.zeros(&[4, 32]).unwrap();
        let c = g.zeros(&[16, 32]).unwrap();
        let err = matmul_with(g, MatmulAlgo::Subgroup8, &a, &b, &c).unwrap_err();
        assert!(matches!(err, DeviceError::MissingFeature { .. }), "{err}");
    }
}

#[test]
fn subgroup_matmul_rejects_unaligned_shapes() {
    let g = gpu();
    let a = g.zeros(&[15, 4]).unwrap();
    let b = g.zeros(&[4, 32]).unwrap();
    let c = g.zeros(&[15, 32]).unwrap();
    assert!(matmul_with(g, MatmulAlgo::Subgroup8, &a, &b, &c).is_err());
}

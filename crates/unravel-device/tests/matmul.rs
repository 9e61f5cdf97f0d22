//! Both matmul kernels against the CPU reference.

mod common;

use common::*;
use unravel_device::kernels::matmul::{matmul_with, MatmulAlgo};
use unravel_device::reference::matmul as reference;

fn check(algo: MatmulAlgo, m: usize, k: usize, n: usize) {
    let g = gpu();
    let (a, b) = (random(m * k, 1), random(k * n, 2));
    let ta = g.upload(&a, &[m, k]).unwrap();
    let tb = g.upload(&b, &[k, n]).unwrap();
    let tc = g.zeros(&[m, n]).unwrap();
    g.run(&[matmul_with(g, algo, &ta, &tb, &tc).unwrap()])
        .unwrap();
    let want = reference::matmul(&to_f64(&a), &to_f64(&b), m, k, n);
    assert_close(
        &format!("{algo:?} {m}x{k}x{n}"),
        &g.read(&tc).unwrap(),
        &want,
        1e-5,
    );
}

#[test]
fn tiled_matmul_matches_reference_on_awkward_shapes() {
    check(MatmulAlgo::Tiled, 70, 37, 65);
    check(MatmulAlgo::Tiled, 1, 5, 3);
    check(MatmulAlgo::Tiled, 128, 64, 64);
}

#[test]
fn subgroup_matmul_matches_reference() {
    let info = gpu().adapter_info();
    if info.subgroup_min_size != 8 || info.subgroup_max_size != 8 {
        // The variant is only selected on 8-lane adapters; lavapipe in CI is one.
        eprintln!("skipped: adapter subgroup size is not 8");
        return;
    }
    check(MatmulAlgo::Subgroup8, 144, 37, 96);
    check(MatmulAlgo::Subgroup8, 16, 1, 32);
    // The wide variant (N % 64 == 0, K % 4 == 0).
    check(MatmulAlgo::Subgroup8, 144, 36, 192);
    check(MatmulAlgo::Subgroup8, 16, 4, 64);
}

#[test]
fn subgroup_matmul_rejects_unaligned_shapes() {
    let g = gpu();
    let a = g.zeros(&[15, 4]).unwrap();
    let b = g.zeros(&[4, 32]).unwrap();
    let c = g.zeros(&[15, 32]).unwrap();
    assert!(matmul_with(g, MatmulAlgo::Subgroup8, &a, &b, &c).is_err());
}

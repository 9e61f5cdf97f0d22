//! Times the SGEMM kernels at 1024^3, with and without naga's bounds checks.
//!
//! `cargo run --release -p unravel-dev --example sgemm_speed`
//!
//! Prints GFLOP/s by wall time and by CPU time over all cores (the latter
//! sees through other load on a shared machine).

use std::time::Instant;

use unravel_dev::cpu_time::{cpu_adapter_threads, process_cpu_seconds};
use unravel_dev::sgemm::{matmul_with, MatmulAlgo};
use unravel_device::{AdapterOptions, Gpu, Result};

const REPEAT: usize = 5;
const RUNS: usize = 5;

fn main() -> Result<()> {
    let n = 1024;
    let cores = cpu_adapter_threads() as f64;
    for unchecked in [false, true] {
        let gpu = Gpu::new(&AdapterOptions {
            unchecked_shaders: unchecked,
            ..Default::default()
        })?;
        let a = gpu.upload(&vec![0.5; n * n], &[n, n])?;
        let b = gpu.upload(&vec![0.25; n * n], &[n, n])?;
        let c = gpu.zeros(&[n, n])?;
        let algo = MatmulAlgo::for_device(&gpu);
        let d = matmul_with(&gpu, algo, &a, &b, &c)?;
        let run = || -> Result<f64> {
            let start = Instant::now();
            let mut rec = gpu.recorder();
            for _ in 0..REPEAT {
                rec.record(&d);
            }
            rec.submit()?;
            gpu.wait()?;
            Ok(start.elapsed().as_secs_f64())
        };
        run()?;
        let cpu0 = process_cpu_seconds().unwrap_or(0.0);
        let mut t = (0..RUNS).map(|_| run()).collect::<Result<Vec<f64>>>()?;
        let cpu = (process_cpu_seconds().unwrap_or(0.0) - cpu0) / RUNS as f64;
        t.sort_by(f64::total_cmp);
        let flops = 2.0 * (n * n * n) as f64 * REPEAT as f64;
        println!(
            "sgemm 1024^3 {algo:?} {}: {:.1} GFLOP/s wall ({:.1} by CPU time)",
            if unchecked { "unchecked" } else { "checked" },
            flops / t[RUNS / 2] / 1e9,
            flops / (cpu / cores) / 1e9
        );
    }
    Ok(())
}

//! Loops over a private array against named registers in a WGSL kernel, on
//! a CPU adapter with 8-lane subgroups (lavapipe).
//!
//! `cargo run --release -p unravel-dev --example loop_registers [SAMPLES]`
//!
//! What it measures: one register-blocked subgroup GEMM
//! (`shaders/loop_registers.wgsl`: 4 rows x 4 vec4 column blocks a lane, B
//! shared by `subgroupBroadcast` from the 8 lanes of a subgroup) written
//! three ways: `named` (named private registers, every FMA written out),
//! `loops` (the accumulators in a `var<private>` flat array, loops bounded
//! by pipeline-overridable constants) and `loops_runtime` (the same loops
//! bounded by values from the uniform buffer).
//!
//! Why: loops over arrays keep a kernel short, written by hand, and its
//! blocking a choice of the host, but they pay only where the compiler
//! unrolls them and keeps the arrays in registers. On lavapipe (Mesa 22.3.6,
//! 2 threads, bounds-checked shaders) this example measured `loops` at
//! 0.99-1.01 of `named` and `loops_runtime` at 0.30-0.33: bounded by
//! uniform values, the loops cannot be unrolled and the arrays, indexed at
//! run time, leave the registers; that control shows what this costs. (An
//! earlier experiment's control, with rows looped before blocks over an
//! array of broadcast values, was 5-9x slower than named registers.)
//! The 8 broadcast steps stay written out in all three, because naga 30
//! wants `subgroupBroadcast`'s lane index to be a const-expression.
//!
//! Every variant is first checked against a CPU reference (the example
//! fails if any differs beyond f32 rounding). Then the variants are timed
//! alternately, sample by sample with the order rotating, in this one
//! process: a sample is one submission of REPEAT dispatches, GFLOP/s by CPU
//! time over the adapter's threads (which sees through other load on a
//! shared machine). Printed: median and range over the samples, and each
//! variant's median per-sample ratio to `named`; only the ratios carry over
//! between machines.

use unravel_dev::cpu_time::{cpu_adapter_threads, process_cpu_seconds};
use unravel_device::{wgpu, Gpu};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const FILE: &str = "loop_registers.wgsl";
const SOURCE: &str = include_str!("../shaders/loop_registers.wgsl");
const VARIANTS: [&str; 3] = ["named", "loops", "loops_runtime"];
/// Rows and vec4 column blocks a lane (`named` is written for 4 x 4).
const ROWS: usize = 4;
const NV: usize = 4;
/// A is M x K, B is K x N, C is M x N. M is a multiple of 64 ROWS (not a
/// power of two, so that A's rows of successive k do not alias in cache),
/// K of 8.
const M: usize = 32_000;
const K: usize = 288;
const N: usize = 4 * NV;
const REPEAT: usize = 2;
const SAMPLES: usize = 11;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    k: u32,
    rows: u32,
    nv: u32,
}

/// Uniform values in [-1, 1) from a fixed seed.
fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Median, min and max.
fn median_range(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn cpu_seconds() -> Result<f64> {
    process_cpu_seconds().ok_or_else(|| "this platform has no process CPU clock".into())
}

fn main() -> Result<()> {
    let samples: usize = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => SAMPLES,
    };
    let gpu = Gpu::default_adapter()?;
    let info = gpu.adapter_info();
    if info.subgroup_min_size != 8
        || info.subgroup_max_size != 8
        || !gpu.features().contains(wgpu::Features::SUBGROUP)
    {
        return Err(format!(
            "{} lacks 8-lane subgroups; the kernels need them",
            info.name
        )
        .into());
    }
    let threads = cpu_adapter_threads() as f64;
    println!(
        "adapter: {}, M={M} K={K} N={N}, {ROWS} rows x {NV} vec4 blocks a lane, {} shaders",
        info.name,
        if gpu.unchecked_shaders() {
            "unchecked"
        } else {
            "bounds-checked"
        }
    );

    // A is uploaded k-major (transposed); B and C are row-major.
    let a = random(M * K, 1);
    let b = random(K * N, 2);
    let mut a_t = vec![0f32; K * M];
    for i in 0..M {
        for k in 0..K {
            a_t[k * M + i] = a[i * K + k];
        }
    }
    // Reference in f64, with the sum of |products| for the rounding bound.
    let mut want = vec![0f64; M * N];
    let mut abs = vec![0f64; M * N];
    for i in 0..M {
        for k in 0..K {
            let x = a[i * K + k] as f64;
            for j in 0..N {
                let p = x * b[k * N + j] as f64;
                want[i * N + j] += p;
                abs[i * N + j] += p.abs();
            }
        }
    }
    let a_dev = gpu.upload(&a_t, &[K, M])?;
    let b_dev = gpu.upload(&b, &[K, N])?;
    let c_dev = gpu.zeros(&[M, N])?;

    gpu.add_shader(FILE, SOURCE)?;
    let params = Params {
        m: M as u32,
        k: K as u32,
        rows: ROWS as u32,
        nv: NV as u32,
    };
    let constants = [("ROWS", ROWS as f64), ("NV", NV as f64)];
    let grid = [(M / (64 * ROWS)) as u32, 1, 1];
    let run = |d: &unravel_device::Dispatch| -> Result<f64> {
        let mut rec = gpu.recorder();
        for _ in 0..REPEAT {
            rec.record(d);
        }
        let start = cpu_seconds()?;
        rec.submit()?;
        gpu.wait()?;
        Ok(cpu_seconds()? - start)
    };

    // Check every variant against the reference (this also compiles them).
    let mut dispatches = Vec::new();
    for v in VARIANTS {
        let d = gpu.dispatch_with(
            FILE,
            v,
            &constants,
            &params,
            &[&a_dev, &b_dev, &c_dev],
            grid,
        )?;
        gpu.write(&c_dev, &vec![f32::NAN; M * N])?;
        run(&d)?;
        let got = gpu.read(&c_dev)?;
        // Worst-case rounding of a K-term f32 dot product: K u sum |products|,
        // u = EPSILON / 2; twice that is the tolerance.
        let (mut worst, mut err) = (0f64, 0f64);
        for ((&g, &w), &s) in got.iter().zip(&want).zip(&abs) {
            let e = (g as f64 - w).abs();
            let tol = K as f64 * f32::EPSILON as f64 * (s + 1e-30);
            worst = worst.max(if e <= tol { e / tol } else { f64::INFINITY });
            err = err.max(if e.is_nan() { f64::INFINITY } else { e });
        }
        if worst > 1.0 {
            return Err(format!("{v}: max |error| {err:.3e}, beyond f32 rounding").into());
        }
        println!("{v:<14} matches the CPU reference (max |error| {err:.1e})");
        dispatches.push(d);
    }

    // Alternate the variants sample by sample, rotating the order.
    let flops = 2.0 * (M * K * N * REPEAT) as f64;
    let mut gflops = vec![Vec::new(); VARIANTS.len()];
    for s in 0..samples {
        for i in 0..VARIANTS.len() {
            let v = (i + s) % VARIANTS.len();
            let cpu = run(&dispatches[v])?;
            gflops[v].push(flops / (cpu / threads) / 1e9);
        }
    }
    println!(
        "\n{samples} samples of {REPEAT} dispatches, GFLOP/s by CPU time over {threads} threads"
    );
    println!(
        "{:<14} {:>8} {:>16} {:>16}",
        "variant", "median", "range", "ratio to named"
    );
    for (v, g) in VARIANTS.iter().zip(&gflops) {
        let (med, lo, hi) = median_range(g);
        let ratios: Vec<f64> = g.iter().zip(&gflops[0]).map(|(x, n)| x / n).collect();
        let (ratio, _, _) = median_range(&ratios);
        println!(
            "{v:<14} {med:>8.2} {:>16} {ratio:>16.2}",
            format!("{lo:.2} .. {hi:.2}")
        );
    }
    Ok(())
}

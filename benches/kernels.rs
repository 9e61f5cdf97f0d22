//! Kernel benchmark: SGEMM ceiling, convolution (forward, input gradient,
//! weight gradient) at the ResNet-20 shapes, batch norm and a copy baseline.
//!
//! `cargo bench --bench kernels` (add `-- --quick` for fewer samples). Prints a
//! table and, on the last line, the same figures as JSON.
//!
//! Each figure is the median over samples of one submission holding REPEAT
//! back-to-back dispatches, divided by REPEAT, after warm-up: dispatch and
//! submit overheads are included as a training step would pay them.

use std::time::Instant;

use unravel_device::kernels::matmul::{matmul_with, MatmulAlgo};
use unravel_device::{AdapterOptions, Dispatch, Gpu};

struct Bench {
    gpu: Gpu,
    samples: usize,
    repeat: usize,
    rows: std::cell::RefCell<Vec<(String, f64, &'static str, f64)>>,
}

impl Bench {
    /// Median seconds of one pass over `dispatches`.
    fn time(&self, dispatches: &[Dispatch]) -> f64 {
        let run = |reps: usize| {
            let start = Instant::now();
            let mut rec = self.gpu.recorder();
            for _ in 0..reps {
                rec.record_all(dispatches);
            }
            rec.submit().expect("submit");
            self.gpu.wait().expect("wait");
            start.elapsed().as_secs_f64()
        };
        run(1);
        run(self.repeat);
        let mut t: Vec<f64> = (0..self.samples).map(|_| run(self.repeat)).collect();
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        t[t.len() / 2] / self.repeat as f64
    }

    /// Records a row: `work` units (FLOP or bytes) per pass.
    fn report(&self, name: String, seconds: f64, work: f64, unit: &'static str) {
        let rate = work / seconds / 1e9;
        println!("{name:<44} {:>9.3} ms {rate:>8.2} {unit}", seconds * 1e3);
        self.rows.borrow_mut().push((name, rate, unit, seconds));
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut json = Vec::new();
    let mut adapter = String::new();
    // Both ways the kernels can be compiled: with naga's runtime bounds
    // checks (the default) and without (AdapterOptions::unchecked_shaders).
    for unchecked in [false, true] {
        let options = AdapterOptions {
            unchecked_shaders: unchecked,
            ..Default::default()
        };
        let gpu = Gpu::new(&options)
            .expect("a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
        let info = gpu.adapter_info().clone();
        adapter = info.name.clone();
        let mode = if unchecked { "unchecked" } else { "checked" };
        println!(
            "\nadapter: {} ({:?}, {:?}), shaders {mode}",
            info.name, info.backend, info.device_type
        );
        let b = Bench {
            gpu,
            samples: if quick { 3 } else { 7 },
            repeat: if quick { 3 } else { 10 },
            rows: Default::default(),
        };
        sgemm(&b);
        copy_baseline(&b);
        json.extend(b.rows.borrow().iter().map(|(name, rate, unit, s)| {
            serde_json::json!({"kernel": name, "shaders": mode, "rate": rate, "unit": unit, "ms": s * 1e3})
        }));
    }
    println!(
        "{}",
        serde_json::json!({"adapter": adapter, "results": json})
    );
}

fn sgemm(b: &Bench) {
    let n = 1024;
    let g = &b.gpu;
    let x = g.upload(&vec![0.5; n * n], &[n, n]).unwrap();
    let y = g.upload(&vec![0.25; n * n], &[n, n]).unwrap();
    let z = g.zeros(&[n, n]).unwrap();
    let flops = 2.0 * (n * n * n) as f64;
    for algo in [MatmulAlgo::Subgroup8, MatmulAlgo::Tiled] {
        let Ok(d) = matmul_with(g, algo, &x, &y, &z) else {
            continue;
        };
        if algo == MatmulAlgo::Subgroup8 && MatmulAlgo::for_device(g) != algo {
            continue;
        }
        let s = b.time(&[d]);
        b.report(format!("sgemm 1024^3 {algo:?}"), s, flops, "GFLOP/s");
    }
}

fn copy_baseline(b: &Bench) {
    // 64 x 16 x 32 x 32: ResNet-20's largest activation.
    let shape = [64, 16, 32, 32];
    let numel: usize = shape.iter().product();
    let g = &b.gpu;
    let x = g.upload(&vec![1.0; numel], &shape).unwrap();
    let y = g.zeros(&shape).unwrap();
    let d = unravel_device::kernels::elementwise::relu_forward(g, &x, &y).unwrap();
    let s = b.time(&[d]);
    b.report(
        "relu (copy-like) 64x16x32x32".into(),
        s,
        8.0 * numel as f64,
        "GB/s",
    );
}

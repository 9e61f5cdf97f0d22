//! Kernel benchmark: SGEMM ceiling, convolution (forward, input gradient,
//! weight gradient) at the ResNet-20 shapes, batch norm and a copy baseline.
//!
//! `cargo bench --bench kernels` (add `-- --quick` for fewer samples; `--batch N`,
//! `--repeat R`, `--conv-algo NAME` and `--f16` as below). Prints a
//! table and, on the last line, the same figures as JSON.
//!
//! Each figure is the median over samples of one submission holding REPEAT
//! back-to-back dispatches, divided by REPEAT, after warm-up: dispatch and
//! submit overheads are included as a training step would pay them. The
//! samples go round all the kernels, so a kernel's samples spread over the
//! whole run. On a CPU
//! adapter (lavapipe) each row also gives the rate by the process's CPU time
//! over its cores, which holds steady when other load shares the machine.

use std::time::Instant;

use unravel_dev::cpu_time::{cpu_adapter_threads, process_cpu_seconds};
use unravel_dev::resnet_shapes::resnet20_convs;
use unravel_dev::sgemm::{matmul_with, MatmulAlgo};
use unravel_device::kernels::batchnorm::{
    batchnorm_backward, batchnorm_train_forward, BackwardOperands, BatchNormConfig, BatchNormLayer,
    BatchNormShape, TrainActivations,
};
use unravel_device::kernels::conv2d::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2dAlgo, Conv2dShape,
    ForwardOptions, InputGradOptions, WeightGradOptions,
};
use unravel_device::{AdapterOptions, DType, Dispatch, Gpu};

struct Bench {
    gpu: Gpu,
    samples: usize,
    repeat: usize,
    /// Cores a CPU adapter runs its threads on; `None` for a GPU.
    cpu_cores: Option<f64>,
    cases: Vec<Case>,
}

/// One kernel to time: its dispatches and the work (FLOP or bytes) of one
/// pass over them.
struct Case {
    name: String,
    dispatches: Vec<Dispatch>,
    work: f64,
    unit: &'static str,
}

impl Bench {
    fn add(&mut self, name: String, dispatches: Vec<Dispatch>, work: f64, unit: &'static str) {
        self.cases.push(Case {
            name,
            dispatches,
            work,
            unit,
        });
    }

    /// Wall and CPU seconds of one submission of `repeat` passes.
    fn run(&self, dispatches: &[Dispatch], repeat: usize) -> (f64, Option<f64>) {
        let cpu = process_cpu_seconds();
        let start = Instant::now();
        let mut rec = self.gpu.recorder();
        for _ in 0..repeat {
            rec.record_all(dispatches);
        }
        rec.submit().expect("submit");
        self.gpu.wait().expect("wait");
        let wall = start.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds()
            .zip(cpu)
            .map(|(end, start)| end - start);
        (wall, cpu)
    }

    /// Times every case and prints its row. The samples go round the cases
    /// (case 1, 2, .. then again), so each case's samples spread over the
    /// whole run and a burst of other load on the machine lands in one or
    /// two of them, which the median drops, instead of in all of one
    /// case's.
    fn run_all(&self) -> Vec<Row> {
        for case in &self.cases {
            self.run(&case.dispatches, 1);
            self.run(&case.dispatches, self.repeat);
        }
        let mut walls = vec![Vec::new(); self.cases.len()];
        let mut cpus = vec![Vec::new(); self.cases.len()];
        for _ in 0..self.samples {
            for (i, case) in self.cases.iter().enumerate() {
                let (wall, cpu) = self.run(&case.dispatches, self.repeat);
                walls[i].push(wall);
                cpus[i].push(cpu);
            }
        }
        let per_pass = self.repeat as f64;
        self.cases
            .iter()
            .zip(walls.iter_mut().zip(cpus))
            .map(|(case, (walls, cpus))| {
                let wall = median(walls) / per_pass;
                // CPU seconds over the cores lavapipe runs on: the wall time
                // the pass would take with every core to itself (none on a
                // GPU, where CPU time is only the driver's).
                let cpu_per_core = self.cpu_cores.and_then(|cores| {
                    let mut c = cpus.into_iter().collect::<Option<Vec<f64>>>()?;
                    Some(median(&mut c) / per_pass / cores)
                });
                let row = Row {
                    name: case.name.clone(),
                    rate: case.work / wall / 1e9,
                    cpu_rate: cpu_per_core.map(|s| case.work / s / 1e9),
                    unit: case.unit,
                    seconds: wall,
                };
                let by_cpu = row
                    .cpu_rate
                    .map_or(String::new(), |r| format!(" {r:>8.2} by CPU"));
                println!(
                    "{:<44} {:>9.3} ms {:>8.2} {}{by_cpu}",
                    row.name,
                    wall * 1e3,
                    row.rate,
                    row.unit
                );
                row
            })
            .collect()
    }
}

struct Row {
    name: String,
    rate: f64,
    cpu_rate: Option<f64>,
    unit: &'static str,
    seconds: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The value after `--flag` on the command line, parsed.
fn flag_value<T: std::str::FromStr>(flag: &str) -> Option<T>
where
    T::Err: std::fmt::Debug,
{
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == flag)?;
    let value = args
        .get(at + 1)
        .unwrap_or_else(|| panic!("{flag} needs a value"));
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("{flag} {value}: {e:?}")),
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--conv-algo tiled|subgroup|direct`: time that algorithm instead of
    // the adapter's default; `--batch N`: convolutions at batch N (64).
    let conv_algo: Option<Conv2dAlgo> = flag_value("--conv-algo");
    let batch = flag_value("--batch").unwrap_or(64);
    // `--repeat R`: dispatches per timed submission (10; more on fast GPUs,
    // where a submission's overhead outweighs a small kernel).
    let repeat = flag_value("--repeat");
    // `--f16`: the convolutions' activations and gradients as f16 (mixed
    // precision), weights and weight gradients f32.
    let act = if std::env::args().any(|a| a == "--f16") {
        DType::F16
    } else {
        DType::F32
    };
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
        let mut b = Bench {
            gpu,
            samples: if quick { 3 } else { 7 },
            repeat: repeat.unwrap_or(if quick { 3 } else { 10 }),
            cpu_cores: (info.device_type == wgpu::DeviceType::Cpu)
                .then(|| cpu_adapter_threads() as f64),
            cases: Vec::new(),
        };
        sgemm(&mut b);
        convolutions(&mut b, batch, conv_algo, act);
        batch_norm(&mut b);
        copy_baseline(&mut b);
        json.extend(b.run_all().iter().map(|r| {
            serde_json::json!({
                "kernel": r.name, "shaders": mode, "rate": r.rate,
                "rate_by_cpu": r.cpu_rate, "unit": r.unit, "ms": r.seconds * 1e3,
            })
        }));
    }
    println!(
        "{}",
        serde_json::json!({"adapter": adapter, "results": json})
    );
}

fn sgemm(b: &mut Bench) {
    let n = 1024;
    let g = &b.gpu;
    let x = g.upload(&vec![0.5; n * n], &[n, n]).unwrap();
    let y = g.upload(&vec![0.25; n * n], &[n, n]).unwrap();
    let z = g.zeros(&[n, n]).unwrap();
    let flops = 2.0 * (n * n * n) as f64;
    // The variant this adapter uses (the tests run both).
    let algo = MatmulAlgo::for_device(g);
    let d = matmul_with(g, algo, &x, &y, &z).unwrap();
    b.add(format!("sgemm 1024^3 {algo:?}"), vec![d], flops, "GFLOP/s");
}

fn copy_baseline(b: &mut Bench) {
    // 64 x 16 x 32 x 32: ResNet-20's largest activation.
    let shape = [64, 16, 32, 32];
    let numel: usize = shape.iter().product();
    let g = &b.gpu;
    let x = g.upload(&vec![1.0; numel], &shape).unwrap();
    let y = g.zeros(&shape).unwrap();
    let d = unravel_device::kernels::elementwise::relu_forward(g, &x, &y).unwrap();
    let name = "relu (copy-like) 64x16x32x32".into();
    b.add(name, vec![d], 8.0 * numel as f64, "GB/s");
}

/// The convolutions at batch `n` with `algo` (the adapter's where `None`),
/// activations and their gradients of type `act`.
fn convolutions(b: &mut Bench, n: usize, algo: Option<Conv2dAlgo>, act: DType) {
    let forward = ForwardOptions::with_algo(algo);
    let input_grad = InputGradOptions::with_algo(algo);
    let weight_grad = WeightGradOptions { algo };
    for s in resnet20_convs() {
        let s = Conv2dShape { n, ..s };
        let (c_in, c_out, hw, stride) = (s.c_in, s.c_out, s.h, s.stride);
        let g = &b.gpu;
        let x = g
            .upload_as(
                &vec![0.5; s.input_shape().iter().product()],
                &s.input_shape(),
                act,
            )
            .unwrap();
        let w = g
            .upload(
                &vec![0.1; s.weight_shape().iter().product()],
                &s.weight_shape(),
            )
            .unwrap();
        let y = g.zeros_of(&s.output_shape(), act).unwrap();
        let dw = g.zeros(&s.weight_shape()).unwrap();
        let dx = g.zeros_of(&s.input_shape(), act).unwrap();
        let flops = 2.0 * s.macs() as f64;
        let name = format!("{c_in}->{c_out} {hw}x{hw} s{stride} N{n} {}", act.name());
        let fwd = conv2d_forward(g, &s, &x, &w, &y, &forward).unwrap();
        let dgrad = conv2d_backward_input(g, &s, &y, &w, &dx, &input_grad).unwrap();
        let wgrad = conv2d_backward_weight(g, &s, &x, &y, &dw, None, &weight_grad).unwrap();
        b.add(format!("conv forward      {name}"), fwd, flops, "GFLOP/s");
        b.add(format!("conv input grad   {name}"), dgrad, flops, "GFLOP/s");
        b.add(format!("conv weight grad  {name}"), wgrad, flops, "GFLOP/s");
    }
}

fn batch_norm(b: &mut Bench) {
    for (c, hw) in [(16, 32), (32, 16), (64, 8)] {
        let s = BatchNormShape {
            n: 64,
            c,
            h: hw,
            w: hw,
        };
        let shape = [64, c, hw, hw];
        let numel: usize = shape.iter().product();
        let g = &b.gpu;
        let x = g.upload(&vec![0.3; numel], &shape).unwrap();
        let y = g.zeros(&shape).unwrap();
        let dx = g.zeros(&shape).unwrap();
        let vec_c = |v: f32| g.upload(&vec![v; c], &[c]).unwrap();
        let (gamma, beta, mean, var) = (vec_c(1.0), vec_c(0.0), vec_c(0.0), vec_c(1.0));
        let (dg, db) = (vec_c(0.0), vec_c(0.0));
        let saved = g.zeros(&[2, c]).unwrap();
        let cfg = BatchNormConfig {
            relu: true,
            ..Default::default()
        };
        let layer = BatchNormLayer {
            gamma: &gamma,
            beta: &beta,
            running_mean: &mean,
            running_var: &var,
        };
        let io = TrainActivations {
            x: &x,
            saved: &saved,
            y: &y,
        };
        let fwd = batchnorm_train_forward(g, &s, &cfg, &layer, &io).unwrap();
        let ops = BackwardOperands {
            x: &x,
            y: Some(&y),
            saved: &saved,
            dy: &y,
            dx: &dx,
            dgamma: &dg,
            dbeta: &db,
        };
        let bwd = batchnorm_backward(g, &s, &cfg, &gamma, &ops).unwrap();
        // Bytes that must move: forward reads x twice (statistics, then
        // normalise) and writes y; backward reads x, y, dy twice and writes dx.
        let bytes = 4.0 * numel as f64;
        let name = format!("{c}x{hw}x{hw}");
        b.add(
            format!("batchnorm+relu forward  {name}"),
            fwd,
            3.0 * bytes,
            "GB/s",
        );
        b.add(
            format!("batchnorm+relu backward {name}"),
            bwd,
            7.0 * bytes,
            "GB/s",
        );
    }
}

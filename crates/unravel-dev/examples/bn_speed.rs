//! Times batch-norm training forward and backward at ResNet-20's shapes
//! (N = 64) and prints effective bandwidth next to copy baselines; then the
//! pooling kernels at typical shapes.
//!
//! `cargo run --release -p unravel-dev --example bn_speed`
//!
//! Each timing is the median over several submissions (after warm-up) of
//! `REPS` back-to-back repetitions in one command buffer, so the 40-210 us
//! submit-and-wait cost is amortised. Two bandwidths are printed: "min" counts
//! the bytes the op must move (forward: read x, write y; backward: read x and
//! dy, write dx), "actual" the bytes the two-pass kernels do move (x, and dy,
//! are read twice).

use std::time::Instant;

use unravel_device::kernels::batchnorm::{
    batchnorm_backward, batchnorm_train_forward, BackwardOperands, BatchNormConfig, BatchNormLayer,
    BatchNormShape, TrainActivations,
};
use unravel_device::kernels::pool::{self, PoolShape};
use unravel_device::{wgpu, Dispatch, Gpu, Tensor};

const REPS: usize = 10;
const SAMPLES: usize = 7;

const COPY_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read_write> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = id.y * nwg.x * 256u + id.x;
    if (i < arrayLength(&dst)) { dst[i] = src[i]; }
}
"#;

/// Median seconds per repetition of whatever `record` puts in an encoder.
fn time(gpu: &Gpu, record: &dyn Fn(&mut wgpu::CommandEncoder)) -> f64 {
    let run = || {
        let mut enc = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        for _ in 0..REPS {
            record(&mut enc);
        }
        let t = Instant::now();
        gpu.queue().submit([enc.finish()]);
        gpu.wait().unwrap();
        t.elapsed().as_secs_f64() / REPS as f64
    };
    median(&run)
}

/// Median seconds per repetition of prepared dispatches, recorded through
/// the project's [`unravel_device::Recorder`] (one command buffer).
fn time_dispatches(gpu: &Gpu, dispatches: &[Dispatch]) -> f64 {
    let run = || {
        let mut rec = gpu.recorder();
        for _ in 0..REPS {
            rec.record_all(dispatches);
        }
        let t = Instant::now();
        rec.submit().unwrap();
        gpu.wait().unwrap();
        t.elapsed().as_secs_f64() / REPS as f64
    };
    median(&run)
}

fn median(run: &dyn Fn() -> f64) -> f64 {
    run();
    run();
    let mut samples: Vec<f64> = (0..SAMPLES).map(|_| run()).collect();
    samples.sort_by(f64::total_cmp);
    // BN_SPEED_MIN: the fastest sample, steadier than the median on a
    // machine shared with other work (for A/B comparisons).
    if std::env::var_os("BN_SPEED_MIN").is_some() {
        return samples[0];
    }
    samples[SAMPLES / 2]
}

fn copy_kernel(gpu: &Gpu, src: &Tensor, dst: &Tensor) -> impl Fn(&mut wgpu::CommandEncoder) {
    let device = gpu.device();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("copy4"),
        source: wgpu::ShaderSource::Wgsl(COPY_WGSL.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("copy4"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: src.buffer().as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: dst.buffer().as_entire_binding(),
            },
        ],
    });
    let grid = unravel_device::grid_1d(dst.numel() / 4, 256);
    move |enc: &mut wgpu::CommandEncoder| {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
    }
}

fn gbs(bytes: f64, secs: f64) -> f64 {
    bytes / secs / 1e9
}

fn main() -> unravel_device::Result<()> {
    let gpu = Gpu::default_adapter()?;
    let stat = if std::env::var_os("BN_SPEED_MIN").is_some() {
        "fastest"
    } else {
        "median"
    };
    println!(
        "adapter: {} ({:?}); {stat} of {SAMPLES} submissions x {REPS} reps",
        gpu.adapter_info().name,
        gpu.adapter_info().backend
    );
    println!(
        "{:>16} {:>10} {:>8} {:>8} {:>9} | {:>10} {:>8} {:>8} {:>9} | {:>9} {:>9}",
        "shape",
        "fwd us",
        "min GB/s",
        "act GB/s",
        "fwd+relu",
        "bwd us",
        "min GB/s",
        "act GB/s",
        "bwd+relu",
        "copy GB/s",
        "c2b GB/s"
    );
    for (c, hw) in [(16, 32), (32, 16), (64, 8)] {
        let s = BatchNormShape {
            n: 64,
            c,
            h: hw,
            w: hw,
        };
        let d = [s.n, s.c, s.h, s.w];
        let numel = d.iter().product::<usize>();
        let bytes = numel as f64 * 4.0;
        let x = gpu.upload(&vec![0.5; numel], &d)?;
        let y = gpu.zeros(&d)?;
        let dy = gpu.upload(&vec![0.25; numel], &d)?;
        let dx = gpu.zeros(&d)?;
        let ones = gpu.upload(&vec![1.0; c], &[c])?;
        let (beta, rm) = (gpu.zeros(&[c])?, gpu.zeros(&[c])?);
        let rv = gpu.upload(&vec![1.0; c], &[c])?;
        let (dg, db) = (gpu.zeros(&[c])?, gpu.zeros(&[c])?);
        let saved = gpu.zeros(&[2, c])?;

        let mut fwd = [0.0; 2];
        let mut bwd = [0.0; 2];
        for (k, relu) in [false, true].into_iter().enumerate() {
            let cfg = BatchNormConfig {
                relu,
                ..Default::default()
            };
            let layer = BatchNormLayer {
                gamma: &ones,
                beta: &beta,
                running_mean: &rm,
                running_var: &rv,
            };
            let io = TrainActivations {
                x: &x,
                saved: &saved,
                y: &y,
            };
            let f = batchnorm_train_forward(&gpu, &s, &cfg, &layer, &io)?;
            fwd[k] = time_dispatches(&gpu, &f);
            if std::env::var_os("BN_SPEED_PASSES").is_some() {
                eprintln!(
                    "  relu={relu} fwd passes us: {:.0} {:.0}",
                    1e6 * time_dispatches(&gpu, &f[..1]),
                    1e6 * time_dispatches(&gpu, &f[1..])
                );
            }
            let yy = relu.then_some(&y);
            let ops = BackwardOperands {
                x: &x,
                y: yy,
                saved: &saved,
                dy: &dy,
                dx: &dx,
                dgamma: &dg,
                dbeta: &db,
            };
            let b = batchnorm_backward(&gpu, &s, &cfg, &ones, &ops)?;
            bwd[k] = time_dispatches(&gpu, &b);
            if std::env::var_os("BN_SPEED_PASSES").is_some() {
                eprintln!(
                    "  relu={relu} bwd passes us: {:.0} {:.0}",
                    1e6 * time_dispatches(&gpu, &b[..1]),
                    1e6 * time_dispatches(&gpu, &b[1..])
                );
            }
        }
        let copy = copy_kernel(&gpu, &x, &y);
        let copy_t = time(&gpu, &copy);
        let c2b_t = time(&gpu, &|enc| {
            enc.copy_buffer_to_buffer(x.buffer(), 0, y.buffer(), 0, bytes as u64)
        });
        println!(
            "{:>16} {:>10.0} {:>8.2} {:>8.2} {:>9.0} | {:>10.0} {:>8.2} {:>8.2} {:>9.0} | {:>9.2} {:>9.2}",
            format!("{}x{}x{}x{}", s.n, s.c, s.h, s.w),
            fwd[0] * 1e6,
            gbs(2.0 * bytes, fwd[0]),
            gbs(3.0 * bytes, fwd[0]),
            fwd[1] * 1e6,
            bwd[0] * 1e6,
            gbs(3.0 * bytes, bwd[0]),
            gbs(5.0 * bytes, bwd[0]),
            bwd[1] * 1e6,
            gbs(2.0 * bytes, copy_t),
            gbs(2.0 * bytes, c2b_t),
        );
    }
    pool_speed(&gpu)
}

/// Pooling at a DenseNet transition, the ImageNet stem (batch 4) and
/// ResNet-20's head; bandwidth counts input + output (+ u32 argmax) once.
fn pool_speed(gpu: &Gpu) -> unravel_device::Result<()> {
    println!(
        "{:>28} {:>10} {:>8} | {:>10} {:>8}",
        "pool", "fwd us", "GB/s", "bwd us", "GB/s"
    );
    let cases: [(&str, [usize; 4]); 3] = [
        ("avg2x2", [64, 64, 32, 32]),
        ("max3x3s2", [4, 64, 112, 112]),
        ("global", [64, 64, 8, 8]),
    ];
    for (name, d) in cases {
        let s = PoolShape {
            n: d[0],
            c: d[1],
            h: d[2],
            w: d[3],
        };
        let out: Vec<usize> = match name {
            "avg2x2" => s.avg2x2_out().to_vec(),
            "max3x3s2" => s.max3x3s2_out().to_vec(),
            _ => vec![s.n, s.c],
        };
        let numel: usize = d.iter().product();
        let onumel: usize = out.iter().product();
        let x = gpu.upload(&vec![0.5; numel], &d)?;
        let dx = gpu.zeros(&d)?;
        let y = gpu.zeros(&out)?;
        let arg = gpu.zeros_u32(&out)?;
        let (f, b, extra) = match name {
            "avg2x2" => (
                pool::avg_pool2x2_forward(gpu, &s, &x, &y)?,
                pool::avg_pool2x2_backward(gpu, &s, &y, &dx)?,
                0,
            ),
            "max3x3s2" => (
                pool::max_pool3x3s2_forward(gpu, &s, &x, &y, &arg)?,
                pool::max_pool3x3s2_backward(gpu, &s, &y, &arg, &dx)?,
                onumel,
            ),
            _ => (
                pool::global_avg_pool_forward(gpu, &s, &x, &y)?,
                pool::global_avg_pool_backward(gpu, &s, &y, &dx)?,
                0,
            ),
        };
        let bytes = 4.0 * (numel + onumel + extra) as f64;
        let (tf, tb) = (time_dispatches(gpu, &[f]), time_dispatches(gpu, &[b]));
        println!(
            "{:>28} {:>10.0} {:>8.2} | {:>10.0} {:>8.2}",
            format!("{name} {}x{}x{}x{}", d[0], d[1], d[2], d[3]),
            tf * 1e6,
            gbs(bytes, tf),
            tb * 1e6,
            gbs(bytes, tb)
        );
    }
    Ok(())
}

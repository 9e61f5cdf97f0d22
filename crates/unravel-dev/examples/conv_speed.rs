//! Times the conv2d kernels at the ResNet-20 shapes (CIFAR, batch 64, no
//! bias as in ResNet-20 where batch norm follows) and prints GFLOP/s
//! (2 * MACs / time) per pass.
//!
//! `cargo run --release -p unravel-dev --example conv_speed [direct|subgroup|subgroup-wide|tiled]`
//!
//! Each measurement is one submission of REPEAT back-to-back copies of the
//! pass's dispatches; the median of RUNS submissions after a warm-up.

use std::time::Instant;

use unravel_dev::cpu_time::{cpu_adapter_threads, process_cpu_seconds};
use unravel_dev::resnet_shapes::resnet20_convs;
use unravel_device::kernels::conv2d::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2dAlgo, ForwardOptions,
    InputGradOptions, WeightGradOptions,
};
use unravel_device::{DeviceError, Dispatch, Gpu, Result};

const REPEAT: usize = 10;
const RUNS: usize = 5;

/// Median wall seconds of one submission of REPEAT copies of `dispatches`,
/// and the mean CPU seconds of one (to see through other load on the machine).
fn time(gpu: &Gpu, dispatches: &[Dispatch]) -> Result<(f64, f64)> {
    let run = || -> Result<f64> {
        let start = Instant::now();
        let mut rec = gpu.recorder();
        for _ in 0..REPEAT {
            rec.record_all(dispatches);
        }
        rec.submit()?;
        gpu.wait()?;
        Ok(start.elapsed().as_secs_f64())
    };
    run()?;
    let cpu0 = process_cpu_seconds().unwrap_or(0.0);
    let mut times = (0..RUNS).map(|_| run()).collect::<Result<Vec<f64>>>()?;
    let cpu = (process_cpu_seconds().unwrap_or(0.0) - cpu0) / RUNS as f64;
    times.sort_by(f64::total_cmp);
    Ok((times[RUNS / 2], cpu))
}

fn main() -> Result<()> {
    let gpu = Gpu::default_adapter()?;
    let algo = match std::env::args().nth(1) {
        Some(name) => name.parse().map_err(|message| DeviceError::Shape {
            op: "conv_speed",
            message,
        })?,
        None => Conv2dAlgo::for_adapter(&gpu),
    };
    let cores = cpu_adapter_threads() as f64;
    println!("adapter: {} ({algo:?})", gpu.adapter_info().name);
    println!("GFLOP/s by wall time (in brackets: by CPU time over {cores} cores, i.e. without other load)");
    println!(
        "{:<28} {:>13} {:>13} {:>13}",
        "shape (N=64, 3x3)", "forward", "bwd input", "bwd weight"
    );
    let only = std::env::var("CONV_SHAPE").ok();
    for (i, s) in resnet20_convs().into_iter().enumerate() {
        if only.as_ref().is_some_and(|o| *o != i.to_string()) {
            continue;
        }
        let x = gpu.zeros(&s.input_shape())?;
        let w = gpu.zeros(&s.weight_shape())?;
        let y = gpu.zeros(&s.output_shape())?;
        let dw = gpu.zeros(&s.weight_shape())?;
        let algo = Some(algo);
        let (forward, input_grad) = (
            ForwardOptions::with_algo(algo),
            InputGradOptions::with_algo(algo),
        );
        let passes = [
            conv2d_forward(&gpu, &s, &x, &w, &y, &forward)?,
            conv2d_backward_input(&gpu, &s, &y, &w, &x, &input_grad)?,
            conv2d_backward_weight(&gpu, &s, &x, &y, &dw, None, &WeightGradOptions { algo })?,
        ];
        let flops = 2.0 * s.macs() as f64 * REPEAT as f64;
        let label = format!("{}->{} {}x{} s{}", s.c_in, s.c_out, s.h, s.w, s.stride);
        let mut line = format!("{label:<28}");
        for pass in &passes {
            let (secs, cpu) = time(&gpu, pass)?;
            // GFLOP/s by wall time, and as if the process had had all
            // `cores` to itself (CPU time / cores).
            let full = flops / (cpu / cores) / 1e9;
            line += &format!(" {:>6.1} ({:>4.1})", flops / secs / 1e9, full);
        }
        println!("{line}");
    }
    Ok(())
}

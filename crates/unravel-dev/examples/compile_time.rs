//! Times the driver's compilation of each conv2d pipeline at the ResNet-20
//! shapes, one after another (CPU seconds of this process), to see what a
//! first step pays on a machine whose shader cache is empty. lavapipe keeps
//! compiled shaders in Mesa's disk cache (~/.cache/mesa_shader_cache), so
//! run it with the cache off:
//!
//! `MESA_SHADER_CACHE_DISABLE=true cargo run --release -p unravel-dev --example compile_time`
//!
//! Shape legend: N batch, C in, K out channels, H x W input, S stride.

use unravel_dev::cpu_time::process_cpu_seconds;
use unravel_dev::resnet_shapes::resnet20_convs;
use unravel_device::kernels::conv2d::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, ForwardOptions, InputGradOptions,
};
use unravel_device::kernels::Store;
use unravel_device::{Dispatch, Gpu, Result};

/// CPU seconds `prepare` takes: the pipelines it asks for that are not
/// compiled yet are compiled in it.
fn timed(prepare: impl FnOnce() -> Result<Vec<Dispatch>>) -> Result<f64> {
    let t0 = process_cpu_seconds().unwrap_or(0.0);
    prepare()?;
    Ok(process_cpu_seconds().unwrap_or(0.0) - t0)
}

fn main() -> Result<()> {
    let gpu = Gpu::default_adapter()?;
    println!("adapter: {}", gpu.adapter_info().name);
    println!(
        "{:<24} {:>9} {:>9} {:>12} {:>9}   (CPU s; 0.00: shared with a shape above)",
        "shape (N=64, 3x3)", "forward", "bwd input", "bwd input +=", "bwd weight"
    );
    let mut total = 0.0;
    let write = InputGradOptions::default();
    let add = InputGradOptions {
        store: Store::Add,
        ..Default::default()
    };
    for s in resnet20_convs() {
        let x = gpu.zeros(&s.input_shape())?;
        let w = gpu.zeros(&s.weight_shape())?;
        let y = gpu.zeros(&s.output_shape())?;
        let dw = gpu.zeros(&s.weight_shape())?;
        let times = [
            timed(|| conv2d_forward(&gpu, &s, &x, &w, &y, &ForwardOptions::default()))?,
            timed(|| conv2d_backward_input(&gpu, &s, &y, &w, &x, &write))?,
            timed(|| conv2d_backward_input(&gpu, &s, &y, &w, &x, &add))?,
            timed(|| conv2d_backward_weight(&gpu, &s, &x, &y, &dw, None, &Default::default()))?,
        ];
        total += times.iter().sum::<f64>();
        let label = format!("{}->{} {}x{} s{}", s.c_in, s.c_out, s.h, s.w, s.stride);
        println!(
            "{label:<24} {:>9.2} {:>9.2} {:>12.2} {:>9.2}",
            times[0], times[1], times[2], times[3]
        );
    }
    println!("total {total:.2} CPU s");
    Ok(())
}

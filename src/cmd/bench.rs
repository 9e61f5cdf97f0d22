//! `unravel bench`: training and inference throughput of a model on random
//! data, the time to the first finished step, and the memory planned.

use std::time::Instant;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use unravel_device::kernels::conv2d::Conv2dAlgo;
use unravel_device::kernels::loss_scale::LossScaleConfig;
use unravel_device::kernels::sgd::SgdConfig;
use unravel_device::{AdapterOptions, Gpu};
use unravel_graph::{Mode, ModelState, Optimizer, Plan, PlanOptions, Precision};
use unravel_train::models::{build, ModelConfig, ShortcutKind};
use unravel_train::stochastic_depth::StochasticDepth;
use unravel_train::DatasetKind;

use crate::cpu_time::process_cpu_seconds;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Model name (see `unravel models`).
    #[arg(long, default_value = "resnet20")]
    model: String,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Dataset whose input shape and class count the model takes.
    #[arg(long, default_value = "cifar10")]
    dataset: DatasetKind,
    #[arg(long, default_value = "a")]
    shortcut: ShortcutKind,
    /// Untimed steps before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Also time every node on its own and print the time per op kind.
    #[arg(long)]
    profile: bool,
    /// Also time training steps with stochastic depth (survival probability
    /// P_L for the last block), in the same run as the constant-depth steps.
    #[arg(long, value_name = "P_L")]
    stochastic_depth: Option<f64>,
    /// Every op a pass of its own: no batch norm folded into a convolution
    /// (inference), no residual merge fused into a batch norm (training).
    #[arg(long)]
    unfused: bool,
    /// Convolution algorithm (direct, subgroup, subgroup-wide, tiled,
    /// coop-matrix) instead of the one chosen for the adapter type and
    /// precision.
    #[arg(long, value_name = "ALGO")]
    conv_algo: Option<Conv2dAlgo>,
    /// f32, or mixed (f16 activations and gradients, loss scaling).
    #[arg(long, default_value = "f32", value_parser = super::parse_precision)]
    precision: Precision,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(options: &AdapterOptions, args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batch_size > 0 && args.steps > 0,
        "--batch-size and --steps must be positive"
    );
    let start = Instant::now();
    let gpu = Gpu::new(options).context("opening the GPU adapter")?;
    let config = ModelConfig::for_dataset(args.dataset, args.shortcut);
    let graph = build(&args.model, &config)?;
    let state = ModelState::new(&gpu, &graph, 0)?;
    let n = args.batch_size;
    let options = PlanOptions {
        unfused: args.unfused,
        conv_algo: args.conv_algo,
        precision: args.precision,
        ..Default::default()
    };
    // Compiled first: a batch that does not fit is refused before its
    // inputs are made.
    let train = Plan::compile_with(&gpu, &graph, &state, n, Mode::Train, &options)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let images: Vec<f32> = (0..n * config.input.numel())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..n)
        .map(|_| rng.random_range(0..config.classes as u32))
        .collect();
    let sgd = SgdConfig {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    let optimizer = match args.precision {
        Precision::F32 => Optimizer::new(&gpu, &state, sgd)?,
        Precision::Mixed => {
            Optimizer::with_loss_scaling(&gpu, &state, sgd, &LossScaleConfig::default())?
        }
    };
    let first = train.train_step(&gpu, &images, &labels, &[], Some(&optimizer))?;
    let first_step_s = start.elapsed().as_secs_f64();
    for _ in 0..args.warmup {
        train.train_step(&gpu, &images, &labels, &[], Some(&optimizer))?;
    }
    let cpu_start = process_cpu_seconds();
    let mut times = Vec::new();
    for _ in 0..args.steps {
        let t = Instant::now();
        train.train_step(&gpu, &images, &labels, &[], Some(&optimizer))?;
        times.push(t.elapsed().as_secs_f64());
    }
    // On a CPU adapter the step runs on this process's threads: its CPU
    // time is a figure other load on the machine barely moves.
    let train_cpu_s = process_cpu_seconds()
        .zip(cpu_start)
        .map(|(end, start)| (end - start) / args.steps.max(1) as f64);
    let train_step_s = median(times);
    let stochastic = match args.stochastic_depth {
        Some(p) => {
            anyhow::ensure!(
                (0.0..=1.0).contains(&p),
                "--stochastic-depth {p} is not a probability"
            );
            let sd = StochasticDepth::new(&graph, p);
            let mut draws = rand::rngs::StdRng::seed_from_u64(1);
            // Alternate with constant-depth steps so both see the same load.
            let (mut with, mut without, mut active) = (Vec::new(), Vec::new(), 0usize);
            let blocks = sd.probabilities().len();
            for _ in 0..args.steps.max(3) * 2 {
                let dropped = sd.sample_dropped(&mut draws);
                active += blocks - dropped.len();
                let t = Instant::now();
                train.train_step(&gpu, &images, &labels, &dropped, Some(&optimizer))?;
                with.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                train.train_step(&gpu, &images, &labels, &[], Some(&optimizer))?;
                without.push(t.elapsed().as_secs_f64());
            }
            let steps = with.len();
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            Some((
                mean(&with),
                mean(&without),
                active as f64 / steps as f64,
                sd.expected_active(),
                blocks,
            ))
        }
        None => None,
    };
    if args.profile {
        print_profile(&train.profile(&gpu, 3)?);
    }

    let eval = Plan::compile_with(&gpu, &graph, &state, n, Mode::Eval, &options)?;
    for _ in 0..args.warmup.max(1) {
        eval.eval_step(&gpu, &images, &labels, &[])?;
    }
    let mut times = Vec::new();
    for _ in 0..args.steps {
        let t = Instant::now();
        eval.eval_step(&gpu, &images, &labels, &[])?;
        times.push(t.elapsed().as_secs_f64());
    }
    let eval_step_s = median(times);
    gpu.save_pipeline_cache();

    let train_ips = n as f64 / train_step_s;
    let eval_ips = n as f64 / eval_step_s;
    let memory = state.bytes() + train.activation_bytes() + eval.activation_bytes();
    // The training plan's activations in both precisions, from the planner.
    let planned = |precision| {
        let o = PlanOptions {
            precision,
            ..options.clone()
        };
        Plan::planned_bytes(&graph, n, Mode::Train, &o)
    };
    let (f32_bytes, mixed_bytes) = (planned(Precision::F32), planned(Precision::Mixed));
    let info = gpu.adapter_info();
    // What the plans ran (None: the adapter's choice per shape).
    let algo = options
        .conv_algo_for(&gpu)
        .map_or("the adapter's".to_string(), |a| format!("{a:?}"));
    println!(
        "{} on {} ({:?}), batch {n}, {} precision, convolutions: {algo}",
        args.model,
        info.name,
        info.backend,
        args.precision.name()
    );
    println!(
        "  first step      {first_step_s:.2} s (loss {:.3})",
        first.loss
    );
    let cpu_note = train_cpu_s.map_or(String::new(), |s| format!(", {:.0} ms CPU", s * 1e3));
    println!(
        "  train           {train_ips:.1} images/s ({:.1} ms/step{cpu_note}, {} dispatches)",
        train_step_s * 1e3,
        first.dispatches
    );
    println!(
        "  inference       {eval_ips:.1} images/s ({:.1} ms/step)",
        eval_step_s * 1e3
    );
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("  planned memory  {:.1} MiB", mib(memory));
    println!(
        "  train plan      {:.1} MiB of activations in f32, {:.1} MiB in mixed precision",
        mib(f32_bytes),
        mib(mixed_bytes)
    );
    if let Some((with, without, active, expected, blocks)) = stochastic {
        println!(
            "  stochastic depth  {:.1} ms/step against {:.1} ms at full depth ({:.0}% less time), \
             {active:.1} of {blocks} blocks active on average (expected {expected:.1})",
            with * 1e3,
            without * 1e3,
            100.0 * (1.0 - with / without)
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "model": args.model,
            "batch_size": n,
            "precision": args.precision.name(),
            "conv_algo": algo,
            "adapter": info.name,
            "train_images_per_s": train_ips,
            "inference_images_per_s": eval_ips,
            "first_step_s": first_step_s,
            "peak_memory_bytes": memory,
            "train_activation_bytes": {"f32": f32_bytes, "mixed": mixed_bytes},
            "train_dispatches": first.dispatches,
            "train_cpu_s_per_step": train_cpu_s,
            "stochastic_depth": stochastic.map(|(with, without, active, expected, _)| serde_json::json!({
                "step_s": with, "full_depth_step_s": without, "active_blocks": active, "expected_active_blocks": expected,
            })),
        })
    );
    Ok(())
}

/// Forward and backward seconds summed per op kind, largest first.
fn print_profile(timings: &[unravel_graph::NodeTiming]) {
    let mut kinds: Vec<(&str, f64, f64, usize)> = Vec::new();
    for t in timings {
        match kinds.iter_mut().find(|k| k.0 == t.op) {
            Some(k) => {
                k.1 += t.forward_s;
                k.2 += t.backward_s;
                k.3 += 1;
            }
            None => kinds.push((t.op, t.forward_s, t.backward_s, 1)),
        }
    }
    kinds.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
    println!(
        "  {:<16} {:>6} {:>12} {:>12}",
        "op", "nodes", "forward ms", "backward ms"
    );
    for (op, f, b, count) in kinds {
        println!("  {op:<16} {count:>6} {:>12.2} {:>12.2}", f * 1e3, b * 1e3);
    }
    let mut nodes: Vec<&unravel_graph::NodeTiming> = timings.iter().collect();
    nodes.sort_by(|a, b| (b.forward_s + b.backward_s).total_cmp(&(a.forward_s + a.backward_s)));
    println!("  slowest nodes");
    for t in nodes.iter().take(10) {
        println!(
            "  {:<24} {:>12.2} {:>12.2}",
            t.name,
            t.forward_s * 1e3,
            t.backward_s * 1e3
        );
    }
}

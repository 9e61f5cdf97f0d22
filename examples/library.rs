//! Unravel as a library: build a model by name, compile a training plan,
//! run a few SGD steps on a host batch, read the loss, and read parameters
//! by their PyTorch names.
//!
//! `cargo run --release --example library`

use unravel_device::kernels::sgd::SgdConfig;
use unravel_device::Gpu;
use unravel_graph::{Mode, ModelState, Optimizer, Plan};
use unravel_train::models::{build, ModelConfig, ShortcutKind};
use unravel_train::DatasetKind;

fn main() -> anyhow::Result<()> {
    let gpu = Gpu::default_adapter()?;
    let config = ModelConfig::for_dataset(DatasetKind::FashionMnist, ShortcutKind::A);
    let graph = build("resnet20", &config)?;
    println!("resnet20: {} parameters", graph.parameter_count());

    // Parameters and batch-norm statistics live on the GPU, shared by every
    // plan of this model; a plan is compiled once per batch size and mode.
    let state = ModelState::new(&gpu, &graph, 42)?;
    let batch = 16;
    let plan = Plan::compile(&gpu, &graph, &state, batch, Mode::Train)?;
    let sgd = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    let optimizer = Optimizer::new(&gpu, &state, sgd)?;

    // A host batch: 16 images of 1x28x28 (here a pattern per class) and labels.
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let images: Vec<f32> = labels
        .iter()
        .flat_map(|&l| (0..28 * 28).map(move |p| if p % 10 == l as usize { 1.0 } else { -0.5 }))
        .collect();
    for step in 0..10 {
        let stats = plan.train_step(&gpu, &images, &labels, &[], Some(&optimizer))?;
        println!(
            "step {step}: loss {:.4}, {} of {batch} correct",
            stats.loss, stats.correct
        );
    }

    // Parameters by name, as PyTorch's state_dict would name them.
    let fc = state.param_id("fc.weight").expect("resnet20 has fc.weight");
    let params = state.read_params(&gpu)?;
    let (name, shape, values) = &params[fc.0];
    println!("{name} {shape:?}: first values {:?}", &values[..4]);
    Ok(())
}

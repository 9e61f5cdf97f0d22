//! `unravel models`: every named model with its size and cost on CIFAR-10.

use unravel_train::models::{build, ModelConfig, NAMED_MODELS};

pub fn run() -> anyhow::Result<()> {
    let config = ModelConfig::cifar10();
    println!(
        "{:<22} {:>14} {:>18}",
        "model", "parameters", "MACs (CIFAR-10)"
    );
    for name in NAMED_MODELS {
        let g = build(name, &config)?;
        println!("{name:<22} {:>14} {:>18}", g.parameter_count(), g.macs());
    }
    println!();
    println!("Also any resnet<6n+2>, preact-resnet<6n+2>, resnext29-<C>x<W>d,");
    println!("densenet<3n+4>-k<k> and densenet-bc<6n+4>-k<k>.");
    Ok(())
}

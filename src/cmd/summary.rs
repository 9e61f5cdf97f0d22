//! `unravel summary`: a model's layers, ending with its exact parameter and
//! multiply-add counts.

use unravel_train::models::{build, ModelConfig, ShortcutKind};
use unravel_train::DatasetKind;

#[derive(clap::Args)]
pub struct SummaryArgs {
    /// Model name (see `unravel models`).
    #[arg(long)]
    model: String,
    /// Dataset whose input shape and class count the model takes.
    #[arg(long, default_value = "cifar10")]
    dataset: DatasetKind,
    /// Shortcut of residual blocks: a (zero-padded identity), b (projection)
    /// or highway (gated).
    #[arg(long, default_value = "a")]
    shortcut: ShortcutKind,
}

pub fn run(args: &SummaryArgs) -> anyhow::Result<()> {
    let config = ModelConfig::for_dataset(args.dataset, args.shortcut);
    let g = build(&args.model, &config)?;
    println!(
        "{} on {} (input {}, {} classes, shortcut {:?})",
        args.model, args.dataset, config.input, config.classes, args.shortcut
    );
    println!(
        "{:<44} {:<16} {:>12} {:>10} {:>14}",
        "node", "op", "output", "params", "MACs"
    );
    for node in &g.nodes {
        let params: usize = g
            .node_params(node)
            .iter()
            .map(|p| g.param(*p).numel())
            .sum();
        println!(
            "{:<44} {:<16} {:>12} {:>10} {:>14}",
            node.name,
            node.op.kind(),
            g.shape(node.output).to_string(),
            params,
            g.node_macs(node)
        );
    }
    println!("residual blocks: {}", g.residual_blocks().count());
    println!("parameters: {}", g.parameter_count());
    println!("flops: {}", g.macs());
    Ok(())
}

//! `unravel info`: which adapter Unravel would use, and what it offers.

use anyhow::Context;
use unravel_device::{AdapterOptions, AdapterSummary, Gpu};

#[derive(clap::Args)]
pub struct InfoArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(options: &AdapterOptions, args: &InfoArgs) -> anyhow::Result<()> {
    let gpu = Gpu::new(options).context("opening the GPU adapter")?;
    let s = AdapterSummary::of(&gpu);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&s))?);
        return Ok(());
    }
    println!("adapter      {}", s.name);
    println!("backend      {}", s.backend);
    println!("device type  {}", s.device_type);
    println!("driver       {} ({})", s.driver, s.driver_info);
    println!(
        "subgroups    {}..{} lanes",
        s.subgroup_sizes.0, s.subgroup_sizes.1
    );
    match &s.tensor_cores {
        Ok(t) => println!("tensor cores {t}x{t} f16 tiles, checked (mixed precision uses them)"),
        Err(why) => println!("tensor cores none: {why}"),
    }
    println!("limits");
    for (name, value) in &s.limits {
        println!("  {name:<40} {value}");
    }
    println!("features Unravel uses (adapter / enabled)");
    for (name, has, enabled) in &s.features {
        let yes = |b: &bool| if *b { "yes" } else { "no" };
        println!("  {name:<40} {} / {}", yes(has), yes(enabled));
    }
    Ok(())
}

fn to_json(s: &AdapterSummary) -> serde_json::Value {
    let limits: serde_json::Map<String, serde_json::Value> = s
        .limits
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    let features: serde_json::Map<String, serde_json::Value> = s
        .features
        .iter()
        .map(|(k, has, _)| (k.to_string(), (*has).into()))
        .collect();
    serde_json::json!({
        "name": s.name,
        "backend": s.backend,
        "device_type": s.device_type,
        "driver": s.driver,
        "driver_info": s.driver_info,
        "subgroup_min_size": s.subgroup_sizes.0,
        "subgroup_max_size": s.subgroup_sizes.1,
        "tensor_core_tile": s.tensor_cores.as_ref().ok(),
        "tensor_cores_unused_because": s.tensor_cores.as_ref().err(),
        "limits": limits,
        "features": features,
    })
}

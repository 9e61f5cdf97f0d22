//! `unravel`: train residual networks on the GPU through wgpu compute shaders.

mod cmd;
mod cpu_time;
mod errors;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "unravel",
    version,
    about = "Train residual networks on the GPU (wgpu compute shaders)"
)]
struct Cli {
    /// Use the adapter whose name contains NAME (case-insensitive); default:
    /// WGPU_ADAPTER_NAME, else the first discrete, integrated, virtual or CPU adapter.
    #[arg(long, global = true, value_name = "NAME")]
    adapter: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the adapter, its limits and the features Unravel uses.
    Info(cmd::info::InfoArgs),
    /// List every model name with its parameter count and forward cost.
    Models,
    /// Print a model's layers, parameter count and multiply-adds per image.
    Summary(cmd::summary::SummaryArgs),
    /// Train a model (resnet20 on Fashion-MNIST by default).
    Train(Box<cmd::train::TrainArgs>),
    /// Test loss and accuracy of a trained model.
    Eval(cmd::eval::EvalArgs),
    /// Measure training and inference throughput on random data.
    Bench(cmd::bench::BenchArgs),
    /// Distribution of path lengths through a residual network's blocks.
    Paths(cmd::paths::PathsArgs),
    /// Test error with residual blocks deleted or reordered.
    Lesion(cmd::lesion::LesionArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    quiet_mesa_runtime_dir_warning();
    let options = unravel_device::AdapterOptions {
        name: cli.adapter,
        ..Default::default()
    };
    let result = match cli.command {
        Command::Info(args) => cmd::info::run(&options, &args),
        Command::Models => cmd::models::run(),
        Command::Summary(args) => cmd::summary::run(&args),
        Command::Bench(args) => cmd::bench::run(&options, &args),
        Command::Train(args) => cmd::train::run(&options, &args),
        Command::Eval(args) => cmd::eval::run(&options, &args),
        Command::Paths(args) => cmd::paths::run(&options, &args),
        Command::Lesion(args) => cmd::lesion::run(&options, &args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", errors::describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Mesa prints "XDG_RUNTIME_DIR is invalid" at instance creation when the
/// variable is unset (as in CI and containers); a private 0700 folder
/// silences it. Runs before any thread exists.
fn quiet_mesa_runtime_dir_warning() {
    let valid = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .is_some_and(|p| p.is_dir());
    if valid {
        return;
    }
    let dir = std::env::temp_dir().join(format!("unravel-runtime-{}", whoami()));
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        std::env::set_var("XDG_RUNTIME_DIR", dir);
    }
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "user".into())
}

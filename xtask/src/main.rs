//! Unravel's code generators, as `cargo xtask <task>` (an alias in
//! .cargo/config.toml):
//!
//! - `cargo xtask codegen`: writes the unrolled part of the convolution
//!   shader, `crates/unravel-device/shaders/conv2d_generated.wgsl`;
//! - `cargo xtask codegen --check`: fails if the committed file differs
//!   from what the generators write (the tests check the same).

mod conv2d;

use std::path::PathBuf;
use std::process::ExitCode;

/// Where the generated shader lives.
fn generated_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/unravel-device/shaders/conv2d_generated.wgsl")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let path = generated_path();
    match args.as_slice() {
        ["codegen"] => match std::fs::write(&path, conv2d::generate()) {
            Ok(()) => {
                println!("wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: writing {}: {e}", path.display());
                ExitCode::FAILURE
            }
        },
        ["codegen", "--check"] => {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == conv2d::generate() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "error: {} is not what the generators write; run `cargo xtask codegen`",
                    path.display()
                );
                ExitCode::FAILURE
            }
        }
        _ => {
            eprintln!("usage: cargo xtask codegen [--check]");
            ExitCode::FAILURE
        }
    }
}

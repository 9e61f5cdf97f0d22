//! What the CLI's end-to-end tests share: running the built binary.
#![allow(dead_code)]

use std::process::{Command, Output};

/// `unravel args`, run to completion.
pub fn run_unravel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unravel"))
        .args(args)
        .output()
        .expect("run unravel")
}

//! What the CLI's end-to-end tests share: running the built binary, and the
//! settings of a training run that takes seconds.
#![allow(dead_code)]

use std::process::{Command, Output};

/// `unravel train` settings for a run of seconds: resnet8 on 128 images,
/// tested on 64, batch 64, no progress output.
pub const TINY_RUN: [&str; 9] = [
    "--model",
    "resnet8",
    "--train-subset",
    "128",
    "--test-subset",
    "64",
    "--batch-size",
    "64",
    "--quiet",
];

/// `unravel args`, run to completion.
pub fn run_unravel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unravel"))
        .args(args)
        .output()
        .expect("run unravel")
}

/// `unravel args` after checking that it succeeded: its last line (JSON)
/// parsed, and the whole standard output.
pub fn run_unravel_json(args: &[&str]) -> (serde_json::Value, String) {
    let out = run_unravel(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output").to_string();
    (
        serde_json::from_str(&last).expect("a JSON last line"),
        stdout,
    )
}

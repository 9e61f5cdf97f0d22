//! `unravel train --resume` keeps the run's own configuration: the flags'
//! defaults do not replace it, and only --epochs extends it.

mod common;

use std::path::Path;

/// The last line of `unravel args` (JSON), after checking that it succeeded.
fn unravel(args: &[&str]) -> serde_json::Value {
    common::run_unravel_json(args).0
}

fn epochs_written(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count()
}

#[test]
fn resume_keeps_the_epochs_of_the_run_unless_extended() {
    let dir = std::env::temp_dir().join("unravel-cli-train-resume");
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    let first = [
        &[
            "train",
            "--epochs",
            "1",
            "--schedule",
            "cosine",
            "--out",
            out,
        ][..],
        &common::TINY_RUN,
    ]
    .concat();
    assert_eq!(unravel(&first)["epochs"], 1);
    // The default of --epochs (20) must not extend a finished 1-epoch run.
    assert_eq!(unravel(&["train", "--resume", out, "--quiet"])["epochs"], 1);
    assert_eq!(epochs_written(&dir), 1);
    assert_eq!(
        unravel(&["train", "--resume", out, "--epochs", "2", "--quiet"])["epochs"],
        2
    );
    assert_eq!(epochs_written(&dir), 2);
}

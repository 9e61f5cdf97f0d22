//! `unravel paths --gradient` end to end: a trained run's network, the same
//! network as its training began (`--at-init`), and the trained one with its
//! batch norms' running statistics (`--bn-stats running`), each giving the
//! gradient of one path by length and the range carrying 90% of it.

mod common;

use std::path::Path;

/// The JSON line `unravel paths` ends with, after checking it succeeded.
fn paths(args: &[&str]) -> serde_json::Value {
    let (json, stdout) = common::run_unravel_json(args);
    assert!(stdout.contains("90% of the gradient"), "{stdout}");
    json
}

/// (length, mean gradient norm) rows of gradient_by_length.csv.
fn by_length(dir: &Path) -> Vec<(usize, f64)> {
    std::fs::read_to_string(dir.join("gradient_by_length.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let mut cols = line.split(',');
            let k = cols.next().unwrap().parse().unwrap();
            (k, cols.next().unwrap().parse().unwrap())
        })
        .collect()
}

#[test]
fn gradient_by_length_trained_and_at_initialisation() {
    let dir = std::env::temp_dir().join("unravel-cli-paths");
    let _ = std::fs::remove_dir_all(&dir);
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let train = [
        &["train", "--epochs", "1", "--out", run_s][..],
        &common::TINY_RUN,
    ]
    .concat();
    assert!(common::run_unravel(&train).status.success());
    let mut measured = Vec::new();
    for (at_init, running) in [(false, false), (true, false), (false, true)] {
        let out = dir.join(format!("init{at_init}-running{running}"));
        let mut args = vec![
            "paths",
            "--checkpoint",
            run_s,
            "--gradient",
            "--samples",
            "2",
            "--test-subset",
            "16",
            "--batch-size",
            "16",
            "--out",
            out.to_str().unwrap(),
        ];
        if at_init {
            args.push("--at-init");
        }
        if running {
            args.extend(["--bn-stats", "running"]);
        }
        let json = paths(&args);
        assert_eq!(json["gradient_at_init"], at_init);
        assert_eq!(json["bn_stats"], if running { "running" } else { "batch" });
        // resnet8: 3 residual blocks, paths of 0 to 3 of them.
        assert_eq!(json["blocks"], 3);
        let range = json["gradient_range_90"].as_array().unwrap();
        let (lo, hi) = (range[0].as_u64().unwrap(), range[1].as_u64().unwrap());
        assert!(lo <= hi && hi <= 3, "{json}");
        let rows = by_length(&out);
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(
            rows.iter().all(|r| r.1.is_finite() && r.1 > 0.0),
            "{rows:?}"
        );
        measured.push(rows);
    }
    // One epoch moved the weights, and running statistics normalise
    // otherwise than the batch's: each measurement differs from the first.
    assert_ne!(measured[0], measured[1]);
    assert_ne!(measured[0], measured[2]);
}

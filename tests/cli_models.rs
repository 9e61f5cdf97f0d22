//! `unravel models`, `unravel summary` and `unravel bench` end to end.

mod common;

use common::run_unravel as unravel;

#[test]
fn models_lists_every_named_model_with_its_parameter_count() {
    let out = unravel(&["models"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in unravel_train::models::NAMED_MODELS {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{text}"
        );
    }
    let resnet20 = text.lines().find(|l| l.starts_with("resnet20 ")).unwrap();
    assert!(resnet20.contains("269722"), "{resnet20}");
}

#[test]
fn summary_ends_with_exact_parameters_and_flops() {
    let out = unravel(&[
        "summary",
        "--model",
        "resnet20",
        "--dataset",
        "fashion-mnist",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    // 1 input channel: 269722 - 2 * 16 * 9 weights of the stem.
    assert_eq!(lines[n - 2], "parameters: 269434");
    let flops: u64 = lines[n - 1]
        .strip_prefix("flops: ")
        .unwrap()
        .parse()
        .unwrap();
    let graph = unravel_train::models::build(
        "resnet20",
        &unravel_train::models::ModelConfig::for_dataset(
            unravel_train::DatasetKind::FashionMnist,
            unravel_train::models::ShortcutKind::A,
        ),
    )
    .unwrap();
    assert_eq!(flops, graph.macs());
    assert!(text.contains("layer3.2.conv2"));
}

#[test]
fn summary_takes_the_shortcut_kind() {
    let a = unravel(&["summary", "--model", "resnet20"]);
    let b = unravel(&["summary", "--model", "resnet20", "--shortcut", "b"]);
    let params = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("parameters: ")
                    .map(|v| v.parse::<u64>().unwrap())
            })
            .unwrap()
    };
    // Option B adds two 1x1 projections with batch norm.
    assert_eq!(params(&b) - params(&a), (16 * 32 + 64) + (32 * 64 + 128));
}

#[test]
fn an_unknown_model_is_a_clear_error() {
    let out = unravel(&["summary", "--model", "resnet21"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("6n+2"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn bench_reports_json_on_the_last_line() {
    let out = unravel(&[
        "bench",
        "--model",
        "resnet20",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--dataset",
        "mnist",
        "--stochastic-depth",
        "0.5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert!(v["train_images_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["inference_images_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["first_step_s"].as_f64().unwrap() > 0.0);
    assert!(v["peak_memory_bytes"].as_u64().unwrap() > 4 * 269_434);
    // resnet20: 9 blocks with p_l = 1 - l/18, so 9 - 0.5 * 45 / 9 = 6.5 expected.
    let sd = &v["stochastic_depth"];
    assert!((sd["expected_active_blocks"].as_f64().unwrap() - 6.5).abs() < 1e-9);
    assert!(
        sd["step_s"].as_f64().unwrap() > 0.0 && sd["full_depth_step_s"].as_f64().unwrap() > 0.0
    );
}

#[test]
fn paths_writes_the_binomial_distribution() {
    let out = std::env::temp_dir().join(format!("unravel-paths-{}", std::process::id()));
    let o = unravel(&[
        "paths",
        "--model",
        "resnet20",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("paths.csv")).unwrap();
    let rows: Vec<Vec<String>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    // 9 residual blocks: lengths 0..=9 with counts C(9, k).
    let counts: Vec<u64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    assert_eq!(counts, [1, 9, 36, 84, 126, 126, 84, 36, 9, 1]);
    let total: f64 = rows.iter().map(|r| r[2].parse::<f64>().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-12);
    assert!(out.join("paths.png").exists());
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["blocks"], 9);
}

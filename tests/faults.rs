//! What a hostile user of the command line meets: a run folder that is
//! refused (it holds a run, another process holds it), settings that are
//! checked before any work with the flag's name, empty test sets, an
//! embedded configuration that is wrong, absurd model depths, and exit
//! codes as docs/cli.md states them. The library's side (killed saves,
//! tampered state, divergence) is crates/unravel-train/tests/faults.rs.

mod common;

use std::path::PathBuf;
use std::time::Instant;

/// (exit code, stderr's `error:` line) of `unravel args`.
fn fails(args: &[&str]) -> (i32, String) {
    let out = common::run_unravel(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: ") || l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{args:?}: no error line in\n{stderr}"))
        .to_string();
    (out.status.code().unwrap_or(-1), line)
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unravel-cli-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_folder_holding_a_run_or_locked_by_another_is_refused() {
    let out = temp("refuse");
    let dir = out.to_str().unwrap();
    let args = [
        &["train", "--epochs", "1", "--out", dir][..],
        &common::TINY_RUN,
    ]
    .concat();
    let first = common::run_unravel(&args);
    assert!(first.status.success(), "{first:?}");
    let metrics = std::fs::read(out.join("metrics.jsonl")).unwrap();
    let (code, line) = fails(&args);
    assert_eq!(code, 1);
    assert!(line.contains("already holds a run"), "{line}");
    assert!(line.contains(&format!("--resume {dir}")), "{line}");
    assert!(line.contains("--overwrite"), "{line}");
    assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), metrics);

    // Held by a live process (this one): refused, naming it.
    let (_lock, _) = unravel_train::run_folder::RunLock::acquire(&out).unwrap();
    let overwrite = [&args[..], &["--overwrite"]].concat();
    let (_, line) = fails(&overwrite);
    assert!(
        line.contains(&format!("in use by process {}", std::process::id())),
        "{line}"
    );
    assert!(line.contains("another --out"), "{line}");
    let (_, line) = fails(&["train", "--resume", dir, "--quiet"]);
    assert!(line.contains("in use by process"), "{line}");
}

#[test]
fn every_numeric_setting_is_checked_first_and_named_by_its_flag() {
    let out = temp("flags");
    let dir = out.to_str().unwrap();
    let cases: [(&[&str], &str); 9] = [
        (&["--momentum", "2"], "--momentum: 2 is not in [0, 1)"),
        (&["--momentum", "nan"], "--momentum: NaN is not in [0, 1)"),
        (
            &["--warmup-epochs", "nan"],
            "--warmup-epochs: NaN is not a number of epochs >= 0",
        ),
        (
            &["--warmup-epochs", "-5"],
            "--warmup-epochs: -5 is not a number of epochs >= 0",
        ),
        (&["--lr", "-1"], "--lr: -1 is not a positive number"),
        (&["--weight-decay", "-1"], "--weight-decay: -1 is not"),
        (&["--test-subset", "0"], "--test-subset: must be positive"),
        (
            &["--stochastic-depth", "-0.5"],
            "--stochastic-depth: -0.5 is not a probability",
        ),
        (
            &["--milestones", "3,2"],
            "--milestones: [3.0, 2.0] are not increasing",
        ),
    ];
    for (flags, expected) in cases {
        let args = [&["train", "--out", dir, "--quiet"][..], flags].concat();
        let started = Instant::now();
        let (code, line) = fails(&args);
        assert_eq!(code, 1, "{flags:?}");
        assert!(line.contains(expected), "{flags:?}: {line}");
        // Before the data, the GPU or the folder.
        assert!(started.elapsed().as_secs_f64() < 5.0, "{flags:?}");
        assert!(!out.exists(), "{flags:?} created the run folder");
    }
    // A negative count is a value clap cannot parse (a usage error), not
    // an unknown flag.
    let (code, line) = fails(&["train", "--epochs", "-1"]);
    assert_eq!(code, 2);
    assert!(line.contains("invalid value '-1' for '--epochs"), "{line}");
    // The same checks for a settings file.
    let file = temp("flags-file");
    std::fs::create_dir_all(&file).unwrap();
    let toml = file.join("run.toml");
    std::fs::write(&toml, "momentum = 1.5\n").unwrap();
    let (_, line) = fails(&["train", "--config", toml.to_str().unwrap()]);
    assert!(line.contains("--momentum: 1.5 is not in [0, 1)"), "{line}");
}

#[test]
fn an_empty_test_set_is_an_error() {
    let out = temp("empty-test");
    let dir = out.to_str().unwrap();
    std::fs::create_dir_all(&out).unwrap();
    // A Fashion-MNIST folder whose test files hold zero images.
    let data = out.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let system = PathBuf::from("/usr/share/datasets/fashion-mnist");
    for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"] {
        std::fs::copy(system.join(name), data.join(name)).unwrap_or_else(|e| {
            panic!("{name}: {e}; install it with `apt-get install dataset-fashion-mnist`")
        });
    }
    let mut images = vec![0, 0, 8, 3];
    for d in [0u32, 28, 28] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    std::fs::write(data.join("t10k-images-idx3-ubyte"), images).unwrap();
    std::fs::write(
        data.join("t10k-labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 0],
    )
    .unwrap();
    let run = format!("{dir}/run");
    let args = [
        &["train", "--epochs", "1", "--out", &run][..],
        &["--data-dir", data.to_str().unwrap()],
        &common::TINY_RUN[..4],
        &["--quiet"],
    ]
    .concat();
    let (code, line) = fails(&args);
    assert_eq!(code, 1);
    assert!(line.contains("the test set has no images"), "{line}");

    // eval --test-subset 0 on a real run.
    let trained = format!("{dir}/trained");
    let train = [
        &["train", "--epochs", "1", "--out", &trained][..],
        &common::TINY_RUN,
    ]
    .concat();
    assert!(common::run_unravel(&train).status.success());
    let (_, line) = fails(&["eval", "--checkpoint", &trained, "--test-subset", "0"]);
    assert!(line.contains("--test-subset: must be positive"), "{line}");

    // A stored configuration that is wrong is reported with the file and
    // without flags of another command.
    let generation = unravel_train::run_folder::latest_generation(std::path::Path::new(&trained))
        .unwrap()
        .unwrap();
    let model = generation.model();
    let bytes = std::fs::read(&model).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let config = meta["config"].replace("epochs = 1", "epochs = 0");
    meta.insert("config".into(), config);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let rewritten = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
    std::fs::write(&model, rewritten).unwrap();
    let (_, line) = fails(&["eval", "--checkpoint", &trained]);
    assert!(line.contains(&model.display().to_string()), "{line}");
    assert!(line.contains("epochs: must be positive"), "{line}");
    assert!(!line.contains("--"), "{line}");
}

#[test]
fn an_absurd_depth_is_refused_at_once() {
    let started = Instant::now();
    let (code, line) = fails(&["summary", "--model", "resnet6000002"]);
    assert_eq!(code, 1);
    assert!(
        line.contains("above the largest supported depth, 10000 layers"),
        "{line}"
    );
    let (_, line) = fails(&["train", "--model", "preact-resnet18002", "--quiet"]);
    assert!(line.contains("largest supported depth"), "{line}");
    assert!(started.elapsed().as_secs_f64() < 5.0);
}

#[test]
fn a_batch_that_cannot_fit_is_refused_with_the_largest_that_does() {
    let (code, line) = fails(&["bench", "--model", "resnet20", "--batch-size", "100000000"]);
    assert_eq!(code, 1);
    assert!(
        line.contains("a batch of 100000000 needs")
            && line.contains("the largest batch that fits is"),
        "{line}"
    );
}

#[test]
fn usage_errors_exit_2_and_other_errors_exit_1() {
    assert_eq!(fails(&["train", "--no-such-flag"]).0, 2);
    assert_eq!(fails(&["summary", "--model", "resnet7"]).0, 1);
}

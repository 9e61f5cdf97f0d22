//! Bad input on the command line ends in one clear `error:` line and a
//! failure exit status, never a panic.

mod common;

/// (exit success, stderr) of `unravel args`.
fn unravel(args: &[&str]) -> (bool, String) {
    let out = common::run_unravel(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_clear_error(args: &[&str], expected: &str) {
    let (ok, stderr) = unravel(args);
    assert!(!ok, "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{args:?}: no error line in\n{stderr}"));
    assert!(line.contains(expected), "{args:?}: {line}");
}

#[test]
fn an_unknown_convolution_algorithm_is_named() {
    assert_clear_error(
        &["bench", "--conv-algo", "winograd"],
        "unknown convolution algorithm",
    );
}

#[test]
fn a_folder_without_a_checkpoint_says_what_to_give() {
    let dir = std::env::temp_dir().join("unravel-cli-errors-empty");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.to_str().unwrap();
    let expected = "holds no checkpoint: give a run folder written by `unravel train`";
    assert_clear_error(&["eval", "--checkpoint", dir], expected);
    assert_clear_error(&["lesion", "--checkpoint", dir], expected);
    assert_clear_error(&["paths", "--checkpoint", dir, "--gradient"], expected);
}

#[test]
fn a_corrupt_checkpoint_is_named() {
    let dir = std::env::temp_dir().join("unravel-cli-errors-corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("checkpoint.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    assert_clear_error(
        &["eval", "--checkpoint", dir.to_str().unwrap()],
        "checkpoint.safetensors is not a valid safetensors file",
    );
}

#[test]
fn an_unknown_model_names_the_valid_depths() {
    assert_clear_error(
        &["summary", "--model", "resnet21"],
        "CIFAR ResNet depth must be 6n+2",
    );
    assert_clear_error(
        &["paths", "--model", "densenet40-k12"],
        "no residual blocks",
    );
}

/// The libraries name settings; the command line names its flags.
#[test]
fn a_bad_setting_is_named_by_its_flag() {
    assert_clear_error(
        &["train", "--batch-size", "0"],
        "--batch-size: must be positive",
    );
    assert_clear_error(&["train", "--lr=-1"], "--lr: -1 is not a positive number");
    assert_clear_error(
        &["train", "--stochastic-depth", "2"],
        "--stochastic-depth: 2 is not a probability",
    );
    assert_clear_error(
        &["train", "--dataset", "mnist"],
        "(the data folder is --data-dir DIR)",
    );
    assert_clear_error(
        &["summary", "--model", "vgg16"],
        "run `unravel models` for the list",
    );
    assert_clear_error(
        &["train", "--precision", "half"],
        "--precision: \"half\" is not f32 or mixed",
    );
    assert_clear_error(
        &["train", "--precision", "mixed", "--init-loss-scale", "0"],
        "--init-loss-scale: 0 is not a positive number",
    );
    assert_clear_error(
        &["bench", "--precision", "bf16"],
        "\"bf16\" is not f32 or mixed",
    );
}

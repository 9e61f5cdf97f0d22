//! `unravel info` end to end: the adapter, its limits and features in text
//! and JSON, and a clear error for an adapter that does not exist.

mod common;

use common::run_unravel as unravel;

#[test]
fn info_prints_adapter_limits_and_features() {
    let out = unravel(&["info"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "adapter",
        "backend",
        "device type",
        "driver",
        "max_storage_buffer_binding_size",
        "SUBGROUP",
        "PIPELINE_CACHE",
        "SHADER_F16",
        "tensor cores",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // Only features Unravel uses are listed as such.
    for unused in ["SHADER_F64", "TIMESTAMP_QUERY"] {
        assert!(!text.contains(unused), "{unused} listed in:\n{text}");
    }
}

#[test]
fn info_json_is_one_parseable_object() {
    let out = unravel(&["info", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(v["name"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v["limits"]["max_buffer_size"].as_u64().unwrap() > 0);
    assert!(v["features"]["SUBGROUP"].is_boolean());
    assert!(v["features"]["SHADER_F16"].is_boolean());
    // One of the two: the tensor cores' tile, or why there are none.
    let tile = v["tensor_core_tile"].as_u64();
    let why = v["tensor_cores_unused_because"].as_str();
    assert!(tile.is_some() != why.is_some(), "{v}");
    assert!(v["features"].get("TIMESTAMP_QUERY").is_none(), "{v}");
}

#[test]
fn an_unknown_adapter_is_a_clear_error_not_a_panic() {
    let out = unravel(&["--adapter", "no-such-gpu-xyz", "info"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no adapter matches \"no-such-gpu-xyz\""),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

//! Checkpoints: PyTorch names, shapes and dtypes in the safetensors header,
//! exact round trips of parameters, statistics and momentum, identical
//! outputs after loading, clear errors for bad files, atomic replacement.

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::tensor::{Dtype, SafeTensors};
use unravel_device::kernels::sgd::SgdConfig;
use unravel_device::Gpu;
use unravel_graph::{Mode, ModelState, Optimizer, ParamId, Plan, Shape};
use unravel_train::checkpoint::{save_model, save_momentum, Checkpoint, CheckpointError};
use unravel_train::models::{build, ModelConfig, ShortcutKind};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unravel-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config() -> ModelConfig {
    ModelConfig {
        input: Shape::new(3, 8, 8),
        classes: 10,
        shortcut: ShortcutKind::A,
    }
}

/// A resnet20 with a few SGD steps behind it (non-trivial statistics and
/// momentum).
fn trained(g: &Gpu) -> (unravel_graph::Graph, ModelState) {
    let graph = build("resnet20", &config()).unwrap();
    let state = ModelState::new(g, &graph, 3).unwrap();
    let plan = Plan::compile(g, &graph, &state, 4, Mode::Train).unwrap();
    let opt = Optimizer::new(
        g,
        &state,
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov: false,
        },
    )
    .unwrap();
    let images: Vec<f32> = (0..4 * 192).map(|i| ((i * 7) % 13) as f32 / 13.0).collect();
    for _ in 0..3 {
        plan.train_step(g, &images, &[1, 2, 3, 4], &[], Some(&opt))
            .unwrap();
        state.count_batch();
    }
    (graph, state)
}

#[test]
fn the_header_has_pytorch_names_shapes_and_metadata() {
    let g = Gpu::default_adapter().unwrap();
    let (graph, state) = trained(&g);
    let dir = temp_dir("header");
    let path = dir.join("checkpoint.safetensors");
    let meta = HashMap::from([("model".to_string(), "resnet20".to_string())]);
    save_model(&path, &g, &graph, &state, meta).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let expect = [
        ("conv1.weight", Dtype::F32, vec![16, 3, 3, 3]),
        ("bn1.weight", Dtype::F32, vec![16]),
        ("bn1.bias", Dtype::F32, vec![16]),
        ("bn1.running_mean", Dtype::F32, vec![16]),
        ("bn1.running_var", Dtype::F32, vec![16]),
        ("bn1.num_batches_tracked", Dtype::I64, vec![]),
        ("layer2.0.conv1.weight", Dtype::F32, vec![32, 16, 3, 3]),
        ("layer3.2.bn2.running_var", Dtype::F32, vec![64]),
        ("fc.weight", Dtype::F32, vec![10, 64]),
        ("fc.bias", Dtype::F32, vec![10]),
    ];
    for (name, dtype, shape) in expect {
        let t = st.tensor(name).unwrap_or_else(|_| panic!("{name} missing"));
        assert_eq!((t.dtype(), t.shape().to_vec()), (dtype, shape), "{name}");
    }
    let tracked = st.tensor("bn1.num_batches_tracked").unwrap();
    assert_eq!(i64::from_le_bytes(tracked.data().try_into().unwrap()), 3);
    // Every parameter, and three buffers per batch norm: nothing else.
    assert_eq!(st.len(), graph.params.len() + 3 * graph.bn_states.len());
    let c = Checkpoint::read(&path).unwrap();
    assert_eq!(c.metadata().unwrap()["model"], "resnet20");
}

#[test]
fn a_round_trip_restores_everything_and_the_same_outputs() {
    let g = Gpu::default_adapter().unwrap();
    let (graph, state) = trained(&g);
    let dir = temp_dir("roundtrip");
    let (model, opt) = (
        dir.join("checkpoint.safetensors"),
        dir.join("optimizer.safetensors"),
    );
    save_model(&model, &g, &graph, &state, HashMap::new()).unwrap();
    save_momentum(&opt, &g, &graph, &state, HashMap::new()).unwrap();

    let fresh = ModelState::new(&g, &graph, 99).unwrap();
    let c = Checkpoint::read(&model).unwrap();
    c.load_model(&g, &graph, &fresh).unwrap();
    Checkpoint::read(&opt)
        .unwrap()
        .load_momentum(&g, &graph, &fresh)
        .unwrap();
    assert_eq!(
        fresh.read_params(&g).unwrap(),
        state.read_params(&g).unwrap()
    );
    for i in 0..graph.bn_states.len() {
        assert_eq!(fresh.read_bn(&g, i).unwrap(), state.read_bn(&g, i).unwrap());
    }
    for i in 0..graph.params.len() {
        let m = |s: &ModelState| g.read(&s.momentum(ParamId(i)).unwrap()).unwrap();
        assert_eq!(m(&fresh), m(&state));
    }
    assert_eq!(fresh.batches_tracked(), 3);
    let images: Vec<f32> = (0..2 * 192).map(|i| (i % 5) as f32 - 2.0).collect();
    let out = |s: &ModelState| {
        let plan = Plan::compile(&g, &graph, s, 2, Mode::Eval).unwrap();
        plan.eval_step(&g, &images, &[0, 1], &[]).unwrap();
        plan.read_value(&g, graph.output).unwrap()
    };
    assert_eq!(out(&fresh), out(&state));
}

#[test]
fn bad_files_are_clear_errors() {
    let g = Gpu::default_adapter().unwrap();
    let (graph, state) = trained(&g);
    let dir = temp_dir("bad");
    let path = dir.join("checkpoint.safetensors");
    save_model(&path, &g, &graph, &state, HashMap::new()).unwrap();
    // Truncated.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = Checkpoint::read(&cut)
        .err()
        .expect("a truncated file is an error");
    assert!(matches!(err, CheckpointError::Format { .. }), "{err}");
    assert!(err.to_string().contains("cut.safetensors"), "{err}");
    // Missing.
    let err = Checkpoint::read(&dir.join("nope.safetensors"))
        .err()
        .unwrap();
    assert!(matches!(err, CheckpointError::Io { .. }), "{err}");
    // Another architecture.
    let other = build("resnet32", &config()).unwrap();
    let other_state = ModelState::new(&g, &other, 0).unwrap();
    let err = Checkpoint::read(&path)
        .unwrap()
        .load_model(&g, &other, &other_state)
        .unwrap_err();
    assert!(err.to_string().contains("layer1.3.conv1.weight"), "{err}");
}

#[test]
fn saving_replaces_the_previous_file_atomically() {
    let g = Gpu::default_adapter().unwrap();
    let (graph, state) = trained(&g);
    let dir = temp_dir("atomic");
    let path = dir.join("checkpoint.safetensors");
    save_model(
        &path,
        &g,
        &graph,
        &state,
        HashMap::from([("epoch".into(), "1".into())]),
    )
    .unwrap();
    // A temporary file left by a killed writer does not disturb anything.
    std::fs::write(dir.join(".checkpoint.safetensors.tmp-1"), b"partial").unwrap();
    save_model(
        &path,
        &g,
        &graph,
        &state,
        HashMap::from([("epoch".into(), "2".into())]),
    )
    .unwrap();
    let c = Checkpoint::read(&path).unwrap();
    assert_eq!(c.metadata().unwrap()["epoch"], "2");
    let ours: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&format!("tmp-{}", std::process::id())))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
}

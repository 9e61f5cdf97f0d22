//! The device layer's contract: adapter selection errors, typed errors for
//! bad sizes and bindings, wgpu validation errors caught (not panics), one
//! submission for many dispatches, and the on-disk pipeline cache.

mod common;

use common::*;
use unravel_device::kernels::elementwise as ew;
use unravel_device::{AdapterOptions, DeviceError, Gpu};

#[test]
fn an_unknown_adapter_name_lists_the_available_ones() {
    let options = AdapterOptions {
        name: Some("no-such-adapter-xyz".into()),
        ..Default::default()
    };
    match Gpu::new(&options) {
        Err(DeviceError::AdapterNotFound { wanted, available }) => {
            assert_eq!(wanted, "no-such-adapter-xyz");
            assert!(
                available.contains(&gpu().adapter_info().name),
                "{available}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("an adapter matched a made-up name"),
    }
}

#[test]
fn the_adapter_is_found_by_a_substring_of_its_name() {
    let name = gpu().adapter_info().name.clone();
    let part: String = name.chars().take(4).collect::<String>().to_uppercase();
    let options = AdapterOptions {
        name: Some(part),
        no_pipeline_cache: true,
        ..Default::default()
    };
    let g = Gpu::new(&options).unwrap();
    assert_eq!(g.adapter_info().name, name);
}

#[test]
fn a_tensor_larger_than_the_adapter_allows_is_a_typed_error() {
    let g = gpu();
    let limit = g.limits().max_buffer_size;
    let elements = (limit / 4 + 1) as usize;
    match g.zeros(&[elements, 1]) {
        Err(DeviceError::TooLarge {
            bytes, limit: l, ..
        }) => {
            assert!(bytes > l);
            assert_eq!(l, limit);
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|t| t.numel())),
    }
}

#[test]
fn host_data_of_the_wrong_length_is_a_shape_error() {
    let g = gpu();
    let err = g.upload(&[1.0, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert!(matches!(err, DeviceError::Shape { .. }), "{err}");
}

#[test]
fn a_missing_binding_and_an_unknown_entry_point_are_typed_errors() {
    let g = gpu();
    let x = g.zeros(&[4]).unwrap();
    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct P([u32; 20]);
    // relu_forward uses bindings 1 and 2; give it only one tensor.
    let err = g
        .dispatch(
            "elementwise.wgsl",
            "relu_forward",
            &P([0; 20]),
            &[&x],
            [1, 1, 1],
        )
        .unwrap_err();
    assert!(
        matches!(err, DeviceError::MissingBinding { binding: 2, .. }),
        "{err}"
    );
    let err = g
        .dispatch(
            "elementwise.wgsl",
            "no_such_entry",
            &P([0; 20]),
            &[&x],
            [1, 1, 1],
        )
        .unwrap_err();
    assert!(
        matches!(err, DeviceError::UnknownEntryPoint { .. }),
        "{err}"
    );
}

#[test]
fn a_wgpu_validation_error_is_returned_not_panicked() {
    let g = gpu();
    // A uniform buffer smaller than the shader's Params struct fails wgpu's
    // binding-size validation, when the bind group is made or at the latest
    // when the dispatch is submitted.
    let x = g.zeros(&[4]).unwrap();
    let err = g
        .dispatch(
            "elementwise.wgsl",
            "relu_forward",
            &[0u32; 4],
            &[&x, &x],
            [1, 1, 1],
        )
        .and_then(|d| g.run(&[d]))
        .unwrap_err();
    assert!(matches!(err, DeviceError::Validation { .. }), "{err}");
    // The device is still usable afterwards.
    let y = g.upload(&[-1.0, 2.0, -3.0, 4.0], &[4]).unwrap();
    g.run(&[ew::relu_forward(g, &y, &y).unwrap()]).unwrap();
    assert_eq!(g.read(&y).unwrap(), vec![0.0, 2.0, 0.0, 4.0]);
}

#[test]
fn many_dispatches_go_into_one_submission_in_order() {
    let g = gpu();
    let x = g.upload(&[1.0, -2.0, 3.0], &[3]).unwrap();
    let y = g.zeros(&[3]).unwrap();
    // y = x; then y += x three times: only correct if recorded in order.
    let copy = ew::scale_forward(g, &x, 1.0, &y).unwrap();
    let acc = ew::accumulate(g, &x, &y).unwrap();
    let mut rec = g.recorder();
    rec.record(&copy);
    rec.record_all(&[acc.clone(), acc.clone(), acc]);
    assert_eq!(rec.dispatch_count(), 4);
    rec.submit().unwrap();
    g.wait().unwrap();
    assert_eq!(g.read(&y).unwrap(), vec![4.0, -8.0, 12.0]);
}

#[test]
fn a_recorded_clear_zeroes_a_tensor_between_dispatches() {
    let g = gpu();
    let x = g.upload(&[1.0, 2.0, 3.0, 4.0], &[4]).unwrap();
    let y = g.upload(&[9.0, 9.0, 9.0, 9.0], &[4]).unwrap();
    let mut rec = g.recorder();
    rec.clear(&y).unwrap();
    rec.record(&ew::accumulate(g, &x, &y).unwrap());
    rec.submit().unwrap();
    g.wait().unwrap();
    assert_eq!(g.read(&y).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn the_pipeline_cache_is_written_where_the_adapter_supports_it() {
    let dir = std::env::temp_dir().join(format!("unravel-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = AdapterOptions {
        pipeline_cache_dir: Some(dir.clone()),
        ..Default::default()
    };
    let g = Gpu::new(&options).unwrap();
    let supported = g.features().contains(wgpu::Features::PIPELINE_CACHE);
    let x = g.zeros(&[8]).unwrap();
    g.run(&[ew::relu_forward(&g, &x, &x).unwrap()]).unwrap();
    g.save_pipeline_cache();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    if supported {
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(std::fs::metadata(&files[0]).unwrap().len() > 0);
        // A second device starts from the saved data without error.
        let again = Gpu::new(&options).unwrap();
        again
            .run(&[ew::relu_forward(&again, &x_of(&again), &x_of(&again)).unwrap()])
            .unwrap();
    } else {
        assert!(files.is_empty());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deferred_pipelines_compile_when_first_recorded_and_run_the_same() {
    // A device of its own, so no other test has compiled these kernels.
    let g = Gpu::default_adapter().unwrap();
    let x = g.upload(&[-1.0, 2.0, -3.0, 0.5], &[4]).unwrap();
    let (a, b) = (g.zeros(&[4]).unwrap(), g.zeros(&[4]).unwrap());
    let (relu, scale) = g.compile_in_parallel(|| {
        let relu = ew::relu_forward(&g, &x, &a).unwrap();
        let scale = g.compile_deferred(|| ew::scale_forward(&g, &x, 2.0, &b).unwrap());
        (relu, scale)
    });
    let before = g.compiled_pipelines();
    g.run(&[relu]).unwrap();
    assert_eq!(
        g.compiled_pipelines(),
        before,
        "the relu was compiled with the plan"
    );
    g.run(&[scale]).unwrap();
    assert_eq!(
        g.compiled_pipelines(),
        before + 1,
        "the scale compiles when recorded"
    );
    assert_eq!(g.read(&a).unwrap(), vec![0.0, 2.0, 0.0, 0.5]);
    assert_eq!(g.read(&b).unwrap(), vec![-2.0, 4.0, -6.0, 1.0]);
    // Asked for again outside a deferred scope, a deferred kernel compiles
    // at once.
    let y = g.zeros(&[4]).unwrap();
    let deferred = g.compile_deferred(|| ew::sigmoid_forward(&g, &x, &y).unwrap());
    let compiled = g.compiled_pipelines();
    let again = ew::sigmoid_forward(&g, &x, &y).unwrap();
    assert_eq!(g.compiled_pipelines(), compiled + 1);
    g.run(&[deferred, again]).unwrap();
    let want: Vec<f32> = [-1.0f32, 2.0, -3.0, 0.5]
        .iter()
        .map(|v| 1.0 / (1.0 + (-v).exp()))
        .collect();
    let got = g.read(&y).unwrap();
    assert!(
        got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6),
        "{got:?}"
    );
}

fn x_of(g: &Gpu) -> unravel_device::Tensor {
    g.zeros(&[8]).unwrap()
}

/// An added shader may leave an element type open as the built-in ones do;
/// an f16 tensor bound where the shader fixed f32 is refused.
#[test]
fn f16_tensors_bind_only_where_the_element_type_is_open() {
    let g = gpu();
    let src = "@group(0) @binding(1) var<storage, read_write> x: array<elem1>;\n\
               @group(0) @binding(2) var<storage, read_write> y: array<f32>;\n\
               @compute @workgroup_size(1) fn twice() { y[0] = 2.0 * f32(x[0]); }\n";
    g.add_shader("test_open.wgsl", src).unwrap();
    let x = g
        .upload_as(&[1.5], &[1], unravel_device::DType::F16)
        .unwrap();
    let y = g.zeros(&[1]).unwrap();
    let d = g
        .dispatch("test_open.wgsl", "twice", &0u32, &[&x, &y], [1, 1, 1])
        .unwrap();
    assert_eq!(d.kernel().name(), "test_open.wgsl[1:f16]::twice");
    g.run(&[d]).unwrap();
    assert_eq!(g.read(&y).unwrap(), vec![3.0]);
    let y16 = g.zeros_of(&[1], unravel_device::DType::F16).unwrap();
    let err = g
        .dispatch("test_open.wgsl", "twice", &0u32, &[&x, &y16], [1, 1, 1])
        .unwrap_err();
    assert!(err.to_string().contains("binding 2 takes f32"), "{err}");
}

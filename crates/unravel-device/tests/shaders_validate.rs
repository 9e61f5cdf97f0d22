//! Every WGSL file in shaders/ parses and validates with naga, so a broken
//! shader fails `cargo test` even on a machine without a GPU driver.

use unravel_device::shaders::{
    all_source_files, coop_source, open_bindings, parse_and_validate, with_elements, SHADER_FILES,
};
use unravel_device::DType;

/// Every file, with its open element types (`elemB`) all f32 and all f16.
#[test]
fn every_shader_file_parses_and_validates() {
    for (file, source) in SHADER_FILES {
        for dtype in [DType::F32, DType::F16] {
            let closed = with_elements(file, source, |_| dtype).unwrap();
            if let Err(e) = parse_and_validate(file, &closed) {
                panic!("{} elements: {e}", dtype.name());
            }
        }
    }
}

/// The cooperative-matrix convolution cannot run on lavapipe, but both tile
/// sizes, with f16 and f32 activations, must still be valid shaders.
#[test]
fn the_cooperative_matrix_shader_validates_for_every_tile() {
    for tile in [8, 16] {
        let source = coop_source(tile);
        for dtype in [DType::F32, DType::F16] {
            let closed = with_elements("conv2d_coop.wgsl", &source, |_| dtype).unwrap();
            assert!(closed.starts_with("enable wgpu_cooperative_matrix;\nenable f16;\n"));
            assert_eq!(closed.matches("enable f16;").count(), 1);
            if let Err(e) = parse_and_validate("conv2d_coop.wgsl", &closed) {
                panic!("tile {tile}, {} elements: {e}", dtype.name());
            }
        }
    }
}

#[test]
fn open_element_types_are_found_by_binding() {
    let src = "@binding(1) var<storage> a: array<elem1>;\n\
               @binding(3) var<storage> c4: array<vec4<elem3>>;\n\
               fn f() { let x = elem3(1.0); let elem12x = 0; }";
    assert_eq!(open_bindings(src), vec![1, 3]);
    let closed = with_elements(
        "t.wgsl",
        src,
        |b| {
            if b == 3 {
                DType::F16
            } else {
                DType::F32
            }
        },
    )
    .unwrap();
    assert!(closed.starts_with("enable f16;\nalias elem1 = f32;\nalias elem3 = f16;\n"));
    assert!(with_elements("t.wgsl", src, |_| DType::U32).is_err());
    // With every element f32, no f16 directive is needed.
    let plain = with_elements("t.wgsl", src, |_| DType::F32).unwrap();
    assert!(!plain.contains("enable f16"));
}

#[test]
fn the_mixed_precision_shaders_leave_their_activations_open() {
    // The shaders whose kernels take f16 activations.
    for file in [
        "copy.wgsl",
        "elementwise.wgsl",
        "linear.wgsl",
        "pool.wgsl",
        "shortcut.wgsl",
    ] {
        let source = SHADER_FILES.iter().find(|(f, _)| *f == file).unwrap().1;
        assert!(
            !open_bindings(source).is_empty(),
            "{file} has no open binding"
        );
    }
}

#[test]
fn every_file_in_the_shaders_folder_is_embedded() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = all_source_files().iter().map(|n| n.to_string()).collect();
    embedded.sort();
    assert_eq!(on_disk, embedded, "shaders/ and SOURCE_FILES disagree");
}

#[test]
fn a_broken_shader_is_reported_with_its_file_name() {
    let err = parse_and_validate("broken.wgsl", "fn f() -> u32 { return 1.5; }").unwrap_err();
    assert!(err.to_string().contains("broken.wgsl"), "{err}");
}

//! Every WGSL file in shaders/ parses and validates with naga, so a broken
//! shader fails `cargo test` even on a machine without a GPU driver.

use unravel_device::shaders::{parse_and_validate, SHADER_FILES, SOURCE_FILES};

#[test]
fn every_shader_file_parses_and_validates() {
    for (file, source) in SHADER_FILES {
        if let Err(e) = parse_and_validate(file, source) {
            panic!("{e}");
        }
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
    let mut embedded: Vec<String> = SOURCE_FILES.iter().map(|n| n.to_string()).collect();
    embedded.sort();
    assert_eq!(on_disk, embedded, "shaders/ and SOURCE_FILES disagree");
}

#[test]
fn a_broken_shader_is_reported_with_its_file_name() {
    let err = parse_and_validate("broken.wgsl", "fn f() -> u32 { return 1.5; }").unwrap_err();
    assert!(err.to_string().contains("broken.wgsl"), "{err}");
}

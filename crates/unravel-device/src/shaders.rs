//! The WGSL sources, embedded at build time, and their naga validation.
//!
//! A shader's storage binding may leave its element type open: declared as
//! `array<elemB>` (or `array<vec4<elemB>>`), where B is the binding number,
//! its element type is that of the tensor bound there, f32 or f16, chosen
//! per dispatch. The shader converts on load (`f32(a[i])`) and on store
//! (`b[i] = elem2(v)`) and computes in f32; with f32 tensors the
//! conversions are identities. [`with_elements`] writes the `alias` lines
//! (and `enable f16;`) that close the type before the source is compiled.

use std::collections::BTreeSet;

use crate::error::{DeviceError, Result};
use crate::tensor::DType;

macro_rules! shader_files {
    ($($name:literal $(+ $part:literal)*),* $(,)?) => {
        /// Every shader, by name: its file in `shaders/`, followed by the
        /// files generated for it (a generated part is a file of its own).
        pub const SHADER_FILES: &[(&str, &str)] = &[
            $(($name, concat!(
                include_str!(concat!("../shaders/", $name)),
                $(include_str!(concat!("../shaders/", $part)),)*
            )),)*
        ];

        /// Every file in `shaders/` the shaders are made of.
        pub const SOURCE_FILES: &[&str] = &[$($name, $($part,)*)*];
    };
}

shader_files!(
    "batchnorm.wgsl",
    "conv2d.wgsl" + "conv2d_generated.wgsl",
    "copy.wgsl",
    "elementwise.wgsl",
    "linear.wgsl",
    "loss.wgsl",
    "loss_scale.wgsl",
    "pool.wgsl",
    "sgd.wgsl",
    "shortcut.wgsl",
);

/// Shaders that compile only with a prelude from the host (see
/// [`coop_source`]); in `shaders/` like the others.
pub const TEMPLATE_FILES: &[(&str, &str)] = &[(
    "conv2d_coop.wgsl",
    include_str!("../shaders/conv2d_coop.wgsl"),
)];

/// Every WGSL file in `shaders/`: the shaders, their generated parts and
/// the templates.
pub fn all_source_files() -> Vec<&'static str> {
    let mut all = SOURCE_FILES.to_vec();
    all.extend(TEMPLATE_FILES.iter().map(|(name, _)| *name));
    all
}

/// The cooperative-matrix convolution with tiles of `tile` x `tile`
/// (8 or 16): f16 operand tiles, an f32 accumulator.
pub fn coop_source(tile: u32) -> String {
    let template = TEMPLATE_FILES[0].1;
    format!(
        "enable wgpu_cooperative_matrix;\nenable f16;\n\
         const T: u32 = {tile}u;\n\
         alias TileA = coop_mat{tile}x{tile}<f16, A>;\n\
         alias TileB = coop_mat{tile}x{tile}<f16, B>;\n\
         alias TileC = coop_mat{tile}x{tile}<f32, C>;\n{template}"
    )
}

/// The source of one shader file.
pub fn source(file: &str) -> Option<&'static str> {
    SHADER_FILES
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, src)| *src)
}

/// Parses and validates WGSL with naga, the way wgpu will; errors carry the
/// file name and naga's annotated message.
pub fn parse_and_validate(
    file: &str,
    source: &str,
) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| DeviceError::Shader {
        file: file.to_string(),
        message: e.emit_to_string_with_path(source, file),
    })?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
    .subgroup_operations(naga::valid::SubgroupOperationSet::all())
    .validate(&module)
    .map_err(|e| DeviceError::Shader {
        file: file.to_string(),
        message: e.emit_to_string_with_path(source, file),
    })?;
    Ok((module, info))
}

/// The binding numbers whose element type `source` leaves open (`elemB`).
pub fn open_bindings(source: &str) -> Vec<u32> {
    let mut found = BTreeSet::new();
    let bytes = source.as_bytes();
    let mut at = 0;
    while let Some(i) = source[at..].find("elem") {
        let start = at + i;
        let digits_from = start + 4;
        let mut end = digits_from;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        let whole_word = (start == 0 || !is_ident(bytes[start - 1]))
            && end > digits_from
            && (end == bytes.len() || !is_ident(bytes[end]));
        if whole_word {
            if let Ok(b) = source[digits_from..end].parse() {
                found.insert(b);
            }
        }
        at = end.max(start + 4);
    }
    found.into_iter().collect()
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `source` with its open element types closed: binding B's element type is
/// `elements(B)` (f32 or f16). Errors for another dtype.
pub fn with_elements(file: &str, source: &str, elements: impl Fn(u32) -> DType) -> Result<String> {
    let open = open_bindings(source);
    // `enable` directives come first in a module: the aliases go after any
    // the source starts with.
    let directives: usize = source
        .lines()
        .take_while(|l| l.trim_start().starts_with("enable "))
        .map(|l| l.len() + 1)
        .sum();
    let (directives, body) = source.split_at(directives.min(source.len()));
    let mut prelude = String::new();
    let mut any_f16 = false;
    for &b in &open {
        let name = match elements(b) {
            DType::F32 => "f32",
            DType::F16 => {
                any_f16 = true;
                "f16"
            }
            other => {
                return Err(DeviceError::Shader {
                    file: file.to_string(),
                    message: format!("binding {b} takes f32 or f16 elements, not {other:?}"),
                })
            }
        };
        prelude.push_str(&format!("alias elem{b} = {name};\n"));
    }
    if any_f16 && !directives.contains("enable f16;") {
        prelude.insert_str(0, "enable f16;\n");
    }
    Ok(format!("{directives}{prelude}{body}"))
}

/// The name a shader compiled with these element types goes by: the file,
/// then each f16 binding (`conv2d.wgsl[1:f16,4:f16]`).
pub fn variant_name(file: &str, source: &str, elements: impl Fn(u32) -> DType) -> String {
    let halves: Vec<String> = open_bindings(source)
        .into_iter()
        .filter(|&b| elements(b) == DType::F16)
        .map(|b| format!("{b}:f16"))
        .collect();
    if halves.is_empty() {
        file.to_string()
    } else {
        format!("{file}[{}]", halves.join(","))
    }
}

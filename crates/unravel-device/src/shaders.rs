//! The WGSL sources, embedded at build time, and their naga validation.

use crate::error::{DeviceError, Result};

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
    "pool.wgsl",
    "sgd.wgsl",
    "shortcut.wgsl",
);

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

//! A plain description of the open adapter, for `unravel info` and logs.

use crate::context::{Gpu, USED_FEATURES};

/// What the adapter is and what it offers Unravel.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    /// Minimum and maximum subgroup size the adapter reports.
    pub subgroup_sizes: (u32, u32),
    /// (limit name, value) for the limits that bound Unravel's tensors and kernels.
    pub limits: Vec<(&'static str, u64)>,
    /// (feature name, adapter has it, device opened with it) for each of
    /// [`USED_FEATURES`].
    pub features: Vec<(&'static str, bool, bool)>,
    /// The tensor cores' tile size if the device has cooperative matrices
    /// that passed their check (mixed-precision plans then use them), else
    /// why not.
    pub tensor_cores: std::result::Result<u32, String>,
}

impl AdapterSummary {
    pub fn of(gpu: &Gpu) -> AdapterSummary {
        let info = gpu.adapter_info();
        let l = gpu.limits();
        let adapter = gpu.adapter_features();
        let device = gpu.features();
        let features = USED_FEATURES
            .iter()
            .map(|&(name, f, _)| (name, adapter.contains(f), device.contains(f)))
            .collect();
        AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
            tensor_cores: crate::kernels::conv2d::CoopTile::verified(gpu).map(|t| t.size),
            limits: vec![
                ("max_buffer_size", l.max_buffer_size),
                (
                    "max_storage_buffer_binding_size",
                    l.max_storage_buffer_binding_size,
                ),
                (
                    "max_storage_buffers_per_shader_stage",
                    l.max_storage_buffers_per_shader_stage as u64,
                ),
                (
                    "max_uniform_buffer_binding_size",
                    l.max_uniform_buffer_binding_size,
                ),
                (
                    "max_compute_workgroup_storage_size",
                    l.max_compute_workgroup_storage_size as u64,
                ),
                (
                    "max_compute_invocations_per_workgroup",
                    l.max_compute_invocations_per_workgroup as u64,
                ),
                (
                    "max_compute_workgroups_per_dimension",
                    l.max_compute_workgroups_per_dimension as u64,
                ),
                (
                    "min_storage_buffer_offset_alignment",
                    l.min_storage_buffer_offset_alignment as u64,
                ),
                ("max_immediate_size", l.max_immediate_size as u64),
            ],
            features,
        }
    }
}

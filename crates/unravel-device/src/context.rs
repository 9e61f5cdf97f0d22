//! The wgpu context: adapter selection, device creation, error scopes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{DeviceError, Result};
use crate::kernels::conv2d::CoopTile;
use crate::registry::KernelRegistry;

/// How to choose the adapter. Unset fields follow wgpu's environment conventions:
/// `WGPU_BACKEND` (e.g. `vulkan`, `metal`, `dx12`) and `WGPU_ADAPTER_NAME` (a
/// case-insensitive substring of the adapter name).
#[derive(Clone, Debug, Default)]
pub struct AdapterOptions {
    /// Substring of the adapter name; wins over `WGPU_ADAPTER_NAME`.
    pub name: Option<String>,
    /// Where compiled pipelines are cached between runs (adapters with
    /// PIPELINE_CACHE only). `None` uses the default cache folder; see
    /// [`default_pipeline_cache_dir`].
    pub pipeline_cache_dir: Option<PathBuf>,
    /// Turn the on-disk pipeline cache off.
    pub no_pipeline_cache: bool,
    /// Compile kernels without naga's runtime bounds checks. Faster (up to
    /// 2x on lavapipe), and sound only because every host function validates
    /// shapes, views and buffer sizes before it prepares a dispatch; off by
    /// default, and the test suite runs the kernels both ways.
    pub unchecked_shaders: bool,
    /// Features not to ask for even where the adapter has them, to run the
    /// paths of adapters that lack them (the direct convolution without
    /// SUBGROUP, say).
    pub disabled_features: wgpu::Features,
}

/// The optional features Unravel uses, and what for; none is required.
pub const USED_FEATURES: &[(&str, wgpu::Features, &str)] = &[
    (
        "SUBGROUP",
        wgpu::Features::SUBGROUP,
        "register-blocked convolutions sharing operands by subgroup broadcasts",
    ),
    (
        "PIPELINE_CACHE",
        wgpu::Features::PIPELINE_CACHE,
        "compiled pipelines kept on disk between runs",
    ),
    (
        "SHADER_F16",
        wgpu::Features::SHADER_F16,
        "f16 activations and gradients (mixed precision)",
    ),
    (
        "EXPERIMENTAL_COOPERATIVE_MATRIX",
        wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
        "convolutions on tensor cores (--conv-algo coop-matrix, experimental)",
    ),
];

/// The features Unravel asks for when the adapter has them: [`USED_FEATURES`].
pub const WANTED_FEATURES: wgpu::Features = wgpu::Features::SUBGROUP
    .union(wgpu::Features::PIPELINE_CACHE)
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);

/// An open GPU device with its queue and the compiled-kernel registry.
pub struct Gpu {
    pub(crate) adapter: wgpu::Adapter,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub(crate) registry: KernelRegistry,
    uncaptured: Arc<Mutex<Option<String>>>,
    /// The verdict of the cooperative-matrix check (`CoopTile::verified`).
    pub(crate) coop_verdict: OnceLock<std::result::Result<CoopTile, String>>,
}

impl Gpu {
    /// Opens the adapter chosen by `options` and the environment.
    pub fn new(options: &AdapterOptions) -> Result<Gpu> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let wanted = options
            .name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|name| !name.is_empty());
        let adapter = choose_adapter(adapters, wanted.as_deref())?;
        let info = adapter.get_info();

        let features = adapter.features() & WANTED_FEATURES & !options.disabled_features;
        let experimental = if features.intersects(wgpu::Features::all_experimental_mask()) {
            // SAFETY: the only experimental feature asked for is cooperative
            // matrices, used only by the convolution a caller chooses
            // (`Conv2dAlgo::CoopMatrix`), whose shader is validated by naga
            // and whose host code checks every shape first.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        // The adapter's own limits: the defaults (128 MiB bindings, 256 MiB
        // buffers) are too small for large activations.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("unravel"),
            required_features: features,
            required_limits: limits,
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|source| DeviceError::RequestDevice {
            adapter: info.name.clone(),
            source,
        })?;

        // wgpu's default handler panics; keep the message and report it as a
        // typed error at the next submission instead.
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| error.to_string());
        }));

        let cache_dir = if options.no_pipeline_cache {
            None
        } else {
            options
                .pipeline_cache_dir
                .clone()
                .or_else(default_pipeline_cache_dir)
        };
        let registry = KernelRegistry::new(&device, &info, cache_dir, options.unchecked_shaders);
        Ok(Gpu {
            adapter,
            device,
            queue,
            info,
            registry,
            uncaptured,
            coop_verdict: OnceLock::new(),
        })
    }

    /// Opens the default adapter (environment conventions only).
    pub fn default_adapter() -> Result<Gpu> {
        Gpu::new(&AdapterOptions::default())
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The limits the device was opened with (the adapter's own).
    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// The features the device was opened with (a subset of [`WANTED_FEATURES`]).
    pub fn features(&self) -> wgpu::Features {
        self.device.features()
    }

    /// The cooperative-matrix configurations the adapter offers (none
    /// without EXPERIMENTAL_COOPERATIVE_MATRIX).
    pub fn cooperative_matrix_properties(&self) -> Vec<wgpu::CooperativeMatrixProperties> {
        if self
            .features()
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        {
            self.adapter.cooperative_matrix_properties()
        } else {
            Vec::new()
        }
    }

    /// Whether f16 tensors are available (the device has SHADER_F16).
    pub fn has_f16(&self) -> bool {
        self.features().contains(wgpu::Features::SHADER_F16)
    }

    /// Features the adapter offers, whether or not Unravel asked for them.
    pub fn adapter_features(&self) -> wgpu::Features {
        self.adapter.features()
    }

    /// Runs `f` (which prepares dispatches, e.g. compiles a plan) with the
    /// pipelines it needs compiled in parallel, and returns once all are
    /// compiled.
    pub fn compile_in_parallel<R>(&self, f: impl FnOnce() -> R) -> R {
        self.registry.in_parallel(f)
    }

    /// Runs `f` (which prepares dispatches) with the pipelines it asks for
    /// compiled only when a command buffer first records them: for
    /// alternatives that may never run.
    pub fn compile_deferred<R>(&self, f: impl FnOnce() -> R) -> R {
        self.registry.deferred(f)
    }

    /// How many pipelines this device has compiled so far; one prepared under
    /// [`Gpu::compile_deferred`] counts once a command buffer has recorded it.
    pub fn compiled_pipelines(&self) -> usize {
        self.registry.compiled()
    }

    /// Bytes this device can still allocate, where that is known: for a
    /// CPU adapter the host's available memory (and address-space limit);
    /// wgpu does not report a GPU's free memory.
    pub fn memory_budget(&self) -> Option<u64> {
        if self.is_cpu() {
            crate::host_memory::available_bytes()
        } else {
            None
        }
    }

    /// True for CPU adapters such as lavapipe, where kernels that cut loads per
    /// FMA beat workgroup-memory tiling.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns a
    /// captured error into a typed one; `context` says what was being done.
    pub fn scoped<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(error) = oom {
            return Err(DeviceError::OutOfMemory {
                context: format!("{context}: {error}"),
            });
        }
        if let Some(error) = validation {
            return Err(DeviceError::Validation {
                context: context.to_string(),
                message: error.to_string(),
            });
        }
        self.take_uncaptured(context)?;
        Ok(value)
    }

    /// Reports an error that escaped every scope (e.g. from another thread).
    pub(crate) fn take_uncaptured(&self, context: &str) -> Result<()> {
        let mut slot = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(message) => Err(DeviceError::Validation {
                context: context.to_string(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Blocks until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| DeviceError::Poll(e.to_string()))?;
        self.take_uncaptured("waiting for the GPU")
    }

    /// Adds a WGSL file of the caller's own under `name` (validated with
    /// naga first), so that [`Gpu::dispatch`] can prepare its entry points
    /// like those of the built-in shaders: how a program adds kernels that
    /// are not Unravel's.
    pub fn add_shader(&self, name: &str, source: &str) -> Result<()> {
        self.registry.add_shader(name, source)
    }

    /// Whether kernels run without runtime bounds checks.
    pub fn unchecked_shaders(&self) -> bool {
        self.registry.unchecked()
    }

    /// Writes the pipeline cache to disk so the next run starts fast.
    pub fn save_pipeline_cache(&self) {
        self.registry.save_cache();
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        self.registry.save_cache();
    }
}

/// `$XDG_CACHE_HOME/unravel` or `~/.cache/unravel`.
pub fn default_pipeline_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("unravel"))
}

fn type_rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn choose_adapter(adapters: Vec<wgpu::Adapter>, wanted: Option<&str>) -> Result<wgpu::Adapter> {
    // GL adapters lack the compute features Unravel needs.
    let mut usable: Vec<wgpu::Adapter> = adapters
        .into_iter()
        .filter(|a| a.get_info().backend != wgpu::Backend::Gl)
        .collect();
    if usable.is_empty() {
        let detail = match std::env::var("WGPU_BACKEND") {
            Ok(b) => format!(" for WGPU_BACKEND={b}"),
            Err(_) => String::new(),
        };
        return Err(DeviceError::NoAdapter { detail });
    }
    if let Some(wanted) = wanted {
        let needle = wanted.to_lowercase();
        let names: Vec<String> = usable
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        return usable
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&needle))
            .ok_or_else(|| DeviceError::AdapterNotFound {
                wanted: wanted.to_string(),
                available: names.join(", "),
            });
    }
    usable.sort_by_key(|a| type_rank(a.get_info().device_type));
    Ok(usable.remove(0))
}

//! Compiles each WGSL entry point into a compute pipeline once and caches it.
//!
//! Bind group layouts are derived from the shader itself with naga: an entry
//! point gets exactly the bindings it uses, so forward and backward entry
//! points can share one file's declarations. Where the adapter has
//! PIPELINE_CACHE, driver-compiled pipelines are also kept on disk so that a
//! second run starts fast.
//!
//! On CPU adapters, inside [`KernelRegistry::in_parallel`] (a plan's
//! compilation), the driver's compilation runs on a thread of its own per
//! pipeline: preparing a dispatch needs only the bind group layout, so a
//! plan's pipelines compile in parallel, and all are joined before
//! `in_parallel` returns, so no compilation outlives it. lavapipe keeps no
//! pipeline cache and compiles the convolution variants in 0.1 to 0.6 s
//! each: ResNet-20's first step took 4.5 s with them compiled one after
//! another, 3.6 s in parallel. GPU drivers compile in milliseconds, and on
//! an H200 (NVIDIA 580) test binaries hung with parallel compilation, so
//! there each pipeline is compiled where it is asked for.
//!
//! Inside [`KernelRegistry::deferred`], new pipelines are compiled only when
//! a command buffer first records them: a plan prepares alternatives it may
//! never run (a gradient written or added to, depending on which blocks a
//! step switches off), and compiling those up front would slow its first
//! step for nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

use crate::error::{DeviceError, Result};
use crate::shaders;
use crate::tensor::DType;

/// How a kernel uses one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingKind {
    Uniform,
    StorageRead,
    StorageReadWrite,
}

/// A compiled entry point: its pipeline and the bindings it uses.
pub struct Kernel {
    pub(crate) name: String,
    pipeline: OnceLock<wgpu::ComputePipeline>,
    pending: Mutex<Pending>,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) bindings: Vec<(u32, BindingKind)>,
    /// The bindings whose element type follows the bound tensor (`elemB`).
    pub(crate) open: Vec<u32>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").field("name", &self.name).finish()
    }
}

type Compile = Box<dyn FnOnce() -> wgpu::ComputePipeline + Send>;

/// A pipeline not yet in `Kernel::pipeline`.
enum Pending {
    None,
    /// Compiling on a thread of its own.
    Compiling(JoinHandle<wgpu::ComputePipeline>),
    /// Compiled when first recorded.
    Deferred(Compile),
}

impl Kernel {
    /// The compiled pipeline, waiting for (or doing) its compilation the
    /// first time.
    pub(crate) fn pipeline(&self) -> &wgpu::ComputePipeline {
        self.pipeline.get_or_init(|| match self.take_pending() {
            // wgpu reports a failed compilation through the device's error
            // handler, not by panicking, so the thread returns a pipeline.
            Pending::Compiling(handle) => handle
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            Pending::Deferred(compile) => compile(),
            Pending::None => unreachable!("a kernel's pipeline is set, compiling or deferred"),
        })
    }

    fn take_pending(&self) -> Pending {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *pending, Pending::None)
    }

    fn is_compiling(&self) -> bool {
        matches!(
            *self.pending.lock().unwrap_or_else(|p| p.into_inner()),
            Pending::Compiling(_)
        )
    }

    /// A deferred pipeline asked for outside a deferred scope: compile it
    /// now, on a thread of its own where `parallel`.
    fn undefer(&self, parallel: Option<&Arc<CompileSlots>>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(*pending, Pending::Deferred(_)) {
            return;
        }
        if let Some(slots) = parallel {
            let Pending::Deferred(compile) = std::mem::replace(&mut *pending, Pending::None) else {
                unreachable!("checked above")
            };
            *pending = Pending::Compiling(slots.spawn(compile));
        } else {
            drop(pending);
            self.pipeline();
        }
    }

    /// `file::entry`, for errors and profiles.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bindings the entry point uses, in binding order.
    pub fn bindings(&self) -> &[(u32, BindingKind)] {
        &self.bindings
    }
}

struct ShaderModule {
    module: wgpu::ShaderModule,
    naga: naga::Module,
    info: naga::valid::ModuleInfo,
}

type KernelKey = (String, String, String);

/// Runtime checks of the default (checked) mode: bounds checks on every
/// memory access, but neither forced loop bounds nor guarded integer
/// division. Every loop of Unravel's kernels runs to a bound taken from
/// validated parameters and no divisor is zero, so those two guard against
/// nothing here, and they are costly: the counter wgpu adds to every loop
/// keeps NVIDIA's compiler from unrolling the tiled kernels' register loops
/// (H200: the tiled SGEMM ran at 0.45 TFLOP/s with all checks, 12.9 with
/// bounds checks alone, 18.0 unchecked).
fn checked_memory_only() -> wgpu::ShaderRuntimeChecks {
    let mut checks = wgpu::ShaderRuntimeChecks::checked();
    checks.force_loop_bounding = false;
    checks.int_div_checks = false;
    checks
}

/// At most one compilation per core at a time: with all of a plan's dozens
/// at once, lavapipe's compilers crowded each other out (ResNet-20's train
/// plan took 7.9 CPU seconds to compile, 6.4 with one per core).
struct CompileSlots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl CompileSlots {
    fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        CompileSlots {
            free: Mutex::new(cores),
            freed: Condvar::new(),
        }
    }

    /// Runs `compile` on a thread of its own once a slot is free.
    fn spawn(self: &Arc<Self>, compile: Compile) -> JoinHandle<wgpu::ComputePipeline> {
        let slots = self.clone();
        std::thread::spawn(move || {
            let _slot = slots.take();
            compile()
        })
    }

    /// Waits for a free slot; it is given back when the guard drops (a
    /// panicking compilation included, so no waiter is stranded).
    fn take(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a CompileSlots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// The cache of compiled shader modules and pipelines of one device.
pub struct KernelRegistry {
    device: wgpu::Device,
    modules: Mutex<HashMap<String, Arc<ShaderModule>>>,
    /// WGSL files added at run time ([`crate::Gpu::add_shader`]), by name.
    added: Mutex<HashMap<String, Arc<str>>>,
    kernels: Mutex<HashMap<KernelKey, Arc<Kernel>>>,
    cache: Option<(wgpu::PipelineCache, PathBuf)>,
    unchecked: bool,
    /// How many `in_parallel` scopes are open.
    parallel: AtomicUsize,
    /// How many `deferred` scopes are open.
    deferring: AtomicUsize,
    /// Whether `in_parallel` compiles in parallel (CPU adapters).
    parallel_allowed: bool,
    slots: Arc<CompileSlots>,
}

impl KernelRegistry {
    pub(crate) fn new(
        device: &wgpu::Device,
        info: &wgpu::AdapterInfo,
        cache_dir: Option<PathBuf>,
        unchecked: bool,
    ) -> Self {
        let cache = cache_dir
            .filter(|_| device.features().contains(wgpu::Features::PIPELINE_CACHE))
            .and_then(|dir| Some(dir.join(wgpu::util::pipeline_cache_key(info)?)))
            .map(|path| {
                let data = std::fs::read(&path).ok();
                // SAFETY: the data was written by `save_cache` from
                // `PipelineCache::get_data` of an adapter with the same cache
                // key; `fallback: true` makes wgpu ignore data it cannot use.
                let cache = unsafe {
                    device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                        label: Some("unravel pipeline cache"),
                        data: data.as_deref(),
                        fallback: true,
                    })
                };
                (cache, path)
            });
        KernelRegistry {
            device: device.clone(),
            modules: Mutex::new(HashMap::new()),
            added: Mutex::new(HashMap::new()),
            kernels: Mutex::new(HashMap::new()),
            cache,
            unchecked,
            parallel: AtomicUsize::new(0),
            deferring: AtomicUsize::new(0),
            slots: Arc::new(CompileSlots::new()),
            parallel_allowed: info.device_type == wgpu::DeviceType::Cpu,
        }
    }

    /// Runs `f` with every pipeline it asks for compiled on a thread of its
    /// own, then waits for all of them.
    pub(crate) fn in_parallel<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Scope<'a>(&'a KernelRegistry);
        impl Drop for Scope<'_> {
            fn drop(&mut self) {
                self.0.parallel.fetch_sub(1, Ordering::SeqCst);
                let kernels: Vec<Arc<Kernel>> = self
                    .0
                    .kernels
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .cloned()
                    .collect();
                for k in kernels.iter().filter(|k| k.is_compiling()) {
                    k.pipeline();
                }
            }
        }
        self.parallel.fetch_add(1, Ordering::SeqCst);
        let _scope = Scope(self);
        f()
    }

    /// Runs `f` with the pipelines it asks for first compiled when a command
    /// buffer records them (alternatives a plan may never run).
    pub(crate) fn deferred<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Scope<'a>(&'a KernelRegistry);
        impl Drop for Scope<'_> {
            fn drop(&mut self) {
                self.0.deferring.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.deferring.fetch_add(1, Ordering::SeqCst);
        let _scope = Scope(self);
        f()
    }

    /// The compile slots, where pipelines compile on threads of their own.
    /// Pipelines compiled so far (a deferred one once recorded).
    pub fn compiled(&self) -> usize {
        let kernels = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        kernels
            .values()
            .filter(|k| k.pipeline.get().is_some())
            .count()
    }

    fn compiles_in_parallel(&self) -> Option<&Arc<CompileSlots>> {
        let parallel = self.parallel_allowed && self.parallel.load(Ordering::SeqCst) > 0;
        parallel.then_some(&self.slots)
    }

    /// Whether kernels are compiled without runtime bounds checks.
    pub fn unchecked(&self) -> bool {
        self.unchecked
    }

    /// The pipeline for `entry` of shader `file`, compiled on first use.
    /// `constants` set the shader's pipeline-overridable constants; the open
    /// element types (`elemB`) of the bindings in `halves` are f16, the
    /// others f32.
    pub fn kernel(
        &self,
        file: &str,
        entry: &str,
        constants: &[(&str, f64)],
        halves: &[u32],
    ) -> Result<Arc<Kernel>> {
        let raw = self.source(file)?;
        let element = |b: u32| {
            if halves.contains(&b) {
                DType::F16
            } else {
                DType::F32
            }
        };
        let variant = shaders::variant_name(file, &raw, element);
        let key = (variant.clone(), entry.to_string(), format!("{constants:?}"));
        let deferring = self.deferring.load(Ordering::SeqCst) > 0;
        if let Some(kernel) = self.kernels.lock().unwrap().get(&key).cloned() {
            if !deferring {
                kernel.undefer(self.compiles_in_parallel());
            }
            return Ok(kernel);
        }
        let module = self.module(file, &variant, &raw, element)?;
        let index = module
            .naga
            .entry_points
            .iter()
            .position(|e| e.name == entry)
            .ok_or_else(|| DeviceError::UnknownEntryPoint {
                file: file.to_string(),
                entry: entry.to_string(),
            })?;
        let bindings = used_bindings(&module.naga, module.info.get_entry_point(index));
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .map(|&(binding, kind)| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match kind {
                        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                        BindingKind::StorageRead => {
                            wgpu::BufferBindingType::Storage { read_only: true }
                        }
                        BindingKind::StorageReadWrite => {
                            wgpu::BufferBindingType::Storage { read_only: false }
                        }
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let name = format!("{variant}::{entry}");
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&name),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&name),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let device = self.device.clone();
        let shader = module.module.clone();
        let cache = self.cache.as_ref().map(|(c, _)| c.clone());
        let owned: Vec<(String, f64)> =
            constants.iter().map(|&(k, v)| (k.to_string(), v)).collect();
        let (label, entry_point) = (name.clone(), entry.to_string());
        let compile = move || {
            let constants: Vec<(&str, f64)> = owned.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&pipeline_layout),
                module: &shader,
                entry_point: Some(&entry_point),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: cache.as_ref(),
            })
        };
        let pipeline = OnceLock::new();
        let pending = if deferring {
            Pending::Deferred(Box::new(compile))
        } else if let Some(slots) = self.compiles_in_parallel() {
            Pending::Compiling(slots.spawn(Box::new(compile)))
        } else {
            let _ = pipeline.set(compile());
            Pending::None
        };
        let kernel = Arc::new(Kernel {
            name,
            pipeline,
            pending: Mutex::new(pending),
            layout,
            bindings,
            open: shaders::open_bindings(&raw),
        });
        self.kernels.lock().unwrap().insert(key, kernel.clone());
        Ok(kernel)
    }

    /// The WGSL of a built-in or added shader file, element types open.
    fn source(&self, file: &str) -> Result<Arc<str>> {
        match shaders::source(file) {
            Some(builtin) => Ok(builtin.into()),
            None => self
                .added
                .lock()
                .unwrap()
                .get(file)
                .cloned()
                .ok_or_else(|| DeviceError::Shader {
                    file: file.to_string(),
                    message: "no such shader file".into(),
                }),
        }
    }

    /// The module of `file` with its element types closed by `element`,
    /// cached under its `variant` name.
    fn module(
        &self,
        file: &str,
        variant: &str,
        raw: &str,
        element: impl Fn(u32) -> DType,
    ) -> Result<Arc<ShaderModule>> {
        if let Some(m) = self.modules.lock().unwrap().get(variant) {
            return Ok(m.clone());
        }
        let source = shaders::with_elements(file, raw, element)?;
        let (naga, info) = shaders::parse_and_validate(variant, &source)?;
        let descriptor = wgpu::ShaderModuleDescriptor {
            label: Some(variant),
            source: wgpu::ShaderSource::Wgsl(source.as_str().into()),
        };
        let checks = if self.unchecked {
            wgpu::ShaderRuntimeChecks::unchecked()
        } else {
            checked_memory_only()
        };
        // SAFETY: unchecked: every host function in `kernels` validates
        // shapes, views and buffer sizes before preparing a dispatch, so no
        // index a kernel computes leaves its buffers (the tests run every
        // kernel with and without checks); opt-in via AdapterOptions.
        // Checked: see `checked_memory_only`.
        let module = unsafe { self.device.create_shader_module_trusted(descriptor, checks) };
        let module = Arc::new(ShaderModule { module, naga, info });
        self.modules
            .lock()
            .unwrap()
            .insert(variant.to_string(), module.clone());
        Ok(module)
    }

    /// Adds a WGSL file under `name` after validating it; its entry points
    /// then dispatch like the built-in ones.
    pub(crate) fn add_shader(&self, name: &str, source: &str) -> Result<()> {
        if shaders::source(name).is_some() {
            return Err(DeviceError::Shader {
                file: name.to_string(),
                message: "a built-in shader has this name".into(),
            });
        }
        let mut added = self.added.lock().unwrap();
        match added.get(name) {
            Some(existing) if existing.as_ref() == source => Ok(()),
            Some(_) => Err(DeviceError::Shader {
                file: name.to_string(),
                message: "another shader was added under this name".into(),
            }),
            None => {
                let closed = shaders::with_elements(name, source, |_| DType::F32)?;
                shaders::parse_and_validate(name, &closed)?;
                added.insert(name.to_string(), source.into());
                Ok(())
            }
        }
    }

    /// Writes the driver's pipeline cache to disk, atomically.
    pub(crate) fn save_cache(&self) {
        let Some((cache, path)) = &self.cache else {
            return;
        };
        let Some(data) = cache.get_data() else {
            return;
        };
        // A cache is an optimisation: failing to write it is not an error.
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &data).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

fn used_bindings(
    module: &naga::Module,
    info: &naga::valid::FunctionInfo,
) -> Vec<(u32, BindingKind)> {
    let mut out: Vec<(u32, BindingKind)> = module
        .global_variables
        .iter()
        .filter(|(handle, _)| !info[*handle].is_empty())
        .filter_map(|(_, var)| {
            let binding = var.binding.as_ref()?;
            let kind = match var.space {
                naga::AddressSpace::Uniform => BindingKind::Uniform,
                naga::AddressSpace::Storage { access } => {
                    if access.contains(naga::StorageAccess::STORE) {
                        BindingKind::StorageReadWrite
                    } else {
                        BindingKind::StorageRead
                    }
                }
                _ => return None,
            };
            Some((binding.binding, kind))
        })
        .collect();
    out.sort_by_key(|&(b, _)| b);
    out
}

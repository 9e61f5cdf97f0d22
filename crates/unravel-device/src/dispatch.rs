//! Prepared dispatches and the recorder that submits many of them at once.
//!
//! A [`Dispatch`] is a kernel with its bind group, parameters and grid, all
//! created up front; an executor builds them once per plan and a step only
//! records them. The [`Recorder`] puts any number of dispatches into one
//! command buffer and one submission.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::context::Gpu;
use crate::error::{DeviceError, Result};
use crate::registry::{BindingKind, Kernel};
use crate::tensor::{DType, Tensor};

/// Most workgroups per grid dimension that every adapter supports.
const MAX_GROUPS_PER_DIM: u32 = 65535;

/// A kernel ready to run: pipeline, bind group, uniform parameters and grid.
#[derive(Clone, Debug)]
pub struct Dispatch {
    kernel: Arc<Kernel>,
    bind_group: wgpu::BindGroup,
    params: Option<wgpu::Buffer>,
    workgroups: [u32; 3],
    /// The tensors in the bind group, in binding order.
    bound: Vec<Tensor>,
}

impl Dispatch {
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    pub fn workgroups(&self) -> [u32; 3] {
        self.workgroups
    }

    /// The tensors the kernel reads or writes (those of its bindings it
    /// uses), in binding order: what a test of a graph's gradient rules
    /// compares with what the rules declare.
    pub fn bound(&self) -> &[Tensor] {
        &self.bound
    }

    /// Rewrites the uniform parameters (same layout), e.g. a new learning rate.
    pub fn update_params<P: bytemuck::Pod>(&self, gpu: &Gpu, params: &P) {
        if let Some(buffer) = &self.params {
            gpu.queue
                .write_buffer(buffer, 0, bytemuck::bytes_of(params));
        }
    }
}

/// Number of workgroups for `threads` invocations in groups of `group_size`,
/// spread over x and y when x alone would exceed the per-dimension limit.
/// Shaders recover the linear index as `(wg.y * num_wg.x + wg.x) * size + local`.
pub fn grid_1d(threads: usize, group_size: u32) -> [u32; 3] {
    let groups = (threads as u64).div_ceil(group_size as u64).max(1);
    if groups <= MAX_GROUPS_PER_DIM as u64 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(MAX_GROUPS_PER_DIM as u64);
        let x = groups.div_ceil(y);
        [x as u32, y as u32, 1]
    }
}

impl Gpu {
    /// Prepares `entry` of shader `file` with uniform `params` at binding 0 and
    /// `tensors` at bindings 1, 2, ... in order. Bindings the entry point does
    /// not use are left out of its bind group.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        file: &str,
        entry: &str,
        params: &P,
        tensors: &[&Tensor],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        self.dispatch_with(file, entry, &[], params, tensors, workgroups)
    }

    /// [`Gpu::dispatch`] with pipeline-overridable constants.
    pub fn dispatch_with<P: bytemuck::Pod>(
        &self,
        file: &str,
        entry: &str,
        constants: &[(&str, f64)],
        params: &P,
        tensors: &[&Tensor],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let halves: Vec<u32> = (1..)
            .zip(tensors)
            .filter(|(_, t)| t.dtype() == DType::F16)
            .map(|(b, _)| b)
            .collect();
        let kernel = self.registry.kernel(file, entry, constants, &halves)?;
        for &(b, _) in &kernel.bindings {
            if halves.contains(&b) && !kernel.open.contains(&b) {
                return Err(DeviceError::Shader {
                    file: file.to_string(),
                    message: format!("{entry}: binding {b} takes f32 elements, got an f16 tensor"),
                });
            }
        }
        let max = self.limits().max_storage_buffer_binding_size;
        for t in tensors {
            if t.buffer().size() > max {
                return Err(DeviceError::TooLarge {
                    what: format!("binding of {}", kernel.name),
                    bytes: t.buffer().size(),
                    limit: max,
                });
            }
        }
        self.scoped(&format!("preparing {}", kernel.name), || {
            let uses_params = kernel
                .bindings
                .iter()
                .any(|&(b, k)| b == 0 && k == BindingKind::Uniform);
            let params = uses_params.then(|| {
                self.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(&kernel.name),
                        contents: bytemuck::bytes_of(params),
                        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    })
            });
            let mut entries = Vec::with_capacity(kernel.bindings.len());
            let mut bound = Vec::with_capacity(kernel.bindings.len());
            for &(binding, _) in &kernel.bindings {
                let resource = if binding == 0 {
                    match &params {
                        Some(p) => p.as_entire_binding(),
                        None => {
                            return Err(DeviceError::MissingBinding {
                                kernel: kernel.name.clone(),
                                binding,
                            })
                        }
                    }
                } else {
                    match tensors.get(binding as usize - 1) {
                        Some(t) => {
                            bound.push((*t).clone());
                            t.buffer().as_entire_binding()
                        }
                        None => {
                            return Err(DeviceError::MissingBinding {
                                kernel: kernel.name.clone(),
                                binding,
                            })
                        }
                    }
                };
                entries.push(wgpu::BindGroupEntry { binding, resource });
            }
            let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&kernel.name),
                layout: &kernel.layout,
                entries: &entries,
            });
            Ok(Dispatch {
                kernel: kernel.clone(),
                bind_group,
                params,
                workgroups,
                bound,
            })
        })?
    }

    /// A recorder for one command buffer.
    pub fn recorder(&self) -> Recorder<'_> {
        Recorder {
            gpu: self,
            commands: Vec::new(),
            dispatches: 0,
        }
    }

    /// Records and submits `dispatches` in one command buffer, then waits.
    pub fn run(&self, dispatches: &[Dispatch]) -> Result<()> {
        let mut rec = self.recorder();
        rec.record_all(dispatches);
        rec.submit()?;
        self.wait()
    }
}

enum Command {
    Dispatch(Dispatch),
    Clear(Tensor),
    Readback(Tensor, Arc<wgpu::Buffer>, u64),
}

/// Collects dispatches (and buffer clears) for ONE command buffer.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    commands: Vec<Command>,
    dispatches: usize,
}

impl Recorder<'_> {
    pub fn record(&mut self, dispatch: &Dispatch) {
        self.dispatches += 1;
        self.commands.push(Command::Dispatch(dispatch.clone()));
    }

    pub fn record_all(&mut self, dispatches: &[Dispatch]) {
        for d in dispatches {
            self.record(d);
        }
    }

    /// Zeroes a contiguous tensor's elements before the following dispatches.
    /// The GPU clears whole 4-byte words: the tensor must start on one, and
    /// an f16 tensor of odd length has the 2 bytes after it cleared too
    /// (inside its buffer; a plan's buffers hold one value at a time).
    pub fn clear(&mut self, tensor: &Tensor) -> Result<()> {
        let bytes = tensor.dtype().bytes();
        let start = tensor.offset() as u64 * bytes;
        let end = (start + tensor.numel() as u64 * bytes).next_multiple_of(4);
        if !start.is_multiple_of(4) || end > tensor.buffer().size() || !tensor.is_contiguous() {
            return Err(DeviceError::Shape {
                op: "clear",
                message: format!(
                    "a contiguous tensor starting on a 4-byte word, not {} elements at {} of {}",
                    tensor.dtype().name(),
                    tensor.offset(),
                    tensor.buffer().size()
                ),
            });
        }
        self.commands.push(Command::Clear(tensor.clone()));
        Ok(())
    }

    /// Copies a contiguous tensor into a [`Readback`] buffer at byte
    /// `offset`, after the dispatches recorded before it.
    pub fn read_into(&mut self, tensor: &Tensor, readback: &Readback, offset: u64) {
        self.commands.push(Command::Readback(
            tensor.clone(),
            readback.buffer.clone(),
            offset,
        ));
    }

    /// Dispatches recorded so far (the count a test of skipped blocks reads).
    pub fn dispatch_count(&self) -> usize {
        self.dispatches
    }

    /// Encodes everything into one command buffer and submits it.
    pub fn submit(self) -> Result<wgpu::SubmissionIndex> {
        let gpu = self.gpu;
        gpu.scoped("submitting a command buffer", || {
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("step"),
                });
            let mut commands = self.commands.iter().peekable();
            while commands.peek().is_some() {
                match commands.peek() {
                    Some(Command::Clear(t)) => {
                        let bytes = t.dtype().bytes();
                        let len = (t.numel() as u64 * bytes).next_multiple_of(4);
                        encoder.clear_buffer(t.buffer(), t.offset() as u64 * bytes, Some(len));
                        commands.next();
                        continue;
                    }
                    Some(Command::Readback(t, dst, offset)) => {
                        let bytes = t.dtype().bytes();
                        encoder.copy_buffer_to_buffer(
                            t.buffer(),
                            t.offset() as u64 * bytes,
                            dst,
                            *offset,
                            t.numel() as u64 * bytes,
                        );
                        commands.next();
                        continue;
                    }
                    _ => {}
                }
                // Consecutive dispatches share one compute pass; wgpu places
                // the barriers between them.
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: None,
                });
                while let Some(Command::Dispatch(d)) = commands.peek() {
                    pass.set_pipeline(d.kernel.pipeline());
                    pass.set_bind_group(0, &d.bind_group, &[]);
                    let [x, y, z] = d.workgroups;
                    pass.dispatch_workgroups(x, y, z);
                    commands.next();
                }
            }
            gpu.queue.submit([encoder.finish()])
        })
    }
}

/// A small host-readable buffer, made once and reused every step, that a
/// recorder copies results into (a step's loss and correct count) so that
/// reading them back allocates nothing.
pub struct Readback {
    buffer: Arc<wgpu::Buffer>,
}

impl Gpu {
    /// A readback buffer of `bytes` bytes (a multiple of 4).
    pub fn readback_buffer(&self, bytes: u64) -> Readback {
        Readback {
            buffer: Arc::new(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes.max(4).next_multiple_of(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })),
        }
    }

    /// Waits for the GPU and returns the readback buffer's words.
    pub fn read_readback(&self, readback: &Readback) -> Result<Vec<u32>> {
        let (tx, rx) = std::sync::mpsc::channel();
        readback
            .buffer
            .map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send(r);
            });
        self.wait()?;
        rx.recv()
            .map_err(|e| DeviceError::Readback(e.to_string()))?
            .map_err(|e| DeviceError::Readback(e.to_string()))?;
        let words = {
            let view = readback
                .buffer
                .get_mapped_range(..)
                .map_err(|e| DeviceError::Readback(e.to_string()))?;
            bytemuck::cast_slice::<u8, u32>(&view).to_vec()
        };
        readback.buffer.unmap();
        Ok(words)
    }
}

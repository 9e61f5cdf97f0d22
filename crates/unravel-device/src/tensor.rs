//! GPU buffers that carry their shape, and the host <-> GPU transfers.
//!
//! A [`Tensor`] is a view: a buffer, a shape, an element offset and the
//! stride between consecutive entries of the first axis. A contiguous tensor
//! has offset 0 and stride = numel / shape[0]; a channel slice of an NCHW
//! buffer (a DenseNet layer's share of the concatenation buffer) has offset
//! c0*H*W and stride C_total*H*W, so kernels can read and write it in place.

use std::sync::Arc;

use crate::context::Gpu;
use crate::error::{shape_error, DeviceError, Result};
use crate::kernels::copy;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// IEEE half precision: activations and their gradients in mixed
    /// precision (needs the adapter's SHADER_F16). The host reads and writes
    /// such tensors as f32; the GPU converts.
    F16,
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            DType::F16 => 2,
            DType::F32 | DType::U32 => 4,
        }
    }

    /// The WGSL name of the element type.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        }
    }

    /// Whether the type holds real numbers (f32 or f16).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16)
    }
}

/// A shaped view into a GPU storage buffer.
#[derive(Clone, Debug)]
pub struct Tensor {
    buffer: Arc<wgpu::Buffer>,
    shape: Vec<usize>,
    dtype: DType,
    offset: usize,
    batch_stride: usize,
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Element offset of the view's first element in the buffer.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Elements between consecutive entries of the first axis.
    pub fn batch_stride(&self) -> usize {
        self.batch_stride
    }

    /// Elements of one entry of the first axis.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    pub fn is_contiguous(&self) -> bool {
        self.shape.len() <= 1 || self.batch_stride == self.sample_len()
    }

    /// The same buffer under another shape with the same element count
    /// (contiguous tensors only).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if numel != self.numel() || !self.is_contiguous() {
            return Err(shape_error(
                "reshape",
                format!("cannot view {:?} as {:?}", self.shape, shape),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            batch_stride: numel / shape.first().copied().unwrap_or(1).max(1),
            ..self.clone()
        })
    }

    /// The same rows under another per-sample shape of as many elements
    /// (`[N, ...]` as `[N, sample...]`), keeping the batch stride: a view of
    /// a concat buffer stays that view.
    pub fn with_sample_shape(&self, sample: &[usize]) -> Result<Tensor> {
        let per: usize = sample.iter().product();
        if self.shape.is_empty() || per != self.sample_len() {
            return Err(shape_error(
                "with_sample_shape",
                format!("cannot view the rows of {:?} as {:?}", self.shape, sample),
            ));
        }
        let mut shape = vec![self.shape[0]];
        shape.extend_from_slice(sample);
        Ok(Tensor {
            shape,
            ..self.clone()
        })
    }

    /// Elements `start..start + numel(shape)` of a contiguous tensor, as a
    /// contiguous tensor of `shape` (a parameter's share of an arena).
    pub fn sub_tensor(&self, start: usize, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if !self.is_contiguous() || start + numel > self.numel() {
            return Err(shape_error(
                "sub_tensor",
                format!(
                    "elements {start}..{} of a tensor of shape {:?}",
                    start + numel,
                    self.shape
                ),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            offset: self.offset + start,
            batch_stride: numel / shape.first().copied().unwrap_or(1).max(1),
            ..self.clone()
        })
    }

    /// Elements `start..start + numel(shape)` of the buffer read as `dtype`
    /// (counted in `dtype` elements from the buffer's start): one buffer
    /// holding f32 values at one time and f16 ones at another, as a plan's
    /// shared buffers do. Float types only.
    pub fn sub_tensor_as(&self, start: usize, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        let end_bytes = (start + numel) as u64 * dtype.bytes();
        if !self.dtype.is_float() || !dtype.is_float() || end_bytes > self.buffer.size() {
            return Err(shape_error(
                "sub_tensor_as",
                format!(
                    "{} elements {start}..{} of a buffer of {} bytes",
                    dtype.name(),
                    start + numel,
                    self.buffer.size()
                ),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            dtype,
            offset: start,
            batch_stride: numel / shape.first().copied().unwrap_or(1).max(1),
            buffer: self.buffer.clone(),
        })
    }

    /// Channels `c0..c1` of an NCHW tensor, as a view into the same buffer.
    pub fn channel_slice(&self, c0: usize, c1: usize) -> Result<Tensor> {
        if self.shape.len() != 4 || c0 >= c1 || c1 > self.shape[1] {
            return Err(shape_error(
                "channel_slice",
                format!("channels {c0}..{c1} of {:?}", self.shape),
            ));
        }
        let hw = self.shape[2] * self.shape[3];
        let mut shape = self.shape.clone();
        shape[1] = c1 - c0;
        Ok(Tensor {
            shape,
            offset: self.offset + c0 * hw,
            ..self.clone()
        })
    }

    /// Offset and batch stride as the u32 pair every kernel's params carry.
    pub(crate) fn view_params(&self) -> [u32; 2] {
        [self.offset as u32, self.batch_stride as u32]
    }
}

impl Gpu {
    fn storage_buffer(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        let limit = self.limits().max_buffer_size;
        if bytes > limit {
            return Err(DeviceError::TooLarge {
                what: label.to_string(),
                bytes,
                limit,
            });
        }
        // Zero-sized bindings are invalid; keep one element.
        let size = bytes.max(4).next_multiple_of(4);
        self.scoped(&format!("allocating {label} ({bytes} bytes)"), || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    fn tensor(&self, label: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        if dtype == DType::F16 && !self.has_f16() {
            return Err(DeviceError::MissingFeature {
                op: "allocate",
                what: format!("an f16 tensor of shape {shape:?}"),
                feature: "SHADER_F16",
            });
        }
        let numel: usize = shape.iter().product();
        let buffer = self.storage_buffer(label, numel as u64 * dtype.bytes())?;
        Ok(Tensor {
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
            dtype,
            offset: 0,
            batch_stride: numel / shape.first().copied().unwrap_or(1).max(1),
        })
    }

    /// A new f32 tensor filled with zeros.
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        self.tensor("tensor", shape, DType::F32)
    }

    /// A new u32 tensor filled with zeros.
    pub fn zeros_u32(&self, shape: &[usize]) -> Result<Tensor> {
        self.tensor("tensor_u32", shape, DType::U32)
    }

    /// A new tensor of any element type filled with zeros.
    pub fn zeros_of(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.tensor(&format!("tensor_{}", dtype.name()), shape, dtype)
    }

    /// Uploads host f32 data as a new f32 or f16 tensor (f16 rounds to
    /// nearest, as the GPU converts).
    pub fn upload_as(&self, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
        let t = self.zeros_of(shape, dtype)?;
        self.write(&t, data)?;
        Ok(t)
    }

    /// Uploads host f32 data as a new tensor of `shape`.
    pub fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let t = self.zeros(shape)?;
        self.write(&t, data)?;
        Ok(t)
    }

    /// Uploads host u32 data (labels, counters) as a new tensor of `shape`.
    pub fn upload_u32(&self, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        let t = self.zeros_u32(shape)?;
        check_len("upload_u32", &t, data.len())?;
        self.queue
            .write_buffer(&t.buffer, 0, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// Overwrites the elements of `tensor` with `data` (any view; an f16
    /// tensor is written through an f32 copy that the GPU converts).
    pub fn write(&self, tensor: &Tensor, data: &[f32]) -> Result<()> {
        check_len("write", tensor, data.len())?;
        if tensor.dtype() == DType::F16 {
            let staged = self.upload(data, tensor.shape())?;
            return self.run(&[copy::copy_forward(self, &staged, tensor)?]);
        }
        if tensor.is_contiguous() {
            self.queue.write_buffer(
                &tensor.buffer,
                tensor.offset as u64 * 4,
                bytemuck::cast_slice(data),
            );
        } else {
            let per = tensor.sample_len();
            for (n, chunk) in data.chunks(per).enumerate() {
                let at = (tensor.offset + n * tensor.batch_stride) as u64 * 4;
                self.queue
                    .write_buffer(&tensor.buffer, at, bytemuck::cast_slice(chunk));
            }
        }
        Ok(())
    }

    /// Reads an f32 or f16 tensor back to the host as f32 (blocking).
    pub fn read(&self, tensor: &Tensor) -> Result<Vec<f32>> {
        if tensor.dtype() == DType::F16 {
            let widened = self.zeros(tensor.shape())?;
            self.run(&[copy::copy_forward(self, tensor, &widened)?])?;
            return self.read(&widened);
        }
        let words = self.read_words(tensor)?;
        Ok(bytemuck::cast_slice(&words).to_vec())
    }

    /// Reads a u32 tensor back to the host (blocking).
    pub fn read_u32(&self, tensor: &Tensor) -> Result<Vec<u32>> {
        self.read_words(tensor)
    }

    fn read_words(&self, tensor: &Tensor) -> Result<Vec<u32>> {
        let numel = tensor.numel();
        if numel == 0 {
            return Ok(Vec::new());
        }
        let first = tensor.offset;
        let rows = tensor.shape.first().copied().unwrap_or(1);
        let per = tensor.sample_len().max(1);
        let span = if tensor.shape.len() <= 1 {
            numel
        } else {
            (rows - 1) * tensor.batch_stride + per
        };
        let bytes = span as u64 * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        encoder.copy_buffer_to_buffer(&tensor.buffer, first as u64 * 4, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|e| DeviceError::Readback(e.to_string()))?
            .map_err(|e| DeviceError::Readback(e.to_string()))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| DeviceError::Readback(e.to_string()))?;
        let all: &[u32] = bytemuck::cast_slice(&view);
        let out = if tensor.shape.len() <= 1 || tensor.is_contiguous() {
            all[..numel].to_vec()
        } else {
            (0..rows)
                .flat_map(|n| all[n * tensor.batch_stride..n * tensor.batch_stride + per].iter())
                .copied()
                .collect()
        };
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

fn check_len(op: &'static str, tensor: &Tensor, len: usize) -> Result<()> {
    if len != tensor.numel() {
        return Err(shape_error(
            op,
            format!(
                "{} host values for a tensor of shape {:?} ({} elements)",
                len,
                tensor.shape,
                tensor.numel()
            ),
        ));
    }
    Ok(())
}

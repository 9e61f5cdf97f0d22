//! Checkpoints in safetensors with PyTorch's names and layouts: conv weights
//! OIHW, batch norm `weight`, `bias`, `running_mean`, `running_var`,
//! `num_batches_tracked` (i64 scalar), linear `[out, in]`; so a PyTorch
//! model of the same architecture loads the file with `load_state_dict`.
//! The model name and configuration go in the safetensors metadata. The
//! optimiser's momentum goes in a companion file.
//!
//! Only finite values are written and read: a model or momentum holding a
//! NaN or an infinity, or a negative running variance, is an error naming
//! the tensor. [`save_model`] and [`save_momentum`] write one file
//! atomically (a temporary file in the same folder, fsync, rename, fsync of
//! the folder); the trainer commits the two together as one generation
//! ([`crate::run_folder`]) from [`model_bytes`] and [`momentum_bytes`].

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use thiserror::Error;
use unravel_device::Gpu;
use unravel_graph::{Graph, ModelState, ParamId};

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path} does not fit this model: {message}")]
    Mismatch { path: PathBuf, message: String },
    /// A tensor of the file holds a NaN or an infinity, or a running
    /// variance is negative.
    #[error("{}: tensor {tensor} {problem}", path.display())]
    BadValues {
        path: PathBuf,
        tensor: String,
        problem: String,
    },
    #[error("the checkpoint cannot be serialised: {0}")]
    Serialize(String),
    /// A tensor about to be saved holds a NaN or an infinity.
    #[error("tensor {tensor} holds {value}")]
    NonFiniteState { tensor: String, value: f32 },
    #[error(transparent)]
    Graph(#[from] unravel_graph::GraphError),
}

type Result<T> = std::result::Result<T, CheckpointError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` so that `path` always holds either its old
/// contents or all of the new ones.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    // The rename itself must reach the disk.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

type NamedTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// `values` as a tensor, refused when one of them is not finite.
fn finite_tensor(name: String, shape: Vec<usize>, values: &[f32]) -> Result<NamedTensor> {
    if let Some(&value) = values.iter().find(|v| !v.is_finite()) {
        return Err(CheckpointError::NonFiniteState {
            tensor: name,
            value,
        });
    }
    Ok((name, Dtype::F32, shape, f32_bytes(values)))
}

/// The model's parameters and batch-norm statistics as a safetensors file,
/// with `metadata` (e.g. the model name and configuration) in the header.
pub fn model_bytes(
    gpu: &Gpu,
    graph: &Graph,
    state: &ModelState,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut tensors = Vec::new();
    for (name, shape, values) in state.read_params(gpu)? {
        tensors.push(finite_tensor(name, shape, &values)?);
    }
    for i in 0..graph.bn_states.len() {
        let (prefix, mean, var) = state.read_bn(gpu, i)?;
        let c = mean.len();
        tensors.push(finite_tensor(
            format!("{prefix}.running_mean"),
            vec![c],
            &mean,
        )?);
        tensors.push(finite_tensor(
            format!("{prefix}.running_var"),
            vec![c],
            &var,
        )?);
        tensors.push((
            format!("{prefix}.num_batches_tracked"),
            Dtype::I64,
            vec![],
            (state.batches_tracked() as i64).to_le_bytes().to_vec(),
        ));
    }
    serialize(&tensors, metadata)
}

/// Saves [`model_bytes`] to `path` atomically.
pub fn save_model(
    path: &Path,
    gpu: &Gpu,
    graph: &Graph,
    state: &ModelState,
    metadata: HashMap<String, String>,
) -> Result<()> {
    write_atomic(path, &model_bytes(gpu, graph, state, metadata)?)
}

fn serialize(tensors: &[NamedTensor], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let format = |e: safetensors::SafeTensorError| CheckpointError::Serialize(e.to_string());
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.as_str(), v))
                .map_err(format)
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(format)
}

/// A checkpoint file read into memory.
pub struct Checkpoint {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Checkpoint {
    pub fn read(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let c = Checkpoint {
            path: path.to_path_buf(),
            bytes,
        };
        c.parse()?;
        Ok(c)
    }

    fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| CheckpointError::Format {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// The header's metadata.
    pub fn metadata(&self) -> Result<HashMap<String, String>> {
        let (_, meta) =
            SafeTensors::read_metadata(&self.bytes).map_err(|e| CheckpointError::Format {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(meta.metadata().clone().unwrap_or_default())
    }

    fn mismatch(&self, message: String) -> CheckpointError {
        CheckpointError::Mismatch {
            path: self.path.clone(),
            message,
        }
    }

    fn f32s(&self, st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = st
            .tensor(name)
            .map_err(|_| self.mismatch(format!("tensor {name} is missing")))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape {
            return Err(self.mismatch(format!(
                "tensor {name} is {:?} {:?}, the model needs F32 {shape:?}",
                t.dtype(),
                t.shape()
            )));
        }
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let bad = |problem: String| CheckpointError::BadValues {
            path: self.path.clone(),
            tensor: name.to_string(),
            problem,
        };
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(bad(format!("holds {v} at index {i}")));
        }
        if name.ends_with(".running_var") {
            if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| **v < 0.0) {
                return Err(bad(format!("holds the negative variance {v} at index {i}")));
            }
        }
        Ok(values)
    }

    /// Loads every parameter and batch-norm statistic of `graph` into
    /// `state`; a missing tensor or a wrong shape is an error naming it.
    pub fn load_model(&self, gpu: &Gpu, graph: &Graph, state: &ModelState) -> Result<()> {
        let st = self.parse()?;
        for (i, p) in graph.params.iter().enumerate() {
            let values = self.f32s(&st, &p.name, &p.shape)?;
            state.write_param(gpu, ParamId(i), &values)?;
        }
        for (i, bn) in graph.bn_states.iter().enumerate() {
            let mean = self.f32s(&st, &format!("{}.running_mean", bn.prefix), &[bn.channels])?;
            let var = self.f32s(&st, &format!("{}.running_var", bn.prefix), &[bn.channels])?;
            state.write_bn(gpu, i, &mean, &var)?;
            if let Ok(t) = st.tensor(&format!("{}.num_batches_tracked", bn.prefix)) {
                if let Ok(b) = <[u8; 8]>::try_from(t.data()) {
                    state.set_batches_tracked(i64::from_le_bytes(b).max(0) as u64);
                }
            }
        }
        Ok(())
    }

    /// Loads momentum buffers written by [`save_momentum`].
    pub fn load_momentum(&self, gpu: &Gpu, graph: &Graph, state: &ModelState) -> Result<()> {
        let st = self.parse()?;
        for (i, p) in graph.params.iter().enumerate() {
            let values = self.f32s(&st, &format!("momentum.{}", p.name), &p.shape)?;
            gpu.write(&state.momentum(ParamId(i))?, &values)
                .map_err(unravel_graph::GraphError::from)?;
        }
        Ok(())
    }
}

/// The optimiser's momentum (`momentum.<parameter name>`) as a
/// safetensors file, with `metadata` (where the run stands) in the header.
pub fn momentum_bytes(
    gpu: &Gpu,
    graph: &Graph,
    state: &ModelState,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut tensors = Vec::new();
    for (i, p) in graph.params.iter().enumerate() {
        let values = gpu
            .read(&state.momentum(ParamId(i))?)
            .map_err(unravel_graph::GraphError::from)?;
        tensors.push(finite_tensor(
            format!("momentum.{}", p.name),
            p.shape.clone(),
            &values,
        )?);
    }
    serialize(&tensors, metadata)
}

/// Saves [`momentum_bytes`] to `path` atomically.
pub fn save_momentum(
    path: &Path,
    gpu: &Gpu,
    graph: &Graph,
    state: &ModelState,
    metadata: HashMap<String, String>,
) -> Result<()> {
    write_atomic(path, &momentum_bytes(gpu, graph, state, metadata)?)
}

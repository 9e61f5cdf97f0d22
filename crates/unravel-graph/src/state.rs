//! A model's tensors on the GPU: the parameter arena (one buffer holding
//! every learned tensor, so one SGD dispatch updates them all), its gradient
//! and momentum twins, and the batch-norm running statistics. Train and eval
//! plans of one model share one `ModelState`.

use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};
use unravel_device::{Gpu, Tensor};

use crate::error::{GraphError, Result};
use crate::ir::{Graph, Init, ParamId};

/// One parameter read back: PyTorch name, shape, values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

pub struct ModelState {
    /// Element offset of each parameter in the arenas, by [`ParamId`].
    offsets: Vec<usize>,
    shapes: Vec<Vec<usize>>,
    names: Vec<String>,
    /// Parameters with weight decay come first: `decay_len` elements.
    decay_len: usize,
    pub(crate) params: Tensor,
    pub(crate) grads: Tensor,
    pub(crate) momentum: Tensor,
    /// Running mean and variance per batch-norm layer (Graph::bn_states).
    pub(crate) bn_running: Vec<(Tensor, Tensor)>,
    bn_prefixes: Vec<String>,
    /// Training steps that updated the running statistics (PyTorch's
    /// `num_batches_tracked`).
    batches_tracked: std::sync::atomic::AtomicU64,
}

impl ModelState {
    /// Allocates the arenas and initialises every parameter as its
    /// [`Init`] says, reproducibly from `seed`.
    pub fn new(gpu: &Gpu, graph: &Graph, seed: u64) -> Result<ModelState> {
        // Decayed parameters first, so SGD decays one prefix of the arena.
        let mut order: Vec<usize> = (0..graph.params.len()).collect();
        order.sort_by_key(|&i| !graph.params[i].decay);
        let mut offsets = vec![0; graph.params.len()];
        let mut at = 0;
        let mut decay_len = 0;
        for &i in &order {
            offsets[i] = at;
            at += graph.params[i].numel();
            if graph.params[i].decay {
                decay_len = at;
            }
        }
        let total = at.max(1);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut host = vec![0.0f32; total];
        for (i, p) in graph.params.iter().enumerate() {
            let slot = &mut host[offsets[i]..offsets[i] + p.numel()];
            match p.init {
                Init::KaimingNormal { fan } => {
                    let normal = Normal::new(0.0, (2.0 / fan as f64).sqrt()).map_err(|e| {
                        GraphError::BadInit {
                            param: p.name.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                    slot.iter_mut()
                        .for_each(|v| *v = normal.sample(&mut rng) as f32);
                }
                Init::Uniform { bound } => {
                    let uniform =
                        Uniform::new_inclusive(-bound, bound).map_err(|e| GraphError::BadInit {
                            param: p.name.clone(),
                            reason: e.to_string(),
                        })?;
                    slot.iter_mut().for_each(|v| *v = uniform.sample(&mut rng));
                }
                Init::Constant(c) => slot.fill(c),
            }
        }
        let params = gpu.upload(&host, &[total])?;
        let grads = gpu.zeros(&[total])?;
        let momentum = gpu.zeros(&[total])?;
        let mut bn_running = Vec::new();
        for bn in &graph.bn_states {
            let mean = gpu.zeros(&[bn.channels])?;
            let var = gpu.upload(&vec![1.0; bn.channels], &[bn.channels])?;
            bn_running.push((mean, var));
        }
        Ok(ModelState {
            offsets,
            shapes: graph.params.iter().map(|p| p.shape.clone()).collect(),
            names: graph.params.iter().map(|p| p.name.clone()).collect(),
            decay_len,
            params,
            grads,
            momentum,
            bn_running,
            bn_prefixes: graph.bn_states.iter().map(|b| b.prefix.clone()).collect(),
            batches_tracked: Default::default(),
        })
    }

    /// Bytes of the parameter, gradient and momentum arenas and the
    /// batch-norm statistics.
    pub fn bytes(&self) -> u64 {
        let arenas = 3 * self.params.buffer().size();
        let bn: u64 = self
            .bn_running
            .iter()
            .map(|(m, v)| m.buffer().size() + v.buffer().size())
            .sum();
        arenas + bn
    }

    /// Training steps that updated the batch-norm running statistics.
    pub fn batches_tracked(&self) -> u64 {
        self.batches_tracked
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one more training step. (A counter behind `&self`, so that
    /// evaluation plans may hold the state while training goes on.)
    pub fn count_batch(&self) {
        self.batches_tracked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn set_batches_tracked(&self, n: u64) {
        self.batches_tracked
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Elements of the arena that get weight decay (a prefix).
    pub fn decay_len(&self) -> usize {
        self.decay_len
    }

    /// Total learned elements.
    pub fn len(&self) -> usize {
        self.shapes
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A parameter's view into the parameter arena.
    pub fn param(&self, id: ParamId) -> Result<Tensor> {
        Ok(self
            .params
            .sub_tensor(self.offsets[id.0], &self.shapes[id.0])?)
    }

    /// A parameter's gradient view into the gradient arena.
    pub fn grad(&self, id: ParamId) -> Result<Tensor> {
        Ok(self
            .grads
            .sub_tensor(self.offsets[id.0], &self.shapes[id.0])?)
    }

    /// A parameter's momentum view into the momentum arena.
    pub fn momentum(&self, id: ParamId) -> Result<Tensor> {
        Ok(self
            .momentum
            .sub_tensor(self.offsets[id.0], &self.shapes[id.0])?)
    }

    /// The whole arenas (parameters, gradients, momentum), for the optimiser.
    pub fn arenas(&self) -> (&Tensor, &Tensor, &Tensor) {
        (&self.params, &self.grads, &self.momentum)
    }

    pub fn param_names(&self) -> &[String] {
        &self.names
    }

    pub fn param_id(&self, name: &str) -> Option<ParamId> {
        self.names.iter().position(|n| n == name).map(ParamId)
    }

    /// Reads every parameter back, by PyTorch name.
    pub fn read_params(&self, gpu: &Gpu) -> Result<Vec<NamedTensor>> {
        let all = gpu.read(&self.params)?;
        Ok((0..self.names.len())
            .map(|i| {
                let n: usize = self.shapes[i].iter().product();
                let start = self.offsets[i];
                (
                    self.names[i].clone(),
                    self.shapes[i].clone(),
                    all[start..start + n].to_vec(),
                )
            })
            .collect())
    }

    /// Reads one parameter's gradient from the last training step.
    pub fn read_grad(&self, gpu: &Gpu, id: ParamId) -> Result<Vec<f32>> {
        Ok(gpu.read(&self.grad(id)?)?)
    }

    /// Overwrites one parameter.
    pub fn write_param(&self, gpu: &Gpu, id: ParamId, data: &[f32]) -> Result<()> {
        Ok(gpu.write(&self.param(id)?, data)?)
    }

    /// Running (mean, var) of batch-norm layer `index` with its name prefix.
    pub fn read_bn(&self, gpu: &Gpu, index: usize) -> Result<(String, Vec<f32>, Vec<f32>)> {
        let (m, v) = &self.bn_running[index];
        Ok((self.bn_prefixes[index].clone(), gpu.read(m)?, gpu.read(v)?))
    }

    /// Overwrites batch-norm layer `index`'s running statistics.
    pub fn write_bn(&self, gpu: &Gpu, index: usize, mean: &[f32], var: &[f32]) -> Result<()> {
        let (m, v) = &self.bn_running[index];
        gpu.write(m, mean)?;
        Ok(gpu.write(v, var)?)
    }
}

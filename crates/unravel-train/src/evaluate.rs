//! Test-set evaluation: mean loss and accuracy over a whole dataset, with
//! residual blocks optionally switched off (a lesion) and branches scaled
//! (stochastic depth at test time). One plan per batch size, compiled on
//! first use, so a final partial batch needs no padding.

use std::collections::HashMap;

use unravel_device::Gpu;
use unravel_graph::{BlockId, Graph, Mode, ModelState, Plan, PlanOptions, Precision};

use crate::data::Loader;
use crate::stochastic_depth::StochasticDepth;

/// Loss and accuracy over `samples` samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    pub loss: f64,
    /// Fraction of samples classified correctly, in 0..1.
    pub accuracy: f64,
    pub samples: usize,
}

/// Evaluation plans of one model, by batch size.
pub struct Evaluator<'a> {
    gpu: &'a Gpu,
    graph: &'a Graph,
    state: &'a ModelState,
    plans: HashMap<usize, Plan>,
    scaling: Option<StochasticDepth>,
    precision: Precision,
}

impl<'a> Evaluator<'a> {
    /// With `scaling`, each residual branch is scaled by its survival
    /// probability (a model trained with stochastic depth).
    pub fn new(
        gpu: &'a Gpu,
        graph: &'a Graph,
        state: &'a ModelState,
        scaling: Option<StochasticDepth>,
    ) -> Self {
        Evaluator {
            gpu,
            graph,
            state,
            plans: HashMap::new(),
            scaling,
            precision: Precision::F32,
        }
    }

    /// Evaluates with f16 activations (`Precision::Mixed`) or f32.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self.plans.clear();
        self
    }

    fn plan(&mut self, batch: usize) -> unravel_graph::Result<&Plan> {
        if !self.plans.contains_key(&batch) {
            let options = PlanOptions {
                precision: self.precision,
                ..Default::default()
            };
            let mut plan = Plan::compile_with(
                self.gpu,
                self.graph,
                self.state,
                batch,
                Mode::Eval,
                &options,
            )?;
            if let Some(sd) = &self.scaling {
                sd.apply_test_scaling(self.gpu, &mut plan)?;
            }
            self.plans.insert(batch, plan);
        }
        Ok(&self.plans[&batch])
    }

    /// Evaluates every batch of `loader` (epoch 0, file order) with
    /// `dropped` blocks switched off.
    pub fn run(
        &mut self,
        loader: &Loader,
        dropped: &[BlockId],
    ) -> unravel_graph::Result<EvalResult> {
        let mut loss = 0.0;
        let mut correct = 0u64;
        let mut samples = 0usize;
        for batch in loader.batches(0, 0) {
            let n = batch.valid;
            let images = &batch.images[..n * batch.images.len() / batch.labels.len()];
            let labels = &batch.labels[..n];
            let gpu = self.gpu;
            let stats = self.plan(n)?.eval_step(gpu, images, labels, dropped)?;
            loss += stats.loss as f64 * n as f64;
            correct += stats.correct as u64;
            samples += n;
        }
        if samples == 0 {
            return Err(unravel_graph::GraphError::NoSamples);
        }
        let samples_f = samples as f64;
        Ok(EvalResult {
            loss: loss / samples_f,
            accuracy: correct as f64 / samples_f,
            samples,
        })
    }
}

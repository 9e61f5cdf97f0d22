//! Running a compiled plan: one training step (forward, loss, backward and
//! the optimiser update) or one evaluation step, each ONE command buffer.
//! Switched-off residual blocks are skipped: their branch's kernels are not
//! recorded at all, and the merge passes the shortcut through.

use unravel_device::kernels::loss_scale::{self, LossScaleConfig, LossScaleState};
use unravel_device::kernels::sgd;
use unravel_device::{Dispatch, Gpu, Recorder, Tensor};

use crate::error::{GraphError, Result};
use crate::ir::{BlockId, NodeId, ValueId};
use crate::lower::schedule;
use crate::lower::Contribution;
use crate::plan::{Mode, Plan};
use crate::state::ModelState;

/// How the backward pass of [`Plan::routed_gradients`] passes a residual
/// block: the gradient of its output goes back through both its branch and
/// its shortcut (the ordinary backward), through the branch only, or through
/// the shortcut only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Both,
    Branch,
    Shortcut,
}

/// What one step measured, read back from the GPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy over the batch.
    pub loss: f32,
    /// Samples whose highest score is their label.
    pub correct: u32,
    /// Dispatches recorded into the step's command buffer.
    pub dispatches: usize,
    /// The loss scaler after the step, when the optimiser scales the loss.
    pub loss_scale: Option<LossScaleState>,
}

/// The optimiser of a plan: one dispatch over the whole parameter arena.
pub struct Optimizer {
    dispatch: Dispatch,
    config: sgd::SgdConfig,
    scaler: Option<LossScaler>,
}

/// Dynamic loss scaling (mixed precision), GradScaler's rules on the GPU:
/// its state, the check of the parameter gradients and the scale's update.
struct LossScaler {
    state: Tensor,
    check: Dispatch,
    update: Dispatch,
}

impl Optimizer {
    pub fn new(gpu: &Gpu, state: &ModelState, config: sgd::SgdConfig) -> Result<Optimizer> {
        let (p, g, m) = state.arenas();
        let dispatch = sgd::sgd_update(gpu, &config, p, g, m, state.decay_len())?;
        Ok(Optimizer {
            dispatch,
            config,
            scaler: None,
        })
    }

    /// An optimiser of a scaled loss (mixed precision): each training step
    /// multiplies the loss gradient by the scale, divides it out of the
    /// parameter gradients, skips the update when one is not finite, and
    /// adjusts the scale (see [`unravel_device::kernels::loss_scale`]).
    pub fn with_loss_scaling(
        gpu: &Gpu,
        state: &ModelState,
        config: sgd::SgdConfig,
        scaling: &LossScaleConfig,
    ) -> Result<Optimizer> {
        let (p, g, m) = state.arenas();
        let scale = loss_scale::state_tensor(gpu, &LossScaleState::initial(scaling))?;
        let update = loss_scale::update(gpu, scaling, &scale)?;
        let dispatch = sgd::sgd_update_scaled(gpu, &config, p, g, m, state.decay_len(), &scale)?;
        let check = loss_scale::check_finite(gpu, g, &scale)?;
        Ok(Optimizer {
            dispatch,
            config,
            scaler: Some(LossScaler {
                state: scale,
                check,
                update,
            }),
        })
    }

    /// The loss scaler's state (blocking read), if this optimiser scales.
    pub fn loss_scale(&self, gpu: &Gpu) -> Result<Option<LossScaleState>> {
        self.scaler
            .as_ref()
            .map(|s| loss_scale::read_state(gpu, &s.state))
            .transpose()
            .map_err(Into::into)
    }

    /// Restores the loss scaler's state (a resumed run).
    pub fn set_loss_scale(&self, gpu: &Gpu, state: &LossScaleState) -> Result<()> {
        let scaler = self.scaler.as_ref().ok_or(GraphError::NoLossScaling)?;
        Ok(loss_scale::write_state(gpu, &scaler.state, state)?)
    }

    pub fn config(&self) -> sgd::SgdConfig {
        self.config
    }

    /// Changes the hyper-parameters (a new learning rate each step, say)
    /// without rebuilding anything.
    pub fn set_config(
        &mut self,
        gpu: &Gpu,
        state: &ModelState,
        config: sgd::SgdConfig,
    ) -> Result<()> {
        if config != self.config {
            let (p, g, m) = state.arenas();
            sgd::sgd_set_config(gpu, &self.dispatch, &config, p, g, m, state.decay_len())?;
            self.config = config;
        }
        Ok(())
    }
}

impl Plan {
    /// Dispatches a node's forward records when it runs (0 for a node a
    /// switched-off block skips); tests count them.
    pub fn forward_dispatches(&self, node: NodeId) -> usize {
        self.nodes[node.0].forward.len()
    }

    fn check_batch(&self, images: &[f32], labels: &[u32]) -> Result<()> {
        if images.len() != self.input.numel() || labels.len() != self.batch {
            return Err(GraphError::BatchMismatch {
                images: self.batch,
                image_shape: self.input.shape()[1..].to_vec(),
                values: self.input.numel(),
                got_values: images.len(),
                got_labels: labels.len(),
            });
        }
        Ok(())
    }

    fn dropped_flags(&self, dropped: &[BlockId]) -> Result<Vec<bool>> {
        let mut skip = vec![false; self.graph.nodes.len()];
        for b in dropped {
            let plan = self
                .blocks
                .get(b)
                .ok_or(GraphError::NotResidualBlock { block: b.0 })?;
            for (s, m) in skip.iter_mut().zip(&plan.member) {
                *s |= *m;
            }
        }
        Ok(skip)
    }

    /// Forward and loss. A step that only `measuring` leaves the batch-norm
    /// running statistics as they are.
    fn record_forward(
        &self,
        rec: &mut Recorder,
        dropped: &[BlockId],
        skip: &[bool],
        measuring: bool,
    ) {
        for (i, node) in self.nodes.iter().enumerate() {
            if skip[i] {
                continue;
            }
            let forward = match (&node.forward_measuring, measuring) {
                (Some(measuring), true) => measuring,
                _ => &node.forward,
            };
            match self.merge_of.get(&NodeId(i)).map(|b| (b, &self.blocks[b])) {
                Some((b, p)) if dropped.contains(b) => rec.record_all(&p.forward_dropped),
                Some((_, p)) => {
                    // A scaled branch (eval) is scaled just before its merge.
                    if self.mode == Mode::Eval && p.scale_value != 1.0 {
                        rec.record(&p.scale);
                    }
                    rec.record_all(forward)
                }
                None => rec.record_all(forward),
            }
        }
        rec.record(&self.loss_dispatch);
    }

    /// Backward; with `route`, gradient flows through each block the way
    /// `route` says.
    fn record_backward(
        &self,
        rec: &mut Recorder,
        dropped: &[BlockId],
        skip: &[bool],
        route: Option<&dyn Fn(BlockId) -> Route>,
    ) {
        let mut skip = skip.to_vec();
        // (merge, shortcut value, through the branch?) of every block that
        // passes gradient one way only.
        let mut cut: Vec<(NodeId, ValueId, bool)> = Vec::new();
        if let Some(route) = route {
            for (id, p) in &self.blocks {
                let through_branch = match route(*id) {
                    Route::Both => continue,
                    Route::Branch => true,
                    Route::Shortcut => false,
                };
                if through_branch {
                    for n in &p.shortcut_nodes {
                        skip[n.0] = true;
                    }
                } else {
                    for (s, m) in skip.iter_mut().zip(&p.member) {
                        *s |= *m;
                    }
                }
                cut.push((p.merge, p.shortcut, through_branch));
            }
        }
        for r in &self.roots.dense {
            let grad = self.grads[r.0]
                .as_ref()
                .expect("train plans have gradients");
            // A dense root's gradient starts its own buffer, which holds
            // whole words: the clear cannot fail.
            rec.clear(grad).expect("a plan's buffers start on a word");
        }
        let contributions = |i: usize| -> &[Contribution] {
            match self.merge_of.get(&NodeId(i)) {
                Some(b) if dropped.contains(b) => &self.blocks[b].backward_dropped,
                _ => &self.nodes[i].backward,
            }
        };
        let keep = |i: usize, c: &Contribution| match cut.iter().find(|cut| cut.0 == NodeId(i)) {
            // Through the branch: everything but the shortcut's share;
            // through the shortcut: its share (and shared work) only.
            Some(&(_, s, true)) => c.target != Some(s),
            Some(&(_, s, false)) => c.target.is_none_or(|v| v == s),
            None => true,
        };
        for (i, k, run) in schedule::backward(&self.graph, &self.roots, contributions, &skip, keep)
        {
            rec.record_all(contributions(i)[k].dispatches(run));
        }
    }

    fn finish(
        &self,
        gpu: &Gpu,
        mut rec: Recorder,
        scaler: Option<&LossScaler>,
    ) -> Result<StepStats> {
        let dispatches = rec.dispatch_count();
        rec.read_into(&self.loss, &self.stats, 0);
        rec.read_into(&self.correct, &self.stats, 4);
        if let Some(s) = scaler {
            rec.read_into(&s.state, &self.stats, 8);
        }
        rec.submit()?;
        let words = gpu.read_readback(&self.stats)?;
        let loss_scale = scaler
            .map(|_| LossScaleState::from_words(&words[2..6]))
            .transpose()?;
        Ok(StepStats {
            loss: f32::from_bits(words[0]),
            correct: words[1],
            dispatches,
            loss_scale,
        })
    }

    /// The dispatch that multiplies this plan's loss gradient by the scale
    /// in `scaler`'s state, made on first use and kept for that state.
    fn scale_loss_gradient(&self, gpu: &Gpu, scaler: &LossScaler) -> Result<Dispatch> {
        let mut kept = self.loss_scaling.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((buffer, d)) = kept.as_ref() {
            if buffer == scaler.state.buffer() {
                return Ok(d.clone());
            }
        }
        let dlogits = self.grads[self.graph.output.0]
            .as_ref()
            .expect("train plans have gradients");
        let d = loss_scale::apply_scale(gpu, dlogits, &scaler.state)?;
        *kept = Some((scaler.state.buffer().clone(), d.clone()));
        Ok(d)
    }

    fn upload(&self, gpu: &Gpu, images: &[f32], labels: &[u32]) -> Result<()> {
        self.check_batch(images, labels)?;
        gpu.write(&self.input, images)?;
        gpu.queue()
            .write_buffer(self.labels.buffer(), 0, bytemuck::cast_slice(labels));
        Ok(())
    }

    /// Forward, loss and backward: leaves the gradients of every parameter in
    /// the state's gradient arena (zero for switched-off blocks).
    pub fn gradients(
        &self,
        gpu: &Gpu,
        images: &[f32],
        labels: &[u32],
        dropped: &[BlockId],
    ) -> Result<StepStats> {
        self.train_step(gpu, images, labels, dropped, None)
    }

    /// One training step: forward, loss, backward and, with an optimiser, the
    /// parameter update, all in one submission. `dropped` residual blocks are
    /// switched off for this step (stochastic depth).
    pub fn train_step(
        &self,
        gpu: &Gpu,
        images: &[f32],
        labels: &[u32],
        dropped: &[BlockId],
        optimizer: Option<&Optimizer>,
    ) -> Result<StepStats> {
        if self.mode != Mode::Train {
            return Err(GraphError::NeedsTrainPlan { step: "train_step" });
        }
        self.upload(gpu, images, labels)?;
        let skip = self.dropped_flags(dropped)?;
        let scaler = optimizer.and_then(|o| o.scaler.as_ref());
        let mut rec = gpu.recorder();
        rec.clear(&self.grads_arena)?;
        self.record_forward(&mut rec, dropped, &skip, false);
        if let Some(s) = scaler {
            rec.record(&self.scale_loss_gradient(gpu, s)?);
        }
        self.record_backward(&mut rec, dropped, &skip, None);
        if let Some(opt) = optimizer {
            if let Some(s) = scaler {
                rec.record(&s.check);
            }
            rec.record(&opt.dispatch);
            if let Some(s) = scaler {
                rec.record(&s.update);
            }
        }
        self.finish(gpu, rec, scaler)
    }

    /// Forward and loss through the whole network, then backward along one
    /// path (Veit et al. 2016): through the branch only of each block in
    /// `through_branch` and through the shortcut only of every other block.
    /// With none listed this is the gradient of the shortcut-only path; the
    /// gradients of all 2^n paths add up to the ordinary gradient.
    /// Parameters are not updated; read gradients of kept values with
    /// [`Plan::read_value_grad`].
    pub fn path_gradients(
        &self,
        gpu: &Gpu,
        images: &[f32],
        labels: &[u32],
        through_branch: &[BlockId],
    ) -> Result<StepStats> {
        let route = |b: BlockId| {
            if through_branch.contains(&b) {
                Route::Branch
            } else {
                Route::Shortcut
            }
        };
        self.routed_gradients(gpu, images, labels, &route)
    }

    /// Forward and loss through the whole network, then backward through
    /// each residual block the way `route` says: both ways (the ordinary
    /// backward when every block says so), the branch only, or the shortcut
    /// only. Neither parameters nor batch-norm running statistics change.
    pub fn routed_gradients(
        &self,
        gpu: &Gpu,
        images: &[f32],
        labels: &[u32],
        route: &dyn Fn(BlockId) -> Route,
    ) -> Result<StepStats> {
        if self.mode != Mode::Train {
            return Err(GraphError::NeedsTrainPlan {
                step: "routed_gradients",
            });
        }
        self.upload(gpu, images, labels)?;
        let skip = vec![false; self.graph.nodes.len()];
        let mut rec = gpu.recorder();
        rec.clear(&self.grads_arena)?;
        self.record_forward(&mut rec, &[], &skip, true);
        self.record_backward(&mut rec, &[], &skip, Some(route));
        self.finish(gpu, rec, None)
    }

    /// One evaluation step (loss and correct count) with `dropped` blocks
    /// switched off (a lesion) and any branch scales set by
    /// [`Plan::set_block_scale`]. Works on train plans too (batch
    /// statistics); it never changes the model, running statistics included.
    pub fn eval_step(
        &self,
        gpu: &Gpu,
        images: &[f32],
        labels: &[u32],
        dropped: &[BlockId],
    ) -> Result<StepStats> {
        self.upload(gpu, images, labels)?;
        let skip = self.dropped_flags(dropped)?;
        let mut rec = gpu.recorder();
        self.record_forward(&mut rec, dropped, &skip, true);
        self.finish(gpu, rec, None)
    }
}

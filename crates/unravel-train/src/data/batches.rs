//! From a [`Dataset`] to the f32 mini-batches a step uploads.
//!
//! A [`Loader`] fixes the batch size, shuffling, augmentation, seed and
//! what to do with the last incomplete batch. Its [`EpochPlan`] for epoch e
//! holds that epoch's order (a pure function of (seed, e), see
//! [`super::rng`]) and computes any batch of the epoch on its own, from
//! its index alone; this is what makes resuming from batch k of an epoch
//! exact, and lets [`Batches`] build batches ahead on a background thread
//! while the GPU works on the current one. A bounded channel of depth
//! [`PREFETCH`] keeps that thread at most that many batches ahead, so
//! memory stays bounded when the consumer is slower.
//!
//! The last batch: training drops it ([`LastBatch::Drop`]) so every step
//! has the same size and weight; evaluation keeps it, either short
//! ([`LastBatch::Partial`]) or padded to the full size with zero images
//! ([`LastBatch::Pad`]) so a GPU plan compiled for a fixed batch size can
//! run it, with [`Batch::valid`] telling how many samples are real.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::augment::{self, Augment};
use super::{rng, DataError, Dataset, Normalization};

/// How many batches the background thread may prepare ahead.
pub const PREFETCH: usize = 2;

/// What happens to the samples that do not fill a last whole batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastBatch {
    /// Left out of the epoch (training).
    Drop,
    /// Yielded as a shorter batch.
    Partial,
    /// Yielded as a full-size batch whose tail is zero images with label 0.
    Pad,
}

/// How a [`Loader`] turns a dataset into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Visit the samples in a (seed, epoch)-dependent order, else in file
    /// order.
    pub shuffle: bool,
    pub augment: Augment,
    pub seed: u64,
    pub last: LastBatch,
}

impl LoaderConfig {
    /// Training: shuffled, augmented as given, only full batches.
    pub fn train(batch_size: usize, seed: u64, augment: Augment) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: true,
            augment,
            seed,
            last: LastBatch::Drop,
        }
    }

    /// Evaluation: file order, no augmentation, last batch as `last` says.
    pub fn eval(batch_size: usize, last: LastBatch) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: false,
            augment: Augment::NONE,
            seed: 0,
            last,
        }
    }
}

/// One mini-batch, ready to upload.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `labels.len()` normalised (and possibly augmented) images, CHW each,
    /// one after the other.
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    /// How many leading samples are real: `labels.len()` except for a
    /// batch padded by [`LastBatch::Pad`].
    pub valid: usize,
    /// The batch's index within its epoch.
    pub index: usize,
}

impl Batch {
    /// Samples in the batch, padding included.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A dataset, its normalisation and a [`LoaderConfig`]: the source of every
/// epoch's batches. Cheap to clone (the dataset is shared).
#[derive(Clone, Debug)]
pub struct Loader {
    data: Arc<Dataset>,
    norm: Arc<Normalization>,
    config: LoaderConfig,
}

impl Loader {
    pub fn new(
        data: Arc<Dataset>,
        norm: Normalization,
        config: LoaderConfig,
    ) -> Result<Loader, DataError> {
        if config.batch_size == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        if norm.mean.len() != data.shape.c || norm.std.len() != data.shape.c {
            return Err(DataError::Invalid(format!(
                "normalisation for {} channels, images have {}",
                norm.mean.len(),
                data.shape.c
            )));
        }
        Ok(Loader {
            data,
            norm: Arc::new(norm),
            config,
        })
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    pub fn dataset(&self) -> &Dataset {
        &self.data
    }

    pub fn normalization(&self) -> &Normalization {
        &self.norm
    }

    /// Batches in every epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.data.n, self.config.batch_size);
        match self.config.last {
            LastBatch::Drop => n / b,
            LastBatch::Partial | LastBatch::Pad => n.div_ceil(b),
        }
    }

    /// Epoch `epoch`'s order and batches.
    pub fn plan(&self, epoch: u64) -> EpochPlan {
        let order: Arc<[u32]> = if self.config.shuffle {
            rng::epoch_order(self.data.n, self.config.seed, epoch).into()
        } else {
            (0..self.data.n as u32).collect()
        };
        EpochPlan {
            loader: self.clone(),
            epoch,
            order,
        }
    }

    /// Epoch `epoch`'s batches from index `start_batch` on, built on a
    /// background thread.
    pub fn batches(&self, epoch: u64, start_batch: usize) -> Batches {
        self.plan(epoch).into_batches(start_batch)
    }
}

/// One epoch of a [`Loader`]: its sample order, and each batch on demand.
#[derive(Clone, Debug)]
pub struct EpochPlan {
    loader: Loader,
    epoch: u64,
    order: Arc<[u32]>,
}

impl EpochPlan {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The dataset indices in the order the epoch visits them (all of
    /// them, including those a dropped last batch leaves out).
    pub fn order(&self) -> &[u32] {
        &self.order
    }

    /// Batches in the epoch.
    pub fn len(&self) -> usize {
        self.loader.batches_per_epoch()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batch `index` of the epoch, computed here and now; `None` past the
    /// end.
    pub fn batch(&self, index: usize) -> Option<Batch> {
        if index >= self.len() {
            return None;
        }
        let data = &*self.loader.data;
        let config = &self.loader.config;
        let sample = data.shape.numel();
        let start = index * config.batch_size;
        let end = (start + config.batch_size).min(data.n);
        let valid = end - start;
        let size = match config.last {
            LastBatch::Pad => config.batch_size,
            _ => valid,
        };
        let mut images = vec![0f32; size * sample];
        let mut labels = vec![0u32; size];
        let mut scratch = vec![0f32; sample];
        for (slot, position) in (start..end).enumerate() {
            let i = self.order[position] as usize;
            labels[slot] = data.labels[i] as u32;
            let out = &mut images[slot * sample..(slot + 1) * sample];
            if config.augment.is_none() {
                self.loader.norm.apply(data.image(i), out);
            } else {
                self.loader.norm.apply(data.image(i), &mut scratch);
                let word = rng::augment_word(config.seed, self.epoch, position as u64);
                augment::apply(&scratch, data.shape, config.augment.choice(word), out);
            }
        }
        Some(Batch {
            images,
            labels,
            valid,
            index,
        })
    }

    /// The epoch's batches from index `start_batch` on, built on a
    /// background thread.
    pub fn into_batches(self, start_batch: usize) -> Batches {
        let end = self.len();
        let next = start_batch.min(end);
        let (tx, rx) = sync_channel(PREFETCH);
        let plan = self.clone();
        let spawned = std::thread::Builder::new()
            .name("unravel-data".into())
            .spawn(move || {
                for index in next..end {
                    let Some(batch) = plan.batch(index) else {
                        break;
                    };
                    if tx.send(batch).is_err() {
                        break; // the consumer is gone
                    }
                }
            });
        match spawned {
            Ok(handle) => Batches {
                source: Source::Thread {
                    rx: Some(rx),
                    handle: Some(handle),
                },
                next,
                end,
            },
            // No thread to be had: build the batches on the caller's thread.
            Err(_) => Batches {
                source: Source::Here(self),
                next,
                end,
            },
        }
    }
}

enum Source {
    Thread {
        rx: Option<Receiver<Batch>>,
        handle: Option<JoinHandle<()>>,
    },
    Here(EpochPlan),
}

/// An epoch's batches, in order, built ahead on a background thread.
/// Dropping it early stops the thread.
pub struct Batches {
    source: Source,
    next: usize,
    end: usize,
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.end {
            return None;
        }
        let received = match &mut self.source {
            Source::Here(plan) => plan.batch(self.next),
            Source::Thread { rx, .. } => rx.as_ref().and_then(|rx| rx.recv().ok()),
        };
        match received {
            Some(batch) => {
                self.next += 1;
                Some(batch)
            }
            None => {
                // The thread ended early: only a panic does that.
                self.next = self.end;
                if let Source::Thread { handle, .. } = &mut self.source {
                    if let Some(Err(panic)) = handle.take().map(JoinHandle::join) {
                        std::panic::resume_unwind(panic);
                    }
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches {}

impl Drop for Batches {
    fn drop(&mut self) {
        if let Source::Thread { rx, handle } = &mut self.source {
            // Closing the channel makes the thread's next send fail.
            drop(rx.take());
            if let Some(handle) = handle.take() {
                let _ = handle.join();
            }
        }
    }
}

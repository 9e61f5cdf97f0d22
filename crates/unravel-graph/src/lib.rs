//! Unravel's static graph: an IR of values and ops recorded by a builder in
//! which residual units and dense blocks are first-class named blocks, with
//! shape inference at build time and parameter / FLOP counts.
//!
//! Shape legend: values are one sample's C x H x W; the batch size N is bound
//! when a plan is compiled.
//!
//! A model's parameters live in a [`ModelState`] on the GPU; a [`Plan`] is
//! the graph compiled once per (batch size, [`Mode`]) with every buffer and
//! dispatch prepared, so that a training step is one submission:
//!
//! ```no_run
//! use unravel_device::{kernels::sgd::SgdConfig, Gpu};
//! use unravel_graph::{Conv2d, GraphBuilder, Merge, Mode, ModelState, Optimizer, Plan, Shape};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gpu = Gpu::default_adapter()?;
//! let mut b = GraphBuilder::new(Shape::new(1, 28, 28));
//! let x = b.input();
//! let x = b.conv2d(x, "conv1", Conv2d::new(16, 3))?;
//! let x = b.batchnorm(x, "bn1", true)?;
//! let x = b.scoped("layer1.0", |b| {
//!     b.residual(x, 1, Merge::AddRelu, |_, x| Ok(x), |b, x| {
//!         let h = b.conv2d(x, "conv1", Conv2d::new(16, 3))?;
//!         b.batchnorm(h, "bn1", false)
//!     })
//! })?;
//! let x = b.global_avgpool(x, "avgpool")?;
//! let logits = b.linear(x, "fc", 10)?;
//! let graph = b.finish(logits);
//!
//! let state = ModelState::new(&gpu, &graph, 0)?;
//! let plan = Plan::compile(&gpu, &graph, &state, 32, Mode::Train)?;
//! let sgd = Optimizer::new(&gpu, &state, SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 5e-4, nesterov: false })?;
//! let (images, labels) = (vec![0.0f32; 32 * 28 * 28], vec![0u32; 32]);
//! let stats = plan.train_step(&gpu, &images, &labels, &[], Some(&sgd))?;
//! println!("loss {}", stats.loss);
//! # Ok(()) }
//! ```

pub mod builder;
pub mod cpu;
pub mod error;
pub mod ir;
mod lower;
mod memory;
pub mod plan;
pub mod precision;
mod profile;
pub mod state;
pub mod step;

pub use builder::{Conv2d, GraphBuilder, Merge};
pub use error::{GraphError, Result};
pub use ir::*;
pub use plan::{Mode, Plan, PlanOptions};
pub use precision::Precision;
pub use profile::NodeTiming;
pub use state::ModelState;
pub use step::{Optimizer, Route, StepStats};
pub use unravel_device as device;

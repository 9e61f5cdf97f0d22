//! Unravel's static graph: an IR of values and ops recorded by a builder in
//! which residual units and dense blocks are first-class named blocks, with
//! shape inference at build time and parameter / FLOP counts.
//!
//! Shape legend: values are one sample's C x H x W; the batch size N is bound
//! when a plan is compiled.

pub mod builder;
pub mod cpu;
pub mod error;
pub mod ir;
mod memory;
pub mod plan;
mod pooling;
mod profile;
pub mod state;
pub mod step;

pub use builder::{GraphBuilder, Merge};
pub use error::{GraphError, Result};
pub use ir::*;
pub use plan::{Mode, Plan, PlanOptions};
pub use profile::NodeTiming;
pub use state::ModelState;
pub use step::{Optimizer, StepStats};
pub use unravel_device as device;

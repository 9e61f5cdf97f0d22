//! Where a step's time goes: each node's forward and backward dispatches run
//! on their own (one submission each, waited for), timed on the host.

use std::time::Instant;

use unravel_device::Gpu;

use crate::error::Result;
use crate::plan::{Mode, Plan};

/// Median seconds of a node's forward and backward (0 where absent).
#[derive(Clone, Debug)]
pub struct NodeTiming {
    pub name: String,
    pub op: &'static str,
    pub forward_s: f64,
    pub backward_s: f64,
}

impl Plan {
    /// Times every node `repeats` times (median). Run a step first so the
    /// buffers hold real data.
    pub fn profile(&self, gpu: &Gpu, repeats: usize) -> Result<Vec<NodeTiming>> {
        let time = |dispatches: Vec<&unravel_device::Dispatch>| -> Result<f64> {
            if dispatches.is_empty() {
                return Ok(0.0);
            }
            let mut samples = Vec::new();
            for _ in 0..repeats.max(1) + 1 {
                let start = Instant::now();
                let mut rec = gpu.recorder();
                for d in &dispatches {
                    rec.record(d);
                }
                rec.submit()?;
                gpu.wait()?;
                samples.push(start.elapsed().as_secs_f64());
            }
            // The first run pays pipeline warm-up.
            samples.remove(0);
            samples.sort_by(f64::total_cmp);
            Ok(samples[samples.len() / 2])
        };
        let mut out = Vec::new();
        for (i, node) in self.graph.nodes.iter().enumerate() {
            let forward_s = time(self.nodes[i].forward.iter().collect())?;
            let backward_s = if self.mode == Mode::Train {
                time(
                    self.nodes[i]
                        .backward
                        .iter()
                        .flat_map(|p| p.write.iter())
                        .collect(),
                )?
            } else {
                0.0
            };
            out.push(NodeTiming {
                name: node.name.clone(),
                op: node.op.kind(),
                forward_s,
                backward_s,
            });
        }
        Ok(out)
    }
}

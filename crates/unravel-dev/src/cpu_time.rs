//! CPU time of this process, and the threads a CPU adapter computes on.
//! A CPU adapter such as lavapipe runs its compute on threads of this
//! process, so on a machine shared with other load the CPU time of a pass
//! sees through the load where wall time cannot.

// The CLI's `unravel bench` reads the same clock; one copy of it.
#[path = "../../../src/cpu_time.rs"]
mod process_clock;

pub use process_clock::process_cpu_seconds;

/// The threads a CPU adapter (lavapipe) computes on: LP_NUM_THREADS where
/// set, else one per core. CPU seconds over this are the wall time a pass
/// would take with the machine to itself.
pub fn cpu_adapter_threads() -> usize {
    std::env::var("LP_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

//! CPU seconds of this process. A CPU adapter such as lavapipe runs its
//! compute on threads of this process, so on a machine shared with other
//! load the CPU time of a pass sees through the load where wall time cannot;
//! the benchmarks print both.

/// CPU seconds used by this process so far (all threads, lavapipe's
/// included); `None` where the platform does not say (read from
/// /proc/self/stat, so Linux only).
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name: state is field 3; utime, stime are 14, 15.
    let rest = stat.rsplit(')').next()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // Linux reports both in clock ticks of 1/100 s (USER_HZ).
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

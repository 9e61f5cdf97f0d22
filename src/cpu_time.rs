//! CPU seconds of this process. A CPU adapter such as lavapipe runs its
//! compute on threads of this process, so on a machine shared with other
//! load the CPU time of a pass sees through the load where wall time cannot;
//! `unravel bench` and the timing tools of crates/unravel-dev print both.

/// CPU seconds used by this process so far (all threads, lavapipe's
/// included); `None` where the platform does not say.
#[cfg(unix)]
pub fn process_cpu_seconds() -> Option<f64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call's duration.
    // The process clock counts every thread in nanoseconds, where
    // /proc/self/stat's ticks of 10 ms are too coarse for one kernel's pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    (rc == 0).then_some(now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9)
}

/// CPU seconds used by this process so far; `None` where the platform does
/// not say.
#[cfg(not(unix))]
pub fn process_cpu_seconds() -> Option<f64> {
    None
}

#[cfg(test)]
mod tests {
    use super::process_cpu_seconds;

    #[cfg(unix)]
    #[test]
    fn cpu_seconds_grow_with_work() {
        let start = process_cpu_seconds().expect("a process clock on unix");
        // Spin until the clock has moved: a clock that stands still fails.
        let mut x = 0u64;
        let mut now = start;
        for _ in 0..1_000 {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            }
            now = process_cpu_seconds().unwrap();
            if now > start {
                break;
            }
        }
        std::hint::black_box(x);
        assert!(now > start, "process CPU clock did not advance");
        assert!(now - start < 10.0, "implausible CPU time {}", now - start);
    }
}

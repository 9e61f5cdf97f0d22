//! How much memory the host can still give this process: what a CPU
//! adapter (lavapipe) allocates its buffers from. Linux only (from /proc);
//! elsewhere unknown.

/// The smaller of the host's available memory and what this process's
/// address-space limit (`ulimit -v`) leaves, in bytes; `None` where that
/// cannot be read.
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = kib_field(&meminfo, "MemAvailable:")? * 1024;
    let address_space = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| address_space_limit(&limits))
        .map(|limit| {
            let used = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|status| kib_field(&status, "VmSize:"))
                .unwrap_or(0)
                * 1024;
            limit.saturating_sub(used)
        });
    Some(address_space.map_or(available, |a| a.min(available)))
}

/// The value of a `Name:   123 kB` line.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit of `Max address space` in /proc/self/limits (bytes), or
/// `None` when unlimited.
fn address_space_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))?;
    line["Max address space".len()..]
        .split_whitespace()
        .next()
        .and_then(|soft| soft.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_formats() {
        let meminfo = "MemTotal:       24576000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(kib_field(meminfo, "MemAvailable:"), Some(20_000_000));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max address space         10240000000          unlimited            bytes\n";
        assert_eq!(address_space_limit(limits), Some(10_240_000_000));
        let unlimited =
            "Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(address_space_limit(unlimited), None);
    }
}

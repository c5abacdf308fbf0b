//! Resident memory of this process, from `/proc/self/status` (Linux).

/// The memory lines of `/proc/self/status`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcStatus {
    /// Peak resident set size (`VmHWM`).
    pub peak_rss_kib: u64,
    /// Current resident set size (`VmRSS`).
    pub rss_kib: u64,
}

impl ProcStatus {
    /// Parses the text of `/proc/<pid>/status`; `None` without a `VmHWM` line.
    pub fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status.lines().find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        };
        Some(Self {
            peak_rss_kib: field("VmHWM")?,
            rss_kib: field("VmRSS").unwrap_or(0),
        })
    }
}

/// This process's memory; `None` where `/proc` is not available.
pub fn proc_status() -> Option<ProcStatus> {
    ProcStatus::parse(&std::fs::read_to_string("/proc/self/status").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hwm_and_rss_in_kib() {
        let text = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    4242 kB\nVmRSS:\t    4000 kB\n";
        assert_eq!(
            ProcStatus::parse(text),
            Some(ProcStatus {
                peak_rss_kib: 4242,
                rss_kib: 4000
            })
        );
        assert_eq!(ProcStatus::parse("Name:\tx\n"), None);
    }

    #[test]
    fn own_peak_grows_with_a_touched_allocation() {
        let before = proc_status().unwrap().peak_rss_kib;
        let big = vec![1_u8; 64 * 1024 * 1024];
        let after = proc_status().unwrap().peak_rss_kib;
        assert!(big.iter().step_by(4096).all(|&b| b == 1));
        // The earlier peak may include memory freed since, so the new peak
        // need not be a full 64 MiB higher; half proves the reader sees it.
        assert!(after >= before + 32 * 1024, "{before} -> {after}");
    }
}

//! What `/proc` says about a process: CPU time used, resident memory, open files. Linux only, as
//! the benchmarks are.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat` (`self` for this
/// process).
pub fn cpu_time(pid: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name start at field 3 (`state`); utime and stime are
    // fields 14 and 15.
    let (_, rest) = stat.rsplit_once(')').context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields.get(11).context("no utime")?.parse::<u64>()? + fields.get(12).context("no stime")?.parse::<u64>()?;
    // USER_HZ is 100 on every Linux architecture this runs on; std offers no sysconf.
    Ok(Duration::from_millis(ticks * 10))
}

/// A process's memory as `/proc/PID/status` reports it, in KiB.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    /// Resident set size: anonymous + file-backed + shared pages in RAM now.
    pub vm_rss_kib: u64,
    /// The peak resident set size so far.
    pub vm_hwm_kib: u64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub rss_shmem_kib: u64,
    /// Virtual address space reserved (wasmtime's pooling allocator reserves a lot and touches
    /// little, so this is large and mostly not memory).
    pub vm_size_kib: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<u64> {
        let line = status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':'));
        let value = line.with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        value.trim().trim_end_matches("kB").trim().parse().with_context(|| format!("parsing {key}: {value}"))
    };
    Ok(Memory {
        vm_rss_kib: kib("VmRSS")?,
        vm_hwm_kib: kib("VmHWM")?,
        rss_anon_kib: kib("RssAnon")?,
        rss_file_kib: kib("RssFile")?,
        rss_shmem_kib: kib("RssShmem")?,
        vm_size_kib: kib("VmSize")?,
    })
}

/// How many file descriptors a process has open.
pub fn open_files(pid: u32) -> Result<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("listing /proc/{pid}/fd"))?;
    Ok(dir.count())
}

/// A process's soft limit on open files (`Max open files` in `/proc/PID/limits`).
pub fn max_open_files(pid: u32) -> Result<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits.lines().find(|l| l.starts_with("Max open files")).context("no `Max open files` limit")?;
    let soft = line.trim_start_matches("Max open files").split_whitespace().next().context("empty limit line")?;
    if soft == "unlimited" {
        return Ok(u64::MAX);
    }
    soft.parse().with_context(|| format!("parsing the open-files limit {soft:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_files_and_a_limit() {
        let pid = std::process::id();
        let m = memory(pid).unwrap();
        assert!(m.vm_rss_kib > 0 && m.vm_hwm_kib >= m.vm_rss_kib, "{m:?}");
        assert!(open_files(pid).unwrap() >= 3);
        assert!(max_open_files(pid).unwrap() >= 3);
    }
}

//! Facts about the machine and the binaries, recorded next to the results so a number is never
//! read without its conditions.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::process::Command;

#[derive(Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub disk: Disk,
}

/// The filesystem the servers' data dirs are on.
#[derive(Debug, Serialize)]
pub struct Disk {
    pub work_dir: PathBuf,
    pub mount_point: String,
    pub device: String,
    pub fstype: String,
    /// As the kernel reports it; virtual disks often claim to be rotational.
    pub rotational: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct Versions {
    pub wasmkube: String,
    pub etcd: String,
}

pub fn describe(work_dir: &Path) -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: field(&cpuinfo, "model name").unwrap_or_default(),
        memory_gib: field(&meminfo, "MemTotal")
            .and_then(|v| v.trim_end_matches(" kB").parse::<f64>().ok())
            .map_or(0.0, |kib| (kib / (1024.0 * 1024.0) * 10.0).round() / 10.0),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        disk: disk(work_dir),
    }
}

pub async fn versions(wasmkube: &Path, etcd: &Path) -> Result<Versions> {
    Ok(Versions { wasmkube: version(wasmkube).await?, etcd: version(etcd).await? })
}

/// The first line `BINARY --version` prints (`wasmkube 0.1.0`, `etcd Version: 3.4.23`).
pub async fn version(binary: &Path) -> Result<String> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .await
        .with_context(|| format!("running {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

/// The line of `binary ARGS`'s output (stdout, then stderr) that names its version, for tools
/// without `--version`.
pub async fn version_line(binary: &Path, args: &[&str]) -> String {
    match Command::new(binary).args(args).output().await {
        Ok(out) => {
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            text.lines().find(|l| l.to_lowercase().contains("version")).unwrap_or_default().trim().to_string()
        }
        Err(e) => format!("unknown ({e})"),
    }
}

/// The mount holding `dir`: the longest mount point in `/proc/mounts` that contains it.
fn disk(dir: &Path) -> Disk {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = read("/proc/mounts");
    let mount = mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some((f.next()?, f.next()?, f.next()?))
        })
        .filter(|(_, point, _)| dir.starts_with(point))
        .max_by_key(|(_, point, _)| point.len());
    let (device, mount_point, fstype) = mount.unwrap_or(("?", "?", "?"));
    Disk {
        work_dir: dir.clone(),
        mount_point: mount_point.to_string(),
        device: device.to_string(),
        fstype: fstype.to_string(),
        rotational: rotational(device),
    }
}

/// `queue/rotational` of the block device (or of the disk a partition belongs to).
fn rotational(device: &str) -> Option<bool> {
    let name = device.strip_prefix("/dev/")?;
    let candidates =
        [format!("/sys/class/block/{name}/queue/rotational"), format!("/sys/class/block/{name}/../queue/rotational")];
    candidates.iter().find_map(|p| std::fs::read_to_string(p).ok()).map(|v| v.trim() == "1")
}

/// A `key : value` line of a `/proc` file.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// A `/proc` file, or nothing on systems without it: missing facts must not stop a benchmark.
fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

//! Containers' logs on disk: where each run's output goes, how much of it is kept, and reading it
//! back for the node API ([`query`] turns the records into what `kubectl logs` shows).
//!
//! A container's directory, `DATA_DIR/pods/<ns>_<pod>_<uid>/<container>/`, holds for run `N`
//! (its restart count):
//! - `N.log`: the run's output as CRI log records (see [`crate::host::log`]), appended as the
//!   guest writes;
//! - `N.log.1`: the older part of the run, once `N.log` reached the node's
//!   `container_log_max_bytes` and was rotated (replacing an older `N.log.1`). A run reads as
//!   `N.log.1`, then `N.log`;
//! - `N.end`: a marker the container task writes when the run is over (exited, killed, failed to
//!   start or stopped with its pod), after its last output. A follower that sees it sends what is
//!   left and finishes. It holds `restarting` when another run follows (after the backoff): until
//!   that run starts, `previous` means run `N`, as the kubelet's `lastState` does.
//!
//! Starting run `N` deletes the files of every run but `N` and `N-1`, as the kubelet keeps only
//! the current and the previous container's logs: a container holds at most four files of about
//! the cap each.

pub mod query;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use crate::host::log::ContainerLog;

/// What an end marker says when another run follows.
const RESTARTING: &[u8] = b"restarting";

/// The files of one run of a container.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFiles {
    dir: PathBuf,
    run: u32,
}

impl RunFiles {
    pub fn new(container_dir: &Path, run: u32) -> Self {
        Self { dir: container_dir.to_path_buf(), run }
    }

    pub fn run(&self) -> u32 {
        self.run
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn current(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.run))
    }

    pub fn rotated(&self) -> PathBuf {
        self.dir.join(format!("{}.log.1", self.run))
    }

    pub fn end_marker(&self) -> PathBuf {
        self.dir.join(format!("{}.end", self.run))
    }

    /// The run is over and its output complete.
    pub async fn ended(&self) -> bool {
        tokio::fs::try_exists(self.end_marker()).await.unwrap_or(false)
    }

    /// The run is over and the container is waiting to run again.
    pub fn restarting(&self) -> bool {
        std::fs::read(self.end_marker()).is_ok_and(|marker| marker.trim_ascii() == RESTARTING)
    }
}

/// The run a log file name belongs to (`3.log`, `3.log.1`, `3.end`).
fn run_of(file_name: &str) -> Option<u32> {
    let stem = file_name
        .strip_suffix(".log")
        .or_else(|| file_name.strip_suffix(".log.1"))
        .or_else(|| file_name.strip_suffix(".end"))?;
    stem.parse().ok()
}

/// The runs of a container that have output, ascending.
pub fn runs(container_dir: &Path) -> Vec<u32> {
    let mut runs: Vec<u32> = std::fs::read_dir(container_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    // A marker alone (a run that failed before it opened its log) is no output.
                    if name.ends_with(".end") { None } else { run_of(&name) }
                })
                .collect()
        })
        .unwrap_or_default();
    runs.sort_unstable();
    runs.dedup();
    runs
}

/// Opens run `run`'s log for the guest, capped at `max_bytes` a file, after deleting the files of
/// runs before the previous one (and a marker left from an earlier life of this run, when an
/// agent restart re-adopted the pod).
pub fn open(container_dir: &Path, run: u32, max_bytes: u64) -> std::io::Result<ContainerLog> {
    std::fs::create_dir_all(container_dir)?;
    for entry in std::fs::read_dir(container_dir)?.filter_map(Result::ok) {
        let kept = run_of(&entry.file_name().to_string_lossy()).is_none_or(|r| r == run || r + 1 == run);
        if !kept && let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::warn!(error = %e, path = %entry.path().display(), "deleting an old container log failed");
        }
    }
    let files = RunFiles::new(container_dir, run);
    match std::fs::remove_file(files.end_marker()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    ContainerLog::open(files.current(), files.rotated(), max_bytes)
}

/// Marks run `run` as over, so its followers finish; `restarting` when another run follows. Best
/// effort: without the marker a follower still ends when the next run starts or its client leaves.
pub fn mark_ended(container_dir: &Path, run: u32, restarting: bool) {
    let files = RunFiles::new(container_dir, run);
    if !files.current().exists() && !files.rotated().exists() {
        return; // the run failed before it had a log
    }
    let marker: &[u8] = if restarting { RESTARTING } else { b"" };
    if let Err(e) = std::fs::write(files.end_marker(), marker) {
        tracing::warn!(error = %e, path = %files.end_marker().display(), "marking the end of a container log failed");
    }
}

/// Identifies a file across renames, to notice a rotation.
type FileId = (u64, u64);

async fn id_of(path: &Path) -> Option<FileId> {
    tokio::fs::metadata(path).await.ok().map(|m| (m.dev(), m.ino()))
}

/// Reads a run's log from its start, then what is appended, across rotations (like `tail -F`).
pub struct Reader {
    files: RunFiles,
    /// The file being read (`N.log` when opened, possibly rotated to `N.log.1` since).
    file: Option<(tokio::fs::File, FileId)>,
}

impl Reader {
    /// Opens the run and reads everything it holds so far.
    pub async fn open(files: RunFiles) -> std::io::Result<(Self, Vec<u8>)> {
        // Both files are opened before either is read, so a rotation meanwhile loses nothing: the
        // handle on `N.log` then reads the rotated file to its end.
        let rotated = tokio::fs::File::open(files.rotated()).await.ok();
        let current = match tokio::fs::File::open(files.current()).await {
            Ok(file) => Some(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && rotated.is_some() => None,
            Err(e) => return Err(e),
        };
        let mut content = Vec::new();
        // The last file read is the one followed: `N.log`, or `N.log.1` if caught in the middle of
        // a rotation (then the new `N.log` is noticed as a rotation since).
        let mut file = None;
        for mut opened in [rotated, current].into_iter().flatten() {
            let metadata = opened.metadata().await?;
            opened.read_to_end(&mut content).await?;
            file = Some((opened, (metadata.dev(), metadata.ino())));
        }
        Ok((Self { files, file }, content))
    }

    /// What was appended since the last read.
    pub async fn read_new(&mut self) -> std::io::Result<Vec<u8>> {
        // Look for a rotation before reading: if the file was rotated, the writer is done with it
        // and reading it to its end below gets all of it.
        let current = id_of(&self.files.current()).await;
        let mut fresh = Vec::new();
        if let Some((file, _)) = &mut self.file {
            file.read_to_end(&mut fresh).await?;
        }
        let reading = self.file.as_ref().map(|(_, id)| *id);
        if current.is_none() || current == reading {
            return Ok(fresh);
        }
        // Rotated. If `N.log.1` is neither the file just read nor the new one, it filled up in
        // between: it comes first. (More rotations than that between two reads lose the middle.)
        let rotated = id_of(&self.files.rotated()).await;
        if rotated.is_some() && rotated != reading && rotated != current {
            let mut file = tokio::fs::File::open(self.files.rotated()).await?;
            file.read_to_end(&mut fresh).await?;
        }
        let mut file = tokio::fs::File::open(self.files.current()).await?;
        let metadata = file.metadata().await?;
        file.read_to_end(&mut fresh).await?;
        self.file = Some((file, (metadata.dev(), metadata.ino())));
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn starting_a_run_keeps_only_its_files_and_the_previous_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["0.log", "1.log", "1.log.1", "1.end", "2.log", "2.end", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        drop(open(dir.path(), 2, 1 << 20).expect("open"));
        assert_eq!(names(dir.path()), ["1.end", "1.log", "1.log.1", "2.log", "notes.txt"], "2.end was stale");
        assert_eq!(runs(dir.path()), [1, 2]);
        assert!(!RunFiles::new(dir.path(), 2).restarting());
        mark_ended(dir.path(), 2, true);
        mark_ended(dir.path(), 7, false);
        assert!(RunFiles::new(dir.path(), 2).restarting());
        assert!(!dir.path().join("7.end").exists(), "no marker for a run without a log");
    }

    #[tokio::test]
    async fn a_reader_follows_a_run_across_rotations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = RunFiles::new(dir.path(), 0);
        std::fs::write(files.rotated(), b"a\n").expect("write");
        std::fs::write(files.current(), b"b\n").expect("write");
        let (mut reader, content) = Reader::open(files.clone()).await.expect("open");
        assert_eq!(content, b"a\nb\n");
        assert_eq!(reader.read_new().await.expect("read"), b"");
        let append = |text: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).create(true).open(files.current()).expect("open");
            f.write_all(text.as_bytes()).expect("append");
        };
        append("c\n");
        assert_eq!(reader.read_new().await.expect("read"), b"c\n");
        // One rotation: the rest of the old file, then the new one.
        append("d\n");
        std::fs::rename(files.current(), files.rotated()).expect("rotate");
        append("e\n");
        assert_eq!(reader.read_new().await.expect("read"), b"d\ne\n");
        // Two rotations between reads: the file in between is read too.
        std::fs::rename(files.current(), files.rotated()).expect("rotate");
        append("f\n");
        std::fs::rename(files.current(), files.rotated()).expect("rotate");
        append("g\n");
        assert_eq!(reader.read_new().await.expect("read"), b"f\ng\n");
        // Opened in the middle of a rotation, with only `N.log.1` there: nothing is read twice.
        std::fs::rename(files.current(), files.rotated()).expect("rotate");
        let (mut reader, content) = Reader::open(files.clone()).await.expect("open");
        assert_eq!(content, b"g\n");
        append("h\n");
        assert_eq!(reader.read_new().await.expect("read"), b"h\n");
    }
}

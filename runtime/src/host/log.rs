//! A container's stdout and stderr, written the way the kubelet's container runtimes store them:
//! one file per run in the CRI log format, a line per record,
//! `<RFC 3339 time, 9 fraction digits> <stdout|stderr> <F|P> <text>`. `F` ends a line of output;
//! `P` is a fragment of a longer one: lines are cut every [`MAX_LINE`] bytes, and a last line the
//! guest never ended is kept as a fragment (as containerd does). Readers join fragments with the
//! records that follow on the same stream (`agent::log`).
//!
//! [`ContainerLog`] is the file, shared by every instance of a container (a wasi:http handler runs
//! one per request) and both its streams; it rotates itself when it grows past its cap. A
//! [`LogStream`] is one instance's stdout or stderr and holds the line that instance has not ended
//! yet, so concurrent instances and the two streams never splice their text together.
//!
//! Writes are blocking appends on the calling thread, as wasmtime-wasi's own `OutputFile` makes
//! them: an append to a local file is short, and the stream traits allow a write to complete at
//! once. A write that fails (disk full) is dropped and reported in the agent's log, never to the
//! guest: as with the kubelet, a container does not fail because its logs could not be kept.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use jiff::Timestamp;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest record's text: longer lines are split into `P` fragments (the kubelet's 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;
/// How much a guest may write at once, as wasmtime-wasi's `OutputFile` allows.
const WRITE_BUDGET: usize = 64 * 1024;

/// Which of the guest's outputs a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Whether a record ends its line (`F`) or is a fragment of it (`P`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Full,
    Partial,
}

impl Tag {
    pub fn letter(self) -> char {
        match self {
            Tag::Full => 'F',
            Tag::Partial => 'P',
        }
    }
}

/// One CRI log record, newline included.
pub fn record(time: Timestamp, stream: Stream, tag: Tag, text: &[u8]) -> Vec<u8> {
    let mut line = format!("{time:.9} {} {} ", stream.name(), tag.letter()).into_bytes();
    line.extend_from_slice(text);
    line.push(b'\n');
    line
}

/// Cuts what a guest writes into records: its lines, in fragments of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub struct Framer {
    /// The start of a line not ended yet (at most `MAX_LINE` bytes).
    pending: Vec<u8>,
}

impl Framer {
    /// Takes `bytes`, handing every record they complete to `emit`.
    pub fn push(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(Tag, &[u8])) {
        while let Some(newline) = bytes.iter().position(|b| *b == b'\n') {
            if self.pending.is_empty() {
                // The usual case, a whole line in one write: no copy.
                split(&bytes[..newline], Tag::Full, emit);
            } else {
                self.pending.extend_from_slice(&bytes[..newline]);
                split(&self.pending, Tag::Full, emit);
                self.pending.clear();
            }
            bytes = &bytes[newline + 1..];
        }
        self.pending.extend_from_slice(bytes);
        // Only a line longer than the cap has fragments: one of exactly MAX_LINE bytes is still `F`.
        let mut start = 0;
        while self.pending.len() - start > MAX_LINE {
            emit(Tag::Partial, &self.pending[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        self.pending.drain(..start);
    }

    /// Hands a line the guest never ended to `emit`, as a fragment.
    pub fn finish(&mut self, emit: &mut impl FnMut(Tag, &[u8])) {
        if !self.pending.is_empty() {
            emit(Tag::Partial, &self.pending);
            self.pending.clear();
        }
    }
}

/// Emits `line` as `P` fragments of `MAX_LINE` bytes and a last record tagged `last`.
fn split(mut line: &[u8], last: Tag, emit: &mut impl FnMut(Tag, &[u8])) {
    while line.len() > MAX_LINE {
        emit(Tag::Partial, &line[..MAX_LINE]);
        line = &line[MAX_LINE..];
    }
    emit(last, line);
}

/// A run's log file, shared by all instances of the container and both streams.
#[derive(Clone)]
pub struct ContainerLog {
    file: Arc<Mutex<LogFile>>,
}

struct LogFile {
    path: PathBuf,
    /// Where the file goes when it is full (replacing what was there).
    rotated: PathBuf,
    file: File,
    /// Bytes in `file`.
    size: u64,
    max_bytes: u64,
    /// Records of the current write, appended in one go.
    staged: Vec<u8>,
    /// A failure was reported and nothing has succeeded since: do not repeat it for every line.
    failing: bool,
}

impl ContainerLog {
    /// Opens `path` for appending. Once it holds `max_bytes`, the next record first moves it to
    /// `rotated` and starts `path` afresh, so the run's output never takes much more than twice
    /// the cap.
    pub fn open(path: PathBuf, rotated: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let file = LogFile { path, rotated, file, size, max_bytes, staged: Vec::new(), failing: false };
        Ok(Self { file: Arc::new(Mutex::new(file)) })
    }

    /// A fresh stdout for one instance.
    pub fn stdout(&self) -> LogStream {
        LogStream::new(self.clone(), Stream::Stdout)
    }

    /// A fresh stderr for one instance.
    pub fn stderr(&self) -> LogStream {
        LogStream::new(self.clone(), Stream::Stderr)
    }

    /// A writer that panicked mid-append left the file usable: carry on rather than panic too.
    fn lock(&self) -> MutexGuard<'_, LogFile> {
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LogFile {
    fn append(&mut self, record: &[u8]) {
        let full = self.size + self.staged.len() as u64;
        if full > 0 && full + record.len() as u64 > self.max_bytes {
            self.flush();
            if let Err(e) = self.rotate() {
                // Without a rotation the record would grow the file past its cap: drop it.
                self.report("rotating", &e);
                return;
            }
        }
        self.staged.extend_from_slice(record);
    }

    fn flush(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        match self.file.write_all(&self.staged) {
            Ok(()) => {
                self.size += self.staged.len() as u64;
                self.failing = false;
            }
            Err(e) => self.report("writing", &e),
        }
        self.staged.clear();
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if let Err(e) = std::fs::rename(&self.path, &self.rotated) {
            // Already gone: an earlier rotation moved it but could not open the new file.
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e);
            }
        }
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    fn report(&mut self, step: &str, e: &std::io::Error) {
        if !self.failing {
            tracing::warn!(error = %e, path = %self.path.display(), "{step} a container log failed; output is dropped");
            self.failing = true;
        }
    }
}

/// One instance's stdout or stderr: what wasmtime-wasi hands the guest (p2 streams, and p1 through
/// them). Clones share the unfinished line; the last one to go writes it out as a fragment.
#[derive(Clone)]
pub struct LogStream {
    state: Arc<Mutex<StreamState>>,
}

struct StreamState {
    log: ContainerLog,
    stream: Stream,
    framer: Framer,
}

impl LogStream {
    fn new(log: ContainerLog, stream: Stream) -> Self {
        Self { state: Arc::new(Mutex::new(StreamState { log, stream, framer: Framer::default() })) }
    }

    fn write(&self, bytes: &[u8]) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).write(bytes);
    }
}

impl StreamState {
    fn write(&mut self, bytes: &[u8]) {
        let (time, stream) = (Timestamp::now(), self.stream);
        let mut file = self.log.lock();
        self.framer.push(bytes, &mut |tag, text| file.append(&record(time, stream, tag, text)));
        file.flush();
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        let (time, stream) = (Timestamp::now(), self.stream);
        let mut file = self.log.lock();
        self.framer.finish(&mut |tag, text| file.append(&record(time, stream, tag, text)));
        file.flush();
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    /// Always ready: a write completes at once.
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        LogStream::write(self, &bytes);
        Ok(())
    }

    /// Complete records are already in the file; an unfinished line waits for its end, as it
    /// does under containerd (a record is a line, not a flush).
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        LogStream::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as (tag letter, text).
    type Framed = (char, Vec<u8>);
    /// A case: its name, the writes, the records they make.
    type Case<'a> = (&'a str, Vec<&'a [u8]>, Vec<Framed>);

    /// The records `writes` make, with the framer finished at the end.
    fn frame(writes: &[&[u8]]) -> Vec<Framed> {
        let mut framer = Framer::default();
        let mut out = Vec::new();
        let mut emit = |tag: Tag, text: &[u8]| out.push((tag.letter(), text.to_vec()));
        for w in writes {
            framer.push(w, &mut emit);
        }
        framer.finish(&mut emit);
        out
    }

    fn f(text: &str) -> Framed {
        ('F', text.as_bytes().to_vec())
    }

    fn p(text: &[u8]) -> Framed {
        ('P', text.to_vec())
    }

    #[test]
    fn writes_are_framed_into_lines_and_fragments() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let exact = vec![b'y'; MAX_LINE];
        let long_line = [long.as_slice(), b"\n"].concat();
        let exact_line = [exact.as_slice(), b"\n"].concat();
        let cases: Vec<Case> = vec![
            ("one line", vec![b"hello\n"], vec![f("hello")]),
            ("two lines in one write", vec![b"a\nb\n"], vec![f("a"), f("b")]),
            ("a line over several writes", vec![b"he", b"l", b"lo\nwor", b"ld\n"], vec![f("hello"), f("world")]),
            ("an empty line", vec![b"\n"], vec![f("")]),
            ("an unended last line is a fragment", vec![b"done\nbye"], vec![f("done"), p(b"bye")]),
            ("nothing written", vec![], vec![]),
            (
                "a long line is cut every 16 KiB",
                vec![&long_line],
                vec![p(&long[..MAX_LINE]), p(&long[MAX_LINE..2 * MAX_LINE]), ('F', b"xxxxx".to_vec())],
            ),
            ("a line of exactly 16 KiB is whole", vec![&exact_line], vec![('F', exact.clone())]),
            (
                "a long line written in pieces is cut as it comes",
                vec![&long[..10], &long[10..], b"\n"],
                vec![p(&long[..MAX_LINE]), p(&long[MAX_LINE..2 * MAX_LINE]), ('F', b"xxxxx".to_vec())],
            ),
            ("an unended long line", vec![&long[..MAX_LINE + 1]], vec![p(&long[..MAX_LINE]), p(b"x")]),
        ];
        for (name, writes, want) in cases {
            assert_eq!(frame(&writes), want, "{name}");
        }
    }

    #[test]
    fn records_carry_a_nanosecond_timestamp_the_stream_and_the_tag() {
        let time: Timestamp = "2026-11-22T01:02:03.123456789Z".parse().expect("time");
        assert_eq!(
            record(time, Stream::Stdout, Tag::Full, b"the text"),
            b"2026-11-22T01:02:03.123456789Z stdout F the text\n"
        );
        let whole: Timestamp = "2026-11-22T01:02:03Z".parse().expect("time");
        assert_eq!(record(whole, Stream::Stderr, Tag::Partial, b""), b"2026-11-22T01:02:03.000000000Z stderr P \n");
    }

    /// The (stream, tag, text) of each record in a file, timestamps checked and dropped.
    fn records(path: &std::path::Path) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                let time = parts.next().expect("time");
                assert!(time.parse::<Timestamp>().is_ok(), "{l}");
                let mut next = || parts.next().unwrap_or_default().to_string();
                (next(), next(), next())
            })
            .collect()
    }

    #[test]
    fn both_streams_share_the_file_each_with_its_own_unfinished_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = ContainerLog::open(dir.path().join("0.log"), dir.path().join("0.log.1"), 1 << 20).expect("open");
        let (mut out, mut err) = (log.stdout().p2_stream(), log.stderr().p2_stream());
        out.write(Bytes::from_static(b"to ")).expect("write");
        err.write(Bytes::from_static(b"oops\n")).expect("write");
        out.write(Bytes::from_static(b"stdout\nand a last")).expect("write");
        drop(out);
        drop(err);
        let got = records(&dir.path().join("0.log"));
        let want: Vec<(String, String, String)> =
            [("stderr", "F", "oops"), ("stdout", "F", "to stdout"), ("stdout", "P", "and a last")]
                .iter()
                .map(|(s, t, x)| (s.to_string(), t.to_string(), x.to_string()))
                .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_full_file_is_rotated_and_writing_goes_on_in_a_fresh_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, rotated) = (dir.path().join("0.log"), dir.path().join("0.log.1"));
        let log = ContainerLog::open(path.clone(), rotated.clone(), 1000).expect("open");
        let mut out = log.stdout().p2_stream();
        for i in 0..100 {
            out.write(Bytes::from(format!("line {i:03} {}\n", "x".repeat(40)))).expect("write");
        }
        drop(out);
        let sizes = [&path, &rotated].map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
        assert!(sizes.iter().all(|s| *s > 0 && *s <= 1000), "{sizes:?}");
        let last = records(&path).last().cloned().expect("a record");
        assert!(last.2.starts_with("line 099 "), "{last:?}");
        let older = records(&rotated);
        let first_current = records(&path).first().cloned().expect("a record");
        let (a, b) = (&older.last().expect("rotated records").2[5..8], &first_current.2[5..8]);
        assert_eq!(a.parse::<u32>().expect("n") + 1, b.parse::<u32>().expect("n"), "no line lost at the rotation");
    }
}

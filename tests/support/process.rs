//! `wasmkube` run as separate processes, as an operator runs the server and its agents: each is
//! started (optionally inside a network namespace), waited on until it prints its `ready:` line,
//! and killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// The `wasmkube` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wasmkube");

/// A spawned `wasmkube` process, killed and reaped when dropped (also when the test panics). Its
/// stderr goes to `log`, whose tail is printed if the test fails.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Kept open: the process may print after its ready line.
    _stdout: Option<BufReader<ChildStdout>>,
}

impl Proc {
    /// Starts `wasmkube ARGS` and waits (bounded) for its `ready:` line, which it returns.
    pub fn start(name: &str, args: &[&str], log: PathBuf) -> (Self, String) {
        Self::spawn(name, Command::new(BIN), args, log)
    }

    /// Starts `wasmkube ARGS` inside the network namespace `netns` (`ip netns exec`, which execs
    /// the binary, so killing this process kills wasmkube itself).
    pub fn start_in(netns: &str, name: &str, args: &[&str], log: PathBuf) -> (Self, String) {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns, BIN]);
        Self::spawn(name, command, args, log)
    }

    fn spawn(name: &str, mut command: Command, args: &[&str], log: PathBuf) -> (Self, String) {
        let stderr = std::fs::File::create(&log).expect("create log file");
        let mut child = command
            .args(args)
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn wasmkube");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        // Read the ready line on a thread, so a process that hangs fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = tx.send(line);
            stdout
        });
        let proc_line = rx.recv_timeout(Duration::from_secs(60));
        let mut proc = Proc { name: name.to_string(), child, log, _stdout: None };
        let line = match proc_line {
            Ok(line) => line,
            Err(_) => {
                proc.kill();
                panic!("{name} printed no ready line within 60 s\n{}", proc.log_tail());
            }
        };
        proc._stdout = Some(reader.join().expect("reader thread"));
        assert!(line.starts_with("ready: "), "{name}: unexpected first line {line:?}\n{}", proc.log_tail());
        (proc, line.trim().to_string())
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- last lines of {} ---\n{}", self.name, lines[lines.len().saturating_sub(30)..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

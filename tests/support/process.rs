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

/// A `wasmkube server` started with its data in `DIR/server`: the process, its API URL, where it
/// wrote the admin token and CA (for agents' flags), and an admin client.
pub struct Server {
    pub proc: Proc,
    pub url: String,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    pub client: kube::Client,
}

impl Server {
    /// Runs `wasmkube server --api-addr API_ADDR --data-dir DIR/server FLAGS` (log: `DIR/server.log`).
    pub async fn start(dir: &Path, api_addr: &str, flags: &[&str]) -> Self {
        let server_dir = dir.join("server");
        let mut args = vec!["server", "--api-addr", api_addr, "--data-dir", path_str(&server_dir)];
        args.extend_from_slice(flags);
        let (proc, ready) = Proc::start("server", &args, dir.join("server.log"));
        let url = ready
            .strip_prefix("ready: api=")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no api URL in {ready:?}"))
            .to_string();
        let (token_file, ca_file) = (server_dir.join("admin-token"), server_dir.join("pki/ca.crt"));
        let token = std::fs::read_to_string(&token_file).expect("admin token");
        let ca = std::fs::read_to_string(&ca_file).expect("ca.crt");
        let client = super::client_for(&url, &ca, Some(token.trim())).await;
        Server { proc, url, token_file, ca_file, client }
    }

    /// Starts `wasmkube agent` for node `node` against this server, with its data in
    /// `DIR/NODE` (log: `DIR/NODE.log`), its node API on a free port, and `flags` added; inside
    /// network namespace `netns` if given. Waits for its `ready: node=NODE` line.
    pub fn agent(&self, dir: &Path, node: &str, netns: Option<&str>, flags: &[&str]) -> Proc {
        let data = dir.join(node);
        let mut args = vec![
            "agent",
            "--server",
            &self.url,
            "--token-file",
            path_str(&self.token_file),
            "--ca-file",
            path_str(&self.ca_file),
            "--node-name",
            node,
            "--node-api-port",
            "0",
            "--data-dir",
            path_str(&data),
        ];
        args.extend_from_slice(flags);
        let log = dir.join(format!("{node}.log"));
        let (agent, line) = match netns {
            Some(netns) => Proc::start_in(netns, node, &args, log),
            None => Proc::start(node, &args, log),
        };
        assert!(line.starts_with(&format!("ready: node={node} ")), "{line}");
        agent
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

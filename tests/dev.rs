//! `wasmkube dev` end to end: a copy of the `hello` sample's source deployed with `dev`, under
//! continuous load. Editing the source rebuilds it and swaps the running pod in place (new
//! answers, the same pod name and IP, no failed request); a syntax error shows the compiler's
//! message and keeps the old version; a version that traps is refused and the old one keeps
//! serving; Ctrl-C with `--cleanup` deletes what dev applied.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use support::process::{BIN, Proc, path_str};
use wasmkube_bench::devhello::Project;

/// The lines a child prints, as they come.
fn lines_of(stdout: impl Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Reads lines until one satisfies `done`; every line read.
fn until(lines: &Receiver<String>, within: Duration, done: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let finished = done(&line);
                seen.push(line);
                if finished {
                    return seen;
                }
            }
            Err(RecvTimeoutError::Timeout) => panic!("no expected line within {within:?}: {seen:#?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("dev exited: {seen:#?}"),
        }
    }
}

fn get(address: &str) -> Result<String, String> {
    let mut stream = std::net::TcpStream::connect(address).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    if answer.starts_with("HTTP/1.1 200") { Ok(answer) } else { Err(answer) }
}

/// `(name, IP)` of the deployment's pods, from `wasmkube get -o json`.
fn pods(data: &Path) -> Vec<(String, String)> {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(["get", "pods", "-l", "app=devhello", "-o", "json"])
        .env_remove("KUBECONFIG")
        .output()
        .expect("wasmkube get");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut pods: Vec<(String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or_default().into(),
                p["status"]["podIP"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    pods.sort();
    pods
}

#[test]
fn dev_rebuilds_and_swaps_in_place_under_load_and_keeps_serving_through_bad_versions() {
    support::sample("hello"); // the samples' dependencies, compiled once
    let root = tempfile::tempdir().expect("tempdir");
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let project = Project::create(&samples, root.path()).expect("a copy of hello");
    project.build_now().expect("devhello builds");
    let manifest = root.path().join("devhello.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: devhello}}\nspec:\n  replicas: 1\n  \
             selector: {{matchLabels: {{app: devhello}}}}\n  template:\n    metadata: {{labels: {{app: devhello}}}}\n    \
             spec:\n      containers:\n      - name: web\n        image: {}\n        ports: [{{containerPort: 8080}}]\n",
            path_str(&project.wasm)
        ),
    )
    .expect("manifest");
    let data = root.path().join("data");
    let args = ["up", "--api-addr", "127.0.0.1:0", "--node-name", "local", "--node-api-port", "0", "--dns-addr", "off"];
    let (_up, _) =
        Proc::start("up", &[&args[..], &["--data-dir", path_str(&data)]].concat(), root.path().join("up.log"));

    let mut dev = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["dev", "--cleanup", "-f", path_str(&manifest), "--watch"])
        .arg(project.dir.join("src"))
        .args(["--build", &project.build])
        .current_dir(&project.dir)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("wasmkube dev");
    let lines = lines_of(dev.stdout.take().expect("stdout"));
    let dev = Running(dev);
    until(&lines, Duration::from_secs(60), |l| l.starts_with("watching "));

    // The first version serving: find the pod and put it under load.
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let pods = pods(&data);
        if let [(_, ip)] = pods.as_slice()
            && !ip.is_empty()
            && get(&format!("{ip}:8080")).is_ok()
        {
            break pods;
        }
        assert!(Instant::now() < deadline, "the devhello pod never served: {pods:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let address = format!("{}:8080", before[0].1);
    assert!(get(&address).expect("served").contains("version=v1"));
    let stop = Arc::new(AtomicBool::new(false));
    let load = std::thread::spawn({
        let (stop, address) = (stop.clone(), address.clone());
        move || {
            let (mut answered, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match get(&address) {
                    Ok(_) => answered += 1,
                    Err(e) => failed.push(e),
                }
            }
            (answered, failed)
        }
    });

    // An edit: rebuilt, pushed and swapped in place.
    project.set_version("v2").expect("edit");
    let seen = until(&lines, Duration::from_secs(300), |l| l.starts_with('✓') || l.starts_with('✗'));
    assert!(seen.last().is_some_and(|l| l.starts_with("✓ build") && l.contains("swapped 1 pod")), "{seen:#?}");
    eprintln!("dev: {}", seen.last().expect("a status line"));
    assert!(get(&address).expect("served").contains("version=v2"));

    // A syntax error: the compiler's message, and v2 still serving.
    project.edit(|text| text.replace("const VERSION: &str = \"v2\";", "const VERSION: &str = \"v3\"")).expect("edit");
    let seen = until(&lines, Duration::from_secs(300), |l| l.starts_with('✓') || l.starts_with('✗'));
    assert!(seen.last().is_some_and(|l| l.starts_with("✗ build failed")), "{seen:#?}");
    assert!(seen.iter().any(|l| l.contains("error") && l.contains("expected")), "the compiler's message: {seen:#?}");
    assert!(get(&address).expect("served").contains("version=v2"));

    // A version that traps on its first request: refused, v2 still serving.
    project
        .edit(|text| {
            text.replace("const VERSION: &str = \"v3\"", "const VERSION: &str = \"v4\";").replace(
                "let pod = std::env::var",
                "if VERSION == \"v4\" { panic!(\"v4 traps\") }\n    let pod = std::env::var",
            )
        })
        .expect("edit");
    let seen = until(&lines, Duration::from_secs(300), |l| l.starts_with('✓') || l.starts_with('✗'));
    assert!(seen.last().is_some_and(|l| l.starts_with("✗ the new version was refused")), "{seen:#?}");
    assert!(get(&address).expect("served").contains("version=v2"));

    stop.store(true, Ordering::Relaxed);
    let (answered, failed) = load.join().expect("load");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answered + failed.len() as u32,
        failed.first()
    );
    assert!(answered > 10, "only {answered} requests ran");
    assert_eq!(pods(&data), before, "the same pod, name and IP");

    // Ctrl-C with --cleanup: what dev applied is deleted.
    Command::new("kill").args(["-INT", &dev.0.id().to_string()]).status().expect("kill");
    until(&lines, Duration::from_secs(30), |l| l == "deployment.apps/devhello deleted");
}

/// The dev process, killed and reaped when the test ends (early or not).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

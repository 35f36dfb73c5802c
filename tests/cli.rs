//! The `wasmkube` binary end to end: `up` writes a kubeconfig and prints `ready:`, the client verbs
//! work against it through that kubeconfig, bad manifests write nothing, and a restarted `up` on the
//! same data dir has all its state.

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wasmkube");

/// A running `wasmkube up`, stopped with SIGTERM when dropped. Its stdout stays open (`--apply`
/// reports there after the ready line).
struct Up {
    child: Child,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Up {
    fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["up", "--api-addr", "127.0.0.1:0", "--node-name", "local", "--node-api-port", "0"])
            .args(["--container-log-max-size", "1Mi", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wasmkube up");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the ready line");
        assert!(line.starts_with("ready: api=https://127.0.0.1:"), "unexpected first line: {line:?}");
        assert!(line.contains(&format!("kubeconfig={}", data_dir.join("kubeconfig").display())), "{line}");
        Up { child, _stdout: stdout }
    }

    fn stop(mut self) {
        terminate(&mut self.child);
    }
}

fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SIGTERM for a clean shutdown, then wait (bounded) for the process to go.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Up {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Runs a client verb against the cluster whose data dir is `data_dir`.
fn cli(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasmkube");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wasmkube finishes")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

const MANIFESTS: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  greeting: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: hello:1
";

#[test]
fn up_serves_the_cli_through_its_kubeconfig_and_keeps_state_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let up = Up::start(&data);
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, MANIFESTS).expect("write manifests");
    let file = file.to_str().expect("utf-8 path");

    let applied = ok(cli(&data, &["apply", "-f", file], None));
    assert_eq!(applied, "configmap/app-config created\ndeployment.apps/web created\n");
    let again = ok(cli(&data, &["apply", "-f", file], None));
    assert_eq!(again, "configmap/app-config unchanged\ndeployment.apps/web unchanged\n");
    let changed = MANIFESTS.replace("greeting: hello", "greeting: hi");
    let piped = ok(cli(&data, &["apply", "-f", "-"], Some(&changed)));
    assert_eq!(piped, "configmap/app-config configured\ndeployment.apps/web unchanged\n");

    let table = ok(cli(&data, &["get", "deployments"], None));
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(lines.next().expect("row").starts_with("web "), "{table}");
    let across = ok(cli(&data, &["get", "deploy", "-A", "-l", "app=web", "-o", "wide"], None));
    let header: Vec<&str> = across.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header[..2], ["NAMESPACE", "NAME"], "{across}");
    assert!(header.contains(&"IMAGES") && header.contains(&"SELECTOR"), "wide columns: {across}");
    assert!(across.lines().nth(1).expect("row").split_whitespace().take(2).eq(["default", "web"]), "{across}");
    let none = cli(&data, &["get", "deploy", "-l", "app=other"], None);
    assert!(none.status.success() && String::from_utf8_lossy(&none.stderr).contains("No resources found"));
    let yaml = ok(cli(&data, &["get", "configmap", "app-config", "-o", "yaml"], None));
    assert!(yaml.contains("greeting: hi"), "{yaml}");
    assert_eq!(
        ok(cli(&data, &["get", "cm,deploy", "-o", "name"], None)),
        "configmap/app-config\ndeployment.apps/web\n"
    );
    let namespaces = ok(cli(&data, &["get", "ns"], None));
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(namespaces.lines().any(|l| l.starts_with(&format!("{ns} ")) && l.contains("Active")), "{namespaces}");
    }
    let described = ok(cli(&data, &["describe", "deployment", "web"], None));
    assert!(described.contains("Name:") && described.contains("web") && described.contains("Replicas:"), "{described}");
    assert!(ok(cli(&data, &["version"], None)).contains("Server Version: v1.33"));

    up.stop();
    let _up = Up::start(&data);
    let after = ok(cli(&data, &["get", "cm", "app-config", "-o", "json"], None));
    assert!(after.contains("\"greeting\": \"hi\""), "state survives a restart: {after}");
    let deleted = ok(cli(&data, &["delete", "-f", file], None));
    assert!(
        deleted.contains("configmap \"app-config\" deleted") && deleted.contains("deployment.apps \"web\" deleted"),
        "{deleted}"
    );
    let gone = cli(&data, &["get", "deployment", "web"], None);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&gone.stderr)
            .contains("Error from server (NotFound): deployments.apps \"web\" not found")
    );
}

#[test]
fn bad_manifests_are_named_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _up = Up::start(&data);

    let malformed = dir.path().join("broken.yaml");
    std::fs::write(
        &malformed,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n---\nkind: ConfigMap\nmetadata: [unclosed\n",
    )
    .expect("write");
    let out = cli(&data, &["apply", "-f", malformed.to_str().expect("utf-8")], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.yaml") && stderr.contains("line"), "names the file and line: {stderr}");

    let unknown = dir.path().join("widget.yaml");
    std::fs::write(&unknown, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: second\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n")
        .expect("write");
    let out = cli(&data, &["apply", "-f", unknown.to_str().expect("utf-8")], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Widget"), "names the kind");

    let invalid = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nopod\nspec:\n  containers:\n    - name: c\n";
    let out = cli(&data, &["apply", "-f", "-"], Some(invalid));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Error from server (Invalid)") && stderr.contains("spec.containers[0].image: Required value"),
        "{stderr}"
    );

    let listed = ok(cli(&data, &["get", "configmaps,pods", "-o", "name"], None));
    assert_eq!(listed, "", "nothing from the failed files was written");
}

#[path = "support/mod.rs"]
mod support;

#[test]
fn up_runs_a_pod_on_its_own_node_and_logs_shows_its_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _up = Up::start(&data);
    let nodes = ok(cli(&data, &["get", "nodes", "-o", "name"], None));
    assert_eq!(nodes, "node/local\n");
    // The image is a local path beside the manifest: apply pushes it and pins the digest.
    std::fs::copy(support::sample("job"), dir.path().join("job.wasm")).expect("copy job.wasm");
    let manifest = dir.path().join("primes.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: primes\nspec:\n  nodeName: local\n  restartPolicy: Never\n  containers:\n    - name: job\n      image: ./job.wasm\n      args: [\"1000\"]\n",
    )
    .expect("write manifest");
    let applied = cli(&data, &["apply", "-f", manifest.to_str().expect("utf-8")], None);
    let stderr = String::from_utf8_lossy(&applied.stderr).to_string();
    assert_eq!(ok(applied), "pod/primes created\n");
    assert!(stderr.contains("job.wasm as job@sha256:"), "{stderr}");
    let stored: serde_json::Value =
        serde_json::from_str(&ok(cli(&data, &["get", "pod", "primes", "-o", "json"], None))).expect("json");
    let image = stored["spec"]["containers"][0]["image"].as_str().unwrap_or("");
    assert!(image.starts_with("job@sha256:") && image.len() == "job@sha256:".len() + 64, "{image}");
    let pushed = ok(cli(&data, &["push", dir.path().join("job.wasm").to_str().expect("utf-8"), "primes:v1"], None));
    assert!(pushed.starts_with("primes:v1: pushed primes@sha256:"), "{pushed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod: serde_json::Value =
            serde_json::from_str(&ok(cli(&data, &["get", "pod", "primes", "-o", "json"], None))).expect("json");
        if pod["status"]["phase"] == "Succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "primes did not succeed: {pod}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ok(cli(&data, &["logs", "primes"], None)), "primes below 1000: 168\n");
    assert_eq!(ok(cli(&data, &["logs", "pod/primes", "-c", "job", "--tail", "1"], None)), "primes below 1000: 168\n");
    let stamped = ok(cli(&data, &["logs", "primes", "--timestamps"], None));
    let (time, text) = stamped.split_once(' ').unwrap_or_default();
    assert!(time.parse::<jiff::Timestamp>().is_ok() && text == "primes below 1000: 168\n", "{stamped:?}");
    assert_eq!(ok(cli(&data, &["logs", "primes", "--since", "1h"], None)), "primes below 1000: 168\n");
    assert_eq!(ok(cli(&data, &["logs", "primes", "--since-time", "2999-01-01T00:00:00Z"], None)), "");
    let both = cli(&data, &["logs", "primes", "--since", "1h", "--since-time", "2020-01-01T00:00:00Z"], None);
    assert!(!both.status.success(), "--since and --since-time exclude each other");
}

#[test]
fn exec_runs_commands_in_a_pod_from_our_cli_and_from_kubectl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _up = Up::start(&data);
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sh\nspec:\n  nodeName: local\n  containers:\n    - name: shell\n      image: {}\n      args: [\"sleep:600000\"]\n      env: [{{name: FOO, value: bar}}]\n",
        support::sample("inspect").display()
    );
    ok(cli(&data, &["apply", "-f", "-"], Some(&manifest)));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod: serde_json::Value =
            serde_json::from_str(&ok(cli(&data, &["get", "pod", "sh", "-o", "json"], None))).expect("json");
        if pod["status"]["phase"] == "Running" {
            break;
        }
        assert!(Instant::now() < deadline, "sh did not start: {pod}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let env = ok(cli(&data, &["exec", "sh", "--", "env"], None));
    assert!(env.lines().any(|l| l == "FOO=bar"), "{env}");
    assert_eq!(ok(cli(&data, &["exec", "-i", "sh", "--", "upper"], Some("quiet\n"))), "QUIET\n");
    let failed = cli(&data, &["exec", "sh", "-c", "shell", "--", "warn:oops", "exit:1"], None);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("oops") && stderr.contains("command terminated with exit code 1"), "{stderr}");

    // The real kubectl speaks the same websocket protocol (skipped where kubectl is not installed,
    // except under CI, which installs it).
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "kubectl must be installed under CI (.ci/run installs it)");
        return;
    }
    let mut kubectl = Command::new("kubectl")
        .args(["exec", "-i", "sh", "--", "upper"])
        .env("KUBECONFIG", data.join("kubeconfig"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    kubectl.stdin.take().expect("stdin").write_all(b"from kubectl\n").expect("write");
    let out = kubectl.wait_with_output().expect("kubectl finishes");
    assert!(out.status.success(), "kubectl exec failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "FROM KUBECTL\n");
    let failed = Command::new("kubectl")
        .args(["exec", "sh", "--", "exit:1"])
        .env("KUBECONFIG", data.join("kubeconfig"))
        .output()
        .expect("kubectl runs");
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("command terminated with exit code 1"));
}

/// The README's quickstart: `up --apply samples/manifests` on a fresh data dir serves `hello`.
#[test]
fn up_with_the_sample_manifests_serves_hello() {
    support::sample("hello"); // builds the samples, as the README's first command does
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _up = Up::start_with(&data, &["--apply", "samples/manifests"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let ips = loop {
        let pods: serde_json::Value =
            serde_json::from_str(&ok(cli(&data, &["get", "pods", "-l", "app=hello", "-o", "json"], None)))
                .expect("json");
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        let ready = |p: &serde_json::Value| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        };
        if items.len() == 2 && items.iter().all(ready) {
            break items.iter().map(|p| p["status"]["podIP"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>();
        }
        assert!(Instant::now() < deadline, "hello did not become ready: {items:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for ip in ips {
        let mut stream = std::net::TcpStream::connect((ip.as_str(), 8080)).expect("connect to hello");
        stream.write_all(b"GET / HTTP/1.1\r\nHost: hello\r\nConnection: close\r\n\r\n").expect("send");
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).expect("read");
        assert!(response.starts_with("HTTP/1.1 200") && response.contains("Hello from wasmkube!"), "{response}");
    }
}

// ---- rollout, scale, cordon, drain ----------------------------------------------------------

/// A `hello` Deployment on `port` (distinct per test: every `up` hands out the same pod IPs, so
/// tests running side by side must not serve on the same port), optionally with a greeting.
fn hello_deployment(name: &str, port: u16, greeting: Option<&str>, change_cause: Option<&str>) -> String {
    let annotations =
        change_cause.map(|c| format!("\n  annotations:\n    kubernetes.io/change-cause: \"{c}\"")).unwrap_or_default();
    let env = greeting.map(|g| format!("\n          env: [{{name: GREETING, value: \"{g}\"}}]")).unwrap_or_default();
    let image = support::sample("hello");
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}{annotations}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: hello
          image: {}
          ports: [{{containerPort: {port}}}]{env}
",
        image.display()
    )
}

/// The object `get ... -o json` prints.
fn get_json(data: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&ok(cli(data, &all, None))).expect("json")
}

/// Polls `check` every 200ms until it holds, failing the test after `within`.
fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A command that must fail; returns its stderr.
fn fails(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected failure: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).expect("utf-8")
}

fn rolled_out(data: &Path, deployment: &str) {
    let status = ok(cli(data, &["rollout", "status", deployment, "--timeout", "2m"], None));
    assert!(status.ends_with("successfully rolled out\n"), "{status}");
}

#[test]
fn rollout_status_history_undo_pause_restart_and_scale_drive_a_deployment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _up = Up::start(&data);

    let missing = fails(cli(&data, &["rollout", "status", "deployment/web"], None));
    assert!(missing.contains("Error from server (NotFound): deployments.apps \"web\" not found"), "{missing}");
    ok(cli(&data, &["apply", "-f", "-"], Some(&hello_deployment("web", 18301, None, None))));
    let status = ok(cli(&data, &["rollout", "status", "deployment/web", "--timeout", "2m"], None));
    assert!(status.ends_with("deployment \"web\" successfully rolled out\n"), "{status}");
    assert!(status.lines().all(|l| l.starts_with("Waiting for deployment") || l.ends_with("successfully rolled out")));

    // Revision 2: a new environment and a change-cause.
    let v2 = hello_deployment("web", 18301, Some("v2"), Some("greet with v2"));
    ok(cli(&data, &["apply", "-f", "-"], Some(&v2)));
    rolled_out(&data, "deploy/web");
    let history = ok(cli(&data, &["rollout", "history", "deployment/web"], None));
    assert_eq!(history, "deployment.apps/web \nREVISION  CHANGE-CAUSE\n1         <none>\n2         greet with v2\n\n");
    let one = ok(cli(&data, &["rollout", "history", "deployment", "web", "--revision", "1"], None));
    assert!(one.starts_with("deployment.apps/web with revision #1\nPod Template:\n"), "{one}");
    assert!(one.contains("Environment:\t<none>") && !one.contains("GREETING"), "{one}");
    let two = ok(cli(&data, &["rollout", "history", "deployments/web", "--revision=2"], None));
    assert!(two.contains("GREETING:\tv2") && two.contains("kubernetes.io/change-cause: greet with v2"), "{two}");

    // Undo puts revision 1's template back (without its hash label); it becomes revision 3.
    let bad = fails(cli(&data, &["rollout", "undo", "deployment/web", "--to-revision", "9"], None));
    assert!(bad.contains("error: unable to find specified revision 9 in history"), "{bad}");
    let undo = cli(&data, &["rollout", "undo", "deployment/web"], None);
    assert!(String::from_utf8_lossy(&undo.stderr).contains("previously managed with 'wasmkube apply'"));
    assert_eq!(ok(undo), "deployment.apps/web rolled back\n");
    let web = get_json(&data, &["deployment", "web"]);
    let template = &web["spec"]["template"];
    assert!(template["spec"]["containers"][0].get("env").is_none(), "{template}");
    assert_eq!(template["metadata"]["labels"], serde_json::json!({"app": "web"}), "{template}");
    rolled_out(&data, "deployment/web");
    let history = ok(cli(&data, &["rollout", "history", "deploy/web"], None));
    assert_eq!(history, "deployment.apps/web \nREVISION  CHANGE-CAUSE\n2         greet with v2\n3         <none>\n\n");
    let pods = get_json(&data, &["pods", "-l", "app=web"]);
    let running = pods["items"].as_array().cloned().unwrap_or_default();
    assert!(running.iter().all(|p| p["spec"]["containers"][0].get("env").is_none()), "old template runs: {pods}");

    // Pause refuses a restart; resume, then restart rolls out a new template.
    assert_eq!(ok(cli(&data, &["rollout", "pause", "deployment/web"], None)), "deployment.apps/web paused\n");
    let again = fails(cli(&data, &["rollout", "pause", "deployment/web"], None));
    assert!(again.contains("error: deployments.apps \"web\" is already paused"), "{again}");
    let refused = fails(cli(&data, &["rollout", "restart", "deployment/web"], None));
    assert!(refused.contains("can't restart paused deployment (run rollout resume first)"), "{refused}");
    assert_eq!(get_json(&data, &["deploy", "web"])["spec"]["paused"], true);
    assert_eq!(ok(cli(&data, &["rollout", "resume", "deploy", "web"], None)), "deployment.apps/web resumed\n");
    assert_eq!(ok(cli(&data, &["rollout", "restart", "deployment/web"], None)), "deployment.apps/web restarted\n");
    let web = get_json(&data, &["deploy", "web"]);
    let stamp = web["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].as_str();
    assert!(stamp.is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok()), "{web}");
    rolled_out(&data, "deployment/web");
    let once = ok(cli(&data, &["rollout", "status", "deployment/web", "--watch=false"], None));
    assert_eq!(once, "deployment \"web\" successfully rolled out\n");

    // Scale to zero and back through the scale subresource.
    let wrong = fails(cli(&data, &["scale", "deployment/web", "--current-replicas", "5", "--replicas", "1"], None));
    assert!(wrong.contains("Expected replicas to be 5, was 2"), "{wrong}");
    assert_eq!(ok(cli(&data, &["scale", "deployment/web", "--replicas", "0"], None)), "deployment.apps/web scaled\n");
    let pods_of_web = || get_json(&data, &["pods", "-l", "app=web"])["items"].as_array().map_or(0, Vec::len);
    wait_until(Duration::from_secs(60), "web's pods to go", || pods_of_web() == 0);
    rolled_out(&data, "deployment/web");
    assert_eq!(ok(cli(&data, &["scale", "--replicas=2", "deploy", "web"], None)), "deployment.apps/web scaled\n");
    rolled_out(&data, "deployment/web");
    assert_eq!(get_json(&data, &["deploy", "web"])["status"]["availableReplicas"], 2);
    let rs = ok(cli(&data, &["get", "rs", "-l", "app=web", "-o", "name"], None));
    assert!(rs.lines().count() >= 2, "old revisions are kept: {rs}");
}

#[test]
fn cordon_uncordon_and_drain_move_a_deployments_pods_off_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _up = Up::start(&data);
    ok(cli(&data, &["apply", "-f", "-"], Some(&hello_deployment("drained", 18302, None, None))));
    rolled_out(&data, "deployment/drained");
    let unschedulable = || get_json(&data, &["node", "local"])["spec"]["unschedulable"] == true;

    assert_eq!(ok(cli(&data, &["cordon", "local"], None)), "node/local cordoned\n");
    assert!(unschedulable());
    assert_eq!(ok(cli(&data, &["cordon", "node/local"], None)), "node/local already cordoned\n");
    assert_eq!(ok(cli(&data, &["uncordon", "local"], None)), "node/local uncordoned\n");
    assert!(!unschedulable());
    assert_eq!(ok(cli(&data, &["uncordon", "local"], None)), "node/local already uncordoned\n");

    // A pod no controller would recreate stops the drain unless --force.
    let bare = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bare\nspec:\n  containers:\n    - name: shell
      image: {}\n      args: [\"sleep:600000\"]\n",
        support::sample("inspect").display()
    );
    ok(cli(&data, &["apply", "-f", "-"], Some(&bare)));
    wait_until(Duration::from_secs(60), "bare to be scheduled", || {
        get_json(&data, &["pod", "bare"])["spec"]["nodeName"] == "local"
    });
    let refused = cli(&data, &["drain", "local"], None);
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "node/local cordoned\n");
    let stderr = fails(refused);
    assert!(
        stderr.contains(
            "error: unable to drain node \"local\" due to error: cannot delete Pods that declare no controller \
             (use --force to override): default/bare, continuing command..."
        ) && stderr.contains("There are pending nodes to be drained:\n local\n"),
        "{stderr}"
    );

    let owned: Vec<String> = get_json(&data, &["pods", "-l", "app=drained"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(owned.len(), 2, "{owned:?}");
    let drained = cli(&data, &["drain", "local", "--force", "--ignore-daemonsets", "--timeout", "2m"], None);
    let stderr = String::from_utf8_lossy(&drained.stderr).to_string();
    assert!(stderr.contains("Warning: deleting Pods that declare no controller: default/bare"), "{stderr}");
    let stdout = ok(drained);
    assert!(
        stdout.starts_with("node/local already cordoned\n") && stdout.ends_with("node/local drained\n"),
        "{stdout}"
    );
    // The server lists `pods/eviction`, so drain evicts (kubectl's lines for that path).
    for name in owned.iter().chain(std::iter::once(&"bare".to_string())) {
        let evicted = stdout.contains(&format!("evicting pod default/{name}\n"))
            && stdout.contains(&format!("pod/{name} evicted\n"));
        assert!(evicted, "{name}: {stdout}");
    }
    assert!(fails(cli(&data, &["get", "pod", "bare"], None)).contains("NotFound"), "bare pods are gone for good");

    // The ReplicaSet replaces its pods, but nothing can schedule them on the cordoned node.
    wait_until(Duration::from_secs(60), "replacement pods to be Pending as unschedulable", || {
        let pods = get_json(&data, &["pods", "-l", "app=drained"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        let unscheduled = |p: &serde_json::Value| {
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            let conditions = p["status"]["conditions"].as_array().cloned().unwrap_or_default();
            !owned.iter().any(|o| o == name)
                && p["status"]["phase"] == "Pending"
                && conditions.iter().any(|c| {
                    c["type"] == "PodScheduled"
                        && c["status"] == "False"
                        && c["reason"] == "Unschedulable"
                        && c["message"].as_str().is_some_and(|m| m.contains("node(s) were unschedulable"))
                })
        };
        items.len() == 2 && items.iter().all(unscheduled)
    });
    let waiting = ok(cli(&data, &["rollout", "status", "deployment/drained", "--watch=false"], None));
    assert!(
        waiting.starts_with(
            "Waiting for deployment \"drained\" rollout to finish: 0 of 2 updated replicas are available..."
        ),
        "{waiting}"
    );
    let timed_out = fails(cli(&data, &["rollout", "status", "deployment/drained", "--timeout", "1s"], None));
    assert!(timed_out.contains("error: timed out waiting for the condition"), "{timed_out}");

    assert_eq!(ok(cli(&data, &["uncordon", "local"], None)), "node/local uncordoned\n");
    rolled_out(&data, "deployment/drained");
    let pods = get_json(&data, &["pods", "-l", "app=drained"]);
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    assert!(items.len() == 2 && items.iter().all(|p| p["status"]["phase"] == "Running"), "{pods}");
}

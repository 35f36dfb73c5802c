//! Stock kubectl against `wasmkube up`, through the kubeconfig `up` writes: the scenarios a user
//! runs, checked by their output and exit codes as kubectl prints them against Kubernetes.
//!
//! kubectl must be installed (`.ci/run` installs it); where it is not, outside CI, the tests skip.
//! Every kubectl run gets the cluster's own `--cache-dir`, so discovery is really asked for.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::process::{Proc, path_str};

/// A `wasmkube up` and the files kubectl uses with it.
struct Cluster {
    _up: Proc,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Cluster {
    /// Starts `wasmkube up`, or returns `None` where kubectl is not installed (never under CI).
    fn start() -> Option<Self> {
        if Command::new("kubectl").args(["version", "--client"]).output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "kubectl must be installed under CI (.ci/run installs it)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let args = [
            "up",
            "--api-addr",
            "127.0.0.1:0",
            "--node-name",
            "local",
            "--node-api-port",
            "0",
            "--dns-addr",
            "off",
            "--data-dir",
            path_str(&data),
        ];
        let (up, _) = Proc::start("up", &args, dir.path().join("up.log"));
        Some(Cluster { _up: up, kubeconfig: data.join("kubeconfig"), dir })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        // Flags first: whatever follows a `--` in `args` belongs to the command.
        command
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(self.dir.path());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("kubectl runs")
    }

    /// Runs kubectl, expecting success; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs kubectl, expecting exit code `code`; its stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(code), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).expect("utf-8")
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write manifest");
        path.display().to_string()
    }
}

/// A child process killed and reaped when dropped, also when an assertion fails first.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The words of each line (column alignment is kubectl's business).
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines().map(|l| l.split_whitespace().map(String::from).collect()).collect()
}

/// Split on runs of two or more spaces, so multi-word headers (`NOMINATED NODE`) stay whole.
fn columns(line: &str) -> Vec<&str> {
    line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()
}

fn deployment(replicas: u32, containers: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      \
         containers:\n{containers}"
    )
}

const WEB: &str = "      - name: web\n        image: file:///web.wasm\n        env: [{name: A, value: \"1\"}, {name: B, value: \"2\"}]\n";
const SIDE: &str = "      - name: side\n        image: file:///side.wasm\n";

#[test]
fn discovery_is_aggregated_and_get_prints_kubernetes_columns() {
    let Some(c) = Cluster::start() else { return };
    // Aggregated discovery: two requests, no per-group-version ones.
    let out = c.run(&["get", "namespaces", "-v=6"]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("/api?timeout=32s") && log.contains("/apis?timeout=32s"), "{log}");
    assert!(!log.contains("/api/v1?timeout") && !log.contains("/apis/apps/v1?timeout"), "legacy discovery used: {log}");
    let ns = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(rows(&ns)[0], ["NAME", "STATUS", "AGE"]);
    assert!(rows(&ns).iter().any(|r| r[..2] == ["default", "Active"]), "{ns}");

    let resources = c.ok(&["api-resources"]);
    assert!(rows(&resources).contains(&["pods", "po", "v1", "true", "Pod"].map(String::from).to_vec()), "{resources}");
    assert!(rows(&resources).iter().any(|r| r[..2] == ["deployments", "deploy"] && r[2] == "apps/v1"), "{resources}");

    let services = c.ok(&["get", "svc", "-A"]);
    let lines: Vec<&str> = services.lines().collect();
    assert_eq!(columns(lines[0]), ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]);
    assert!(
        lines
            .iter()
            .any(|l| columns(l)[..6] == ["default", "kubernetes", "ClusterIP", "127.32.0.1", "<none>", "443/TCP"]),
        "{services}"
    );

    let nodes = c.ok(&["get", "nodes", "-o", "wide"]);
    let lines: Vec<&str> = nodes.lines().collect();
    assert_eq!(columns(lines[0])[..7], ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP"]);
    assert_eq!(columns(lines[1])[..2], ["local", "Ready"]);

    c.ok(&["apply", "-f", &c.write("d.yaml", &deployment(1, WEB))]);
    let wide = c.ok(&["get", "deploy", "-o", "wide"]);
    let lines: Vec<&str> = wide.lines().collect();
    assert_eq!(
        columns(lines[0]),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    );
    assert_eq!(columns(lines[1])[..2], ["web", "0/1"]);
    assert_eq!(columns(lines[1])[5..], ["web", "file:///web.wasm", "app=web"]);
    let labels = c.ok(&["get", "rs", "-l", "app=web", "--show-labels"]);
    assert!(labels.lines().next().is_some_and(|h| h.ends_with("LABELS")), "{labels}");
    assert!(labels.contains("app=web,pod-template-hash="), "{labels}");
    assert_eq!(c.ok(&["get", "deploy", "web", "-o", "name"]).trim(), "deployment.apps/web");

    // A watch prints the list, then one row per change, in the same columns.
    c.ok(&[
        "create",
        "-f",
        &c.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\ndata: {a: b}\n"),
    ]);
    let mut watch = Reaped(
        c.command(&["get", "configmaps", "-w"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("watch"),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.0.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let watched = |seen: &[String]| seen.iter().filter(|l| l.starts_with("watched ")).count();
    let mut seen = Vec::new();
    while watched(&seen) == 0 {
        seen.push(rx.recv_timeout(Duration::from_secs(20)).expect("the listed row"));
    }
    c.ok(&["patch", "configmap", "watched", "--type=merge", "-p", r#"{"data":{"c":"d"}}"#]);
    while watched(&seen) < 2 {
        seen.push(rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("no watch row in {seen:?}")));
    }
    drop(watch);
    let rows: Vec<Vec<&str>> = seen.iter().filter(|l| l.starts_with("watched ")).map(|l| columns(l)).collect();
    assert_eq!((rows[0][1], rows[1][1]), ("1", "2"), "{seen:?}");
    assert_eq!(columns(&seen[0]), ["NAME", "DATA", "AGE"]);
}

#[test]
fn apply_creates_updates_prunes_and_validates_like_kubernetes() {
    let Some(c) = Cluster::start() else { return };
    let file = c.write("d.yaml", &deployment(1, &format!("{WEB}{SIDE}")));
    assert_eq!(c.ok(&["apply", "-f", &file]).trim(), "deployment.apps/web created");
    assert_eq!(c.ok(&["apply", "-f", &file]).trim(), "deployment.apps/web unchanged");

    // Removing a container and an env var from the manifest removes them from the object: the
    // client computes a strategic merge patch from the served schemas, the server merges by name.
    let file = c.write("d.yaml", &deployment(1, &WEB.replace(", {name: B, value: \"2\"}", "")));
    assert_eq!(c.ok(&["apply", "-f", &file]).trim(), "deployment.apps/web configured");
    let containers = c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[*].name}"]);
    assert_eq!(containers, "web");
    let env = c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].env[*].name}"]);
    assert_eq!(env, "A");

    // Dry run and diff change nothing; diff exits 1 when there is a difference.
    let three = c.write("d3.yaml", &deployment(3, &WEB.replace(", {name: B, value: \"2\"}", "")));
    assert_eq!(
        c.ok(&["apply", "-f", &three, "--dry-run=server"]).trim(),
        "deployment.apps/web configured (server dry run)"
    );
    let diff = c.run(&["diff", "-f", &three]);
    assert_eq!(diff.status.code(), Some(1), "{}", String::from_utf8_lossy(&diff.stderr));
    let diff = String::from_utf8_lossy(&diff.stdout);
    assert!(diff.contains("-  replicas: 1") && diff.contains("+  replicas: 3"), "{diff}");
    assert!(!diff.contains("-  resourceVersion"), "a dry run keeps the resourceVersion: {diff}");
    assert_eq!(c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "1");

    // Unknown fields: refused by default (the server checks, as the OpenAPI says it will), a
    // warning with --validate=warn.
    let bad = c.write("bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\nbogusField: 1\n");
    let err = c.fails(&["apply", "-f", &bad], 1);
    assert_eq!(
        err.trim(),
        format!(
            "Error from server (BadRequest): error when creating \"{bad}\": strict decoding error: unknown field \"bogusField\""
        )
    );
    let out = c.run(&["apply", "-f", &bad, "--validate=warn"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Warning: unknown field \"bogusField\""));

    // explain reads the served schemas.
    let explained = c.ok(&["explain", "deployment.spec.replicas"]);
    assert!(
        explained.contains("KIND:       Deployment") && explained.contains("FIELD: replicas <integer>"),
        "{explained}"
    );
    let explained = c.ok(&["explain", "pods.spec.containers.name"]);
    assert!(explained.contains("FIELD: name <string>"), "{explained}");
}

#[test]
fn patch_edit_set_image_restart_label_and_scale() {
    let Some(c) = Cluster::start() else { return };
    c.ok(&["apply", "-f", &c.write("d.yaml", &deployment(1, &format!("{WEB}{SIDE}")))]);
    let get = |path: &str| c.ok(&["get", "deploy", "web", "-o", &format!("jsonpath={{{path}}}")]);

    assert_eq!(
        c.ok(&["set", "image", "deploy/web", "web=file:///v2.wasm"]).trim(),
        "deployment.apps/web image updated"
    );
    assert_eq!(get(".spec.template.spec.containers[*].image"), "file:///v2.wasm file:///side.wasm");
    assert_eq!(c.ok(&["rollout", "restart", "deploy/web"]).trim(), "deployment.apps/web restarted");
    assert!(!get(".spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt").is_empty());

    // The three patch types.
    let strategic =
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"C","value":"3"}]}]}}}}"#;
    assert_eq!(c.ok(&["patch", "deploy", "web", "-p", strategic]).trim(), "deployment.apps/web patched");
    assert_eq!(get(".spec.template.spec.containers[0].env[*].name"), "A B C");
    c.ok(&["patch", "deploy", "web", "--type=merge", "-p", r#"{"metadata":{"labels":{"tier":"front"}}}"#]);
    c.ok(&["patch", "deploy", "web", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#]);
    assert_eq!(get(".spec.replicas"), "2");
    assert_eq!(get(".metadata.labels.tier"), "front");

    // edit, non-interactively: kubectl sends the change as a strategic merge patch.
    let mut edit = c.command(&["edit", "deploy/web"]);
    edit.env("EDITOR", "sed -i s/replicas:.2/replicas:\\ 4/");
    let out = edit.output().expect("kubectl edit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(get(".spec.replicas"), "4");

    assert_eq!(c.ok(&["label", "deploy", "web", "team=a"]).trim(), "deployment.apps/web labeled");
    assert_eq!(c.ok(&["annotate", "deploy", "web", "note=x"]).trim(), "deployment.apps/web annotated");
    assert_eq!(c.ok(&["scale", "deploy/web", "--replicas=1"]).trim(), "deployment.apps/web scaled");
    assert_eq!(get(".spec.replicas"), "1");
    let err = c.fails(
        &["patch", "deploy", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#],
        1,
    );
    assert!(err.contains("does not contain declared merge key: name"), "{err}");
}

#[test]
fn create_generators_and_auth_can_i_send_protobuf() {
    let Some(c) = Cluster::start() else { return };
    // These commands send their objects only as protobuf.
    assert_eq!(c.ok(&["create", "namespace", "demo"]).trim(), "namespace/demo created");
    assert_eq!(
        c.ok(&["create", "configmap", "cfg", "--from-literal=k=v", "-n", "demo"]).trim(),
        "configmap/cfg created"
    );
    assert_eq!(
        c.ok(&["create", "secret", "generic", "sec", "--from-literal=k=v", "-n", "demo"]).trim(),
        "secret/sec created"
    );
    let created = c.ok(&["create", "deployment", "made", "--image=file:///made.wasm", "--replicas=0", "-n", "demo"]);
    assert_eq!(created.trim(), "deployment.apps/made created");
    assert_eq!(
        c.ok(&["create", "service", "clusterip", "svc", "--tcp=80:8080", "-n", "demo"]).trim(),
        "service/svc created"
    );

    assert_eq!(c.ok(&["get", "configmap", "cfg", "-n", "demo", "-o", "jsonpath={.data.k}"]), "v");
    assert_eq!(c.ok(&["get", "secret", "sec", "-n", "demo", "-o", "jsonpath={.data.k}"]), "dg==");
    let get = |path: &str| c.ok(&["get", "deploy", "made", "-n", "demo", "-o", &format!("jsonpath={{{path}}}")]);
    assert_eq!(get(".spec.replicas"), "0", "an explicit zero survives the protobuf body");
    assert_eq!(get(".spec.strategy.type"), "RollingUpdate", "an empty strategy is defaulted");
    let ports =
        c.ok(&["get", "svc", "svc", "-n", "demo", "-o", "jsonpath={.spec.ports[0].port}:{.spec.ports[0].targetPort}"]);
    assert_eq!(ports, "80:8080");
    let err = c.fails(&["create", "namespace", "demo"], 1);
    assert_eq!(err.trim(), "Error from server (AlreadyExists): namespaces \"demo\" already exists");

    assert_eq!(c.ok(&["auth", "can-i", "delete", "pods", "-n", "demo"]).trim(), "yes");
    let rules = c.ok(&["auth", "can-i", "--list"]);
    assert!(rows(&rules).iter().any(|r| r[..] == ["*.*", "[]", "[]", "[*]"]), "{rules}");

    let described = c.ok(&["describe", "deployment", "made", "-n", "demo"]);
    assert!(rows(&described).iter().any(|r| r[..] == ["StrategyType:", "RollingUpdate"]), "{described}");
    let node = c.ok(&["describe", "node", "local"]);
    assert!(node.contains("Non-terminated Pods:") && node.contains("PodCIDR:"), "{node}");
}

#[test]
fn top_reports_the_agents_measurements() {
    let Some(c) = Cluster::start() else { return };
    // A busy loop limited to half a core: its measured CPU must show, and stay near the limit.
    let image = format!("file://{}", support::sample("spinner").display());
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: spin, labels: {{app: spin}}}}\nspec:\n  containers:\n  - name: spin\n    \
         image: {image}\n    resources: {{limits: {{cpu: 500m}}}}\n"
    );
    c.ok(&["apply", "-f", &c.write("spin.yaml", &pod)]);
    c.ok(&["wait", "--for=jsonpath={.status.phase}=Running", "pod/spin", "--timeout=60s"]);

    let top = c.ok(&["top", "pod", "-l", "app=spin"]);
    let lines = rows(&top);
    assert_eq!(lines[0], ["NAME", "CPU(cores)", "MEMORY(bytes)"], "{top}");
    assert_eq!(lines[1][0], "spin", "{top}");
    let millicores: u64 = lines[1][1].trim_end_matches('m').parse().unwrap_or_else(|_| panic!("cpu in {top}"));
    assert!((100..=700).contains(&millicores), "a spinner limited to 500m measured {millicores}m");

    let containers = c.ok(&["top", "pod", "spin", "--containers"]);
    assert!(rows(&containers).iter().any(|r| r[..2] == ["spin", "spin"]), "{containers}");

    let nodes = c.ok(&["top", "node"]);
    let lines = rows(&nodes);
    assert_eq!(lines[0], ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"], "{nodes}");
    assert_eq!(lines[1][0], "local", "{nodes}");
    let node_millicores: u64 = lines[1][1].trim_end_matches('m').parse().unwrap_or_else(|_| panic!("cpu in {nodes}"));
    assert!(node_millicores >= 100, "the node runs the spinner: {nodes}");
    assert!(lines[1][3].ends_with("Mi"), "{nodes}");
    // Nodes by label: the node's own hostname label selects it, another selects nothing.
    let selected = c.ok(&["top", "node", "-l", "kubernetes.io/hostname=local"]);
    assert_eq!(rows(&selected)[1][0], "local", "{selected}");
    let none = c.run(&["top", "node", "-l", "kubernetes.io/hostname=elsewhere"]);
    assert!(!String::from_utf8_lossy(&none.stdout).contains("local"), "{none:?}");
}

#[test]
fn server_side_apply_owns_fields_conflicts_and_forces() {
    let Some(c) = Cluster::start() else { return };
    let both = c.write("ssa.yaml", &deployment(1, &format!("{WEB}{SIDE}")));
    assert_eq!(c.ok(&["apply", "--server-side", "-f", &both]).trim(), "deployment.apps/web serverside-applied");
    assert_eq!(c.ok(&["apply", "--server-side", "-f", &both]).trim(), "deployment.apps/web serverside-applied");
    let get = |path: &str| c.ok(&["get", "deploy", "web", "-o", &format!("jsonpath={{{path}}}")]);
    assert_eq!(get(".metadata.managedFields[0].manager"), "kubectl");
    assert_eq!(get(".metadata.managedFields[0].operation"), "Apply");

    // A container the manager stops applying is removed.
    let one = c.write("ssa1.yaml", &deployment(1, WEB));
    c.ok(&["apply", "--server-side", "-f", &one]);
    assert_eq!(get(".spec.template.spec.containers[*].name"), "web");

    // Another manager asking for other replicas conflicts, in Kubernetes' words, until it forces.
    let three = c.write("ssa3.yaml", &deployment(3, WEB));
    let err = c.fails(&["apply", "--server-side", "--field-manager=ops", "-f", &three], 1);
    assert!(err.starts_with("error: Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"), "{err}");
    assert_eq!(get(".spec.replicas"), "1");
    c.ok(&["apply", "--server-side", "--field-manager=ops", "--force-conflicts", "-f", &three]);
    assert_eq!(get(".spec.replicas"), "3");
    // Writes by other verbs own what they change, as in Kubernetes: a client-side apply's
    // replicas conflict with a server-side one.
    let csa = c.write("csa.yaml", &deployment(1, WEB).replace("name: web\nspec", "name: csa\nspec"));
    c.ok(&["apply", "-f", &csa]);
    let csa3 = c.write("csa3.yaml", &deployment(3, WEB).replace("name: web\nspec", "name: csa\nspec"));
    let err = c.fails(&["apply", "--server-side", "-f", &csa3], 1);
    assert!(err.contains("conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"), "{err}");

    // The forced fields changed hands: now the first manager's replicas conflict with "ops".
    let err = c.fails(&["apply", "--server-side", "-f", &one], 1);
    assert!(err.contains("conflict with \"ops\": .spec.replicas"), "{err}");
    assert_eq!(get(".spec.replicas"), "3");

    // The last-applied migration: once a server-side apply of the client-side applied manifest
    // succeeds, kubectl hands the client-side applier's fields to its own manager (a JSON patch
    // of managedFields), and the next server-side change conflicts with no one.
    c.ok(&["apply", "--server-side", "-f", &csa]);
    let managers = c.ok(&["get", "deploy", "csa", "-o", "jsonpath={.metadata.managedFields[*].manager}"]);
    assert!(!managers.contains("kubectl-client-side-apply"), "{managers}");
    c.ok(&["apply", "--server-side", "-f", &csa3]);
    // `kubectl scale` writes the scale subresource, whose manager then owns the replicas.
    c.ok(&["scale", "deploy", "csa", "--replicas=2"]);
    let err = c.fails(&["apply", "--server-side", "-f", &csa3], 1);
    assert!(
        err.contains("conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"),
        "{err}"
    );
}

/// A running `kubectl port-forward` and the local port it listens on.
struct Forward {
    child: Reaped,
    port: u16,
}

impl Cluster {
    /// Starts `kubectl port-forward TARGET :REMOTE` (extra env, e.g. to turn websockets off) and
    /// waits for the line naming the local port and the pod port it forwards to.
    fn port_forward(&self, target: &str, remote: u16, pod_port: u16, env: &[(&str, &str)]) -> Forward {
        let mut command = self.command(&["port-forward", "--address", "127.0.0.1", target, &format!(":{remote}")]);
        command.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = Reaped(command.spawn().expect("kubectl port-forward starts"));
        let mut line = String::new();
        let mut stdout = BufReader::new(child.0.stdout.take().expect("stdout"));
        stdout.read_line(&mut line).expect("read");
        // kubectl prints a line per connection; a closed pipe would kill it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        // "Forwarding from 127.0.0.1:40123 -> 8080"
        let port = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.0.kill();
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut child.0.stderr.take().expect("stderr"), &mut err);
                panic!("kubectl port-forward {target} printed {line:?}: {err}")
            });
        assert!(line.ends_with(&format!(" -> {pod_port}\n")), "{line}");
        Forward { child, port }
    }
}

/// One HTTP/1.1 request through a forwarded port; the whole answer.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the forwarded port");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer
}

#[test]
fn port_forward_reaches_http_handlers_and_socket_listeners_over_both_transports() {
    use std::io::{Read, Write};
    let Some(c) = Cluster::start() else { return };
    let hello = format!("file://{}", support::sample("hello").display());
    let echo = format!("file://{}", support::sample("echo").display());
    let manifests = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: hello, labels: {{app: hello}}}}\nspec:\n  containers:\n  - name: hello\n    \
         image: {hello}\n    env: [{{name: GREETING, value: forwarded}}]\n    ports: [{{name: http, containerPort: 8080}}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: hello}}\nspec:\n  selector: {{app: hello}}\n  \
         ports: [{{name: http, port: 80, targetPort: http}}]\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: echo}}\nspec:\n  containers:\n  - name: echo\n    image: {echo}\n    \
         args: [\"7007\"]\n    env: [{{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}]\n"
    );
    c.ok(&["apply", "-f", &c.write("forward.yaml", &manifests)]);
    c.ok(&["wait", "--for=condition=Ready", "pod/hello", "pod/echo", "--timeout=60s"]);

    // kubectl 1.31+ tunnels SPDY through a websocket; several connections share one session.
    let forward = c.port_forward("pod/hello", 8080, 8080, &[]);
    for _ in 0..3 {
        let answer = http_get(forward.port, "/");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("forwarded"), "{answer}");
    }
    drop(forward);

    // With websockets off kubectl upgrades to SPDY directly; a Service resolves to its pod and
    // its named target port.
    let forward = c.port_forward("svc/hello", 80, 8080, &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]);
    let answer = http_get(forward.port, "/");
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("forwarded"), "{answer}");
    drop(forward);

    // A guest's own wasi:sockets listener: bytes echo back, and a half-close travels both ways.
    let forward = c.port_forward("pod/echo", 7007, 7007, &[]);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", forward.port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut stream = stream.try_clone().expect("clone");
        let payload = payload.clone();
        std::thread::spawn(move || {
            stream.write_all(&payload).expect("send");
            stream.shutdown(std::net::Shutdown::Write).expect("half-close");
        })
    };
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).expect("the echo ends when our side ended");
    writer.join().expect("writer");
    assert!(echoed == payload, "echoed {} of {} bytes, or different ones", echoed.len(), payload.len());

    // Nothing listens on the port: the connection closes and kubectl prints the agent's error.
    let mut forward = c.port_forward("pod/echo", 9999, 9999, &[]);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", forward.port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut nothing = Vec::new();
    let _ = stream.read_to_end(&mut nothing);
    assert!(nothing.is_empty());
    let stderr = forward.child.0.stderr.take().expect("stderr");
    let err = read_until(stderr, Duration::from_secs(30), |l| l.contains("an error occurred forwarding")).join("\n");
    assert!(err.contains("error forwarding port 9999 to pod default/echo"), "{err}");
    assert!(err.contains("Connection refused") || err.contains("connection refused"), "{err}");
}

/// The value of the first `Key:  value` line (at any indentation) of `kubectl describe` output.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.trim_start().strip_prefix(key)?.strip_prefix(':')).map(str::trim)
}

/// Reads lines of a child's output until one satisfies `done`, or fails after `within`; all
/// lines read.
fn read_until(
    output: impl std::io::Read + Send + 'static,
    within: Duration,
    done: impl Fn(&str) -> bool + Send + 'static,
) -> Vec<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { return };
            let finished = done(&line);
            if sender.send(line).is_err() || finished {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + within;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match receiver.recv_timeout(left) {
            Ok(line) => lines.push(line),
            // The reader thread returns after the line that satisfied `done`.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return lines,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("no expected line within {within:?}: {lines:?}"),
        }
    }
}

#[test]
fn logs_exec_describe_events_wait_and_delete() {
    let Some(c) = Cluster::start() else { return };
    let inspect = format!("file://{}", support::sample("inspect").display());
    let manifests = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: box, labels: {{app: box}}}}\nspec:\n  containers:\n  - name: box\n    \
         image: {inspect}\n    args: [\"echo:first\", \"warn:to-stderr\", \"sleep:3000\", \"echo:second\", \"sleep:600000\"]\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: crash}}\nspec:\n  containers:\n  - name: crash\n    \
         image: {inspect}\n    args: [\"echo:ran\", \"exit:1\"]\n\
         ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: talker}}\nspec:\n  selector: {{matchLabels: {{app: talker}}}}\n  \
         template:\n    metadata: {{labels: {{app: talker}}}}\n    spec:\n      containers:\n      - name: talker\n        \
         image: {inspect}\n        args: [\"echo:deployed\", \"sleep:600000\"]\n"
    );
    c.ok(&["apply", "-f", &c.write("box.yaml", &manifests)]);
    c.ok(&["wait", "--for=condition=Ready", "pod/box", "--timeout=60s"]);
    assert_eq!(
        c.ok(&["rollout", "status", "deploy/talker", "--timeout=60s"]).lines().last(),
        Some("deployment \"talker\" successfully rolled out")
    );

    // logs: both streams, -f until a later line, --tail, a workload's pod, the previous run.
    let mut follow = Reaped(c.command(&["logs", "-f", "box"]).stdout(Stdio::piped()).spawn().expect("logs -f"));
    let stdout = follow.0.stdout.take().expect("stdout piped");
    let lines = read_until(stdout, Duration::from_secs(30), |l| l == "second");
    assert_eq!(lines, ["first", "to-stderr", "second"]);
    drop(follow);
    assert_eq!(c.ok(&["logs", "box", "--tail=1"]), "second\n");
    assert_eq!(c.ok(&["logs", "deploy/talker"]), "deployed\n");
    c.ok(&[
        "wait",
        "--for=jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode}=1",
        "pod/crash",
        "--timeout=60s",
    ]);
    assert_eq!(c.ok(&["logs", "crash", "--previous"]), "ran\n");
    let err = c.fails(&["logs", "box", "--previous"], 1);
    assert_eq!(
        err.trim(),
        "Error from server (BadRequest): previous terminated container \"box\" in pod \"box\" not found"
    );
    let err = c.fails(&["logs", "nosuch"], 1);
    // kubectl's own wording for a missing pod: it reads the pod before its log.
    assert_eq!(err.trim(), "error: error from server (NotFound): pods \"nosuch\" not found in namespace \"default\"");

    // exec: stdin through, and the command's exit code as kubectl's own.
    let input = std::fs::File::open(c.write("input.txt", "shout\n")).expect("input");
    let out = c.command(&["exec", "-i", "box", "--", "upper"]).stdin(input).output().expect("exec");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SHOUT\n");
    // (A WASI p2 command exits with success or failure: its failures are code 1.)
    let err = c.fails(&["exec", "box", "--", "exit:1"], 1);
    assert_eq!(err.trim(), "command terminated with exit code 1");

    // attach: the running process's output from now on, both streams, until it ends ...
    let attached = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: ticker}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: ticker\n    \
         image: {inspect}\n    args: [\"sleep:2000\", \"echo:tick-1\", \"sleep:2000\", \"warn:tock\", \"echo:tick-2\"]\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: ears}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: ears\n    \
         image: {inspect}\n    args: [\"upper\"]\n    stdin: true\n    stdinOnce: true\n"
    );
    c.ok(&["apply", "-f", &c.write("attach.yaml", &attached)]);
    c.ok(&["wait", "--for=condition=Ready", "pod/ticker", "pod/ears", "--timeout=60s"]);
    let out = c.run(&["attach", "ticker"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("tick-2\n"), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("tock\n"), "{out:?}");
    // ... and, for a container with stdin, its input: stdinOnce ends it with the session.
    let input = std::fs::File::open(c.write("whisper.txt", "whisper\n")).expect("input");
    let out = c.command(&["attach", "-i", "ears"]).stdin(input).output().expect("attach");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "WHISPER\n");
    c.ok(&["wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/ears", "--timeout=60s"]);
    let err = c.fails(&["attach", "-i", "box"], 1);
    assert!(err.contains("stdin"), "{err}");

    // describe reads the object, its events (by involvedObject fields) and, for nodes, its pods.
    let pod = c.ok(&["describe", "pod", "box"]);
    assert_eq!(field(&pod, "Name"), Some("box"), "{pod}");
    assert_eq!(field(&pod, "Status"), Some("Running"), "{pod}");
    assert_eq!(field(&pod, "Service Account"), Some("default"), "{pod}");
    assert_eq!(field(&pod, "Priority"), Some("0"), "{pod}");
    assert_eq!(field(&pod, "Ready"), Some("True"), "{pod}");
    let events = pod.split_once("\nEvents:\n").map(|(_, e)| rows(e)).unwrap_or_else(|| panic!("{pod}"));
    assert_eq!(events[0], ["Type", "Reason", "Age", "From", "Message"], "{pod}");
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(events.iter().any(|e| e.get(1).is_some_and(|r| r == reason)), "{reason} in {pod}");
    }
    c.ok(&["create", "service", "clusterip", "talker", "--tcp=80:8080"]);
    let svc = c.ok(&["describe", "svc", "talker"]);
    assert_eq!(field(&svc, "Type"), Some("ClusterIP"), "{svc}");
    assert_eq!(field(&svc, "Port"), Some("80-8080  80/TCP"), "{svc}");
    assert_eq!(field(&svc, "TargetPort"), Some("8080/TCP"), "{svc}");
    assert!(field(&svc, "Endpoints").is_some_and(|e| e.ends_with(":8080")), "{svc}");
    let node = c.ok(&["describe", "node", "local"]);
    assert_eq!(field(&node, "Name"), Some("local"), "{node}");
    let pods = node.split_once("Non-terminated Pods:").map(|(_, p)| p).unwrap_or_else(|| panic!("{node}"));
    assert!(pods.contains(" box ") && pods.contains(" talker-"), "{node}");
    let deploy = c.ok(&["describe", "deploy", "talker"]);
    assert!(deploy.contains("NewReplicaSet:") && deploy.contains("talker-"), "{deploy}");

    // events: the cluster's, and one object's.
    let events = c.ok(&["events", "--for", "pod/crash"]);
    assert!(rows(&events)[0][..3] == ["LAST", "SEEN", "TYPE"], "{events}");
    assert!(events.contains("BackOff") || events.contains("Started"), "{events}");
    assert!(!events.contains("pod/box"), "{events}");

    // delete waits for the pod to be gone; wait --for=delete watches a deployment's pods go.
    assert_eq!(c.ok(&["delete", "pod", "box"]).trim(), "pod \"box\" deleted");
    let err = c.fails(&["get", "pod", "box"], 1);
    assert_eq!(err.trim(), "Error from server (NotFound): pods \"box\" not found");
    c.ok(&["delete", "deploy", "talker", "--wait=false"]);
    c.ok(&["wait", "--for=delete", "pod", "-l", "app=talker", "--timeout=60s"]);
    assert_eq!(c.ok(&["get", "pods", "-l", "app=talker", "-o", "name"]), "");
}

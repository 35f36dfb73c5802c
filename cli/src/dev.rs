//! `wasmkube dev -f MANIFESTS [--watch PATH…] [--build CMD] [--cleanup]`: the inner loop. It
//! applies the manifests with every pod template opted in to in-place swaps
//! (`wasmkube.dev/hot-swap: "true"`), then watches the sources; on each change (debounced) it
//! runs the build, pushes the rebuilt binaries the manifests name as local paths, applies again
//! (each binary's new digest is a new image) and waits for the workloads' pods to report it: the
//! agents swap the running containers in place, so no request fails and the pods keep their names
//! and IPs. One status line per change says how long the build, the push and the swap took; a
//! failed build prints the compiler's output as it is and keeps the running version, and so does
//! a new version the agents refuse (their `SwapFailed` reason is shown).
//!
//! Defaults: the watched path is the Cargo project that builds the first local binary (the
//! nearest directory above it, outside `target/`, with a `Cargo.toml`), and the build is
//! `cargo build --release --target wasm32-wasip2` there. Ctrl-C leaves the cluster as it is; with
//! `--cleanup` it first deletes what dev applied.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};

use crate::error::Error;
use crate::manifest::{self, Document};
use crate::{ClientOptions, apply, config, local_images, resource};

/// The annotation that opts a pod (template) in to in-place swaps.
pub const HOT_SWAP: &str = "wasmkube.dev/hot-swap";
/// Quiet time after the last file event before a build starts. An editor's save is a burst of
/// events (write a temp file, rename, chmod) a few milliseconds apart; every millisecond here is
/// added to each edit, and a file written after the build started starts another round anyway.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How long a swap may take to show on every pod before dev says so and goes on.
const SWAP_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_BUILD: &str = "cargo build --release --target wasm32-wasip2";

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Manifest file or directory (as for `apply`); repeatable.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|DIR")]
    pub files: Vec<String>,
    /// A file or directory whose changes trigger a rebuild; repeatable (default: the Cargo project
    /// of the first local binary the manifests name). `target/` and `.git/` are ignored.
    #[arg(long = "watch", value_name = "PATH")]
    pub watch: Vec<PathBuf>,
    /// The build command, run by `sh -c` in the first watched directory (default for a Cargo
    /// project: `cargo build --release --target wasm32-wasip2`).
    #[arg(long = "build", value_name = "CMD")]
    pub build: Option<String>,
    /// On Ctrl-C, delete what dev applied (by default it stays as it is).
    #[arg(long)]
    pub cleanup: bool,
}

/// Opts every pod and pod template of the documents in to in-place swaps.
pub fn opt_in(documents: &mut [Document]) {
    for document in documents {
        let path: &[&str] = match document.kind.kind {
            "Pod" => &["metadata"],
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => &["spec", "template", "metadata"],
            _ => continue,
        };
        let mut node = &mut document.object;
        for part in path {
            if !node.is_object() {
                break;
            }
            node = node.as_object_mut().expect("checked").entry(*part).or_insert_with(|| json!({}));
        }
        let annotations = node.as_object_mut().map(|m| m.entry("annotations").or_insert_with(|| json!({})));
        if let Some(annotations) = annotations.and_then(Value::as_object_mut) {
            annotations.insert(HOT_SWAP.into(), json!("true"));
        }
    }
}

/// The Cargo project that builds `binary`: the nearest directory above it, outside `target/`,
/// holding a `Cargo.toml`.
pub fn project_of(binary: &Path) -> Option<PathBuf> {
    let mut inside_target = false;
    for dir in binary.ancestors().skip(1) {
        if dir.file_name().is_some_and(|n| n == "target") {
            inside_target = true;
            continue;
        }
        if (inside_target || !binary.components().any(|c| c.as_os_str() == "target"))
            && dir.join("Cargo.toml").is_file()
        {
            return Some(dir.to_path_buf());
        }
    }
    None
}

/// Whether a changed path is one dev reacts to (not build output or version control).
fn relevant(path: &Path) -> bool {
    !path.components().any(|c| matches!(c.as_os_str().to_str(), Some("target" | ".git")))
}

pub async fn run(args: &DevArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    let mut documents = read(args)?;
    let binaries = local_images::files(&local_images::find(&documents)?);
    let watched: Vec<PathBuf> = if args.watch.is_empty() {
        let project = binaries.first().and_then(|b| project_of(&absolute(b))).ok_or_else(|| {
            Error::Usage(
                "nothing to watch: the manifests name no local .wasm built by a Cargo project; pass --watch".into(),
            )
        })?;
        vec![project]
    } else {
        args.watch.iter().map(|p| absolute(p)).collect()
    };
    let build_dir = watched
        .iter()
        .map(|p| if p.is_dir() { p.clone() } else { p.parent().map(Path::to_path_buf).unwrap_or_default() })
        .next()
        .unwrap_or_else(|| PathBuf::from("."));
    let build = args.build.clone().unwrap_or_else(|| DEFAULT_BUILD.to_string());

    let cluster = config::connect(options).await?;
    let namespace = cluster.namespace_for(options);
    let client = cluster.client.clone();
    manifest::assign_namespaces(&mut documents, &cluster.namespace, options.namespace.as_deref())?;
    let applied = deploy(&client, &namespace, &mut documents, out).await?;
    let names: Vec<String> = watched.iter().map(|p| p.display().to_string()).collect();
    writeln!(out, "watching {} (build: {build}); Ctrl-C to stop", names.join(", "))?;
    out.flush()?;

    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, notify::EventKind::Access(_))
        {
            for path in event.paths.into_iter().filter(|p| relevant(p)) {
                let _ = events_tx.send(path);
            }
        }
    })
    .map_err(|e| Error::Usage(format!("watching files: {e}")))?;
    for path in &watched {
        use notify::Watcher;
        watcher
            .watch(path, notify::RecursiveMode::Recursive)
            .map_err(|e| Error::Usage(format!("watching {}: {e}", path.display())))?;
    }

    // A file saved while the last build ran, which that build may have missed.
    let mut carried: Option<PathBuf> = None;
    loop {
        let first = match carried.take() {
            Some(path) => path,
            None => tokio::select! {
                path = events.recv() => match path { Some(path) => path, None => break },
                _ = tokio::signal::ctrl_c() => break,
            },
        };
        let saved = Instant::now();
        // Debounce: wait for a quiet spell, then build once for the whole burst.
        let mut changed: HashSet<PathBuf> = HashSet::from([first]);
        while let Ok(Some(path)) = tokio::time::timeout(DEBOUNCE, events.recv()).await {
            changed.insert(path);
        }
        let shown = changed.iter().next().map(|p| p.display().to_string()).unwrap_or_default();
        writeln!(
            out,
            "changed: {shown}{}",
            if changed.len() > 1 { format!(" (+{})", changed.len() - 1) } else { String::new() }
        )?;
        out.flush()?;
        let building = std::time::SystemTime::now();
        if let Err(e) = cycle(&client, &namespace, args, (&build, &build_dir), saved, out).await {
            writeln!(out, "✗ {e}")?;
        }
        out.flush()?;
        // Events that came in meanwhile: late echoes of the same save are dropped, while a file
        // written since the build started starts the next round.
        while let Ok(path) = events.try_recv() {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified());
            if carried.is_none() && modified.is_ok_and(|at| at >= building) {
                carried = Some(path);
            }
        }
    }
    drop(watcher);
    if args.cleanup {
        for (kind, namespace, name) in applied.iter().rev() {
            let api = resource::api(client.clone(), kind, namespace.as_deref());
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => writeln!(out, "{}/{name} deleted", kind.qualified_singular())?,
                Err(e) => writeln!(out, "{}/{name}: {}", kind.qualified_singular(), crate::error::render(&e))?,
            }
        }
    }
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn read(args: &DevArgs) -> Result<Vec<Document>, Error> {
    let mut documents = manifest::read(&args.files)?;
    if documents.is_empty() {
        return Err(Error::Usage("no objects passed to dev".to_string()));
    }
    opt_in(&mut documents);
    Ok(documents)
}

type AppliedObject = (&'static wasmkube_api::Kind, Option<String>, String);

/// Pushes the local binaries and applies the documents; what was applied.
async fn deploy(
    client: &kube::Client,
    namespace: &str,
    documents: &mut [Document],
    out: &mut impl Write,
) -> Result<Vec<AppliedObject>, Error> {
    let images = local_images::find(documents)?;
    let notes = local_images::push_and_rewrite(client, documents, images).await?;
    for note in notes {
        writeln!(out, "{note}")?;
    }
    let objects: Vec<AppliedObject> = documents
        .iter()
        .map(|d| (d.kind, d.namespace().map(String::from).or(Some(namespace.to_string())), d.name().to_string()))
        .collect();
    let summary = apply::apply(client.clone(), namespace, documents.to_vec(), out).await?;
    if let Some(error) = summary.errors.last() {
        return Err(Error::Request(error.clone()));
    }
    Ok(objects)
}

/// One change: build, push and apply, then wait for the swaps. The status line on success.
async fn cycle(
    client: &kube::Client,
    namespace: &str,
    args: &DevArgs,
    (build, dir): (&str, &Path),
    saved: Instant,
    out: &mut impl Write,
) -> Result<(), String> {
    let started = Instant::now();
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(build)
        .current_dir(dir)
        .output()
        .await
        .map_err(|e| format!("running the build ({build}): {e}"))?;
    let built = started.elapsed();
    if !output.status.success() {
        let _ = out.write_all(&output.stdout);
        let _ = out.write_all(&output.stderr);
        return Err(format!("build failed in {built:.2?} ({}); still serving the previous version", output.status));
    }

    let pushed_at = Instant::now();
    let mut documents = read(args).map_err(|e| e.to_string())?;
    manifest::assign_namespaces(&mut documents, namespace, None).map_err(|e| e.to_string())?;
    let images = local_images::find(&documents).map_err(|e| e.to_string())?;
    // Refusals known before the apply are old news; they are looked up while the push runs.
    let (pushing, before) =
        tokio::join!(local_images::push_and_rewrite(client, &mut documents, images), refusals(client, namespace));
    pushing.map_err(|e| e.to_string())?;
    let pushed = pushed_at.elapsed();
    let mut quiet = Vec::new();
    let summary =
        apply::apply(client.clone(), namespace, documents.clone(), &mut quiet).await.map_err(|e| e.to_string())?;
    if let Some(error) = summary.errors.last() {
        return Err(error.clone());
    }
    let changed: Vec<&Document> = documents
        .iter()
        .zip(&summary.applied)
        .filter(|(_, applied)| applied.action != apply::Action::Unchanged)
        .map(|(d, _)| d)
        .collect();
    if changed.is_empty() {
        let line = format!("✓ build {built:.2?} · nothing changed to serve");
        return writeln!(out, "{line}").map_err(|e| e.to_string());
    }

    let swap_started = Instant::now();
    let pods = wait_for_swaps(client, namespace, &changed, &before).await?;
    let line = format!(
        "✓ build {built:.2?} · push {pushed:.2?} · swapped {pods} pod{} in {:.2?} · {:.2?} from save (without the build)",
        if pods == 1 { "" } else { "s" },
        swap_started.elapsed(),
        saved.elapsed().saturating_sub(built),
    );
    writeln!(out, "{line}").map_err(|e| e.to_string())
}

/// The containers' wanted images of a workload document: container name → image.
fn wanted_images(document: &Document) -> BTreeMap<String, String> {
    let spec = match document.kind.kind {
        "Pod" => document.object.get("spec"),
        _ => document.object.pointer("/spec/template/spec"),
    };
    spec.and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c.get("name")?.as_str()?.to_string(), c.get("image")?.as_str()?.to_string())))
        .collect()
}

/// The pods a workload document runs: by name for a Pod, by its selector's labels otherwise.
async fn pods_of(client: &kube::Client, namespace: &str, document: &Document) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), document.namespace().unwrap_or(namespace));
    if document.kind.kind == "Pod" {
        return api.get_opt(document.name()).await.ok().flatten().into_iter().collect();
    }
    let labels = document
        .object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    if labels.is_empty() {
        return Vec::new();
    }
    api.list(&ListParams::default().labels(&labels)).await.map(|l| l.items).unwrap_or_default()
}

/// `SwapFailed` events by (pod, count): a new entry or a higher count is a new refusal.
async fn refusals(client: &kube::Client, namespace: &str) -> BTreeMap<String, (i32, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    // Selected by the server: this runs every poll while a swap is awaited, and the namespace
    // may hold many other events.
    let only_refusals = ListParams::default().fields("reason=SwapFailed");
    let list = events.list(&only_refusals).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .map(|e| {
            let key = e.metadata.name.clone().unwrap_or_default();
            (key, (e.count.unwrap_or(1), e.message.unwrap_or_default()))
        })
        .collect()
}

/// Waits until every pod of the changed workloads reports the new images (ready), or an agent
/// refuses the new version; the number of pods swapped.
async fn wait_for_swaps(
    client: &kube::Client,
    namespace: &str,
    changed: &[&Document],
    before: &BTreeMap<String, (i32, String)>,
) -> Result<usize, String> {
    let deadline = Instant::now() + SWAP_TIMEOUT;
    loop {
        let mut done = 0;
        let mut all = true;
        for document in changed {
            let wanted = wanted_images(document);
            let pods = pods_of(client, namespace, document).await;
            let swapped = |pod: &Pod| {
                let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
                wanted
                    .iter()
                    .all(|(name, image)| statuses.iter().any(|s| &s.name == name && &s.image == image && s.ready))
            };
            let live: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            all &= !live.is_empty() && live.iter().all(|p| swapped(p));
            done += live.iter().filter(|p| swapped(p)).count();
        }
        if all {
            return Ok(done);
        }
        let now = refusals(client, namespace).await;
        if let Some((_, (_, message))) = now.iter().find(|(k, v)| before.get(*k).is_none_or(|(count, _)| v.0 > *count))
        {
            return Err(format!("the new version was refused; still serving the previous one: {message}"));
        }
        if Instant::now() > deadline {
            return Err(format!("the pods did not report the new version within {SWAP_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_are_found_above_their_target_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = dir.path().join("samples");
        let binary = project.join("target/wasm32-wasip2/release/hello.wasm");
        std::fs::create_dir_all(binary.parent().expect("parent")).expect("dirs");
        std::fs::write(project.join("Cargo.toml"), "[workspace]\n").expect("manifest");
        assert_eq!(project_of(&binary), Some(project.clone()));
        assert_eq!(project_of(&dir.path().join("loose.wasm")), None);
        assert!(relevant(&project.join("hello/src/main.rs")));
        assert!(!relevant(&binary));
        assert!(!relevant(&project.join(".git/index")));
    }
}

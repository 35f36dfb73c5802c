//! In-place swaps of a wasi:http container's version. A pod annotated
//! `wasmkube.dev/hot-swap: "true"` whose container image changes (the pod spec's `image`, which
//! Kubernetes lets an update change) keeps running: the agent pulls and compiles the new image,
//! sends the new version one trial request, and only if that succeeds makes it the version new
//! requests get. Requests already running finish on the old one; the pod keeps its name, IP and
//! listener, and its container status reports the new image. A version that is not a wasi:http
//! handler, fails to compile or instantiate, or traps on its trial request is refused with a
//! `SwapFailed` event, and the old version goes on serving.
//!
//! Without the annotation, and for containers that are not handlers, the container is restarted
//! with the new image, as Kubernetes does (`container::run`).

use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::container::Spec;
use super::sandbox::{PodContext, Shared};
use crate::host::http::Handler;
use crate::host::{Host, HostError, Workload};

/// The annotation a pod opts in with (`"true"`).
pub const ANNOTATION: &str = "wasmkube.dev/hot-swap";

/// Whether the pod opted in to in-place swaps.
pub fn opted_in(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION)).is_some_and(|v| v == "true")
}

/// A swapped-in version running baseline code, whose optimised code is being compiled.
struct Optimising {
    /// The replacement that put the baseline version in (see `CurrentVersion`).
    number: u64,
    image: String,
    started: Instant,
    task: JoinHandle<Result<(String, Workload, crate::host::Source), HostError>>,
}

/// Swaps the container's handler to each new image its (opted-in) pod asks for, until `stop`
/// fires.
pub async fn follow(pod: &PodContext, spec: &Spec, shared: &Shared, handler: Handler, stop: CancellationToken) {
    let mut wanted = shared.wanted_image(spec.index);
    let mut serving = spec.image.clone();
    // A change that came while this run pulled and compiled is not missed.
    if *wanted.borrow() != serving {
        wanted.mark_changed();
    }
    let mut optimising: Option<Optimising> = None;
    loop {
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            done = async {
                match optimising.as_mut() {
                    Some(o) => (&mut o.task).await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(o) = optimising.take() else { continue };
                recompiled(pod, spec, &handler, o, done).await;
                continue;
            }
            _ = stop.cancelled() => return,
        }
        let image = wanted.borrow_and_update().clone();
        if image == serving {
            continue;
        }
        match swap(pod, spec, shared, &handler, &image).await {
            Ok(swapped) => {
                serving = image;
                pod.event("Normal", "Swapped", &swapped.message).await;
                // A version optimised for an image since swapped out is not waited for; its code
                // still lands in the compile cache.
                optimising = swapped.optimise;
            }
            Err(why) => {
                let message = format!("Kept serving image \"{serving}\" in container {}: {why}", spec.name);
                pod.event("Warning", "SwapFailed", &message).await;
            }
        }
    }
}

/// A swap that serves: the event message, and the optimising still to do if it serves baseline code.
struct Swapped {
    message: String,
    optimise: Option<Optimising>,
}

/// One swap: the new version, tried, then serving. A version not compiled yet is compiled to
/// baseline code first, which serves until Cranelift's optimised code replaces it (tens of
/// milliseconds instead of hundreds, on the path from a save to the new version serving).
async fn swap(
    pod: &PodContext,
    spec: &Spec,
    shared: &Shared,
    handler: &Handler,
    image: &str,
) -> Result<Swapped, String> {
    let started = Instant::now();
    let pulled = pod.puller.pull(image).await.map_err(|e| format!("pulling image \"{image}\": {e}"))?;
    let pulled_in = started.elapsed();
    let host = pod.host.clone();
    let bytes = std::sync::Arc::new(pulled.bytes);
    let compiling = Instant::now();
    let (digest, workload, baseline) = tokio::task::spawn_blocking({
        let bytes = bytes.clone();
        move || {
            let digest = Host::digest(&bytes);
            if !host.is_compiled(&digest)
                && let Some(workload) = host.prepare_baseline(&bytes, &digest)
            {
                return Ok((digest, workload, true));
            }
            host.prepare(&bytes).map(|(digest, workload, _)| (digest, workload, false)).map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(|e| e.to_string())??;
    let compiled_in = compiling.elapsed();
    let Workload::Http(pre) = workload else {
        return Err(format!("image \"{image}\" is a {}, not a wasi:http handler", workload.kind()));
    };
    let path = trial_path(&spec.container);
    let trying = Instant::now();
    if let Err(e) = handler.trial(pre.clone(), &path).await {
        return Err(format!("the new version failed its trial request GET {path}: {e:#}"));
    }
    let tried_in = trying.elapsed();
    let number = handler.pre.replace(pre);
    let image_id = pulled.image_id;
    shared.update(spec.index, |s| {
        s.image = image.to_string();
        s.image_id = image_id;
    });
    let code = if baseline { "baseline code; optimised code follows" } else { "optimised code" };
    let message = format!(
        "Swapped container {} to image \"{image}\" in place ({digest}) in {:.2?}: pulled in {pulled_in:.2?}, \
         compiled in {compiled_in:.2?} ({code}), tried in {tried_in:.2?}",
        spec.name,
        started.elapsed(),
    );
    let optimise = baseline.then(|| {
        let host = pod.host.clone();
        Optimising {
            number,
            image: image.to_string(),
            started: Instant::now(),
            task: tokio::task::spawn_blocking(move || host.prepare(&bytes)),
        }
    });
    Ok(Swapped { message, optimise })
}

/// The optimised code of the version serving as baseline code is ready: it takes over, unless
/// another version was swapped in meanwhile.
async fn recompiled(
    pod: &PodContext,
    spec: &Spec,
    handler: &Handler,
    o: Optimising,
    done: Result<Result<(String, Workload, crate::host::Source), HostError>, tokio::task::JoinError>,
) {
    match done {
        Ok(Ok((_, Workload::Http(pre), _))) => {
            if handler.pre.replace_if_current(o.number, pre) {
                let message = format!(
                    "Container {} serves optimised code for image \"{}\" (compiled in {:.2?})",
                    spec.name,
                    o.image,
                    o.started.elapsed()
                );
                pod.event("Normal", "Recompiled", &message).await;
            }
        }
        // Baseline code that compiled and served, but optimised code that does not: the
        // baseline version goes on serving, and a restart will report the error.
        Ok(Ok((_, workload, _))) => {
            tracing::warn!(pod = %pod.name, container = %spec.name, kind = workload.kind(), "optimised code is not a handler");
        }
        Ok(Err(e)) => {
            let message = format!("Container {} keeps baseline code for image \"{}\": {e}", spec.name, o.image);
            pod.event("Warning", "RecompileFailed", &message).await;
        }
        Err(e) => {
            tracing::warn!(pod = %pod.name, container = %spec.name, error = %e, "optimising compile did not finish")
        }
    }
}

/// Where the trial request goes: the readiness (else liveness) probe's path, else `/`.
fn trial_path(container: &Container) -> String {
    [&container.readiness_probe, &container.liveness_probe]
        .into_iter()
        .flatten()
        .find_map(|probe| probe.http_get.as_ref()?.path.clone())
        .filter(|p| p.starts_with('/'))
        .unwrap_or_else(|| "/".to_string())
}

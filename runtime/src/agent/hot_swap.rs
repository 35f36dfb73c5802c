//! In-place swaps of a wasi:http container's version. A pod annotated
//! `wasmkube.dev/hot-swap: "true"` whose container image changes (the pod spec's `image`, which
//! Kubernetes lets an update change) keeps running: the agent pulls and compiles the new image,
//! sends the new version one trial request, and only if that succeeds makes it the version new
//! requests get. Requests already running finish on the old one; the pod keeps its name, IP and
//! listener, and its container status reports the new image. A version that is not a wasi:http
//! handler, fails to compile or instantiate, or traps on its trial request is refused with a
//! `SwapFailed` event, and the old version goes on serving.
//!
//! Without the annotation an image change is left to the workload's rollout, as before.

use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio_util::sync::CancellationToken;

use super::container::Spec;
use super::sandbox::{PodContext, Shared};
use crate::host::Workload;
use crate::host::http::Handler;

/// The annotation a pod opts in with (`"true"`).
pub const ANNOTATION: &str = "wasmkube.dev/hot-swap";

/// Whether the pod opted in to in-place swaps.
pub fn opted_in(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION)).is_some_and(|v| v == "true")
}

/// Swaps the container's handler to each new image its pod asks for, until `stop` fires.
pub async fn follow(pod: &PodContext, spec: &Spec, shared: &Shared, handler: Handler, stop: CancellationToken) {
    let mut wanted = shared.wanted_image(spec.index);
    let mut serving = spec.image.clone();
    loop {
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
        let image = wanted.borrow_and_update().clone();
        if image == serving {
            continue;
        }
        match swap(pod, spec, shared, &handler, &image).await {
            Ok(message) => {
                serving = image;
                pod.event("Normal", "Swapped", &message).await;
            }
            Err(why) => {
                let message = format!("Kept serving image \"{serving}\" in container {}: {why}", spec.name);
                pod.event("Warning", "SwapFailed", &message).await;
            }
        }
    }
}

/// One swap: the new version, tried, then serving. The event message on success.
async fn swap(
    pod: &PodContext,
    spec: &Spec,
    shared: &Shared,
    handler: &Handler,
    image: &str,
) -> Result<String, String> {
    let started = Instant::now();
    let pulled = pod.puller.pull(image).await.map_err(|e| format!("pulling image \"{image}\": {e}"))?;
    let host = pod.host.clone();
    let bytes = pulled.bytes;
    let (digest, workload, _) = tokio::task::spawn_blocking(move || host.prepare(&bytes).map_err(|e| e.to_string()))
        .await
        .map_err(|e| e.to_string())??;
    let Workload::Http(pre) = workload else {
        return Err(format!("image \"{image}\" is a {}, not a wasi:http handler", workload.kind()));
    };
    let path = trial_path(&spec.container);
    if let Err(e) = handler.trial(pre.clone(), &path).await {
        return Err(format!("the new version failed its trial request GET {path}: {e:#}"));
    }
    handler.pre.replace(pre);
    let image_id = pulled.image_id;
    shared.update(spec.index, |s| {
        s.image = image.to_string();
        s.image_id = image_id;
    });
    Ok(format!("Swapped container {} to image \"{image}\" in place ({digest}) in {:?}", spec.name, started.elapsed()))
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

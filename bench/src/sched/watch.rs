//! The one watch on the benchmark's pods. Opened from a list's revision before the first create,
//! it notes the moment each pod is first seen bound (`spec.nodeName` set) and first seen Running,
//! and hands every bound pod not yet Running to the hollow kubelet.
//!
//! One watch serves both the measurement and the kubelet, so the server encodes each pod event
//! once for this process rather than twice; the kubelet's patches run on their own task, so they
//! never delay the timestamps. If the server ends the watch it is resumed from the last revision
//! seen; if that revision has left the server's window (410 Gone), the pods are listed again and
//! the watch restarts from the list, as a reflector would.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::{Stream, StreamExt};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::kubelet::BoundPod;
use crate::pods::SlimPod;

/// The server ends a watch after this; it is resumed (kube's client times out after 295 s).
const WATCH_SECS: u32 = 290;
/// How long the API may take to answer a watch or list request's headers.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// When the watch first saw a pod bound, and to which node.
#[derive(Debug, Clone)]
pub struct Bound {
    pub at: Instant,
    pub node: String,
}

/// Everything the watch has seen.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub bound: HashMap<String, Bound>,
    pub running: HashMap<String, Instant>,
    /// Times the server ended the watch and it was resumed.
    pub resumed: u32,
    /// Times the resume revision was gone and the pods were listed again.
    pub relisted: u32,
}

/// Counts, for waiters.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub bound: usize,
    pub running: usize,
    /// Why the watch stopped, if it did.
    pub failed: Option<String>,
}

type Events = std::pin::Pin<Box<dyn Stream<Item = kube::Result<WatchEvent<SlimPod>>> + Send>>;

/// A running watch; dropping it stops the watch.
pub struct PodWatch {
    seen: Arc<Mutex<Seen>>,
    progress: watch::Receiver<Progress>,
    task: JoinHandle<()>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodWatch {
    /// Lists `pods` for the current revision and watches from it; returns once the watch has
    /// been answered, so every later create is seen as it happens.
    pub async fn open(pods: Api<SlimPod>, kubelet: mpsc::Sender<BoundPod>) -> Result<Self> {
        let list = pods.list(&ListParams::default().limit(1)).await.context("listing pods")?;
        let revision = list.metadata.resource_version.context("the pod list has no resourceVersion")?;
        let events = open_watch(&pods, &revision).await?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (progress_tx, progress) = watch::channel(Progress::default());
        let follower =
            Follower { pods, revision, seen: seen.clone(), progress: progress_tx, kubelet, handed: HashSet::new() };
        let task = tokio::spawn(follower.run(events));
        Ok(Self { seen, progress, task })
    }

    /// Waits until at least `bound` pods are bound and `running` Running. Returns false after
    /// `timeout`; fails at once if the watch broke.
    pub async fn wait(&mut self, bound: usize, running: usize, timeout: Duration) -> Result<bool> {
        let reached = |p: &Progress| (p.bound >= bound && p.running >= running) || p.failed.is_some();
        let progress = match tokio::time::timeout(timeout, self.progress.wait_for(reached)).await {
            Ok(Ok(progress)) => progress.clone(),
            Ok(Err(_)) => bail!("the pod watch task ended"),
            Err(_) => return Ok(false),
        };
        match progress.failed {
            Some(why) => bail!("{why}"),
            None => Ok(true),
        }
    }

    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// A copy of everything seen so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("the watch task never panics holding the lock").clone()
    }
}

async fn open_watch(pods: &Api<SlimPod>, revision: &str) -> Result<Events> {
    let params = WatchParams::default().timeout(WATCH_SECS);
    let events = tokio::time::timeout(OPEN_TIMEOUT, pods.watch(&params, revision))
        .await
        .map_err(|_| anyhow!("the pod watch was not answered within {OPEN_TIMEOUT:?}"))?
        .context("opening the pod watch")?;
    Ok(events.boxed())
}

/// The task behind a [`PodWatch`].
struct Follower {
    pods: Api<SlimPod>,
    /// The last revision seen, to resume from.
    revision: String,
    seen: Arc<Mutex<Seen>>,
    progress: watch::Sender<Progress>,
    kubelet: mpsc::Sender<BoundPod>,
    /// Pods handed to the kubelet, each once.
    handed: HashSet<String>,
}

/// How a watch stream ended.
enum End {
    /// The server closed it (its timeout): resume from the last revision.
    Closed,
    /// The revision is too old (410 Gone): list again.
    Gone,
}

impl Follower {
    async fn run(mut self, mut events: Events) {
        loop {
            let end = match self.follow(&mut events).await {
                Ok(end) => end,
                Err(why) => return self.fail(why),
            };
            let reopened = match end {
                End::Closed => {
                    self.seen.lock().expect("only this task writes").resumed += 1;
                    match open_watch(&self.pods, &self.revision).await {
                        Err(e) if is_gone(&e) => self.relist().await,
                        other => other,
                    }
                }
                End::Gone => self.relist().await,
            };
            match reopened {
                Ok(next) => events = next,
                Err(e) => return self.fail(format!("reopening the pod watch: {e:#}")),
            }
        }
    }

    fn fail(&self, why: String) {
        self.progress.send_modify(|p| p.failed = Some(why));
    }

    /// Takes events until the stream ends.
    async fn follow(&mut self, events: &mut Events) -> Result<End, String> {
        while let Some(event) = events.next().await {
            let at = Instant::now();
            let pod = match event.map_err(|e| format!("the pod watch broke: {e}"))? {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod) => pod,
                WatchEvent::Deleted(pod) => {
                    self.revision = pod.metadata.resource_version.unwrap_or_default();
                    continue;
                }
                WatchEvent::Bookmark(bookmark) => {
                    self.revision = bookmark.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(status) if status.code == 410 => return Ok(End::Gone),
                WatchEvent::Error(status) => return Err(format!("the pod watch answered: {}", status.message)),
            };
            if let Some(revision) = &pod.metadata.resource_version {
                self.revision.clone_from(revision);
            }
            self.observe(&pod, at).await?;
        }
        Ok(End::Closed)
    }

    /// Lists every pod (each observed as of now) and watches from the list's revision.
    async fn relist(&mut self) -> Result<Events> {
        self.seen.lock().expect("only this task writes").relisted += 1;
        let list = tokio::time::timeout(OPEN_TIMEOUT, self.pods.list(&ListParams::default()))
            .await
            .map_err(|_| anyhow!("listing pods took over {OPEN_TIMEOUT:?}"))?
            .context("listing pods")?;
        let at = Instant::now();
        for pod in &list.items {
            self.observe(pod, at).await.map_err(|why| anyhow!(why))?;
        }
        self.revision = list.metadata.resource_version.context("the pod list has no resourceVersion")?;
        open_watch(&self.pods, &self.revision).await
    }

    /// Notes what `pod` shows as of `at`, and hands it to the kubelet if it is bound and not
    /// Running.
    async fn observe(&mut self, pod: &SlimPod, at: Instant) -> Result<(), String> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod.spec.node_name.clone().filter(|n| !n.is_empty());
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let (bound, is_running) = {
            let mut seen = self.seen.lock().expect("only this task writes");
            if let Some(node) = &node {
                seen.bound.entry(name.clone()).or_insert_with(|| Bound { at, node: node.clone() });
            }
            if running {
                seen.running.entry(name.clone()).or_insert(at);
            }
            (seen.bound.len(), seen.running.len())
        };
        self.progress.send_if_modified(|p| {
            let changed = p.bound != bound || p.running != is_running;
            (p.bound, p.running) = (bound, is_running);
            changed
        });
        if let Some(node) = node
            && !running
            && self.handed.insert(name.clone())
        {
            // A full channel holds the watch until the kubelet catches up.
            self.kubelet.send(BoundPod { name, node }).await.map_err(|_| "the hollow kubelet stopped".to_string())?;
        }
        Ok(())
    }
}

/// Whether opening a watch failed because its revision is gone.
fn is_gone(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 410)
}

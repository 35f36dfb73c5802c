//! Keeps the zone current from the API: a watch of every Service and every EndpointSlice,
//! through kube's watcher (which lists, watches and lists again after a break). A full read
//! replaces what the zone held of that kind, so nothing deleted meanwhile lingers.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

use crate::server::SharedZone;

/// Follows Services and EndpointSlices into `zone` until `cancel`.
pub async fn follow(client: kube::Client, zone: SharedZone, cancel: CancellationToken) {
    let services = follow_kind::<Service>(
        Api::all(client.clone()),
        zone.clone(),
        |zone, s| zone.put_service(s),
        |zone, s| zone.remove_service(&namespace(&s.metadata), &name(&s.metadata)),
        |zone, all| zone.replace_services(all),
    );
    let slices = follow_kind::<EndpointSlice>(
        Api::all(client),
        zone,
        |zone, s| zone.put_slice(s),
        |zone, s| zone.remove_slice(&namespace(&s.metadata), &name(&s.metadata)),
        |zone, all| zone.replace_slices(all),
    );
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = futures::future::join(services, slices) => {}
    }
}

fn namespace(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_default()
}

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

type Apply<K> = fn(&mut crate::zone::Zone, K);
type Replace<K> = fn(&mut crate::zone::Zone, Vec<K>);

async fn follow_kind<K>(api: Api<K>, zone: SharedZone, put: Apply<K>, remove: Apply<K>, replace: Replace<K>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    // Objects of a full read in progress.
    let mut fresh: Vec<K> = Vec::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                // The watcher backs off and lists again by itself.
                tracing::debug!(error = %e, "the DNS zone's watch failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut zone = zone.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match event {
            Event::Init => fresh.clear(),
            Event::InitApply(object) => fresh.push(object),
            Event::InitDone => replace(&mut zone, std::mem::take(&mut fresh)),
            Event::Apply(object) => put(&mut zone, object),
            Event::Delete(object) => remove(&mut zone, object),
        }
    }
}

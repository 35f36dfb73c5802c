//! Name lookups of raw-socket guests (`wasi:sockets/ip-name-lookup`) through the cluster DNS, so
//! a guest that connects to `echo:7007` (or `echo.default`, or the full name) reaches the Service
//! as a wasi:http request to `http://echo` does: resolved with the pod's namespace search path
//! (see [`super::outbound`]), names outside the cluster forwarded upstream by the same server.
//!
//! wasmtime-wasi resolves with the host's resolver and has no hook for another, so this replaces
//! the whole interface in the linker (its one function and its stream resource), as the wasmtime
//! documentation allows with shadowing. The lookup is finished when `resolve-addresses` returns,
//! so the stream is always ready: the cluster DNS is on this node and answers cluster names in
//! well under a millisecond. A name forwarded upstream can take up to the resolver's timeout, and
//! a guest cannot give up on it sooner than that.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::Network;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress};

use super::state::Guest;

/// The interface replaced: the exact name wasmtime-wasi defines it under.
const INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// A finished lookup: the addresses not yet taken by the guest.
pub struct Lookup(std::vec::IntoIter<IpAddr>);

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for Lookup {
    async fn ready(&mut self) {}
}

/// Replaces wasmtime-wasi's `ip-name-lookup` in `linker` (which already has WASI p2).
pub fn add_to_linker(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut interface = linker.instance(INTERFACE)?;
    interface.resource("resolve-address-stream", ResourceType::host::<Lookup>(), |mut store, rep| {
        store.data_mut().table.delete(Resource::<Lookup>::new_own(rep))?;
        Ok(())
    })?;
    interface.func_wrap_async("resolve-addresses", |mut store, (network, name): (Resource<Network>, String)| {
        Box::new(async move {
            // Holding the network resource is the capability to look names up.
            store.data_mut().table.get(&network)?;
            let resolver = store.data().hooks.resolver.clone();
            let found = match resolve(resolver, &name).await {
                Ok(found) => found,
                Err(code) => return Ok((Err(code),)),
            };
            let lookup = store.data_mut().table.push(Lookup(found.into_iter()))?;
            Ok((Ok(lookup),))
        })
    })?;
    interface.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store, (lookup,): (Resource<Lookup>,)| {
            let lookup = store.data_mut().table.get_mut(&lookup)?;
            Ok((Ok::<Option<IpAddress>, ErrorCode>(lookup.0.next().map(IpAddress::from)),))
        },
    )?;
    interface.func_wrap("[method]resolve-address-stream.subscribe", |mut store, (lookup,): (Resource<Lookup>,)| {
        Ok((wasmtime_wasi::p2::subscribe(&mut store.data_mut().table, lookup)?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The addresses of `name`: itself if it is an address; else what the cluster DNS (with the
/// pod's search path) answers, or the host's resolver when the node runs no cluster DNS.
async fn resolve(resolver: Option<Arc<TokioResolver>>, name: &str) -> Result<Vec<IpAddr>, ErrorCode> {
    if let Ok(ip) = name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    if name.is_empty() || name.len() > 253 || name.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(ErrorCode::InvalidArgument);
    }
    let Some(resolver) = resolver else {
        let found = tokio::net::lookup_host((name, 0)).await.map_err(|_| ErrorCode::NameUnresolvable)?;
        return Ok(found.map(|a| a.ip().to_canonical()).collect());
    };
    match resolver.lookup_ip(name).await {
        Ok(found) => Ok(found.iter().collect()),
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => Err(ErrorCode::NameUnresolvable),
        Err(_) => Err(ErrorCode::TemporaryResolverFailure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_are_their_own_answer_and_bad_names_are_invalid() {
        assert_eq!(resolve(None, "127.32.0.1").await, Ok(vec!["127.32.0.1".parse().expect("ip")]));
        assert_eq!(resolve(None, "[::1]").await, Ok(vec!["::1".parse().expect("ip")]));
        assert_eq!(resolve(None, "").await, Err(ErrorCode::InvalidArgument));
        assert_eq!(resolve(None, "a b").await, Err(ErrorCode::InvalidArgument));
    }
}

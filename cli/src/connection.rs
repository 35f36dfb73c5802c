//! The kube client every wasmkube process talks to an API server with: kube's own stack, built
//! here only so that its TCP connections set `TCP_NODELAY`. kube 5 builds its HTTP connector
//! inside `ClientBuilder::try_from` and offers no switch for it; without the option, the last
//! piece of a request written in several (a pushed image) can wait on the server's delayed ACK,
//! 40 ms on Linux, a fifth of a hot swap's budget. Go's net/http, which kubectl uses, sets the
//! option on every connection.

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use tower::ServiceBuilder;
use tower::retry::RetryLayer;

/// A client for `config`, as `kube::Client::try_from` builds it (TLS, auth, base URI, timeouts,
/// kube's retry of 429/503/504 when `default_retry` is set), with `TCP_NODELAY`. A kubeconfig
/// that names a proxy gets kube's own client, which knows how to reach it.
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    if config.proxy_url.is_some() {
        return kube::Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http_client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace))
}

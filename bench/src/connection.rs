//! One HTTP/1.1 connection per benchmark client, over plain TCP (etcd) or TLS (wasmkube).
//!
//! hyper's connection-level client is used instead of a pooled client so that "N clients" means
//! exactly N connections, each carrying one request at a time.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Where and how to connect.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    tls: Option<TlsConnector>,
}

impl Endpoint {
    /// Plain HTTP, as etcd's client URL is configured here.
    pub fn plain(addr: SocketAddr) -> Self {
        Self { addr, tls: None }
    }

    /// HTTPS trusting only `ca_pem`, as a kubeconfig client would.
    pub fn tls(addr: SocketAddr, ca_pem: &[u8]) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.context("parsing the cluster CA")?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // HTTP/1.1 on both sides keeps the comparison with etcd's gateway like for like.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { addr, tls: Some(TlsConnector::from(Arc::new(config))) })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    pub async fn connect(&self) -> Result<Connection> {
        let tcp = TcpStream::connect(self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
        // Requests are small and latency-bound: never let Nagle hold a segment back.
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Connection::handshake(tcp).await,
            Some(connector) => {
                let name = ServerName::IpAddress(self.addr.ip().into());
                let tls = connector.connect(name, tcp).await.context("TLS handshake")?;
                Connection::handshake(tls).await
            }
        }
    }
}

/// An open HTTP/1.1 connection; its I/O runs on a task that ends when this is dropped.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    async fn handshake<S>(stream: S) -> Result<Self>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            // An I/O error surfaces again on the next `send`, where it is counted.
            let _ = connection.await;
        });
        Ok(Self { sender, driver })
    }

    /// Sends one request and reads the whole response body.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

//! The cluster's TLS material and admin token, generated on first start and kept in the data dir.
//!
//! `pki/ca.{crt,key}` is the cluster CA (kept across restarts, so kubeconfigs stay valid);
//! `pki/server.{crt,key}` is re-issued by it at every start for the addresses the server is
//! reachable at now; `admin-token` is the bearer token of the admin user.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rand::Rng;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("reading or writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating certificates")]
    Generate(#[from] rcgen::Error),
}

/// PEM-encoded material the API server serves with and clients trust.
#[derive(Clone)]
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub admin_token: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_path_buf(), source }
}

/// Writes a file readable only by its owner (keys and tokens).
fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io_err(path))?;
    file.write_all(contents.as_bytes()).map_err(io_err(path))
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "wasmkube-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(params)
}

impl Pki {
    /// Loads the CA and token from `data_dir` (creating them on first start) and issues a server
    /// certificate for `localhost`, `ips` and `hostnames`.
    pub fn load_or_create(data_dir: &Path, ips: &[IpAddr], hostnames: &[String]) -> Result<Self, PkiError> {
        let dir = data_dir.join("pki");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let (ca_cert, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let (ca_pem, ca_key_pem) = if ca_cert.exists() && ca_key.exists() {
            (
                fs::read_to_string(&ca_cert).map_err(io_err(&ca_cert))?,
                fs::read_to_string(&ca_key).map_err(io_err(&ca_key))?,
            )
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            let (pem, key_pem) = (cert.pem(), key.serialize_pem());
            write_private(&ca_key, &key_pem)?;
            fs::write(&ca_cert, &pem).map_err(io_err(&ca_cert))?;
            (pem, key_pem)
        };
        // The CA's parameters are fixed, so rebuilding them with the stored key yields the same issuer
        // (subject and key identifier) as the stored certificate.
        let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(&ca_key_pem)?);

        let mut names = vec!["localhost".to_string(), "kubernetes".to_string(), "kubernetes.default".to_string()];
        names.extend(hostnames.iter().cloned());
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, "wasmkube-apiserver");
        for ip in ips.iter().copied().chain([IpAddr::from([127, 0, 0, 1])]) {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let server_key = KeyPair::generate()?;
        let server_cert = params.signed_by(&server_key, &issuer)?;
        let (server_cert_pem, server_key_pem) = (server_cert.pem(), server_key.serialize_pem());
        write_private(&dir.join("server.key"), &server_key_pem)?;
        let server_crt = dir.join("server.crt");
        fs::write(&server_crt, &server_cert_pem).map_err(io_err(&server_crt))?;

        let token_path = data_dir.join("admin-token");
        let admin_token = match fs::read_to_string(&token_path) {
            Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
            _ => {
                let bytes: [u8; 24] = rand::rng().random();
                let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write_private(&token_path, &token)?;
                token
            }
        };
        Ok(Self { ca_pem, server_cert_pem, server_key_pem, admin_token })
    }

    /// A rustls server configuration offering h2 and HTTP/1.1.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, std::io::Error> {
        use rustls::pki_types::pem::PemObject;
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let certs = rustls_pki_certs(&self.server_cert_pem).map_err(|e| invalid(e.to_string()))?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())
            .map_err(|e| invalid(e.to_string()))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn rustls_pki_certs(
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_and_token_survive_a_restart_and_the_server_cert_is_reissued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Pki::load_or_create(dir.path(), &[], &[]).expect("first start");
        let second = Pki::load_or_create(dir.path(), &["10.0.0.1".parse().expect("ip")], &[]).expect("restart");
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.admin_token, second.admin_token);
        assert_ne!(first.server_cert_pem, second.server_cert_pem);
        second.server_config().expect("rustls accepts the generated certificate");
    }
}

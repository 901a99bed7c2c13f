//! Serving TLS: rustls with the aws-lc-rs provider, TLS 1.2 and 1.3, the
//! certificate behind a resolver so it can be swapped without a restart, and
//! client certificates required when a client CA is configured.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("{0}")]
    Config(String),
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a certificate chain and its private key, and checks they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_error(key, format!("no usable PEM private key ({e})")))?;
    let ck = CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        file_error(
            key,
            format!("does not fit the certificate in {}: {e}", cert.display()),
        )
    })?;
    Ok(Arc::new(ck))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, format!("cannot read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no PEM CERTIFICATE"));
    }
    Ok(certs)
}

pub fn load_client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Certificates of a PEM CA bundle (for HTTPS to an issuer).
pub fn parse_ca_bundle(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM CERTIFICATE".to_owned());
    }
    Ok(certs)
}

/// Hands rustls whatever certificate is current; `set` swaps it for new
/// handshakes while established connections keep theirs.
#[derive(Debug)]
pub struct CertResolver(ArcSwap<CertifiedKey>);

impl CertResolver {
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        CertResolver(ArcSwap::new(key))
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        self.0.store(key);
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

pub struct ServerTls {
    pub config: ServerConfig,
    pub resolver: Arc<CertResolver>,
}

pub fn server_tls(files: &TlsFiles) -> Result<ServerTls, TlsError> {
    let resolver = Arc::new(CertResolver::new(load_certified_key(
        &files.cert_file,
        &files.key_file,
    )?));
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca_file {
        Some(ca) => {
            let roots = Arc::new(load_client_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| file_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls { config, resolver })
}

//! What the webhook and the login plugin both need, and nothing else: bounded
//! file reads and atomic writes, CA bundles, the kubeconfig model, error
//! chains and the clock. Kept small so the plugin's dependency tree stays
//! free of the server.

pub mod clock;
pub mod fs;
pub mod kubeconfig;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Certificates of a PEM CA bundle; an empty bundle is an error, so a wrong
/// file gives "no certificate" rather than an empty trust store.
pub fn parse_ca_bundle(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM CERTIFICATE".to_owned());
    }
    Ok(certs)
}

/// An error and its sources on one line, without repeating a cause that the
/// outer message already quotes (reqwest and hyper often do).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

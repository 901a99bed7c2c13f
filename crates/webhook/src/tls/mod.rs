//! Serving TLS: rustls with the aws-lc-rs provider, TLS 1.2 and 1.3, the
//! certificate behind a resolver so it can be swapped without a restart, and
//! client certificates required when a client CA is configured.

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use kube_authn_common::fs::read_bounded;
use kube_authn_common::parse_ca_bundle;

use crate::config::TlsFiles;
use crate::metrics::Metrics;

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
pub(crate) fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    certified_key(&read(cert)?, cert, &read(key)?, key)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    read_bounded(path).map_err(|e| file_error(path, format!("cannot read: {e}")))
}

/// A certificate chain and its private key from their PEM text (`cert` and
/// `key` name the files in errors), checked to belong together.
fn certified_key(
    cert_pem: &[u8],
    cert: &Path,
    key_pem: &[u8],
    key: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = parse_ca_bundle(cert_pem).map_err(|e| file_error(cert, e))?;
    let key_der = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| file_error(key, format!("no usable PEM private key ({e})")))?;
    let ck = CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        file_error(
            key,
            format!("does not fit the certificate in {}: {e}", cert.display()),
        )
    })?;
    Ok(Arc::new(ck))
}

pub(crate) fn load_client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    client_roots(&read(path)?, path)
}

fn client_roots(pem: &[u8], path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_ca_bundle(pem).map_err(|e| file_error(path, e))? {
        roots
            .add(cert)
            .map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Unix time of the end-entity certificate's notAfter.
pub(crate) fn certificate_not_after(key: &CertifiedKey) -> Result<i64, TlsError> {
    let der = key
        .end_entity_cert()
        .map_err(|e| TlsError::Config(format!("no end-entity certificate: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| TlsError::Config(format!("cannot parse the serving certificate: {e}")))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Publishes the serving certificate's expiry as
/// `authn_webhook_tls_certificate_expiry_timestamp_seconds`. Call whenever the
/// certificate in use changes (start, reload). A certificate whose expiry
/// cannot be read shows NaN, not 0 (which would read as "expired in 1970"
/// and page for the wrong reason), and counts an error, which the
/// KubeAuthnWebhookCertificateExpiryUnreadable alert watches.
pub(crate) fn record_certificate_expiry(metrics: &Metrics, key: &CertifiedKey) {
    match certificate_not_after(key) {
        Ok(t) => metrics.tls_cert_expiry.set(t as f64),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the serving certificate's expiry");
            metrics.tls_cert_expiry.set(f64::NAN);
            metrics.tls_cert_expiry_errors.inc();
        }
    }
}

/// Hands rustls whatever certificate is current; `set` swaps it for new
/// handshakes while established connections keep theirs.
#[derive(Debug)]
pub(crate) struct CertResolver(ArcSwap<CertifiedKey>);

impl CertResolver {
    pub(crate) fn new(key: Arc<CertifiedKey>) -> Self {
        CertResolver(ArcSwap::new(key))
    }

    pub(crate) fn set(&self, key: Arc<CertifiedKey>) {
        self.0.store(key);
    }

    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        self.0.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The client CA behind a swappable verifier, so a new CA bundle applies to
/// new handshakes without rebuilding the listener.
#[derive(Debug)]
pub(crate) struct ReloadingClientVerifier(ArcSwap<Arc<dyn ClientCertVerifier>>);

impl ReloadingClientVerifier {
    fn new(v: Arc<dyn ClientCertVerifier>) -> Self {
        ReloadingClientVerifier(ArcSwap::from_pointee(v))
    }

    fn set(&self, v: Arc<dyn ClientCertVerifier>) {
        self.0.store(Arc::new(v));
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No CA names in the CertificateRequest: they would have to outlive a
    /// reload. An empty list means "any" to clients (Go's crypto/tls included),
    /// and verification still checks the chain against the current CA.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.load().supported_verify_schemes()
    }
}

fn client_verifier(pem: &[u8], ca: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = Arc::new(client_roots(pem, ca)?);
    WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| file_error(ca, e))
}

pub(crate) struct ServerTls {
    pub(crate) config: ServerConfig,
    pub(crate) reloader: Arc<TlsReloader>,
}

pub(crate) fn server_tls(files: &TlsFiles, metrics: Arc<Metrics>) -> Result<ServerTls, TlsError> {
    let current = Material::read(files)?;
    let (key, verifier) = current.load(files)?;
    let resolver = Arc::new(CertResolver::new(key));
    record_certificate_expiry(&metrics, &resolver.current());
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let (builder, client) = match verifier {
        Some(v) => {
            let v = Arc::new(ReloadingClientVerifier::new(v));
            (builder.with_client_cert_verifier(v.clone()), Some(v))
        }
        None => (builder.with_no_client_auth(), None),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    // Left empty: actix-web offers what it serves, h2 then http/1.1, ahead
    // of anything listed here.
    config.alpn_protocols = Vec::new();
    if client.is_some() {
        without_resumption(&mut config);
    }
    Ok(ServerTls {
        config,
        reloader: Arc::new(TlsReloader {
            files: files.clone(),
            resolver,
            client,
            state: Mutex::new(ReloadState {
                loaded: current,
                rejected: None,
                unreadable: None,
            }),
            metrics,
        }),
    })
}

/// No session resumption: a resumed session (TLS 1.2 session id, TLS 1.3
/// ticket) carries the client certificate of the handshake it came from and
/// skips verifying it again, so it would outlive a client CA reload (and the
/// certificate's own expiry). With a client CA, every connection is a full
/// handshake: nothing stored, no tickets. The kube-apiserver loses nothing
/// (its client, Go's crypto/tls as client-go sets it up, keeps connections
/// alive and never resumes); the cost for clients that would resume is in
/// BENCHMARKS.md ("Issue 11").
/// (Stateless tickets are off already: rustls's default ticketer never
/// makes one, and we set no other.)
fn without_resumption(config: &mut ServerConfig) {
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}

/// The bytes last loaded, to notice a change whatever way the files were
/// replaced (rewritten in place, renamed over, or a Secret's symlink swap).
#[derive(PartialEq, Eq)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// What a serving config is made of: the certified key and, with
/// `client_ca_file`, the client verifier.
type Loaded = (Arc<CertifiedKey>, Option<Arc<dyn ClientCertVerifier>>);

impl Material {
    /// Reads every file once, bounded; parsing works on these bytes, so a
    /// check never sees two versions of one file.
    fn read(files: &TlsFiles) -> Result<Material, TlsError> {
        Ok(Material {
            cert: read(&files.cert_file)?,
            key: read(&files.key_file)?,
            client_ca: files.client_ca_file.as_deref().map(read).transpose()?,
        })
    }

    fn load(&self, files: &TlsFiles) -> Result<Loaded, TlsError> {
        let key = certified_key(&self.cert, &files.cert_file, &self.key, &files.key_file)?;
        let verifier = match (&self.client_ca, &files.client_ca_file) {
            (Some(pem), Some(path)) => Some(client_verifier(pem, path)?),
            _ => None,
        };
        Ok((key, verifier))
    }
}

/// Watches the serving certificate, its key and the client CA, and swaps in
/// new ones that validate; invalid files leave the old ones serving.
pub(crate) struct TlsReloader {
    files: TlsFiles,
    resolver: Arc<CertResolver>,
    client: Option<Arc<ReloadingClientVerifier>>,
    state: Mutex<ReloadState>,
    metrics: Arc<Metrics>,
}

struct ReloadState {
    loaded: Material,
    rejected: Option<Material>,
    /// Why the files could not be read at the last check, reported once.
    unreadable: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reload {
    Unchanged,
    Reloaded,
    /// Files changed but did not validate; the old material keeps serving.
    Rejected(String),
}

impl TlsReloader {
    /// Checks the files once. A change that was rejected, or files that
    /// cannot be read, are logged and counted once, not on every check,
    /// until the files change again; the old material keeps serving.
    pub(crate) fn check(&self) -> Reload {
        let read = Material::read(&self.files);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let material = match read {
            Ok(m) => m,
            Err(e) => {
                let why = e.to_string();
                if state.unreadable.as_deref() == Some(why.as_str()) {
                    return Reload::Unchanged;
                }
                self.metrics.tls_reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "TLS files cannot be read; still serving the previous ones");
                state.unreadable = Some(why.clone());
                return Reload::Rejected(why);
            }
        };
        if state.unreadable.take().is_some() {
            tracing::info!(cert = %self.files.cert_file.display(), "TLS files readable again");
        }
        if state.loaded == material || state.rejected.as_ref() == Some(&material) {
            return Reload::Unchanged;
        }
        match material.load(&self.files) {
            Ok((key, verifier)) => {
                record_certificate_expiry(&self.metrics, &key);
                self.resolver.set(key);
                if let (Some(client), Some(v)) = (&self.client, verifier) {
                    client.set(v);
                }
                state.loaded = material;
                state.rejected = None;
                self.metrics
                    .tls_reloads
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(cert = %self.files.cert_file.display(), "loaded a new TLS certificate");
                Reload::Reloaded
            }
            Err(e) => {
                state.rejected = Some(material);
                self.metrics.tls_reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "new TLS files are not usable; still serving the previous ones");
                Reload::Rejected(e.to_string())
            }
        }
    }

    /// Checks every `reload_interval` until the task is dropped.
    pub(crate) async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.files.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let this = self.clone();
            // File reads and PEM parsing are blocking work.
            let _ = tokio::task::spawn_blocking(move || this.check()).await;
        }
    }
}

/// Why no name of a client certificate is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UntrustedNames {
    /// The subject has more than one CN. Which one names the caller would be
    /// a guess, and "any of them" lets a listed name carry an unlisted
    /// caller in; refused whatever the names are.
    SeveralCommonNames(usize),
    /// x509-parser cannot read a certificate webpki accepted.
    Unreadable,
}

/// The names a certificate answers to: its subject CN and DNS SANs; none
/// when the subject has more than one CN.
pub(crate) fn certificate_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, UntrustedNames> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Err(UntrustedNames::Unreadable);
    };
    // Every CN attribute counts, in any RDN and whatever its string type,
    // including ones that are not text we can read.
    let cns = cert.subject().iter_common_name().count();
    if cns > 1 {
        return Err(UntrustedNames::SeveralCommonNames(cns));
    }
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push((*d).to_owned());
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert(cns: &[&str], sans: &[&str]) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        for (i, cn) in cns.iter().enumerate() {
            // rcgen keeps one value per type: further CNs as the same OID
            // spelled as a custom type (each its own RDN).
            let ty = match i {
                0 => DnType::CommonName,
                _ => DnType::CustomDnType(vec![2, 5, 4, 3]),
            };
            params.distinguished_name.push(ty, *cn);
        }
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_certificate_names_its_cn_and_dns_sans() {
        assert_eq!(
            certificate_names(&cert(&["kube-apiserver"], &["apiserver.local"])),
            Ok(vec![
                "kube-apiserver".to_owned(),
                "apiserver.local".to_owned()
            ])
        );
        assert_eq!(
            certificate_names(&cert(&[], &["a.local", "b.local"])),
            Ok(vec!["a.local".to_owned(), "b.local".to_owned()])
        );
    }

    #[test]
    fn a_subject_with_two_cns_names_nobody() {
        for cns in [
            ["kube-apiserver", "some-workload"],
            ["some-workload", "kube-apiserver"],
            ["kube-apiserver", "kube-apiserver"],
        ] {
            assert_eq!(
                certificate_names(&cert(&cns, &["kube-apiserver"])),
                Err(UntrustedNames::SeveralCommonNames(2)),
                "{cns:?}"
            );
        }
    }

    #[test]
    fn garbage_names_nobody() {
        assert_eq!(
            certificate_names(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])),
            Err(UntrustedNames::Unreadable)
        );
    }

    fn tls_files(dir: &Path, client_ca: bool) -> TlsFiles {
        let ca = crate::pki::Ca::new("unit CA", 1).unwrap();
        let leaf = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
        std::fs::write(dir.join("tls.crt"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &leaf.key_pem).unwrap();
        std::fs::write(dir.join("ca.crt"), &ca.cert_pem).unwrap();
        TlsFiles {
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
            client_ca_file: client_ca.then(|| dir.join("ca.crt")),
            allowed_client_names: vec![],
            reload_interval: std::time::Duration::from_secs(10),
        }
    }

    #[test]
    fn with_a_client_ca_no_session_is_ever_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let mtls = server_tls(&tls_files(dir.path(), true), metrics.clone()).unwrap();
        assert!(!mtls.config.session_storage.can_cache(), "no session ids");
        assert_eq!(mtls.config.send_tls13_tickets, 0, "no TLS 1.3 tickets");
        assert!(!mtls.config.ticketer.enabled(), "no stateless tickets");
        // Without client certificates no trust rides on a session: rustls's
        // defaults stay.
        let plain = server_tls(&tls_files(dir.path(), false), metrics).unwrap();
        assert!(plain.config.session_storage.can_cache());
    }
}

#[cfg(test)]
mod expiry_tests {
    use super::*;

    fn key_with_cert(der: Vec<u8>) -> CertifiedKey {
        let pair = rcgen::KeyPair::generate().unwrap();
        let key_der = rustls_pki_types::PrivateKeyDer::try_from(pair.serialize_der()).unwrap();
        let signing = provider().key_provider.load_private_key(key_der).unwrap();
        CertifiedKey::new(vec![CertificateDer::from(der)], signing)
    }

    #[test]
    fn an_unreadable_expiry_is_nan_and_counted_never_0() {
        let metrics = Metrics::new();
        let ca = crate::pki::Ca::new("t", 1).unwrap();
        let tls = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
        let good = CertificateDer::from_pem_slice(tls.cert_pem.as_bytes()).unwrap();
        record_certificate_expiry(&metrics, &key_with_cert(good.to_vec()));
        let t = metrics.tls_cert_expiry.get();
        assert!(t > 1.0e9, "{t}");
        assert_eq!(metrics.tls_cert_expiry_errors.get(), 0);

        record_certificate_expiry(&metrics, &key_with_cert(b"not a certificate".to_vec()));
        assert!(metrics.tls_cert_expiry.get().is_nan());
        assert_eq!(metrics.tls_cert_expiry_errors.get(), 1);
    }
}

//! `kube-authn-webhook kubeconfig`: the kubeconfig the kube-apiserver reads
//! through `--authentication-token-webhook-config-file`, or the same wrapped
//! in the Secret OpenShift's `Authentication` resource points at.
//!
//! The output always satisfies OpenShift's rules for
//! `spec.webhookTokenAuthenticator.kubeConfig`, which are also good practice
//! on plain Kubernetes: exactly one cluster, user and context, `current-context`
//! naming them, only inline `*-data` fields (no file paths), and a client
//! certificate and key as the user's credential. A client certificate is
//! therefore always required: the webhook authenticates the kube-apiserver by
//! it (mTLS, `server.tls.client_ca_file`), so nothing else on the network can
//! use the webhook as a token oracle.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use x509_parser::extensions::ParsedExtension;

use kube_authn_common::kubeconfig::SingleKubeconfig;

use crate::http::REVIEW_PATHS;

/// Names inside the generated kubeconfig.
pub(crate) const CLUSTER_NAME: &str = "kube-authn-webhook";
pub(crate) const USER_NAME: &str = "kube-apiserver";
pub(crate) const CONTEXT_NAME: &str = "kube-authn-webhook";
/// The namespace and key OpenShift reads the webhook kubeconfig from.
pub(crate) const OPENSHIFT_NAMESPACE: &str = "openshift-config";
pub(crate) const OPENSHIFT_SECRET_KEY: &str = "kubeConfig";
pub(crate) const DEFAULT_SECRET_NAME: &str = "kube-authn-webhook-kubeconfig";

/// Certificates closer than this to expiry draw a warning.
const EXPIRY_WARNING_SECONDS: i64 = 30 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A kubeconfig file for `--authentication-token-webhook-config-file`.
    Kubeconfig,
    /// A v1 Secret in openshift-config holding the kubeconfig under `kubeConfig`.
    OpenshiftSecret,
}

pub struct Request<'a> {
    /// The URL the kube-apiserver POSTs TokenReviews to, as written.
    pub server: &'a str,
    /// PEM CA certificate(s) the kube-apiserver trusts for the webhook.
    pub ca_file: &'a Path,
    pub client_cert_file: &'a Path,
    pub client_key_file: &'a Path,
    pub format: Format,
    /// Only for `Format::OpenshiftSecret`; `None` means the default name.
    pub secret_name: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("--server {url:?}: {why}")]
    Server { url: String, why: String },
    #[error("{flag} {}: {why}", .path.display())]
    File {
        flag: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("--secret-name: {0}")]
    SecretName(String),
}

/// The YAML to print, and warnings for stderr.
#[derive(Debug)]
pub struct Output {
    pub yaml: String,
    pub warnings: Vec<String>,
}

/// The kube-apiserver's credential towards the webhook: its client certificate.
#[derive(Serialize)]
struct ClientCertUser {
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: String,
    #[serde(rename = "client-key-data")]
    client_key_data: String,
}

#[derive(Serialize)]
struct Secret {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    #[serde(rename = "type")]
    type_: &'static str,
    data: std::collections::BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct Metadata {
    name: String,
    namespace: &'static str,
    labels: std::collections::BTreeMap<&'static str, &'static str>,
}

/// Builds the kubeconfig (or Secret) from the files named in `req`, after
/// checking everything the kube-apiserver would otherwise trip on later,
/// where the failure is much harder to see.
pub fn generate(req: &Request<'_>) -> Result<Output, KubeconfigError> {
    let mut warnings = Vec::new();
    let server = check_server_url(req.server, &mut warnings)?;
    let secret_name = match (req.format, req.secret_name) {
        (Format::Kubeconfig, Some(_)) => {
            return Err(KubeconfigError::SecretName(
                "only applies with --format openshift-secret".to_owned(),
            ));
        }
        (Format::Kubeconfig, None) => None,
        (Format::OpenshiftSecret, name) => {
            let name = name.unwrap_or(DEFAULT_SECRET_NAME);
            check_dns_subdomain(name).map_err(KubeconfigError::SecretName)?;
            Some(name.to_owned())
        }
    };

    let ca = read_certs("--ca", req.ca_file)?;
    for (i, der) in ca.iter().enumerate() {
        let what = if ca.len() == 1 {
            "the CA certificate".to_owned()
        } else {
            format!("CA certificate #{}", i + 1)
        };
        check_validity("--ca", req.ca_file, der, &what, &mut warnings)?;
    }
    let client_chain = read_certs("--client-cert", req.client_cert_file)?;
    let client_key = read_key(req.client_key_file)?;
    let provider = crate::tls::provider();
    rustls::sign::CertifiedKey::from_der(client_chain.clone(), client_key.clone_key(), &provider)
        .map_err(|e| KubeconfigError::File {
        flag: "--client-key",
        path: req.client_key_file.to_owned(),
        why: format!(
            "does not belong to the certificate in {} ({e})",
            req.client_cert_file.display()
        ),
    })?;
    check_validity(
        "--client-cert",
        req.client_cert_file,
        &client_chain[0],
        "the client certificate",
        &mut warnings,
    )?;
    check_client_usage(req.client_cert_file, &client_chain[0])?;

    let kubeconfig = SingleKubeconfig::new(
        CLUSTER_NAME,
        server,
        Some(STANDARD.encode(certs_pem(&ca))),
        USER_NAME,
        ClientCertUser {
            client_certificate_data: STANDARD.encode(certs_pem(&client_chain)),
            client_key_data: STANDARD.encode(key_pem(&client_key)),
        },
        CONTEXT_NAME,
    );
    let kubeconfig_yaml = to_yaml(&kubeconfig);
    let yaml = match secret_name {
        None => format!(
            "# The kube-apiserver's kubeconfig for the TokenReview webhook\n# (--authentication-token-webhook-config-file). Written by\n# `kube-authn-webhook kubeconfig`. Holds a private key: keep it mode 0600.\n{kubeconfig_yaml}"
        ),
        Some(name) => {
            let secret = Secret {
                api_version: "v1",
                kind: "Secret",
                metadata: Metadata {
                    name,
                    namespace: OPENSHIFT_NAMESPACE,
                    labels: [("app.kubernetes.io/name", "kube-authn-webhook")]
                        .into_iter()
                        .collect(),
                },
                type_: "Opaque",
                data: [(OPENSHIFT_SECRET_KEY, STANDARD.encode(&kubeconfig_yaml))]
                    .into_iter()
                    .collect(),
            };
            format!(
                "# The webhook kubeconfig for OpenShift's Authentication resource\n# (spec.webhookTokenAuthenticator.kubeConfig.name). Written by\n# `kube-authn-webhook kubeconfig --format openshift-secret`. Holds a private key.\n{}",
                to_yaml(&secret)
            )
        }
    };
    Ok(Output { yaml, warnings })
}

fn to_yaml<T: Serialize>(v: &T) -> String {
    // Plain structs of strings always serialize.
    serde_norway::to_string(v).unwrap_or_default()
}

/// The URL must be one the webhook answers on: the kube-apiserver POSTs to it
/// exactly as written, appending nothing.
fn check_server_url(raw: &str, warnings: &mut Vec<String>) -> Result<String, KubeconfigError> {
    let err = |why: String| KubeconfigError::Server {
        url: raw.to_owned(),
        why,
    };
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| err(format!("not a URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(err(
            "must start with https:// (the webhook only serves TLS)".to_owned(),
        ));
    }
    let Some(host) = url.host_str().map(str::to_owned) else {
        return Err(err("has no host".to_owned()));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            "must not carry credentials; the kube-apiserver authenticates with the client certificate".to_owned(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("must not have a query or fragment".to_owned()));
    }
    if !REVIEW_PATHS.contains(&url.path()) {
        return Err(err(format!(
            "the kube-apiserver POSTs to this URL exactly as written, and the webhook answers only on {}; e.g. https://127.0.0.1:8443/authenticate",
            REVIEW_PATHS.join(" or ")
        )));
    }
    let is_ip = host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok();
    if !is_ip {
        let name = host.trim_end_matches('.');
        if name.ends_with(".svc") || name.contains(".svc.") || name.ends_with(".cluster.local") {
            warnings.push(format!(
                "{name} looks like an in-cluster Service name, but the kube-apiserver does not use cluster DNS: use the Service's ClusterIP (and put it in the serving certificate's SANs), or 127.0.0.1 for a sidecar"
            ));
        }
    }
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback && url.port().is_none() {
        warnings.push(
            "no port in --server, so the kube-apiserver connects to 443; a sidecar webhook listens on 8443 unless configured otherwise".to_owned(),
        );
    }
    Ok(url.to_string())
}

/// RFC 1123 subdomain, as Kubernetes requires for object names.
fn check_dns_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid Secret name (lower-case letters, digits, '-' and '.', at most 253 characters)"
        ))
    }
}

fn read_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, KubeconfigError> {
    let file_err = |why: String| KubeconfigError::File {
        flag,
        path: path.to_owned(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
    kube_authn_common::parse_ca_bundle(&bytes).map_err(file_err)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, KubeconfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| KubeconfigError::File {
        flag: "--client-key",
        path: path.to_owned(),
        why: format!("no usable PEM private key ({e})"),
    })
}

fn check_validity(
    flag: &'static str,
    path: &Path,
    der: &CertificateDer<'_>,
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<(), KubeconfigError> {
    let file_err = |why: String| KubeconfigError::File {
        flag,
        path: path.to_owned(),
        why,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| file_err(format!("{what} does not parse: {e}")))?;
    let now = i64::try_from(kube_authn_common::clock::unix_now()).unwrap_or(i64::MAX);
    let not_after = cert.validity().not_after.timestamp();
    if not_after <= now {
        return Err(file_err(format!(
            "{what} expired at {}",
            cert.validity().not_after
        )));
    }
    if not_after - now < EXPIRY_WARNING_SECONDS {
        warnings.push(format!(
            "{what} in {} expires at {}, in less than 30 days",
            path.display(),
            cert.validity().not_after
        ));
    }
    Ok(())
}

/// The webhook's client verifier refuses a certificate whose extended key
/// usage does not include client authentication (a serving certificate
/// passed by mistake, say): better to say so now than at the first review.
fn check_client_usage(path: &Path, der: &CertificateDer<'_>) -> Result<(), KubeconfigError> {
    let file_err = |why: String| KubeconfigError::File {
        flag: "--client-cert",
        path: path.to_owned(),
        why,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| file_err(format!("does not parse: {e}")))?;
    for ext in cert.extensions() {
        if let ParsedExtension::ExtendedKeyUsage(eku) = ext.parsed_extension()
            && !eku.client_auth
            && !eku.any
        {
            return Err(file_err(
                "is not a client certificate (its extended key usage lacks clientAuth): pass apiserver-client.crt from `kube-authn-webhook certs`, not the serving certificate".to_owned(),
            ));
        }
        if let ParsedExtension::BasicConstraints(bc) = ext.parsed_extension()
            && bc.ca
        {
            return Err(file_err(
                "is a CA certificate, not a client certificate".to_owned(),
            ));
        }
    }
    Ok(())
}

fn pem_block(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Re-encodes only the certificates, so stray text or a key that shared the
/// input file never ends up in the kubeconfig.
fn certs_pem(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|c| pem_block("CERTIFICATE", c.as_ref()))
        .collect()
}

fn key_pem(key: &PrivateKeyDer<'_>) -> String {
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    pem_block(label, key.secret_der())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Ca;

    struct Files {
        _dir: tempfile::TempDir,
        ca: PathBuf,
        server_cert: PathBuf,
        client_cert: PathBuf,
        client_key: PathBuf,
        other_key: PathBuf,
    }

    fn files() -> Files {
        files_valid_for(90)
    }

    fn files_valid_for(days: u32) -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("test CA", days).expect("ca");
        let server = ca.server(&["127.0.0.1".to_owned()], days).expect("server");
        let client = ca.client("kube-apiserver", days).expect("client");
        let w = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p
        };
        Files {
            ca: w("ca.crt", &ca.cert_pem),
            server_cert: w("tls.crt", &server.cert_pem),
            client_cert: w("client.crt", &client.cert_pem),
            client_key: w("client.key", &client.key_pem),
            other_key: w("tls.key", &server.key_pem),
            _dir: dir,
        }
    }

    fn request<'a>(f: &'a Files, server: &'a str) -> Request<'a> {
        Request {
            server,
            ca_file: &f.ca,
            client_cert_file: &f.client_cert,
            client_key_file: &f.client_key,
            format: Format::Kubeconfig,
            secret_name: None,
        }
    }

    #[test]
    fn kubeconfig_has_inline_data_only() {
        let f = files();
        let out = generate(&request(&f, "https://127.0.0.1:8443/authenticate")).expect("ok");
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let v: serde_norway::Value = serde_norway::from_str(&out.yaml).expect("yaml");
        assert_eq!(v["current-context"].as_str(), Some(CONTEXT_NAME));
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:8443/authenticate")
        );
        let ca = STANDARD
            .decode(
                v["clusters"][0]["cluster"]["certificate-authority-data"]
                    .as_str()
                    .expect("ca"),
            )
            .expect("base64");
        let want = CertificateDer::pem_file_iter(&f.ca)
            .expect("read")
            .collect::<Result<Vec<_>, _>>()
            .expect("pem");
        let got = CertificateDer::pem_slice_iter(&ca)
            .collect::<Result<Vec<_>, _>>()
            .expect("pem");
        assert_eq!(got, want);
        assert!(!out.yaml.contains("certificate-authority:"));
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let f = files();
        for (url, says) in [
            ("http://127.0.0.1:8443/authenticate", "https://"),
            ("https://127.0.0.1:8443", "answers only on /authenticate"),
            ("https://127.0.0.1:8443/authenticate/", "answers only on"),
            ("https://127.0.0.1:8443/authenticate?x=1", "query"),
            ("https://u:p@127.0.0.1:8443/authenticate", "credentials"),
            ("127.0.0.1:8443/authenticate", "URL"),
        ] {
            let e = generate(&request(&f, url)).expect_err(url).to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn service_dns_names_draw_a_warning() {
        let f = files();
        let out = generate(&request(
            &f,
            "https://authn-webhook.kube-system.svc:443/authenticate",
        ))
        .expect("ok");
        assert!(
            out.warnings.iter().any(|w| w.contains("cluster DNS")),
            "{:?}",
            out.warnings
        );
    }

    #[test]
    fn certificates_near_expiry_draw_a_warning() {
        let f = files_valid_for(2);
        let out = generate(&request(&f, "https://127.0.0.1:8443/authenticate")).expect("ok");
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert!(out.warnings.iter().all(|w| w.contains("less than 30 days")));
    }

    #[test]
    fn wrong_files_are_refused() {
        let f = files();
        let url = "https://127.0.0.1:8443/authenticate";
        let mut r = request(&f, url);
        r.client_key_file = &f.other_key;
        let e = generate(&r).expect_err("mismatched key").to_string();
        assert!(e.contains("does not belong to the certificate"), "{e}");

        let mut r = request(&f, url);
        r.client_cert_file = &f.server_cert;
        r.client_key_file = &f.other_key;
        let e = generate(&r).expect_err("server cert").to_string();
        assert!(e.contains("clientAuth"), "{e}");

        let mut r = request(&f, url);
        r.ca_file = &f.client_key;
        let e = generate(&r).expect_err("key as CA").to_string();
        assert!(
            e.contains("--ca") && e.contains("no PEM CERTIFICATE"),
            "{e}"
        );
    }

    #[test]
    fn secret_name_rules() {
        let f = files();
        let url = "https://127.0.0.1:8443/authenticate";
        let mut r = request(&f, url);
        r.secret_name = Some("x");
        assert!(
            generate(&r).is_err(),
            "--secret-name without openshift-secret"
        );
        r.format = Format::OpenshiftSecret;
        r.secret_name = Some("Bad_Name");
        assert!(generate(&r).is_err());
        r.secret_name = None;
        let out = generate(&r).expect("ok");
        let v: serde_norway::Value = serde_norway::from_str(&out.yaml).expect("yaml");
        assert_eq!(v["metadata"]["name"].as_str(), Some(DEFAULT_SECRET_NAME));
        assert_eq!(
            v["metadata"]["namespace"].as_str(),
            Some(OPENSHIFT_NAMESPACE)
        );
    }
}

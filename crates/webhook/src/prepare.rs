//! From a validated config to what the service runs on: every file the
//! config names read once (bounded), CA bundles and keys parsed, the TLS
//! pair checked to belong together. `serve` and `check-config` both load
//! through `Prepared::load`, so check-config finds what serve would trip on,
//! and every problem of both stages comes in one list.

use std::path::Path;

use jsonwebtoken::Algorithm;
use kube_authn_common::clock::unix_now;
use kube_authn_common::fs::read_bounded;
use zeroize::Zeroizing;

use crate::config::{self, Config, ConfigError, FieldPath, Problem, Problems};
use crate::keys::{self, VerifyKey};

/// A config whose files were read and whose keys were parsed.
#[derive(Debug)]
pub struct Prepared {
    pub(crate) server: config::Server,
    pub telemetry: config::Telemetry,
    pub cache: config::Cache,
    pub issuers: Vec<Issuer>,
    /// Valid settings that weaken a check (e.g. `allow_any_audience`):
    /// `check-config` prints them, `serve` logs them at start.
    pub warnings: Vec<Problem>,
}

/// An issuer as the verifier takes it.
#[derive(Debug)]
pub struct Issuer {
    pub spec: config::Issuer,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) static_keys: Vec<VerifyKey>,
    /// `spec.certificate_authority_file`'s contents.
    pub(crate) ca_pem: Option<Vec<u8>>,
}

impl Prepared {
    /// Reads, validates and prepares a config file; every problem found, by
    /// file and field.
    pub fn load(path: &Path) -> Result<Prepared, ConfigError> {
        let text = config::read_text(path)?;
        Self::from_yaml(&text, path)
    }

    /// Like `load`, for config text as if read from `path` (relative paths
    /// are taken from its directory).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Prepared, ConfigError> {
        let (config, mut problems) = config::validate(text, path)?;
        // Prepared even when validation found problems: what did validate
        // (issuers with problems are left out) gets its files read too, so
        // one run lists everything.
        let prepared = prepare(config, &mut problems);
        problems.or_value(prepared, path)
    }

    /// Logs the config's warnings, once, as `serve` starts.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(field = %w.field, "config: {}", w.message);
        }
    }
}

fn prepare(config: Config, problems: &mut Problems) -> Prepared {
    let tls = &config.server.tls;
    if let Err(e) = crate::tls::load_certified_key(&tls.cert_file, &tls.key_file) {
        problems.add(&FieldPath::at("server.tls"), e.to_string());
    }
    if let Some(ca) = &tls.client_ca_file
        && let Err(e) = crate::tls::load_client_roots(ca)
    {
        problems.add(&FieldPath::at("server.tls.client_ca_file"), e.to_string());
    }
    let mut warnings = config.warnings;
    let mut specs = config.issuers;
    let defaults = crate::authcfg::Defaults {
        max_key_age: config.max_key_age,
    };
    for (i, (written, path)) in config.authentication_config_files.iter().enumerate() {
        let field = FieldPath::at("authentication_config_files").index(i);
        let Some(bytes) = read(problems, &field, path) else {
            continue;
        };
        let Ok(text) = String::from_utf8(bytes) else {
            problems.add(&field, format!("{}: not UTF-8 text", path.display()));
            continue;
        };
        for spec in crate::authcfg::issuers(&text, written, &defaults, problems, &mut warnings) {
            // Routing is by iss and metrics by name: both must be unique
            // across the native issuers and every file's.
            if let Some(other) = specs.iter().find(|o| o.url == spec.url) {
                problems.add(
                    &spec.field.field("issuer").field("url"),
                    format!(
                        "issuer {} already matches tokens with this iss; every token must route to exactly one issuer",
                        other.field
                    ),
                );
            } else if let Some(other) = specs.iter().find(|o| o.name == spec.name) {
                problems.add(
                    &spec.field.field("issuer").field("url"),
                    format!(
                        "gives the issuer name {:?}, which {} has already: rename that issuer",
                        spec.name, other.field
                    ),
                );
            } else {
                specs.push(spec);
            }
        }
    }
    if specs.is_empty() && !config.authentication_config_files.is_empty() && problems.len() == 0 {
        problems.add(
            &FieldPath::at("authentication_config_files"),
            "no issuer: neither issuers nor the files' jwt[] name one",
        );
    }
    let issuers = specs
        .into_iter()
        .filter_map(|spec| issuer(spec, problems, &mut warnings))
        .collect();
    Prepared {
        server: config.server,
        telemetry: config.telemetry,
        cache: config.cache,
        issuers,
        warnings,
    }
}

fn issuer(
    spec: config::Issuer,
    problems: &mut Problems,
    warnings: &mut Vec<Problem>,
) -> Option<Issuer> {
    let before = problems.len();
    let at = spec.field.clone();
    let inline_ca = spec.certificate_authority_data.clone();
    let ca_pem = inline_ca.or_else(|| {
        spec.certificate_authority_file.as_deref().and_then(|p| {
            let field = at.field("certificate_authority_file");
            let pem = read(problems, &field, p)?;
            match kube_authn_common::parse_ca_bundle(&pem) {
                Ok(_) => Some(pem),
                Err(e) => {
                    problems.add(&field, e);
                    None
                }
            }
        })
    });
    let mut static_keys = Vec::new();
    let now = unix_now();
    let allow_expired = spec.keys.allow_expired_certificate;
    for (i, p) in spec.keys.public_key_files.iter().enumerate() {
        let field = at.field("keys").field("public_key_files").index(i);
        if let Some(bytes) = read(problems, &field, p) {
            match keys::from_pem(&bytes) {
                Ok(k) => {
                    for key in &k {
                        certificate_validity(
                            problems,
                            warnings,
                            &field,
                            p,
                            key,
                            allow_expired,
                            now,
                        );
                    }
                    static_keys.extend(k);
                }
                Err(e) => problems.add(&field, format!("{}: {e}", p.display())),
            }
        }
    }
    if let Some(p) = &spec.keys.hmac_secret_file {
        let field = at.field("keys").field("hmac_secret_file");
        // The file's bytes are wiped once the key holds its copy.
        if let Some(bytes) = read(problems, &field, p).map(Zeroizing::new) {
            match keys::hmac_secret(&bytes) {
                Ok(k) => static_keys.push(k),
                Err(e) => problems.add(&field, e),
            }
        }
    }
    let algorithms = match &spec.algorithms {
        Some(algs) => algs.clone(),
        // An efa issuer without `algorithms`: what its keys support (RS256
        // for keys from a JWKS).
        None => {
            let mut algs: Vec<Algorithm> = static_keys
                .iter()
                .map(VerifyKey::default_algorithm)
                .collect();
            if static_keys.is_empty() {
                algs.push(Algorithm::RS256);
            }
            algs.dedup();
            algs
        }
    };
    (problems.len() == before).then_some(Issuer {
        spec,
        algorithms,
        static_keys,
        ca_pem,
    })
}

/// A key from a certificate is trusted within the certificate's validity
/// only: one outside it is a problem, or with `allow_expired` a warning;
/// one inside it stops verifying at its notAfter (unless `allow_expired`).
fn certificate_validity(
    problems: &mut Problems,
    warnings: &mut Vec<Problem>,
    field: &FieldPath,
    path: &Path,
    key: &VerifyKey,
    allow_expired: bool,
    now: u64,
) {
    let Some(cert) = key.certificate else { return };
    match (cert.problem_at(now), allow_expired) {
        (Some(why), false) => problems.add(
            field,
            format!(
                "{}: the certificate {why}: install the issuer's current certificate (or set keys.allow_expired_certificate: true to trust it anyway)",
                path.display()
            ),
        ),
        (Some(why), true) => warnings.push(Problem {
            field: field.clone(),
            message: format!(
                "{}: the certificate {why}, and is trusted anyway because keys.allow_expired_certificate is set",
                path.display()
            ),
        }),
        (None, false) => key.trust_until(u64::try_from(cert.not_after).unwrap_or(0)),
        (None, true) => {}
    }
}

fn read(problems: &mut Problems, field: &FieldPath, path: &Path) -> Option<Vec<u8>> {
    match read_bounded(path) {
        Ok(b) => Some(b),
        Err(e) => {
            problems.add(field, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

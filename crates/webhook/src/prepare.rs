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
    /// The revocation list file (validated here when it exists; `serve`
    /// watches it).
    pub(crate) revocation: Option<std::path::PathBuf>,
    pub(crate) audit: Option<config::Audit>,
    pub(crate) audit_salt: Option<Salt>,
    /// Valid settings that weaken a check (e.g. `allow_any_audience`):
    /// `check-config` prints them, `serve` logs them at start.
    pub warnings: Vec<Problem>,
}

/// The audit trail's salt: never printed, wiped when dropped.
pub(crate) struct Salt(pub(crate) Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Salt(..)")
    }
}

/// Shorter salts could be found by trying; a trailing newline is not part of it.
const MIN_SALT_BYTES: usize = 16;

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
    let issuers: Vec<Issuer> = config
        .issuers
        .into_iter()
        .filter_map(|spec| issuer(spec, problems, &mut warnings))
        .collect();
    if let Some(file) = &config.revocation {
        revocation_list(file, &issuers, problems, &mut warnings);
    }
    if let Some(config::Audit {
        output: config::AuditOutput::File { path, .. },
        ..
    }) = &config.audit
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        problems.add(
            &FieldPath::at("audit.file"),
            format!(
                "{}: the directory {} does not exist",
                path.display(),
                dir.display()
            ),
        );
    }
    let audit_salt = config
        .audit
        .as_ref()
        .and_then(|a| a.salt_file.as_deref())
        .and_then(|p| {
            let field = FieldPath::at("audit.salt_file");
            let mut bytes = Zeroizing::new(read(problems, &field, p)?);
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            if bytes.len() < MIN_SALT_BYTES {
                problems.add(
                    &field,
                    format!("{}: a salt must be at least {MIN_SALT_BYTES} bytes (e.g. head -c 32 /dev/urandom | base64)", p.display()),
                );
                return None;
            }
            Some(Salt(bytes))
        });
    Prepared {
        server: config.server,
        telemetry: config.telemetry,
        cache: config.cache,
        issuers,
        revocation: config.revocation,
        audit: config.audit,
        audit_salt,
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
    let ca_pem = spec.certificate_authority_file.as_deref().and_then(|p| {
        let field = at.field("certificate_authority_file");
        let pem = read(problems, &field, p)?;
        match kube_authn_common::parse_ca_bundle(&pem) {
            Ok(_) => Some(pem),
            Err(e) => {
                problems.add(&field, e);
                None
            }
        }
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

/// A list that exists must validate, as `serve` would refuse it; one that
/// does not exist yet is an empty list. Entries for issuers the config does
/// not have are warned about: they can never match.
fn revocation_list(
    file: &Path,
    issuers: &[Issuer],
    problems: &mut Problems,
    warnings: &mut Vec<Problem>,
) {
    let field = FieldPath::at("revocation.file");
    match crate::revoke::load(file) {
        Ok((_, entries)) => {
            for (i, e) in entries.iter().enumerate() {
                if let Some(name) = e.target.issuer()
                    && !issuers.iter().any(|iss| iss.spec.name == name)
                {
                    warnings.push(Problem {
                        field: field.clone(),
                        message: format!(
                            "{}: entries[{i}] is for issuer {name:?}, which the config does not have: it never applies",
                            file.display()
                        ),
                    });
                }
            }
        }
        Err(e) if e.is_missing() => {}
        Err(crate::revoke::LoadError::Invalid(err)) => {
            for p in err.problems {
                problems.add(&field, format!("{}: {p}", file.display()));
            }
        }
        Err(e) => problems.add(&field, format!("{}: {e}", file.display())),
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

//! From a validated config to what the service runs on: every file the
//! config names read once (bounded), CA bundles and keys parsed, the TLS
//! pair checked to belong together. `serve` and `check-config` both load
//! through `Prepared::load`, so check-config finds what serve would trip on,
//! and every problem of both stages comes in one list.
//!
//! Every file read here is recorded (path and SHA-256), so a running
//! `serve` can tell whether anything the config depends on changed by
//! reading those files again (`FilesRead::changed`), and the config has one
//! hash (`config_info{hash}`).

use std::path::{Path, PathBuf};

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
    /// `state_dir`, checked to be a directory.
    pub(crate) state_dir: Option<std::path::PathBuf>,
    /// The `openshift-oauth` issuer and the API server client config it uses.
    pub(crate) openshift_oauth: Option<crate::oauth::Prepared>,
    /// The revocation list file (validated here when it exists; `serve`
    /// watches it).
    pub(crate) revocation: Option<std::path::PathBuf>,
    pub(crate) audit: Option<config::Audit>,
    pub(crate) audit_salt: Option<Salt>,
    /// Valid settings that weaken a check (e.g. `allow_any_audience`):
    /// `check-config` prints them, `serve` logs them at start.
    pub warnings: Vec<Problem>,
    /// Every file read, the config file first.
    pub(crate) files: FilesRead,
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
    /// SHA-256 of the issuer's settings and of every file it read: equal
    /// identities verify the same tokens the same way, so a reload keeps
    /// that issuer's verifier, keys and cached verdicts.
    pub(crate) identity: FileHash,
}

pub(crate) type FileHash = [u8; 32];

/// The files a load read, in order: each path with the SHA-256 of what was
/// read, or `None` when it could not be read (a reload is tried again once
/// it can).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FilesRead(Vec<(PathBuf, Option<FileHash>)>);

impl FilesRead {
    fn record(&mut self, path: &Path, bytes: Option<&[u8]>) {
        self.0.push((path.to_owned(), bytes.map(sha256)));
    }

    /// One hash over every path and content: what `config_info{hash}` shows.
    pub(crate) fn hash(&self) -> FileHash {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for (path, hash) in &self.0 {
            let p = path.as_os_str().as_encoded_bytes();
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
            match hash {
                Some(h) => {
                    ctx.update(&[1]);
                    ctx.update(h);
                }
                None => ctx.update(&[0]),
            }
        }
        digest_bytes(ctx.finish())
    }

    /// Whether any file reads differently now (other bytes, now readable or
    /// no longer). Reads every file again, bounded as the load did.
    pub(crate) fn changed(&self) -> bool {
        self.0
            .iter()
            .any(|(path, hash)| read_bounded(path).ok().map(|b| sha256(&b)) != *hash)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

fn sha256(bytes: &[u8]) -> FileHash {
    digest_bytes(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

fn digest_bytes(d: aws_lc_rs::digest::Digest) -> FileHash {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Prepared {
    /// Reads, validates and prepares a config file; every problem found, by
    /// file and field.
    pub fn load(path: &Path) -> Result<Prepared, ConfigError> {
        Self::load_recorded(path).1
    }

    /// `load`, and the files it read whether or not the config is valid:
    /// a reload that failed is not tried again until one of them changes.
    pub(crate) fn load_recorded(path: &Path) -> (FilesRead, Result<Prepared, ConfigError>) {
        let mut files = FilesRead::default();
        let text = match config::read_text(path) {
            Ok(t) => t,
            Err(e) => {
                files.record(path, read_bounded(path).ok().as_deref());
                return (files, Err(e));
            }
        };
        files.record(path, Some(text.as_bytes()));
        let mut reader = Reader { files };
        let result = Self::prepare_text(&text, path, &mut reader);
        (reader.files, result)
    }

    /// Like `load`, for config text as if read from `path` (relative paths
    /// are taken from its directory).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Prepared, ConfigError> {
        let mut files = FilesRead::default();
        files.record(path, Some(text.as_bytes()));
        Self::prepare_text(text, path, &mut Reader { files })
    }

    fn prepare_text(text: &str, path: &Path, reader: &mut Reader) -> Result<Prepared, ConfigError> {
        let (config, mut problems) = config::validate(text, path)?;
        // Prepared even when validation found problems: what did validate
        // (issuers with problems are left out) gets its files read too, so
        // one run lists everything.
        let mut prepared = prepare(config, &mut problems, reader);
        prepared.files = reader.files.clone();
        problems.or_value(prepared, path)
    }

    /// Every issuer, JWT and openshift-oauth alike.
    pub fn issuer_count(&self) -> usize {
        self.issuers.len() + usize::from(self.openshift_oauth.is_some())
    }

    /// Logs the config's warnings, once, as `serve` starts.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(field = %w.field, "config: {}", w.message);
        }
    }
}

/// Reads the files a config names, recording each.
struct Reader {
    files: FilesRead,
}

impl Reader {
    fn read(&mut self, problems: &mut Problems, field: &FieldPath, path: &Path) -> Option<Vec<u8>> {
        match read_bounded(path) {
            Ok(b) => {
                self.files.record(path, Some(&b));
                Some(b)
            }
            Err(e) => {
                self.files.record(path, None);
                problems.add(field, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }
}

fn prepare(config: Config, problems: &mut Problems, reader: &mut Reader) -> Prepared {
    // The serving certificate, key and client CA are not recorded: the TLS
    // reloader watches them (`tls::Reloader`), and a new certificate is no
    // reason to rebuild the issuers.
    let tls = &config.server.tls;
    if let Err(e) = crate::tls::load_certified_key(&tls.cert_file, &tls.key_file) {
        problems.add(&FieldPath::at("server.tls"), e.to_string());
    }
    if let Some(ca) = &tls.client_ca_file
        && let Err(e) = crate::tls::load_client_roots(ca)
    {
        problems.add(&FieldPath::at("server.tls.client_ca_file"), e.to_string());
    }
    if let Some(dir) = &config.state_dir {
        let field = FieldPath::at("state_dir");
        let parent_is_dir = || dir.parent().is_some_and(Path::is_dir);
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => problems.add(&field, format!("{} is not a directory", dir.display())),
            // serve creates it (mode 0700) in a directory that exists.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && parent_is_dir() => {}
            Err(e) => problems.add(
                &field,
                format!(
                    "cannot use {}: {e}; create it (an emptyDir or a small volume, writable by the webhook only)",
                    dir.display()
                ),
            ),
        }
    }
    let mut warnings = config.warnings;
    let mut specs = config.issuers;
    let defaults = crate::authcfg::Defaults {
        max_key_age: config.max_key_age,
    };
    for (i, (written, path)) in config.authentication_config_files.iter().enumerate() {
        let field = FieldPath::at("authentication_config_files").index(i);
        let Some(bytes) = reader.read(problems, &field, path) else {
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
    if specs.is_empty()
        && config.openshift_oauth.is_none()
        && !config.authentication_config_files.is_empty()
        && problems.len() == 0
    {
        problems.add(
            &FieldPath::at("authentication_config_files"),
            "no issuer: neither issuers nor the files' jwt[] name one",
        );
    }
    let issuers: Vec<Issuer> = specs
        .into_iter()
        .filter_map(|spec| issuer(spec, problems, &mut warnings, reader))
        .collect();
    let openshift_oauth = config.openshift_oauth.and_then(|spec| {
        // Recorded so that a changed kubeconfig is a reason to reload (the
        // files it names are read by the client, not watched).
        if let Some(path) = &spec.kubeconfig {
            reader
                .files
                .record(path, read_bounded(path).ok().as_deref());
        }
        crate::oauth::Prepared::load(spec, problems)
    });
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
            let mut bytes = Zeroizing::new(reader.read(problems, &field, p)?);
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
        state_dir: config.state_dir,
        openshift_oauth,
        revocation: config.revocation,
        audit: config.audit,
        audit_salt,
        warnings,
        files: FilesRead::default(),
    }
}

fn issuer(
    mut spec: config::Issuer,
    problems: &mut Problems,
    warnings: &mut Vec<Problem>,
    reader: &mut Reader,
) -> Option<Issuer> {
    let before = problems.len();
    let files_before = reader.files.len();
    let at = spec.field.clone();
    let inline_ca = spec.certificate_authority_data.clone();
    let ca_pem = inline_ca.or_else(|| {
        spec.certificate_authority_file.as_deref().and_then(|p| {
            let field = at.field("certificate_authority_file");
            let pem = reader.read(problems, &field, p)?;
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
        if let Some(bytes) = reader.read(problems, &field, p) {
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
        if let Some(bytes) = reader.read(problems, &field, p).map(Zeroizing::new) {
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
    let identity = identity(&mut spec, &reader.files.0[files_before..]);
    (problems.len() == before).then_some(Issuer {
        spec,
        algorithms,
        static_keys,
        ca_pem,
        identity,
    })
}

/// The validated settings as `Debug` writes them (every field of
/// `config::Issuer`, derived, so a new setting counts without anyone
/// remembering to add it here), minus where the issuer sits in the file
/// (moving it changes nothing), and the hashes of the files it read.
fn identity(spec: &mut config::Issuer, files: &[(PathBuf, Option<FileHash>)]) -> FileHash {
    let field = std::mem::take(&mut spec.field);
    let settings = format!("{spec:?}");
    spec.field = field;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(settings.as_bytes());
    for (_, hash) in files {
        ctx.update(hash.as_ref().map_or(&[0u8; 32][..], |h| &h[..]));
    }
    digest_bytes(ctx.finish())
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

//! The config file, in two stages: `raw` mirrors the YAML (unknown fields are
//! errors), `Config` is what the rest of the code trusts, each problem found
//! on the way named by its `FieldPath`. No file the config names is read
//! here: `prepare` does that, for `serve` and `check-config` alike.

mod field;
mod raw;

pub(crate) use field::Problems;
pub use field::{ConfigError, FieldPath, Problem};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use kube_authn_common::fs::read_bounded;

use crate::cel;
use crate::keys::remote;
use crate::verify::claims::{ClaimMapping, ClaimPath, Source};

/// Issuer name used in metrics and logs for tokens no issuer claims.
pub(crate) const UNMATCHED_ISSUER: &str = "unmatched";

#[derive(Debug)]
pub struct Config {
    pub(crate) server: Server,
    pub(crate) telemetry: Telemetry,
    pub(crate) cache: Cache,
    pub(crate) issuers: Vec<Issuer>,
    /// Where each fetching issuer's last good keys are written, and read
    /// back at start when the issuer cannot be reached (absolute).
    pub(crate) state_dir: Option<PathBuf>,
    /// The `openshift-oauth` issuer, if one is configured (at most one).
    pub(crate) openshift_oauth: Option<OAuthIssuer>,
    /// The revocation list's file, watched like the TLS files.
    pub(crate) revocation: Option<PathBuf>,
    /// `None`: no audit trail (the default).
    pub(crate) audit: Option<Audit>,
    /// AuthenticationConfiguration files: as written, and where they are.
    /// `prepare` reads them; their `jwt[]` entries join `issuers`.
    pub(crate) authentication_config_files: Vec<(String, PathBuf)>,
    /// The top-level `max_key_age`, for those files' issuers.
    pub(crate) max_key_age: Duration,
    /// Settings that are valid but weaken a check; `check-config` prints
    /// them, `serve` logs them at start.
    pub(crate) warnings: Vec<Problem>,
}

/// The audit trail: one JSON line per decision, apart from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Audit {
    pub(crate) output: AuditOutput,
    /// Usernames and groups as salted hashes: the salt's file.
    pub(crate) salt_file: Option<PathBuf>,
    /// Decisions waiting for the writer thread; a review waits when it is full.
    pub(crate) queue: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuditOutput {
    /// Beside the log on stdout, told apart by `"log_type": "audit"`.
    Stdout,
    /// Rotated by size: `file` is renamed to `file.1` (and so on up to
    /// `max_files`) when it would grow past `max_bytes`.
    File {
        path: PathBuf,
        max_bytes: u64,
        max_files: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Server {
    pub(crate) listen: SocketAddr,
    pub(crate) tls: TlsFiles,
    pub(crate) max_body_bytes: usize,
    /// Deadline for one review, including any key refetch it waits on. Below
    /// the kube-apiserver's own 30 s so it gets an answer rather than a timeout.
    pub(crate) request_timeout: Duration,
    /// A client must send its whole request (headers, then body) within this;
    /// slow senders are cut off.
    pub(crate) read_timeout: Duration,
    /// On SIGTERM, how long in-flight reviews get to finish.
    pub(crate) shutdown_grace: Duration,
    pub(crate) max_connections: usize,
    /// Reviews in progress at once, over all connections and HTTP/2
    /// streams; more are answered 429.
    pub(crate) max_concurrent_reviews: usize,
    pub(crate) workers: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) client_ca_file: Option<PathBuf>,
    /// When non-empty, a client certificate must name one of these (subject
    /// CN or a DNS SAN); others get 403.
    pub(crate) allowed_client_names: Vec<String>,
    /// How often the files are checked for a new certificate or CA.
    pub(crate) reload_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telemetry {
    pub(crate) listen: SocketAddr,
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    pub max_entries: u64,
    pub(crate) max_ttl: Duration,
    pub(crate) negative_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IssuerKind {
    Oidc,
    Efa,
}

impl IssuerKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Oidc => "oidc",
            IssuerKind::Efa => "efa",
        }
    }
}

#[derive(Debug)]
pub struct Issuer {
    pub(crate) name: String,
    pub(crate) kind: IssuerKind,
    /// The token `iss` this issuer answers for; `None` only for an efa issuer
    /// that takes tokens without `iss`.
    pub url: Option<String>,
    /// The token's `aud` must contain one of these, unless `allow_any_audience`.
    pub(crate) audiences: Vec<String>,
    /// The `aud` check is skipped (efa only, written explicitly).
    pub(crate) allow_any_audience: bool,
    pub(crate) trust_implicit_audience: bool,
    /// `None`: what the keys support (an efa issuer without `algorithms`),
    /// decided when `prepare` reads them.
    pub(crate) algorithms: Option<Vec<Algorithm>>,
    /// Leeway on `exp`; `nbf` gets at least `verify::NBF_LEEWAY`.
    pub(crate) clock_skew: Duration,
    /// Tokens whose `exp - iat` is longer are refused (and tokens without `iat`).
    pub(crate) max_token_lifetime: Option<Duration>,
    pub(crate) claims: ClaimMapping,
    pub(crate) keys: KeyFiles,
    /// PEM bundle to trust for HTTPS to the issuer instead of the system roots.
    pub(crate) certificate_authority_file: Option<PathBuf>,
    /// The same, written inline (an AuthenticationConfiguration's
    /// `certificateAuthority`).
    pub(crate) certificate_authority_data: Option<Vec<u8>>,
    pub(crate) remote: Option<RemoteKeys>,
    /// `/readyz` is 503 while this issuer has no usable keys; otherwise it
    /// only reports the issuer's state.
    pub(crate) required: bool,
    /// Where the issuer is in the file, for problems found when its files
    /// are read.
    pub(crate) field: FieldPath,
}

/// The issuer kind that looks `sha256~` tokens up on the API server.
pub(crate) const OPENSHIFT_OAUTH: &str = "openshift-oauth";

/// An `openshift-oauth` issuer: OpenShift OAuth access tokens (`sha256~...`)
/// checked against their `OAuthAccessToken`, `User` and `Group` objects.
#[derive(Debug, Clone)]
pub(crate) struct OAuthIssuer {
    pub(crate) name: String,
    /// `None`: the pod's in-cluster config (its ServiceAccount).
    pub(crate) kubeconfig: Option<PathBuf>,
    /// A token found valid is trusted this long without a new lookup: how
    /// long `oc delete oauthaccesstoken` may take to bite.
    pub(crate) positive_ttl: Duration,
    /// One lookup, all its API requests included.
    pub(crate) api_timeout: Duration,
    /// Lookups of tokens the cache does not hold, per second (also the burst).
    pub(crate) max_lookups_per_second: u32,
    pub(crate) field: FieldPath,
}

/// An efa issuer's static keys, as files (absolute paths).
#[derive(Debug, Default, Clone)]
pub(crate) struct KeyFiles {
    pub(crate) public_key_files: Vec<PathBuf>,
    pub(crate) hmac_secret_file: Option<PathBuf>,
    /// Trust a certificate in `public_key_files` outside its validity.
    pub(crate) allow_expired_certificate: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RemoteKeys {
    pub(crate) source: RemoteSource,
    pub(crate) fetch_timeout: Duration,
    pub(crate) min_refetch_interval: Duration,
    pub(crate) max_response_bytes: usize,
    /// How long the last good keys are used while the issuer cannot be
    /// reached.
    pub(crate) max_key_age: Duration,
    /// Hosts the JWKS may be fetched from (lower case, as `Url::host_str`
    /// writes them): the issuer's own, `discovery_url`'s, then `jwks_hosts`.
    pub(crate) jwks_hosts: Vec<String>,
    /// `proxy_url`: every fetch of this issuer goes through it. Without it,
    /// the environment's `HTTPS_PROXY`/`ALL_PROXY` and `NO_PROXY` decide.
    pub(crate) proxy: Option<ProxyUrl>,
}

/// A proxy URL, which may carry `user:password@`: never shown whole.
#[derive(Clone)]
pub(crate) struct ProxyUrl(pub(crate) String);

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match reqwest::Url::parse(&self.0) {
            Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
                let _ = u.set_username("redacted");
                let _ = u.set_password(None);
                write!(f, "ProxyUrl({u})")
            }
            Ok(u) => write!(f, "ProxyUrl({u})"),
            Err(_) => f.write_str("ProxyUrl(..)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemoteSource {
    /// OIDC discovery at `url`: `<issuer>/.well-known/openid-configuration`,
    /// or `discovery_url`. The document must name `issuer` either way.
    Discovery {
        issuer: String,
        url: String,
    },
    Jwks {
        url: String,
    },
}

const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
const DEFAULT_TELEMETRY_LISTEN: &str = "0.0.0.0:9090";
const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Far above what two cores answer at once (a cache hit takes microseconds,
/// a miss waits for at most one key fetch), far below what would exhaust
/// memory with a full body each.
const DEFAULT_MAX_CONCURRENT_REVIEWS: usize = 4096;
const DEFAULT_MAX_ENTRIES: u64 = 100_000;
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// None on `exp`, as the kube-apiserver's own OIDC authenticator.
const DEFAULT_CLOCK_SKEW: Duration = Duration::ZERO;
pub(crate) const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_MIN_REFETCH: Duration = Duration::from_secs(10);
const DEFAULT_MAX_KEY_AGE: Duration = Duration::from_secs(24 * 3600);
const MIN_MAX_KEY_AGE: Duration = Duration::from_secs(5 * 60);
const MAX_MAX_KEY_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;
const DEFAULT_POSITIVE_TTL: Duration = Duration::from_secs(30);
const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_LOOKUPS_PER_SECOND: u32 = 50;

impl RemoteSource {
    /// The URL the issuer's keys are known by: the issuer's for discovery
    /// (whatever `discovery_url` says), the JWKS URL otherwise. A saved key
    /// set must name it.
    pub(crate) fn identity(&self) -> &str {
        match self {
            RemoteSource::Discovery { issuer, .. } => issuer,
            RemoteSource::Jwks { url } => url,
        }
    }
}

const DEFAULT_AUDIT_MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
const DEFAULT_AUDIT_MAX_FILES: u32 = 5;
/// Decisions waiting for the audit writer, each held inline (about 200
/// bytes, allocated when the writer starts): 3 MiB, and at one drain every
/// 20 ms room for 800,000 reviews a second.
const DEFAULT_AUDIT_QUEUE: usize = 16_384;

impl Config {
    /// Parses and validates config text as if it had been read from `path`
    /// (relative paths are taken from its directory, as kubeconfig does).
    /// The files it names are not read: `prepare::Prepared::load` does that.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let (config, problems) = validate(text, path)?;
        problems.or_value(config, path)
    }

    /// What `check-config` warns about: valid settings that weaken a check.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }
}

/// The config file's text, bounded like every file it names.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    let fail = |message: String| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            field: FieldPath::root(),
            message,
        }],
    };
    let bytes = read_bounded(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".to_owned()))
}

/// Validates config text: the config as far as it is valid (issuers with
/// problems left out) and every problem found. `Err` only when the text is
/// not a config at all.
pub(crate) fn validate(text: &str, path: &Path) -> Result<(Config, Problems), ConfigError> {
    let raw: raw::Config = serde_norway::from_str(text).map_err(|e| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            field: FieldPath::root(),
            message: format!("not a valid config: {e}"),
        }],
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut v = Validator {
        base,
        problems: Problems::default(),
        max_key_age: DEFAULT_MAX_KEY_AGE,
        warnings: Vec::new(),
    };
    let config = v.config(raw);
    Ok((config, v.problems))
}

struct Validator {
    base: PathBuf,
    problems: Problems,
    /// The top-level `max_key_age`, for issuers without their own.
    max_key_age: Duration,
    warnings: Vec<Problem>,
}

impl Validator {
    fn problem(&mut self, field: &FieldPath, message: impl Into<String>) {
        self.problems.add(field, message);
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    fn duration(&mut self, field: &FieldPath, value: Option<&str>, default: Duration) -> Duration {
        let Some(s) = value else { return default };
        match humantime::parse_duration(s.trim()) {
            Ok(d) => d,
            Err(e) => {
                self.problem(
                    field,
                    format!("{s:?} is not a duration ({e}); write it like 30s, 5m or 1h"),
                );
                default
            }
        }
    }

    /// `max_key_age` at `field`: 5m..30d (a key set is refreshed at least
    /// every quarter of it, and at most every minute).
    fn max_key_age(
        &mut self,
        field: &FieldPath,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        let age = self.duration(field, value, default);
        if !(MIN_MAX_KEY_AGE..=MAX_MAX_KEY_AGE).contains(&age) {
            self.problem(
                field,
                "must be between 5m and 30d: how long the last good keys are used while the issuer cannot be reached",
            );
        }
        age
    }

    fn socket_addr(&mut self, field: &FieldPath, value: Option<&str>, default: &str) -> SocketAddr {
        let s = value.unwrap_or(default);
        match s.parse() {
            Ok(a) => a,
            Err(_) => {
                self.problem(
                    field,
                    format!("{s:?} is not an address:port such as 0.0.0.0:8443 or 127.0.0.1:8443"),
                );
                // Only reached when there is a problem, so the value is never used.
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        }
    }

    fn config(&mut self, raw: raw::Config) -> Config {
        let server = self.server(raw.server);
        let telemetry = self.telemetry(raw.telemetry);
        let cache = self.cache(raw.cache);
        if telemetry.listen == server.listen && server.listen.port() != 0 {
            self.problem(
                &FieldPath::at("telemetry.listen"),
                "must differ from server.listen: the telemetry port is plain HTTP",
            );
        }
        let authentication_config_files: Vec<(String, PathBuf)> = raw
            .authentication_config_files
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.display().to_string(), self.path(&p)))
            .collect();
        // With AuthenticationConfiguration files, `prepare` counts their
        // issuers too.
        if raw.issuers.is_empty() && authentication_config_files.is_empty() {
            self.problem(
                &FieldPath::at("issuers"),
                "at least one issuer is needed (in issuers, or in authentication_config_files)",
            );
        }
        self.distinct_issuers(&raw.issuers);
        self.separate_identities(&raw.issuers);
        self.max_key_age = self.max_key_age(
            &FieldPath::at("max_key_age"),
            raw.max_key_age.as_deref(),
            DEFAULT_MAX_KEY_AGE,
        );
        let mut issuers = Vec::new();
        let mut openshift_oauth = None;
        let mut oauth_seen = false;
        for (i, r) in raw.issuers.into_iter().enumerate() {
            if r.kind != OPENSHIFT_OAUTH {
                issuers.extend(self.issuer(i, r));
                continue;
            }
            let at = FieldPath::at("issuers").index(i).named(r.name.trim());
            if std::mem::replace(&mut oauth_seen, true) {
                self.problem(
                    &at.field("kind"),
                    "another issuer is already openshift-oauth: every sha256~ token must route to exactly one issuer",
                );
                continue;
            }
            openshift_oauth = self.oauth_issuer(i, r, server.request_timeout);
        }
        let state_dir = raw.state_dir.as_deref().map(|p| self.path(p));
        if let Some(dir) = &state_dir
            && dir.as_os_str().is_empty()
        {
            self.problem(
                &FieldPath::at("state_dir"),
                "must not be empty; leave it out instead",
            );
        }
        let revocation = raw.revocation.map(|r| self.path(&r.file));
        let audit = raw.audit.map(|a| self.audit(a));
        Config {
            server,
            telemetry,
            cache,
            issuers,
            state_dir,
            openshift_oauth,
            revocation,
            audit,
            authentication_config_files,
            max_key_age: self.max_key_age,
            warnings: std::mem::take(&mut self.warnings),
        }
    }

    fn audit(&mut self, raw: raw::Audit) -> Audit {
        let at = FieldPath::at("audit");
        let output = match raw.output.as_str() {
            "stdout" => {
                for (set, field) in [
                    (raw.file.is_some(), "file"),
                    (raw.max_file_bytes.is_some(), "max_file_bytes"),
                    (raw.max_files.is_some(), "max_files"),
                ] {
                    if set {
                        self.problem(&at.field(field), "is for output: file");
                    }
                }
                AuditOutput::Stdout
            }
            "file" => {
                let path = match &raw.file {
                    Some(p) => self.path(p),
                    None => {
                        self.problem(
                            &at.field("file"),
                            "output: file needs file: the path the audit lines are written to",
                        );
                        PathBuf::new()
                    }
                };
                let max_bytes = raw.max_file_bytes.unwrap_or(DEFAULT_AUDIT_MAX_FILE_BYTES);
                if max_bytes < 64 * 1024 {
                    self.problem(
                        &at.field("max_file_bytes"),
                        "must be at least 65536: a file is rotated when it would grow past it",
                    );
                }
                let max_files = raw.max_files.unwrap_or(DEFAULT_AUDIT_MAX_FILES);
                if !(1..=100).contains(&max_files) {
                    self.problem(
                        &at.field("max_files"),
                        "must be between 1 and 100: how many rotated files are kept",
                    );
                }
                AuditOutput::File {
                    path,
                    max_bytes,
                    max_files,
                }
            }
            other => {
                self.problem(
                    &at.field("output"),
                    format!("{other:?} is not an audit output: use stdout or file"),
                );
                AuditOutput::Stdout
            }
        };
        let salt_file = match (raw.identities.as_deref(), &raw.salt_file) {
            (None | Some("clear"), None) => None,
            (None | Some("clear"), Some(_)) => {
                self.problem(
                    &at.field("salt_file"),
                    "is for identities: hashed; with clear identities nothing is hashed",
                );
                None
            }
            (Some("hashed"), Some(p)) => Some(self.path(p)),
            (Some("hashed"), None) => {
                self.problem(
                    &at.field("salt_file"),
                    "identities: hashed needs salt_file: a file of at least 16 secret bytes, so the hashes cannot be reversed by trying names",
                );
                None
            }
            (Some(other), _) => {
                self.problem(
                    &at.field("identities"),
                    format!("{other:?} is not a choice: use clear or hashed"),
                );
                None
            }
        };
        let queue = raw.queue.unwrap_or(DEFAULT_AUDIT_QUEUE);
        if !(16..=1_048_576).contains(&queue) {
            self.problem(&at.field("queue"), "must be between 16 and 1048576");
        }
        Audit {
            output,
            salt_file,
            queue,
        }
    }

    fn server(&mut self, raw: raw::Server) -> Server {
        let listen = self.socket_addr(
            &FieldPath::at("server.listen"),
            raw.listen.as_deref(),
            DEFAULT_LISTEN,
        );
        let reload_interval = self.duration(
            &FieldPath::at("server.tls.reload_interval"),
            raw.tls.reload_interval.as_deref(),
            DEFAULT_RELOAD_INTERVAL,
        );
        if reload_interval < Duration::from_millis(100) {
            self.problem(
                &FieldPath::at("server.tls.reload_interval"),
                "must be at least 100ms",
            );
        }
        let tls = TlsFiles {
            cert_file: self.path(&raw.tls.cert_file),
            key_file: self.path(&raw.tls.key_file),
            client_ca_file: raw.tls.client_ca_file.as_deref().map(|p| self.path(p)),
            allowed_client_names: raw.tls.allowed_client_names.unwrap_or_default(),
            reload_interval,
        };
        if !tls.allowed_client_names.is_empty() && tls.client_ca_file.is_none() {
            self.problem(
                &FieldPath::at("server.tls.allowed_client_names"),
                "needs client_ca_file: without client certificates there are no names to check",
            );
        }
        if tls.allowed_client_names.iter().any(|n| n.trim().is_empty()) {
            self.problem(
                &FieldPath::at("server.tls.allowed_client_names"),
                "a name must not be empty",
            );
        }
        let max_body = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        if !(1024..=64 * 1024 * 1024).contains(&max_body) {
            self.problem(
                &FieldPath::at("server.max_body_bytes"),
                format!("{max_body} is out of range: use 1024 to 67108864 (Dex tokens with many groups reach 60 KB)"),
            );
        }
        let request_timeout = self.duration(
            &FieldPath::at("server.request_timeout"),
            raw.request_timeout.as_deref(),
            DEFAULT_REQUEST_TIMEOUT,
        );
        if request_timeout.is_zero() || request_timeout > Duration::from_secs(29) {
            self.problem(
                &FieldPath::at("server.request_timeout"),
                "must be between 1s and 29s: the kube-apiserver gives up on a webhook after 30s",
            );
        }
        let read_timeout = self.duration(
            &FieldPath::at("server.read_timeout"),
            raw.read_timeout.as_deref(),
            DEFAULT_READ_TIMEOUT,
        );
        if read_timeout < Duration::from_millis(100) || read_timeout > Duration::from_secs(60) {
            self.problem(
                &FieldPath::at("server.read_timeout"),
                "must be between 100ms and 60s",
            );
        }
        let shutdown_grace = self.duration(
            &FieldPath::at("server.shutdown_grace"),
            raw.shutdown_grace.as_deref(),
            DEFAULT_SHUTDOWN_GRACE,
        );
        if shutdown_grace > Duration::from_secs(300) {
            self.problem(
                &FieldPath::at("server.shutdown_grace"),
                "must be at most 5m",
            );
        }
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            self.problem(
                &FieldPath::at("server.max_connections"),
                "must be at least 1",
            );
        }
        let max_concurrent_reviews = raw
            .max_concurrent_reviews
            .unwrap_or(DEFAULT_MAX_CONCURRENT_REVIEWS);
        if !(1..=1_000_000).contains(&max_concurrent_reviews) {
            self.problem(
                &FieldPath::at("server.max_concurrent_reviews"),
                "must be between 1 and 1000000",
            );
        }
        let workers = raw
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if workers == 0 || workers > 256 {
            self.problem(
                &FieldPath::at("server.workers"),
                "must be between 1 and 256",
            );
        }
        Server {
            listen,
            tls,
            max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
            request_timeout,
            read_timeout,
            shutdown_grace,
            max_connections,
            max_concurrent_reviews,
            workers,
        }
    }

    fn telemetry(&mut self, raw: raw::Telemetry) -> Telemetry {
        let listen = self.socket_addr(
            &FieldPath::at("telemetry.listen"),
            raw.listen.as_deref(),
            DEFAULT_TELEMETRY_LISTEN,
        );
        let log_format = match raw.log_format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                self.problem(
                    &FieldPath::at("telemetry.log_format"),
                    format!("{other:?} is not a log format: use json or text"),
                );
                LogFormat::Json
            }
        };
        Telemetry { listen, log_format }
    }

    fn cache(&mut self, raw: raw::Cache) -> Cache {
        let max_ttl = self.duration(
            &FieldPath::at("cache.max_ttl"),
            raw.max_ttl.as_deref(),
            DEFAULT_MAX_TTL,
        );
        let negative_ttl = self.duration(
            &FieldPath::at("cache.negative_ttl"),
            raw.negative_ttl.as_deref(),
            DEFAULT_NEGATIVE_TTL,
        );
        if max_ttl > Duration::from_secs(24 * 3600) {
            self.problem(&FieldPath::at("cache.max_ttl"), "must be at most 24h");
        }
        if negative_ttl > max_ttl {
            self.problem(
                &FieldPath::at("cache.negative_ttl"),
                "must not exceed cache.max_ttl",
            );
        }
        let max_entries = raw.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
        if max_entries > 10_000_000 {
            self.problem(
                &FieldPath::at("cache.max_entries"),
                "must be at most 10000000 (0 turns the cache off)",
            );
        }
        Cache {
            max_entries,
            max_ttl,
            negative_ttl,
        }
    }

    /// An issuer's name, checked, and where the issuer is in the file.
    fn issuer_name(&mut self, index: usize, raw: &str) -> (String, FieldPath) {
        let at = FieldPath::at("issuers").index(index);
        let name = raw.trim().to_owned();
        if !valid_name(&name) {
            self.problem(
                &at.field("name"),
                format!("{name:?} is not a valid name: use lower-case letters, digits and '-', at most 63 characters (it becomes a metric label)"),
            );
        } else if name == UNMATCHED_ISSUER {
            self.problem(
                &at.field("name"),
                format!("{UNMATCHED_ISSUER:?} is reserved for tokens no issuer matches"),
            );
        }
        let at = at.named(&name);
        (name, at)
    }

    /// An `openshift-oauth` issuer: its own four settings, and none of the
    /// JWT issuers' (each one set is a problem naming it).
    fn oauth_issuer(
        &mut self,
        index: usize,
        raw: raw::Issuer,
        request_timeout: Duration,
    ) -> Option<OAuthIssuer> {
        let problems_before = self.problems.len();
        let (name, at) = self.issuer_name(index, &raw.name);
        let jwt_only = [
            ("url", raw.url.is_some()),
            (
                "certificate_authority_file",
                raw.certificate_authority_file.is_some(),
            ),
            ("jwks_url", raw.jwks_url.is_some()),
            ("audiences", raw.audiences.is_some()),
            ("allow_any_audience", raw.allow_any_audience.is_some()),
            (
                "trust_implicit_audience",
                raw.trust_implicit_audience.is_some(),
            ),
            ("algorithms", raw.algorithms.is_some()),
            ("clock_skew", raw.clock_skew.is_some()),
            ("jwks_fetch_timeout", raw.jwks_fetch_timeout.is_some()),
            (
                "jwks_min_refetch_interval",
                raw.jwks_min_refetch_interval.is_some(),
            ),
            ("max_key_age", raw.max_key_age.is_some()),
            ("jwks_hosts", raw.jwks_hosts.is_some()),
            ("keys", raw.keys.is_some()),
            ("claims", raw.claims.is_some()),
            (
                "email_verified_accepts_string",
                raw.email_verified_accepts_string.is_some(),
            ),
        ];
        for (field, set) in jwt_only {
            if set {
                self.problem(
                    &at.field(field),
                    format!("means nothing for an openshift-oauth issuer (its tokens are not JWTs: they are looked up on the API server, and the user is the OpenShift User they belong to); remove {field}"),
                );
            }
        }
        let kubeconfig = raw.kubeconfig.as_deref().map(|p| self.path(p));
        let positive_ttl = self.duration(
            &at.field("positive_ttl"),
            raw.positive_ttl.as_deref(),
            DEFAULT_POSITIVE_TTL,
        );
        if positive_ttl < Duration::from_secs(1) || positive_ttl > Duration::from_secs(600) {
            self.problem(
                &at.field("positive_ttl"),
                "must be between 1s and 10m: it is how long a deleted token may keep working",
            );
        }
        let api_timeout = self.duration(
            &at.field("api_timeout"),
            raw.api_timeout.as_deref(),
            DEFAULT_API_TIMEOUT,
        );
        if api_timeout < Duration::from_millis(100) || api_timeout > Duration::from_secs(15) {
            self.problem(&at.field("api_timeout"), "must be between 100ms and 15s");
        } else if api_timeout >= request_timeout {
            self.problem(
                &at.field("api_timeout"),
                format!("must be shorter than server.request_timeout ({request_timeout:?}), so a slow API server is answered as \"could not check\" rather than cut off"),
            );
        }
        let max_lookups_per_second = raw
            .max_lookups_per_second
            .unwrap_or(DEFAULT_MAX_LOOKUPS_PER_SECOND);
        if !(1..=10_000).contains(&max_lookups_per_second) {
            self.problem(
                &at.field("max_lookups_per_second"),
                "must be between 1 and 10000: lookups of tokens the cache does not hold, so a flood of made-up sha256~ strings cannot hammer the API server",
            );
        }
        if self.problems.len() > problems_before {
            return None;
        }
        Some(OAuthIssuer {
            name,
            kubeconfig,
            positive_ttl,
            api_timeout,
            max_lookups_per_second,
            field: at,
        })
    }

    fn issuer(&mut self, index: usize, raw: raw::Issuer) -> Option<Issuer> {
        let problems_before = self.problems.len();
        let (name, at) = self.issuer_name(index, &raw.name);
        let kind = match raw.kind.as_str() {
            "oidc" => IssuerKind::Oidc,
            "efa" => IssuerKind::Efa,
            other => {
                self.problem(
                    &at.field("kind"),
                    format!("{other:?} is not an issuer kind: use oidc (Dex or any OIDC provider), efa (Extreme EFA/XCO) or openshift-oauth (OpenShift's sha256~ OAuth access tokens)"),
                );
                return None;
            }
        };
        let oauth_only = [
            ("kubeconfig", raw.kubeconfig.is_some()),
            ("positive_ttl", raw.positive_ttl.is_some()),
            ("api_timeout", raw.api_timeout.is_some()),
            (
                "max_lookups_per_second",
                raw.max_lookups_per_second.is_some(),
            ),
        ];
        for (field, set) in oauth_only {
            if set {
                self.problem(
                    &at.field(field),
                    format!("is for openshift-oauth issuers only; remove {field}"),
                );
            }
        }

        let url = raw.url.as_deref().map(str::trim).map(str::to_owned);
        match (kind, &url) {
            (IssuerKind::Oidc, None) => self.problem(
                &at.field("url"),
                "an oidc issuer needs url: the token's iss, e.g. https://pcd.example.com/dex",
            ),
            (IssuerKind::Oidc, Some(u)) if !u.starts_with("https://") => self.problem(
                &at.field("url"),
                format!("{u:?} must start with https:// (keys are fetched from it)"),
            ),
            (_, Some(u)) if u.is_empty() => {
                self.problem(&at.field("url"), "must not be empty; leave it out instead")
            }
            _ => {}
        }
        let url_host = url.as_deref().and_then(|u| {
            let host = reqwest::Url::parse(u)
                .ok()?
                .host_str()?
                .to_ascii_lowercase();
            if remote::host_is_link_local(&host) {
                self.problem(
                    &at.field("url"),
                    format!("{u:?} is a link-local address: keys are never fetched from one"),
                );
            }
            Some(host)
        });

        let audiences: Vec<String> = raw.audiences.unwrap_or_default();
        let allow_any_audience = raw.allow_any_audience.unwrap_or(false);
        match (kind, allow_any_audience) {
            (IssuerKind::Oidc, true) => self.problem(
                &at.field("allow_any_audience"),
                "is for efa issuers only: an oidc issuer's tokens name the client they were issued to; list it in audiences",
            ),
            (IssuerKind::Oidc, false) if audiences.is_empty() => self.problem(
                &at.field("audiences"),
                "an oidc issuer needs at least one audience (the client id its tokens are issued to, e.g. kubernetes)",
            ),
            (IssuerKind::Efa, false) if audiences.is_empty() => self.problem(
                &at.field("audiences"),
                "an efa issuer needs at least one audience (the aud its tokens carry); if its tokens carry no aud, write allow_any_audience: true instead",
            ),
            (IssuerKind::Efa, true) if !audiences.is_empty() => self.problem(
                &at.field("allow_any_audience"),
                "set audiences or allow_any_audience, not both: with audiences the aud is checked",
            ),
            (IssuerKind::Efa, true) => self.warnings.push(Problem {
                field: at.field("allow_any_audience"),
                message: "the token's aud is not checked: a token this issuer signed for any other service is accepted here too; list audiences once the issuer's tokens carry an aud".to_owned(),
            }),
            _ => {}
        }
        if audiences.iter().any(|a| a.is_empty()) {
            self.problem(&at.field("audiences"), "an audience must not be empty");
        }

        let certificate_authority_file = raw
            .certificate_authority_file
            .as_deref()
            .map(|p| self.path(p));

        let (keys, remote_source) = match kind {
            IssuerKind::Oidc => {
                if raw.keys.is_some() {
                    self.problem(
                        &at.field("keys"),
                        "keys is for efa issuers; an oidc issuer gets its keys by discovery, or from jwks_url",
                    );
                }
                if raw.jwks_url.is_some() && raw.discovery_url.is_some() {
                    self.problem(
                        &at.field("discovery_url"),
                        "set jwks_url or discovery_url, not both: with jwks_url no discovery document is read",
                    );
                }
                let source = match (&raw.jwks_url, &url) {
                    (Some(j), _) => Some(RemoteSource::Jwks { url: j.clone() }),
                    (None, Some(u)) => Some(RemoteSource::Discovery {
                        issuer: u.clone(),
                        url: self.discovery_url(&at, u, raw.discovery_url.as_deref()),
                    }),
                    (None, None) => None,
                };
                (KeyFiles::default(), source)
            }
            IssuerKind::Efa => {
                if raw.discovery_url.is_some() {
                    self.problem(
                        &at.field("discovery_url"),
                        "is for oidc issuers: an efa issuer's keys come from keys (public_key_files, jwks_url or hmac_secret_file)",
                    );
                }
                if raw.jwks_url.is_some() {
                    self.problem(
                        &at.field("jwks_url"),
                        "for an efa issuer, put the JWKS URL under keys.jwks_url",
                    );
                }
                self.efa_keys(&at, raw.keys)
            }
        };
        if let Some(RemoteSource::Jwks { url }) = &remote_source
            && !url.starts_with("https://")
        {
            self.problem(
                &at.field("jwks_url"),
                format!("{url:?} must start with https://"),
            );
        }
        let jwks_hosts =
            self.jwks_hosts(&at, kind, url_host, raw.jwks_hosts, remote_source.as_ref());
        let proxy = raw
            .proxy_url
            .as_deref()
            .and_then(|p| self.proxy_url(&at.field("proxy_url"), p, remote_source.is_some()));

        let algorithms = self.algorithms(&at, kind, raw.algorithms);
        let key_problems = self.problems.any_under(&at.field("keys"));
        let has_hmac = keys.hmac_secret_file.is_some();
        let has_asymmetric = remote_source.is_some() || !keys.public_key_files.is_empty();
        for alg in algorithms.iter().flatten().filter(|_| !key_problems) {
            let hmac = is_hmac(*alg);
            if hmac && !has_hmac {
                self.problem(
                    &at.field("algorithms"),
                    format!("{alg:?} needs keys.hmac_secret_file"),
                );
            }
            if !hmac && !has_asymmetric {
                self.problem(
                    &at.field("algorithms"),
                    format!("{alg:?} needs a public key (keys.public_key_files or keys.jwks_url)"),
                );
            }
        }

        let clock_skew = self.duration(
            &at.field("clock_skew"),
            raw.clock_skew.as_deref(),
            DEFAULT_CLOCK_SKEW,
        );
        if clock_skew > Duration::from_secs(600) {
            self.problem(&at.field("clock_skew"), "must be at most 10m");
        }
        let fetch_timeout = self.duration(
            &at.field("jwks_fetch_timeout"),
            raw.jwks_fetch_timeout.as_deref(),
            DEFAULT_FETCH_TIMEOUT,
        );
        if fetch_timeout.is_zero() || fetch_timeout > Duration::from_secs(15) {
            self.problem(
                &at.field("jwks_fetch_timeout"),
                "must be between 1s and 15s",
            );
        }
        let min_refetch_interval = self.duration(
            &at.field("jwks_min_refetch_interval"),
            raw.jwks_min_refetch_interval.as_deref(),
            DEFAULT_MIN_REFETCH,
        );
        if min_refetch_interval < Duration::from_millis(100)
            || min_refetch_interval > Duration::from_secs(300)
        {
            self.problem(
                &at.field("jwks_min_refetch_interval"),
                "must be between 100ms and 5m",
            );
        }

        let max_key_age = match &raw.max_key_age {
            Some(v) => {
                if remote_source.is_none() {
                    self.problem(
                        &at.field("max_key_age"),
                        "applies to keys fetched from the issuer (discovery or a JWKS URL); this issuer fetches none",
                    );
                }
                self.max_key_age(&at.field("max_key_age"), Some(v), self.max_key_age)
            }
            None => self.max_key_age,
        };

        let max_token_lifetime = raw.max_token_lifetime.as_deref().map(|v| {
            let field = at.field("max_token_lifetime");
            let d = self.duration(&field, Some(v), Duration::ZERO);
            if d < Duration::from_secs(60) {
                self.problem(
                    &field,
                    "must be at least 1m: tokens whose exp - iat is longer are refused",
                );
            }
            d
        });

        let mut claims = self.claims(&at, &name, kind, raw.claims.unwrap_or_default());
        claims.email_verified_accepts_string = raw.email_verified_accepts_string.unwrap_or(false);

        if self.problems.len() > problems_before {
            return None;
        }
        Some(Issuer {
            name,
            kind,
            url: url.filter(|u| !u.is_empty()),
            audiences,
            allow_any_audience,
            trust_implicit_audience: raw.trust_implicit_audience.unwrap_or(true),
            algorithms,
            clock_skew,
            max_token_lifetime,
            claims,
            keys,
            certificate_authority_file,
            required: raw.required.unwrap_or(false),
            certificate_authority_data: None,
            field: at,
            remote: remote_source.map(|source| RemoteKeys {
                source,
                fetch_timeout,
                min_refetch_interval,
                max_response_bytes: MAX_JWKS_BYTES,
                max_key_age,
                jwks_hosts,
                proxy,
            }),
        })
    }

    /// The hosts an issuer's JWKS may be on: its own (`url`'s; for an efa
    /// issuer without url, keys.jwks_url's, which the operator wrote), then
    /// `jwks_hosts`. A configured JWKS URL must be on one of them; none may
    /// be a link-local address.
    fn jwks_hosts(
        &mut self,
        at: &FieldPath,
        kind: IssuerKind,
        url_host: Option<String>,
        raw: Option<Vec<String>>,
        source: Option<&RemoteSource>,
    ) -> Vec<String> {
        let field = at.field("jwks_hosts");
        if raw.is_some() && source.is_none() {
            self.problem(
                &field,
                "applies to keys fetched from the issuer (discovery or a JWKS URL); this issuer fetches none",
            );
        }
        let jwks_field = match kind {
            IssuerKind::Oidc => at.field("jwks_url"),
            IssuerKind::Efa => at.field("keys").field("jwks_url"),
        };
        let configured = match source {
            Some(RemoteSource::Jwks { url }) => reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase)),
            _ => None,
        };
        let mut hosts: Vec<String> = url_host
            .or_else(|| configured.clone())
            .into_iter()
            .collect();
        // The operator named the discovery document's host: a jwks_uri
        // there (an in-cluster Dex Service) is as trusted as the issuer's.
        if let Some(RemoteSource::Discovery { url, .. }) = source
            && let Some(h) = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            && !hosts.contains(&h)
        {
            hosts.push(h);
        }
        for entry in raw.unwrap_or_default() {
            let host = entry.trim();
            let parsed = (!host.is_empty() && !host.contains(['/', '@', '?', '#', ' ']))
                .then(|| reqwest::Url::parse(&format!("https://{host}/")).ok())
                .flatten()
                .filter(|u| u.port().is_none())
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
            match parsed {
                None => self.problem(
                    &field,
                    format!("{entry:?} is not a host name or address: write it as keys.example.com, without scheme, port or path"),
                ),
                Some(h) if remote::host_is_link_local(&h) => self.problem(
                    &field,
                    format!("{entry:?} is a link-local address: keys are never fetched from one"),
                ),
                Some(h) => {
                    if !hosts.contains(&h) {
                        hosts.push(h);
                    }
                }
            }
        }
        if let Some(RemoteSource::Jwks { url }) = source
            && url.starts_with("https://")
            && let Some(why) = remote::jwks_url_refused(url, &hosts)
        {
            self.problem(&jwks_field, why);
        }
        hosts
    }

    /// The discovery document's URL: `discovery_url` as written (like the
    /// kube-apiserver's `discoveryURL`, the path is not appended to), or
    /// `<url>/.well-known/openid-configuration`.
    fn discovery_url(&mut self, at: &FieldPath, issuer: &str, raw: Option<&str>) -> String {
        let default = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let Some(written) = raw.map(str::trim) else {
            return default;
        };
        let field = at.field("discovery_url");
        match reqwest::Url::parse(written) {
            Ok(u) if u.scheme() != "https" => {
                self.problem(&field, format!("{written:?} must start with https://"))
            }
            Ok(u) if u.host_str().is_none() => {
                self.problem(&field, format!("{written:?} names no host"))
            }
            Ok(u) if u.host_str().is_some_and(remote::host_is_link_local) => self.problem(
                &field,
                format!("{written:?} is a link-local address: keys are never fetched from one"),
            ),
            Ok(u) if !u.username().is_empty() || u.password().is_some() => self.problem(
                &field,
                "must not carry credentials (user:password@); the discovery document is public",
            ),
            Ok(_) if written.trim_end_matches('/') == issuer.trim_end_matches('/') => self.problem(
                &field,
                "is the issuer url itself: give the full URL of the discovery document (ending in /.well-known/openid-configuration), or leave discovery_url out",
            ),
            Ok(_) => {}
            Err(e) => self.problem(
                &field,
                format!("{written:?} is not a URL ({e}); write it like https://dex.dex.svc:5556/dex/.well-known/openid-configuration"),
            ),
        }
        written.to_owned()
    }

    /// `proxy_url`: an http:// or https:// proxy URL without a path; its
    /// `user:password@`, if any, is passed to the proxy and never logged.
    fn proxy_url(&mut self, field: &FieldPath, written: &str, fetches: bool) -> Option<ProxyUrl> {
        if !fetches {
            self.problem(
                field,
                "applies to keys fetched from the issuer (discovery or a JWKS URL); this issuer fetches none",
            );
            return None;
        }
        let written = written.trim();
        let parsed = match reqwest::Url::parse(written) {
            Ok(u) => u,
            Err(e) => {
                self.problem(
                    field,
                    format!("not a URL ({e}); write it like http://proxy.example.com:3128"),
                );
                return None;
            }
        };
        let why = if !matches!(parsed.scheme(), "http" | "https") {
            Some("must start with http:// or https:// (an HTTP proxy that takes CONNECT)")
        } else if parsed.host_str().is_none() {
            Some("names no host")
        } else if !matches!(parsed.path(), "" | "/")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            Some("must be scheme://host:port only, without a path or query")
        } else {
            None
        };
        match why {
            Some(why) => {
                self.problem(field, why);
                None
            }
            None => Some(ProxyUrl(written.to_owned())),
        }
    }

    fn efa_keys(
        &mut self,
        at: &FieldPath,
        raw: Option<raw::Keys>,
    ) -> (KeyFiles, Option<RemoteSource>) {
        let Some(raw) = raw else {
            self.problem(
                &at.field("keys"),
                "an efa issuer needs keys: public_key_files (the EFA JWT certificate or public key), jwks_url, or hmac_secret_file",
            );
            return (KeyFiles::default(), None);
        };
        let keys = KeyFiles {
            public_key_files: raw
                .public_key_files
                .unwrap_or_default()
                .iter()
                .map(|p| self.path(p))
                .collect(),
            hmac_secret_file: raw.hmac_secret_file.as_deref().map(|p| self.path(p)),
            allow_expired_certificate: raw.allow_expired_certificate.unwrap_or(false),
        };
        let remote = raw.jwks_url.map(|url| RemoteSource::Jwks { url });
        if keys.public_key_files.is_empty() && keys.hmac_secret_file.is_none() && remote.is_none() {
            self.problem(
                &at.field("keys"),
                "no key source given: set public_key_files, jwks_url or hmac_secret_file",
            );
        }
        (keys, remote)
    }

    fn algorithms(
        &mut self,
        at: &FieldPath,
        kind: IssuerKind,
        raw: Option<Vec<String>>,
    ) -> Option<Vec<Algorithm>> {
        let field = &at.field("algorithms");
        let Some(names) = raw else {
            return match kind {
                // Dex's local signer; Vault-signed Dex needs ES256 or EdDSA listed.
                IssuerKind::Oidc => Some(vec![Algorithm::RS256]),
                // What the keys support, known once they are read (prepare).
                IssuerKind::Efa => None,
            };
        };
        if names.is_empty() {
            self.problem(field, "must list at least one algorithm, e.g. [RS256]");
        }
        let mut algs = Vec::new();
        for n in names {
            let alg = match parse_algorithm(&n) {
                Ok(a) => a,
                Err(msg) => {
                    self.problem(field, msg);
                    continue;
                }
            };
            if kind == IssuerKind::Oidc && is_hmac(alg) {
                self.problem(
                    field,
                    format!("{n} is refused for oidc issuers: a shared secret would let anyone holding the client secret mint tokens"),
                );
                continue;
            }
            if !algs.contains(&alg) {
                algs.push(alg);
            }
        }
        Some(algs)
    }

    fn claims(
        &mut self,
        at: &FieldPath,
        name: &str,
        kind: IssuerKind,
        raw: raw::Claims,
    ) -> ClaimMapping {
        let (default_user, default_groups): (&[&str], &[&str]) = match kind {
            IssuerKind::Oidc => (&["email", "name"], &["groups"]),
            IssuerKind::Efa => (&["username", "sub"], &["roles", "role"]),
        };
        let at = at.field("claims");
        let (username, username_prefix) =
            self.claim_ref(&at.field("username"), raw.username, default_user);
        let username_prefix =
            self.written_prefix(&at, "username", username_prefix, &username, name);
        // As the apiserver requires of AuthenticationConfiguration: an
        // e-mail taken by an expression is not checked for email_verified
        // unless the expression does it.
        if let Source::Expression(e) = &username
            && e.reads_claim("email")
            && !e.reads_claim("email_verified")
        {
            self.problem(
                &at.field("username").field("expression"),
                "reads claims.email but not claims.email_verified: check it too, e.g. 'claims.?email_verified.orValue(true) == true ? claims.email : \"\"' (an empty username refuses the token)",
            );
        }
        let (groups, groups_prefix) =
            self.claim_ref(&at.field("groups"), raw.groups, default_groups);
        let groups_prefix = self.written_prefix(&at, "groups", groups_prefix, &groups, name);
        // An oidc token has a string sub (OpenID Connect Core 2): it is the
        // uid unless the config says otherwise. EFA tokens need not carry
        // sub, so an efa issuer has a uid only when claims.uid names one.
        let uid = match (raw.uid, kind) {
            (None, IssuerKind::Efa) => Source::none(),
            (raw_uid, _) => {
                let (uid, uid_prefix) = self.claim_ref(&at.field("uid"), raw_uid, &["sub"]);
                if uid_prefix.is_some_and(|p| !p.is_empty()) {
                    self.problem(&at.field("uid").field("prefix"), "uid takes no prefix");
                }
                uid
            }
        };
        let mut extra = Vec::new();
        for (key, path) in raw.extra.unwrap_or_default() {
            let field = &at.field("extra").field(&key);
            if key.is_empty() || key != key.to_lowercase() || key.contains(char::is_whitespace) {
                self.problem(
                    field,
                    "extra keys must be lower-case without spaces, ideally domain-prefixed (authn.example.com/name)",
                );
                continue;
            }
            match ClaimPath::parse(&path) {
                Some(p) => extra.push((key, Source::Claims(vec![p]))),
                None => self.problem(field, format!("{path:?} is not a claim path")),
            }
        }
        ClaimMapping {
            extra,
            ..ClaimMapping::of_claims_source(username, username_prefix, groups, groups_prefix, uid)
        }
    }

    /// The claim paths (or `default`), or the expression, and the prefix as
    /// written, if it was.
    fn claim_ref(
        &mut self,
        field: &FieldPath,
        raw: Option<raw::ClaimRef>,
        default: &[&str],
    ) -> (Source, Option<String>) {
        let raw = raw.unwrap_or_default();
        if let Some(source) = raw.expression {
            if raw.claim.is_some() || raw.claims.is_some() || raw.prefix.is_some() {
                self.problem(
                    field,
                    "set expression, or claim/claims with prefix, not both: an expression writes the whole value",
                );
            }
            let expression = match cel::compile(&source, cel::Var::Claims, cel::Want::Any) {
                Ok(e) => e,
                Err(e) => {
                    self.problem(&field.field("expression"), e);
                    return (Source::none(), Some(String::new()));
                }
            };
            return (Source::Expression(expression), Some(String::new()));
        }
        let names: Vec<String> = match (raw.claim, raw.claims) {
            (Some(_), Some(_)) => {
                self.problem(field, "set claim or claims, not both");
                Vec::new()
            }
            (Some(c), None) => vec![c],
            (None, Some(cs)) => cs,
            (None, None) => default.iter().map(|s| s.to_string()).collect(),
        };
        if names.is_empty() {
            self.problem(field, "names no claim");
        }
        let mut paths = Vec::new();
        for n in names {
            match ClaimPath::parse(&n) {
                Some(p) => paths.push(p),
                None => self.problem(field, format!("{n:?} is not a claim path")),
            }
        }
        if let Some(prefix) = raw.prefix.as_deref()
            && could_make_system_name(prefix)
        {
            self.problem(
                &field.field("prefix"),
                format!("{prefix:?} could produce a name starting with system:, which Kubernetes reserves for its own components"),
            );
        }
        (Source::Claims(paths), raw.prefix)
    }

    /// The username and groups prefixes must be written, even when empty:
    /// which issuer a name came from is a decision, not a default.
    fn written_prefix(
        &mut self,
        claims_at: &FieldPath,
        role: &str,
        prefix: Option<String>,
        source: &Source,
        issuer: &str,
    ) -> String {
        if let Some(p) = prefix {
            return p;
        }
        let claims: Vec<String> = match source {
            Source::Claims(paths) => paths.iter().map(ToString::to_string).collect(),
            Source::Expression(_) => Vec::new(),
        };
        self.problem(
            &claims_at.field(role).field("prefix"),
            format!(
                "must be written, even if empty: `{role}: {{claims: [{}], prefix: \"\"}}` takes the names as the tokens carry them; a prefix of this issuer's own, e.g. `prefix: \"{issuer}:\"`, keeps them apart from other issuers'",
                claims.join(", ")
            ),
        );
        String::new()
    }

    /// Two issuers must not map into one username (or group) space: a user
    /// of one could otherwise become a user of the other. Spaces overlap when
    /// one prefix starts the other ("" overlaps everything). Both issuers
    /// saying `allow_shared_identities: true` is the way to want that. An
    /// openshift-oauth issuer's names are OpenShift's own, unprefixed (""),
    /// so moving its users to Dex under the same names must be said so too.
    /// Checked on the raw entries, beside the issuers' other problems.
    fn separate_identities(&mut self, issuers: &[raw::Issuer]) {
        let prefix = |iss: &raw::Issuer, space: Space| -> Option<String> {
            // OpenShift's user and group names, as they are: no prefix.
            if iss.kind == OPENSHIFT_OAUTH {
                return Some(String::new());
            }
            let claims = iss.claims.as_ref()?;
            let r = match space {
                Space::Users => claims.username.as_ref()?,
                Space::Groups => claims.groups.as_ref()?,
            };
            r.prefix.clone()
        };
        let at =
            |i: usize, iss: &raw::Issuer| FieldPath::at("issuers").index(i).named(iss.name.trim());
        for (j, later) in issuers.iter().enumerate() {
            for (i, earlier) in issuers.iter().enumerate().take(j) {
                // Two of them is a problem of its own (`config`).
                if earlier.kind == OPENSHIFT_OAUTH && later.kind == OPENSHIFT_OAUTH {
                    continue;
                }
                for space in [Space::Users, Space::Groups] {
                    let (Some(a), Some(b)) = (prefix(earlier, space), prefix(later, space)) else {
                        continue;
                    };
                    if !(a.starts_with(&b) || b.starts_with(&a)) {
                        continue;
                    }
                    let shared = [earlier, later].map(|x| x.allow_shared_identities == Some(true));
                    if shared == [true, true] {
                        continue;
                    }
                    let (what, field, who) = match space {
                        Space::Users => ("usernames", "username", "a user"),
                        Space::Groups => ("group names", "groups", "a group"),
                    };
                    let half = match shared {
                        [true, false] => {
                            format!(" (it is set on {} only; it takes both)", at(i, earlier))
                        }
                        [false, true] => {
                            " (it is set on this issuer only; it takes both)".to_owned()
                        }
                        _ => String::new(),
                    };
                    // An openshift-oauth issuer has no prefix to change.
                    let place = if later.kind == OPENSHIFT_OAUTH {
                        at(j, later).field("allow_shared_identities")
                    } else {
                        at(j, later).field("claims").field(field).field("prefix")
                    };
                    self.problem(
                        &place,
                        format!(
                            "{b:?} can produce the same {what} as {} (prefix {a:?}): {who} of one issuer would be taken for {who} of the other. Give each issuer a prefix that does not start the other's (e.g. \"{}:\" and \"{}:\"), or set allow_shared_identities: true on both if they really are one set of users{half}",
                            at(i, earlier),
                            earlier.name.trim(),
                            later.name.trim(),
                        ),
                    );
                }
            }
        }
    }

    /// Every token must route to exactly one issuer; checked on the raw
    /// entries so clashes show up beside the issuers' other problems.
    fn distinct_issuers(&mut self, issuers: &[raw::Issuer]) {
        let mut names = HashSet::new();
        let mut matches: HashSet<Option<&str>> = HashSet::new();
        for (i, iss) in issuers.iter().enumerate() {
            let at = FieldPath::at("issuers").index(i).named(iss.name.trim());
            if !names.insert(iss.name.trim()) {
                self.problem(&at, "another issuer has this name; names must be unique");
            }
            let url = iss.url.as_deref().map(str::trim);
            if url.is_none() && iss.kind != "efa" {
                continue;
            }
            if !matches.insert(url) {
                let what = match url {
                    Some(u) => format!("two issuers match tokens with iss {u:?}"),
                    None => "two efa issuers have no url, so both would match tokens without iss"
                        .to_owned(),
                };
                self.problem(
                    &at,
                    format!("{what}; every token must route to exactly one issuer"),
                );
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Space {
    Users,
    Groups,
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// True when prepending `prefix` to some claim value could yield `system:...`.
pub(crate) fn could_make_system_name(prefix: &str) -> bool {
    !prefix.is_empty() && (prefix.starts_with("system:") || "system:".starts_with(prefix))
}

pub(crate) fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("none is never accepted: an unsigned token proves nothing".to_owned());
    }
    name.parse::<Algorithm>().map_err(|_| {
        format!("{name:?} is not a JWS algorithm: use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA (or HS256/384/512 for an efa shared secret)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_that_could_spell_system_are_refused() {
        for p in ["system:", "system:x", "s", "sys", "system"] {
            assert!(could_make_system_name(p), "{p}");
        }
        for p in ["", "efa:", "oidc:", "systems:", "x-system:"] {
            assert!(!could_make_system_name(p), "{p}");
        }
    }

    #[test]
    fn a_proxy_password_is_never_shown() {
        let shown = format!("{:?}", ProxyUrl("http://u:pw-1234@proxy.corp:3128".into()));
        assert!(
            !shown.contains("pw-1234") && !shown.contains("u:"),
            "{shown}"
        );
        assert!(shown.contains("proxy.corp:3128"), "{shown}");
        let plain = format!("{:?}", ProxyUrl("http://proxy.corp:3128".into()));
        assert_eq!(plain, "ProxyUrl(http://proxy.corp:3128/)");
    }

    #[test]
    fn none_is_never_an_algorithm() {
        assert!(
            parse_algorithm("none")
                .unwrap_err()
                .contains("never accepted")
        );
        assert_eq!(parse_algorithm("EdDSA"), Ok(Algorithm::EdDSA));
        assert!(parse_algorithm("rs256").is_err());
    }

    /// The top-level max_key_age is every fetching issuer's unless it has
    /// its own; 24h without either. jwks_hosts starts with the issuer's host.
    #[test]
    fn max_key_age_defaults_and_overrides() {
        let issuer = |name: &str, extra: &str| {
            format!(
                "\n  - name: {name}\n    kind: oidc\n    url: https://{name}.example.com/dex\n    audiences: [k]\n    claims: {{username: {{claim: email, prefix: \"{name}:\"}}, groups: {{claim: groups, prefix: \"{name}:\"}}}}\n{extra}"
            )
        };
        let text = |top: &str| {
            format!(
                "server: {{tls: {{cert_file: a, key_file: b}}}}\n{top}issuers:{}{}",
                issuer("a", ""),
                issuer(
                    "b",
                    "    max_key_age: 1h\n    jwks_hosts: [Keys.Example.com]\n"
                )
            )
        };
        let remote = |c: &Config, i: usize| c.issuers[i].remote.clone().unwrap();
        let c = Config::from_yaml(&text(""), Path::new("c.yaml")).unwrap();
        assert_eq!(remote(&c, 0).max_key_age, Duration::from_secs(24 * 3600));
        assert_eq!(remote(&c, 1).max_key_age, Duration::from_secs(3600));
        assert_eq!(remote(&c, 0).jwks_hosts, ["a.example.com"]);
        assert_eq!(
            remote(&c, 1).jwks_hosts,
            ["b.example.com", "keys.example.com"]
        );
        let c = Config::from_yaml(&text("max_key_age: 2d\n"), Path::new("c.yaml")).unwrap();
        assert_eq!(remote(&c, 0).max_key_age, Duration::from_secs(2 * 86_400));
        assert_eq!(remote(&c, 1).max_key_age, Duration::from_secs(3600));
    }

    fn oauth_config(issuers: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(
            &format!("server: {{tls: {{cert_file: a, key_file: b}}}}\nissuers:\n{issuers}"),
            Path::new("/etc/w/c.yaml"),
        )
    }

    fn fields(err: &ConfigError) -> Vec<String> {
        err.problems.iter().map(|p| p.field.to_string()).collect()
    }

    #[test]
    fn an_openshift_oauth_issuer_has_its_defaults_and_relative_kubeconfig() {
        let c =
            oauth_config("  - {name: openshift, kind: openshift-oauth, kubeconfig: kc}\n").unwrap();
        assert!(c.issuers.is_empty());
        let o = c.openshift_oauth.unwrap();
        assert_eq!(o.kubeconfig.as_deref(), Some(Path::new("/etc/w/kc")));
        assert_eq!(o.positive_ttl, Duration::from_secs(30));
        assert_eq!(o.api_timeout, Duration::from_secs(5));
        assert_eq!(o.max_lookups_per_second, 50);
        let c = oauth_config(
            "  - {name: o, kind: openshift-oauth, positive_ttl: 10s, api_timeout: 2s, max_lookups_per_second: 7}\n",
        )
        .unwrap();
        let o = c.openshift_oauth.unwrap();
        assert_eq!(o.kubeconfig, None);
        assert_eq!(
            (o.positive_ttl, o.api_timeout, o.max_lookups_per_second),
            (Duration::from_secs(10), Duration::from_secs(2), 7)
        );
    }

    #[test]
    fn jwt_settings_on_an_openshift_oauth_issuer_are_problems_naming_them() {
        let err = oauth_config(
            "  - name: o\n    kind: openshift-oauth\n    url: https://x\n    audiences: [k]\n    keys: {jwks_url: https://x/k}\n    claims: {}\n    algorithms: [RS256]\n",
        )
        .unwrap_err();
        assert_eq!(
            fields(&err),
            [
                "issuers[0] (o).url",
                "issuers[0] (o).audiences",
                "issuers[0] (o).algorithms",
                "issuers[0] (o).keys",
                "issuers[0] (o).claims"
            ]
        );
        assert!(
            err.to_string()
                .contains("means nothing for an openshift-oauth issuer")
        );
    }

    #[test]
    fn openshift_oauth_settings_elsewhere_and_bad_values_are_problems() {
        let err = oauth_config(
            "  - name: dex\n    kind: oidc\n    url: https://d/dex\n    audiences: [k]\n    kubeconfig: kc\n    positive_ttl: 1m\n    claims: {username: {claim: email, prefix: \"\"}, groups: {claim: groups, prefix: \"\"}}\n",
        )
        .unwrap_err();
        assert_eq!(
            fields(&err),
            [
                "issuers[0] (dex).kubeconfig",
                "issuers[0] (dex).positive_ttl"
            ]
        );
        let err = oauth_config(
            "  - {name: o, kind: openshift-oauth, positive_ttl: 1h, api_timeout: 25s, max_lookups_per_second: 0}\n",
        )
        .unwrap_err();
        assert_eq!(
            fields(&err),
            [
                "issuers[0] (o).positive_ttl",
                "issuers[0] (o).api_timeout",
                "issuers[0] (o).max_lookups_per_second"
            ]
        );
        // Within bounds, but not shorter than the whole review's deadline.
        let err = Config::from_yaml(
            "server: {tls: {cert_file: a, key_file: b}, request_timeout: 5s}\nissuers:\n  - {name: o, kind: openshift-oauth, api_timeout: 5s}\n",
            Path::new("c.yaml"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("shorter than server.request_timeout"),
            "{err}"
        );
    }

    #[test]
    fn at_most_one_openshift_oauth_issuer() {
        let err = oauth_config(
            "  - {name: a, kind: openshift-oauth}\n  - {name: b, kind: openshift-oauth}\n",
        )
        .unwrap_err();
        assert_eq!(fields(&err), ["issuers[1] (b).kind"]);
    }

    /// Its names are OpenShift's, unprefixed: another issuer beside it must
    /// say the names are shared, on both.
    #[test]
    fn openshift_names_overlap_every_other_issuer_unless_both_share() {
        let dex = |shared: &str| {
            format!(
                "  - name: dex\n    kind: oidc\n    url: https://d/dex\n    audiences: [k]\n    claims: {{username: {{claim: email, prefix: \"dex:\"}}, groups: {{claim: groups, prefix: \"dex:\"}}}}\n{shared}"
            )
        };
        let oauth = |shared: &str| format!("  - name: o\n    kind: openshift-oauth\n{shared}");
        let yes = "    allow_shared_identities: true\n";
        let err = oauth_config(&format!("{}{}", dex(""), oauth(""))).unwrap_err();
        assert_eq!(
            fields(&err),
            [
                "issuers[1] (o).allow_shared_identities",
                "issuers[1] (o).allow_shared_identities"
            ]
        );
        let err = oauth_config(&format!("{}{}", oauth(yes), dex(""))).unwrap_err();
        assert_eq!(
            fields(&err),
            [
                "issuers[1] (dex).claims.username.prefix",
                "issuers[1] (dex).claims.groups.prefix"
            ]
        );
        assert!(oauth_config(&format!("{}{}", dex(yes), oauth(yes))).is_ok());
    }

    fn problems(extra: &str) -> Vec<String> {
        let text = format!(
            "server: {{tls: {{cert_file: a, key_file: b}}}}\n{extra}issuers:\n  - name: a\n    kind: oidc\n    url: https://a.example.com\n    audiences: [k]\n    max_token_lifetime: 30s\n    claims: {{username: {{claim: email, prefix: \"\"}}, groups: {{claim: groups, prefix: \"\"}}}}\n"
        );
        match Config::from_yaml(&text, Path::new("c.yaml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn audit_and_max_token_lifetime_are_validated_with_their_fields() {
        let p = problems("audit: {output: file, identities: hashed}\n");
        assert!(
            p.iter()
                .any(|p| p.starts_with("audit.file: output: file needs file")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("audit.salt_file: identities: hashed needs salt_file")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("issuers[0] (a).max_token_lifetime: must be at least 1m")),
            "{p:?}"
        );
        let p = problems("audit: {output: syslog, salt_file: s, max_files: 3}\n");
        assert!(
            p.iter()
                .any(|p| p.starts_with("audit.output: \"syslog\" is not an audit output")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("audit.salt_file: is for identities: hashed")),
            "{p:?}"
        );
        let p = problems(
            "audit: {output: stdout, max_files: 3}\nrevocation: {file: r.yaml, watch: true}\n",
        );
        assert!(
            p.iter().any(|p| p.contains("unknown field `watch`")),
            "{p:?}"
        );
        let p = problems("audit: {output: stdout, max_files: 3}\n");
        assert!(
            p.iter()
                .any(|p| p.starts_with("audit.max_files: is for output: file")),
            "{p:?}"
        );
    }

    #[test]
    fn a_config_that_does_not_parse_says_where() {
        let err = Config::from_yaml("server: [", Path::new("/etc/x/config.yaml")).unwrap_err();
        assert_eq!(err.file, Path::new("/etc/x/config.yaml"));
        assert!(err.to_string().contains("not a valid config"));
        let err = Config::from_yaml(
            "server: {tls: {cert_file: a, key_file: b}}\nissuers:\n  - {name: x, kind: ldap}\n",
            Path::new("c.yaml"),
        )
        .unwrap_err();
        assert!(
            err.problems
                .iter()
                .any(|p| p.field.to_string() == "issuers[0] (x).kind"),
            "{err}"
        );
    }
}

//! The config file as written: serde types that mirror the YAML, unknown
//! fields refused. Nothing here is trusted; `validate` makes `Config` of it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) server: Server,
    #[serde(default)]
    pub(crate) telemetry: Telemetry,
    #[serde(default)]
    pub(crate) cache: Cache,
    #[serde(default)]
    pub(crate) issuers: Vec<Issuer>,
    /// Default for every issuer's `max_key_age`.
    pub(crate) max_key_age: Option<String>,
    /// AuthenticationConfiguration files whose `jwt[]` entries are issuers
    /// too (relative to this file's directory).
    pub(crate) authentication_config_files: Option<Vec<PathBuf>>,
    /// Where fetched issuers' last good keys are kept across restarts.
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) revocation: Option<Revocation>,
    pub(crate) audit: Option<Audit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Revocation {
    pub(crate) file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Audit {
    pub(crate) output: String,
    pub(crate) file: Option<PathBuf>,
    pub(crate) max_file_bytes: Option<u64>,
    pub(crate) max_files: Option<u32>,
    pub(crate) identities: Option<String>,
    pub(crate) salt_file: Option<PathBuf>,
    pub(crate) queue: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    pub(crate) listen: Option<String>,
    pub(crate) tls: Tls,
    pub(crate) max_body_bytes: Option<u64>,
    pub(crate) request_timeout: Option<String>,
    pub(crate) read_timeout: Option<String>,
    pub(crate) shutdown_grace: Option<String>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_concurrent_reviews: Option<usize>,
    pub(crate) workers: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tls {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) client_ca_file: Option<PathBuf>,
    pub(crate) allowed_client_names: Option<Vec<String>>,
    pub(crate) reload_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Telemetry {
    pub(crate) listen: Option<String>,
    pub(crate) log_format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cache {
    pub(crate) max_entries: Option<u64>,
    pub(crate) max_ttl: Option<String>,
    pub(crate) negative_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Issuer {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) url: Option<String>,
    pub(crate) certificate_authority_file: Option<PathBuf>,
    pub(crate) jwks_url: Option<String>,
    pub(crate) audiences: Option<Vec<String>>,
    /// The explicit way to skip the `aud` check (efa only).
    pub(crate) allow_any_audience: Option<bool>,
    pub(crate) trust_implicit_audience: Option<bool>,
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) clock_skew: Option<String>,
    pub(crate) jwks_fetch_timeout: Option<String>,
    pub(crate) jwks_min_refetch_interval: Option<String>,
    pub(crate) max_key_age: Option<String>,
    /// Tokens whose `exp - iat` is longer are refused.
    pub(crate) max_token_lifetime: Option<String>,
    pub(crate) jwks_hosts: Option<Vec<String>>,
    pub(crate) keys: Option<Keys>,
    pub(crate) claims: Option<Claims>,
    /// Lets this issuer's username/group space overlap another's that sets it too.
    pub(crate) allow_shared_identities: Option<bool>,
    /// `email_verified: "true"` (a string) counts as verified.
    pub(crate) email_verified_accepts_string: Option<bool>,
    /// `/readyz` is 503 while this issuer has no usable keys.
    pub(crate) required: Option<bool>,
    /// The HTTPS proxy this issuer's fetches go through.
    pub(crate) proxy_url: Option<String>,
    /// Where the discovery document is fetched from instead of
    /// `<url>/.well-known/openid-configuration`.
    pub(crate) discovery_url: Option<String>,
    /// openshift-oauth only: the API server to look tokens up on (absent:
    /// the pod's in-cluster config).
    pub(crate) kubeconfig: Option<PathBuf>,
    /// openshift-oauth only: how long a token found valid is trusted
    /// without looking again.
    pub(crate) positive_ttl: Option<String>,
    /// openshift-oauth only: deadline of one lookup (all its API requests).
    pub(crate) api_timeout: Option<String>,
    /// openshift-oauth only: lookups of tokens not in the cache.
    pub(crate) max_lookups_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Keys {
    pub(crate) public_key_files: Option<Vec<PathBuf>>,
    pub(crate) jwks_url: Option<String>,
    pub(crate) hmac_secret_file: Option<PathBuf>,
    pub(crate) allow_expired_certificate: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Claims {
    pub(crate) username: Option<ClaimRef>,
    pub(crate) groups: Option<ClaimRef>,
    pub(crate) uid: Option<ClaimRef>,
    pub(crate) extra: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimRef {
    pub(crate) claim: Option<String>,
    pub(crate) claims: Option<Vec<String>>,
    pub(crate) prefix: Option<String>,
    /// CEL over `claims`, instead of claim/claims and prefix.
    pub(crate) expression: Option<String>,
}

//! The config file as written: serde types that mirror the YAML, unknown
//! fields refused. Nothing here is trusted; `validate` makes `Config` of it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    #[serde(default)]
    pub telemetry: Telemetry,
    #[serde(default)]
    pub cache: Cache,
    #[serde(default)]
    pub issuers: Vec<Issuer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<String>,
    pub tls: Tls,
    pub max_body_bytes: Option<u64>,
    pub request_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub max_connections: Option<usize>,
    pub workers: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub allowed_client_names: Option<Vec<String>>,
    pub reload_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    pub listen: Option<String>,
    pub log_format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    pub max_entries: Option<u64>,
    pub max_ttl: Option<String>,
    pub negative_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    pub name: String,
    pub kind: String,
    pub url: Option<String>,
    pub certificate_authority_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub trust_implicit_audience: Option<bool>,
    pub algorithms: Option<Vec<String>>,
    pub clock_skew: Option<String>,
    pub jwks_fetch_timeout: Option<String>,
    pub jwks_min_refetch_interval: Option<String>,
    pub keys: Option<Keys>,
    pub claims: Option<Claims>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    pub public_key_files: Option<Vec<PathBuf>>,
    pub jwks_url: Option<String>,
    pub hmac_secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub username: Option<ClaimRef>,
    pub groups: Option<ClaimRef>,
    pub uid: Option<ClaimRef>,
    pub extra: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRef {
    pub claim: Option<String>,
    pub claims: Option<Vec<String>>,
    pub prefix: Option<String>,
}

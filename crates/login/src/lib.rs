//! The client half: `kube-authn-login pcd|efa`, a client-go exec
//! credential plugin. kubectl runs it before it talks to the cluster; it
//! prints an `ExecCredential` whose token is what our webhook verifies.
//!
//! - `pcd` (Platform9 PCD-K): Keystone password auth, the `kubernetes` client
//!   secret from resmgr's `dexclients`, Dex's password grant → `id_token`.
//! - `efa` (Extreme EFA/XCO): the auth service's `access-token`.
//!
//! Tokens are cached per (kind, endpoint, user) (`cache`), handed out until
//! shortly before they expire, then renewed with the refresh token; only
//! when that is refused is the password asked for again.

mod cache;
pub mod cli;
mod dex;
mod efa;
mod error;
pub mod exec;
mod http;
mod kubeconfig;
mod password;
mod pcd;

use std::path::PathBuf;
use std::time::Duration;

pub use error::{CaBundleError, LoginError, Service};

/// aws-lc-rs as rustls's provider (reqwest's HTTPS); repeated calls are
/// harmless.
fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
pub use password::{PasswordSource, Secret};

use cache::{Cache, Entry};
use http::Http;
use kube_authn_common::clock::Clock;

/// An `https://` base URL (scheme, host, optional port and path prefix), no
/// trailing slash. Plain HTTP is refused: the password would cross the
/// network in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(String);

impl Endpoint {
    pub fn parse(raw: &str) -> Result<Endpoint, LoginError> {
        let bad = |why: &str| LoginError::Usage(format!("--endpoint {raw:?}: {why}"));
        let raw_trimmed = raw.trim();
        let with_scheme = if raw_trimmed.contains("://") {
            raw_trimmed.to_owned()
        } else {
            format!("https://{raw_trimmed}")
        };
        let url = reqwest::Url::parse(&with_scheme)
            .map_err(|e| bad(&format!("not a URL ({e}); expected https://<host>")))?;
        if url.scheme() != "https" {
            return Err(bad(
                "must be https:// (the password would otherwise travel in clear)",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(bad(
                "must be a plain base URL, without user, query or fragment",
            ));
        }
        let s = url.as_str().trim_end_matches('/').to_owned();
        Ok(Endpoint(s))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// `path` (starting with `/`) under the endpoint.
    pub(crate) fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    pub(crate) fn host(&self) -> String {
        reqwest::Url::parse(&self.0)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| self.0.clone())
    }
}

/// Who logs in where.
#[derive(Debug, Clone)]
pub enum Target {
    /// PCD-K: `endpoint` is the management plane (`https://<du-fqdn>`),
    /// serving `/keystone`, `/resmgr` and `/dex`.
    Pcd {
        endpoint: Endpoint,
        username: String,
        /// Keystone domain name; `None` is the domain with id `default`.
        domain: Option<String>,
        /// Keystone project to scope the Keystone token to.
        project: Option<String>,
    },
    /// EFA / XCO: `endpoint` serves `/v1/auth/token/...`.
    Efa {
        endpoint: Endpoint,
        username: String,
        /// With a client id: an XCO client token (no refresh token).
        client_id: Option<String>,
    },
}

impl Target {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Target::Pcd { .. } => "pcd",
            Target::Efa { .. } => "efa",
        }
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        match self {
            Target::Pcd { endpoint, .. } | Target::Efa { endpoint, .. } => endpoint,
        }
    }

    pub(crate) fn username(&self) -> &str {
        match self {
            Target::Pcd { username, .. } | Target::Efa { username, .. } => username,
        }
    }

    pub(crate) fn domain(&self) -> Option<&str> {
        match self {
            Target::Pcd { domain, .. } => domain.as_deref(),
            Target::Efa { .. } => None,
        }
    }

    pub(crate) fn client_id(&self) -> Option<&str> {
        match self {
            Target::Efa { client_id, .. } => client_id.as_deref(),
            Target::Pcd { .. } => None,
        }
    }

    fn password_prompt(&self) -> String {
        match self {
            Target::Pcd {
                endpoint,
                username,
                domain,
                ..
            } => format!(
                "Password for {username}{} at {} (PCD-K): ",
                domain
                    .as_deref()
                    .map(|d| format!(" (domain {d})"))
                    .unwrap_or_default(),
                endpoint.host()
            ),
            Target::Efa {
                endpoint, username, ..
            } => format!("Password for {username} at {} (EFA): ", endpoint.host()),
        }
    }
}

/// Everything one `pcd|efa` login needs.
#[derive(Debug)]
pub struct Login {
    pub target: Target,
    /// PEM CA bundle to trust (only these CAs) for the endpoint's HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Limit for each HTTP request.
    pub timeout: Duration,
    pub cache_dir: PathBuf,
    pub password: PasswordSource,
    pub clock: Clock,
    /// How long to wait for another process's login to the same target.
    pub lock_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A cached token, no network.
    Cached,
    /// Renewed with the refresh token.
    Refreshed,
    /// A full login with the password.
    LoggedIn,
    /// Renewal could not reach the service; the cached token, about to
    /// expire but not expired, was handed out.
    CachedRenewalFailed,
}

/// A token for kubectl.
#[derive(Debug)]
pub struct Credential {
    pub token: Secret,
    /// `exp`, seconds since the epoch.
    pub expiry: u64,
    pub outcome: Outcome,
    /// Things the person should read (the service's own messages, warnings).
    pub notices: Vec<String>,
}

/// What a login or refresh returned.
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) expiry: u64,
    pub(crate) refresh_token: Option<String>,
    pub(crate) dex_client_secret: Option<String>,
    pub(crate) notice: Option<String>,
}

/// A token for `login.target`: from the cache, by refresh, or by logging in.
pub async fn obtain(login: &Login) -> Result<Credential, LoginError> {
    install_crypto_provider();
    let target = &login.target;
    let cache = Cache::for_target(&login.cache_dir, target);
    let cached = |e: Entry, outcome| Credential {
        token: Secret::new(e.token.clone()),
        expiry: e.expiry,
        outcome,
        notices: Vec::new(),
    };

    // Fast path: a fresh entry needs no lock (entries are replaced atomically).
    if let Some(e) = cache.read(target)?
        && e.is_fresh(login.clock.now())
    {
        tracing::debug!(
            expires_in = e.expiry.saturating_sub(login.clock.now()),
            "cached token"
        );
        return Ok(cached(e, Outcome::Cached));
    }

    let _lock = cache.lock(login.lock_timeout).await?;
    // Whoever held the lock before us may have just logged in.
    let entry = cache.read(target)?;
    if let Some(e) = &entry
        && e.is_fresh(login.clock.now())
    {
        tracing::debug!("another process renewed the token");
        return Ok(cached(e.clone(), Outcome::Cached));
    }

    let http = Http::new(login.ca_file.as_deref(), login.timeout)?;
    if let Some(old) = entry.as_ref().filter(|e| e.refresh_token.is_some()) {
        match refresh(&http, target, old, login.clock.now()).await {
            Ok(issued) => {
                tracing::debug!("token renewed with the refresh token");
                let mut new = store(&cache, login, issued, Some(old))?;
                new.outcome = Outcome::Refreshed;
                return Ok(new);
            }
            Err(e) if e.is_transport() && old.is_unexpired(login.clock.now()) => {
                let left = old.expiry.saturating_sub(login.clock.now());
                let mut c = cached(old.clone(), Outcome::CachedRenewalFailed);
                c.notices.push(format!(
                    "could not renew the token ({e}); using the cached one, valid for {left} s more"
                ));
                return Ok(c);
            }
            Err(e) if e.is_transport() => return Err(e),
            Err(e) => {
                tracing::info!(error = %e, "refresh refused; logging in again");
            }
        }
    }

    let password = match login.password.read(
        &target.password_prompt(),
        target.endpoint().as_str(),
        target.username(),
    ) {
        Ok(p) => p,
        // No way to ask (kubectl without a terminal): a token that has not
        // expired yet still beats failing; the notice says what to do.
        Err(e @ LoginError::NoPassword { .. }) => match entry {
            Some(old) if old.is_unexpired(login.clock.now()) => {
                let left = old.expiry.saturating_sub(login.clock.now());
                let mut c = cached(old, Outcome::CachedRenewalFailed);
                c.notices.push(format!(
                    "the token expires in {left} s and could not be renewed: {e}"
                ));
                return Ok(c);
            }
            _ => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let issued = match target {
        Target::Pcd { .. } => pcd::login(&http, target, &password, login.clock.now()).await?,
        Target::Efa { .. } => efa::login(&http, target, &password, login.clock.now()).await?,
    };
    drop(password);
    let mut new = store(&cache, login, issued, None)?;
    new.outcome = Outcome::LoggedIn;
    Ok(new)
}

async fn refresh(
    http: &Http,
    target: &Target,
    old: &Entry,
    now: u64,
) -> Result<Issued, LoginError> {
    match target {
        Target::Pcd { .. } => pcd::refresh(http, target, old, now).await,
        Target::Efa { .. } => efa::refresh(http, target, old, now).await,
    }
}

/// Caches a new token; a refresh that returned no new refresh token (or no
/// client secret) keeps the old one.
fn store(
    cache: &Cache,
    login: &Login,
    issued: Issued,
    old: Option<&Entry>,
) -> Result<Credential, LoginError> {
    let now = login.clock.now();
    let mut entry = Entry::new(&login.target, issued.token, issued.expiry, now);
    entry.refresh_token = issued
        .refresh_token
        .or_else(|| old.and_then(|o| o.refresh_token.clone()));
    entry.dex_client_secret = issued
        .dex_client_secret
        .or_else(|| old.and_then(|o| o.dex_client_secret.clone()));
    cache.write(&entry)?;
    tracing::debug!(
        expires_in = entry.expiry.saturating_sub(now),
        path = %cache.path().display(),
        "token cached"
    );
    Ok(Credential {
        token: Secret::new(entry.token.clone()),
        expiry: entry.expiry,
        outcome: Outcome::LoggedIn,
        notices: issued.notice.into_iter().collect(),
    })
}

/// Removes cached tokens: those of `endpoint` and/or `username`, or all.
pub(crate) fn logout(
    cache_dir: &std::path::Path,
    endpoint: Option<&Endpoint>,
    username: Option<&str>,
) -> Result<Vec<PathBuf>, LoginError> {
    cache::remove_matching(cache_dir, endpoint.map(Endpoint::as_str), username)
}

/// The `detail` of an HTTP error: the service's message, if any.
pub(crate) fn service_message(reply: &http::Reply) -> String {
    let msg = reply.json().and_then(|v| {
        // Keystone: {"error":{"message":..}}; EFA: {"code":..,"message":..};
        // OAuth2 (Dex): {"error":..,"error_description":..}.
        [
            v["error"]["message"].as_str(),
            v["message"].as_str(),
            v["error_description"].as_str(),
            v["error"].as_str(),
        ]
        .into_iter()
        .flatten()
        .next()
        .map(str::to_owned)
    });
    match msg {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ if reply.body.is_empty() => String::new(),
        _ => format!(": {}", reply.snippet()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_base_urls() {
        assert_eq!(
            Endpoint::parse("https://du.example.com/").unwrap().as_str(),
            "https://du.example.com"
        );
        assert_eq!(
            Endpoint::parse("du.example.com:8443").unwrap().as_str(),
            "https://du.example.com:8443"
        );
        assert_eq!(
            Endpoint::parse("https://h/prefix/")
                .unwrap()
                .join("/dex/token"),
            "https://h/prefix/dex/token"
        );
        for bad in [
            "http://du.example.com",
            "https://u:p@h",
            "https://h/?q=1",
            "ftp://h",
            "https://",
        ] {
            let e = Endpoint::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--endpoint"), "{bad}: {e}");
        }
    }
}

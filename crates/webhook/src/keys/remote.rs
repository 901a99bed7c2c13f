//! Keys fetched from an issuer: OIDC discovery or a plain JWKS URL, on the
//! issuer's own host (or one `jwks_hosts` lists), never a link-local address.
//! One fetch at a time per issuer. A key set the issuer serves is its word:
//! keys it no longer lists stop verifying, even when none is left. When a
//! fetch fails, the last good key set stays in use for up to `max_key_age`.
//! Unknown-`kid` refetches are rate-limited, and a review is never held for
//! the rate limit: it joins a fetch in flight, starts one if allowed, or is
//! answered "could not check" at once while the next allowed fetch runs in
//! the background.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderMap};
use tokio::sync::{Mutex, Notify};

use crate::config::{RemoteKeys as RemoteConfig, RemoteSource};
use crate::keys::{self, KeyError, KeySet};
use crate::metrics::Metrics;
use kube_authn_common::clock::Clock;
use kube_authn_common::error_chain;

const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const MIN_REFRESH: Duration = Duration::from_secs(60);
const MAX_REFRESH: Duration = Duration::from_secs(3600);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Reviews of one issuer that may wait for its fetch in flight; beyond
/// this they are answered "could not check" at once.
pub(crate) const MAX_FETCH_WAITERS: usize = 128;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} answered more than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("discovery document names issuer {got:?}, expected {expected:?}: refusing its keys")]
    IssuerMismatch { expected: String, got: String },
    /// Not a failure: the issuer's key set lists no usable key, so none of
    /// the keys it listed before is trusted any more.
    #[error(
        "the issuer's key set lists no usable signature key{0}: its earlier keys are withdrawn"
    )]
    NoUsableKeys(String),
    #[error("{0}")]
    JwksUriRefused(String),
    #[error("{0}")]
    Internal(String),
}

impl FetchError {
    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            FetchError::Timeout(_) => "timeout",
            FetchError::Connect(_) => "connect_error",
            FetchError::Status { .. } => "http_error",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Invalid(_) => "invalid",
            FetchError::IssuerMismatch { .. } => "issuer_mismatch",
            FetchError::NoUsableKeys(_) => "no_usable_keys",
            FetchError::JwksUriRefused(_) => "jwks_uri_refused",
            FetchError::Internal(_) => "internal_error",
        }
    }

    /// Whether the issuer could not be reached or did not answer with a key
    /// set (the last good keys are kept), rather than answering one.
    pub(crate) fn is_outage(&self) -> bool {
        !matches!(self, FetchError::NoUsableKeys(_))
    }
}

/// What requests read: swapped whole after every fetch attempt.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) keys: KeySet,
    /// Fetch attempts so far, good or bad.
    pub(crate) attempts: u64,
    /// Clock time (Unix seconds) of the last fetch that got a key set (which
    /// may have had no usable key).
    pub(crate) last_success: Option<u64>,
    /// The last attempt's failure, or `NoUsableKeys` when the issuer's key
    /// set had no usable key.
    pub(crate) last_error: Option<FetchError>,
}

struct FetchState {
    /// When the last fetch for an unknown kid started: they are at most one
    /// per `min_refetch_interval`. The refresh timer's fetches do not count.
    last_kid_fetch: Option<Instant>,
    /// From discovery; forgotten when the JWKS URL stops answering, so the next
    /// fetch discovers again.
    jwks_uri: Option<String>,
}

/// The HTTPS client for an issuer cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("issuer {issuer}: {what}: {source}")]
pub struct ClientError {
    issuer: Arc<str>,
    what: &'static str,
    source: reqwest::Error,
}

pub struct RemoteKeys {
    issuer: Arc<str>,
    cfg: RemoteConfig,
    client: reqwest::Client,
    snapshot: ArcSwap<Snapshot>,
    fetch: Mutex<FetchState>,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// Fetches run here, not on the actix worker that asked: reqwest's
    /// connection tasks must live on a runtime that outlives the request.
    runtime: tokio::runtime::Handle,
    /// Reviews waiting for the fetch in flight (at most `MAX_FETCH_WAITERS`).
    waiters: AtomicUsize,
    /// An unknown kid wanted a fetch the rate limit did not allow: the
    /// refresh loop makes it when the next one is (`wanted` wakes it; the
    /// flag says whether a fetch is still wanted when it gets there).
    wanted: Notify,
    fetch_wanted: AtomicBool,
}

impl RemoteKeys {
    pub(crate) fn new(
        issuer: Arc<str>,
        cfg: RemoteConfig,
        ca_pem: Option<&[u8]>,
        metrics: Arc<Metrics>,
        clock: Clock,
        runtime: tokio::runtime::Handle,
    ) -> Result<RemoteKeys, ClientError> {
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.fetch_timeout)
            .connect_timeout(cfg.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .no_proxy()
            .dns_resolver(NoLinkLocal)
            .user_agent(concat!("kube-authn-webhook/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|source| ClientError {
                    issuer: issuer.clone(),
                    what: "bad certificate_authority_file",
                    source,
                })?;
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(|source| ClientError {
            issuer: issuer.clone(),
            what: "cannot build the HTTPS client",
            source,
        })?;
        metrics
            .jwks_max_key_age
            .with_label_values(&[&issuer])
            .set(cfg.max_key_age.as_secs_f64());
        metrics
            .jwks_skipped_keys
            .with_label_values(&[&issuer])
            .set(0);
        Ok(RemoteKeys {
            issuer,
            cfg,
            client,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            fetch: Mutex::new(FetchState {
                last_kid_fetch: None,
                jwks_uri: None,
            }),
            metrics,
            clock,
            runtime,
            waiters: AtomicUsize::new(0),
            wanted: Notify::new(),
            fetch_wanted: AtomicBool::new(false),
        })
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Fetches now (after any fetch already running), for the refresh timer.
    /// Returns how long the key set may be considered fresh.
    pub async fn refresh(&self) -> Result<Duration, FetchError> {
        let mut st = self.fetch.lock().await;
        self.fetch_locked(&mut st).await
    }

    /// Called when a token names a key we do not hold. Never waits for the
    /// rate limit: joins the fetch in flight (bounded by the fetch timeout;
    /// at most `MAX_FETCH_WAITERS` reviews), or fetches now when an
    /// unknown-kid fetch is allowed (at most one per `min_refetch_interval`),
    /// or answers `RefetchLimited` at once and has the refresh loop fetch when
    /// the next one is. `issued_at` is the token's (unverified) `iat`: when
    /// our keys were fetched after the token was issued, a refetch cannot find
    /// its key, so none is made.
    pub(crate) async fn refresh_for_unknown_kid(
        &self,
        issued_at: Option<i64>,
        skew: Duration,
    ) -> Result<(), KeyError> {
        let seen = self.snapshot.load();
        if let (Some(iat), Some(fetched)) = (issued_at, seen.last_success)
            && fetched as i64 > iat.saturating_add(skew.as_secs() as i64)
        {
            return Ok(());
        }
        let seen_attempts = seen.attempts;
        drop(seen);
        let _waiting = Waiting::enter(&self.waiters).ok_or(KeyError::TooManyWaiters)?;
        // Held only by a fetch in flight (or a waiter looking at the state).
        let mut st = self.fetch.lock().await;
        let now = self.snapshot.load();
        if now.attempts != seen_attempts {
            // Somebody fetched while we waited: use their result.
            return match &now.last_error {
                Some(e) if e.is_outage() => Err(e.clone().into()),
                _ => Ok(()),
            };
        }
        drop(now);
        if let Some(next) = st
            .last_kid_fetch
            .map(|last| last + self.cfg.min_refetch_interval)
            .filter(|next| *next > Instant::now())
        {
            if !self.fetch_wanted.swap(true, Ordering::AcqRel) {
                self.wanted.notify_one();
            }
            let wait = next.saturating_duration_since(Instant::now());
            return Err(KeyError::RefetchLimited(Duration::from_secs(
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            )));
        }
        st.last_kid_fetch = Some(Instant::now());
        self.fetch_locked(&mut st).await.map(|_| ())?;
        Ok(())
    }

    /// The fetch an unknown kid wanted when the rate limit did not allow it:
    /// made once it does, unless another unknown kid made one meanwhile
    /// (`None` then).
    async fn refresh_wanted(&self) -> Option<Result<Duration, FetchError>> {
        let seen = self.fetch.lock().await.last_kid_fetch;
        if let Some(last) = seen {
            tokio::time::sleep_until((last + self.cfg.min_refetch_interval).into()).await;
        }
        let mut st = self.fetch.lock().await;
        // Whoever asks from now on is answered by this fetch, or asks anew.
        self.fetch_wanted.store(false, Ordering::Release);
        if st.last_kid_fetch != seen {
            return None;
        }
        st.last_kid_fetch = Some(Instant::now());
        Some(self.fetch_locked(&mut st).await)
    }

    /// Why the keys we hold cannot be used at `now`, when the last good
    /// fetch is older than `max_key_age`.
    pub(crate) fn stale_at(&self, now: u64) -> Option<KeyError> {
        let snap = self.snapshot.load();
        let age = Duration::from_secs(now.saturating_sub(snap.last_success?));
        (age >= self.cfg.max_key_age).then(|| KeyError::Stale {
            age,
            max: self.cfg.max_key_age,
            last_error: snap.last_error.clone(),
        })
    }

    async fn fetch_locked(&self, st: &mut FetchState) -> Result<Duration, FetchError> {
        let client = self.client.clone();
        let source = self.cfg.source.clone();
        let cached_uri = st.jwks_uri.clone();
        let limits = Limits {
            bytes: self.cfg.max_response_bytes,
            timeout: self.cfg.fetch_timeout,
        };
        let hosts = self.cfg.jwks_hosts.clone();
        let result = self
            .runtime
            .spawn(async move { fetch_keys(&client, &source, cached_uri, &hosts, limits).await })
            .await
            .unwrap_or_else(|e| Err(FetchError::Internal(format!("fetch task failed: {e}"))));
        let previous = self.snapshot.load_full();
        let issuer = &*self.issuer;
        let now = self.clock.now();
        match result {
            Ok(fetched) => {
                for s in &fetched.skipped {
                    tracing::warn!(issuer, skipped = %s, "ignoring a key in the issuer's JWKS");
                }
                self.metrics
                    .jwks_skipped_keys
                    .with_label_values(&[issuer])
                    .set(fetched.skipped.len() as i64);
                st.jwks_uri = Some(fetched.jwks_uri);
                let max_age = self.cfg.max_key_age.as_secs();
                let (keys, withdrawn) = previous
                    .keys
                    .refreshed(fetched.keys, now.saturating_add(max_age));
                let count = keys.len();
                // The issuer's word even when it lists no usable key: its
                // earlier keys are withdrawn, not kept as after a failure.
                let none_usable = (count == 0).then(|| {
                    FetchError::NoUsableKeys(if fetched.skipped.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", fetched.skipped.join("; "))
                    })
                });
                let label = none_usable.as_ref().map_or("success", |e| e.metric_label());
                match &none_usable {
                    Some(e) => tracing::warn!(issuer, withdrawn, "{e}"),
                    None => tracing::info!(issuer, keys = count, withdrawn, "fetched issuer keys"),
                }
                self.snapshot.store(Arc::new(Snapshot {
                    keys,
                    attempts: previous.attempts + 1,
                    last_success: Some(now),
                    last_error: none_usable,
                }));
                self.metrics
                    .jwks_fetches
                    .with_label_values(&[issuer, label])
                    .inc();
                self.metrics
                    .jwks_last_success
                    .with_label_values(&[issuer])
                    .set(now as f64);
                // Refreshed well within max_key_age, so a healthy issuer's
                // keys never come near it.
                Ok(fetched
                    .max_age
                    .unwrap_or(DEFAULT_REFRESH)
                    .clamp(MIN_REFRESH, MAX_REFRESH)
                    .min(self.cfg.max_key_age / 4))
            }
            Err(e) => {
                if matches!(e, FetchError::Status { .. }) {
                    st.jwks_uri = None;
                }
                // Past max_key_age the last good keys go: tokens they signed
                // can no longer be checked (reviews check each key's age
                // themselves; this keeps the key count and /readyz honest).
                let expired = previous
                    .last_success
                    .is_some_and(|t| now.saturating_sub(t) >= self.cfg.max_key_age.as_secs());
                let keys = if expired && !previous.keys.is_empty() {
                    previous.keys.withdraw_all();
                    tracing::error!(
                        issuer,
                        dropped = previous.keys.len(),
                        max_key_age = %humantime::format_duration(self.cfg.max_key_age),
                        "the issuer's last good keys are older than max_key_age: its tokens cannot be checked until it answers again"
                    );
                    KeySet::default()
                } else {
                    previous.keys.clone()
                };
                let keeping = keys.len();
                self.snapshot.store(Arc::new(Snapshot {
                    keys,
                    attempts: previous.attempts + 1,
                    last_success: previous.last_success,
                    last_error: Some(e.clone()),
                }));
                self.metrics
                    .jwks_fetches
                    .with_label_values(&[issuer, e.metric_label()])
                    .inc();
                tracing::warn!(
                    issuer,
                    error = %e,
                    result = e.metric_label(),
                    keeping_keys = keeping,
                    "fetching issuer keys failed"
                );
                Err(e)
            }
        }
    }

    /// Keeps the key set fresh until the task is dropped: at the issuer's
    /// `max-age` (within 1m..1h, and a quarter of `max_key_age`) after a good
    /// fetch, with backoff after a bad one, and once more when an unknown kid
    /// wanted a fetch the rate limit did not allow.
    pub(crate) async fn refresh_forever(self: Arc<Self>) {
        let base = self.cfg.min_refetch_interval.max(Duration::from_secs(1));
        let mut retry = base;
        let mut next = tokio::time::Instant::now();
        loop {
            let result = tokio::select! {
                () = tokio::time::sleep_until(next) => Some(self.refresh().await),
                () = self.wanted.notified() => self.refresh_wanted().await,
            };
            let wait = match result {
                None => continue,
                Some(Ok(fresh_for)) => {
                    retry = base;
                    fresh_for
                }
                Some(Err(_)) => {
                    let w = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    w
                }
            };
            next = tokio::time::Instant::now() + wait;
        }
    }
}

/// Counts a review waiting for the fetch in flight, while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Option<Waiting<'a>> {
        if count.fetch_add(1, Ordering::AcqRel) >= MAX_FETCH_WAITERS {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Resolves names as the system does (getaddrinfo), without the link-local
/// addresses (169.254.0.0/16, fe80::/10: cloud metadata services and the
/// like), so no name the issuer or its discovery document gives can lead a
/// fetch there. IP literals in URLs are refused before any fetch.
struct NoLinkLocal;

impl reqwest::dns::Resolve for NoLinkLocal {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_link_local(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no address that is not link-local").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// 169.254.0.0/16, fe80::/10, and those written as IPv4-mapped IPv6.
pub(crate) fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_link_local(),
            None => v6.is_unicast_link_local(),
        },
    }
}

/// Whether a URL host (`host_str`: IPv6 in brackets) is a link-local address.
pub(crate) fn host_is_link_local(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(is_link_local)
}

/// Why `url` may not be fetched from for an issuer allowed `hosts`, if it
/// may not: not https, a link-local address (whatever `hosts` says), or a
/// host not listed.
pub(crate) fn jwks_url_refused(url: &str, hosts: &[String]) -> Option<String> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(_) => return Some(format!("{url:?} is not a URL")),
    };
    if parsed.scheme() != "https" {
        return Some(format!("{url:?} is not https"));
    }
    let Some(host) = parsed.host_str().map(str::to_ascii_lowercase) else {
        return Some(format!("{url:?} names no host"));
    };
    if host_is_link_local(&host) {
        return Some(format!(
            "{url:?} is on a link-local address, which is never fetched from"
        ));
    }
    if hosts.contains(&host) {
        None
    } else {
        Some(format!(
            "{url:?} is not on the issuer's host ({}); list {host} in jwks_hosts if the issuer really keeps its keys there",
            hosts.first().map(String::as_str).unwrap_or("none")
        ))
    }
}

#[derive(Clone, Copy)]
struct Limits {
    bytes: usize,
    timeout: Duration,
}

/// A key set the issuer served: `keys` may be empty (none usable).
struct Fetched {
    keys: Vec<keys::VerifyKey>,
    skipped: Vec<String>,
    jwks_uri: String,
    max_age: Option<Duration>,
}

async fn fetch_keys(
    client: &reqwest::Client,
    source: &RemoteSource,
    cached_uri: Option<String>,
    hosts: &[String],
    limits: Limits,
) -> Result<Fetched, FetchError> {
    let jwks_uri = match (source, cached_uri) {
        (RemoteSource::Jwks { url }, _) => url.clone(),
        (RemoteSource::Discovery { .. }, Some(uri)) => uri,
        (
            RemoteSource::Discovery {
                issuer,
                discovery_url,
            },
            None,
        ) => discover(client, issuer, discovery_url.as_deref(), hosts, limits).await?,
    };
    let (body, max_age) = get_bounded(client, &jwks_uri, limits).await?;
    let (keys, skipped) = keys::from_jwks(&body).map_err(FetchError::Invalid)?;
    Ok(Fetched {
        keys,
        skipped,
        jwks_uri,
        max_age,
    })
}

/// Reads the discovery document and returns its `jwks_uri`, refusing a
/// document that speaks for another issuer, and a `jwks_uri` elsewhere than
/// on `hosts` (the issuer's own host and `jwks_hosts`) or on a link-local
/// address.
async fn discover(
    client: &reqwest::Client,
    issuer: &str,
    discovery_url: Option<&str>,
    hosts: &[String],
    limits: Limits,
) -> Result<String, FetchError> {
    let url = discovery_url.map_or_else(
        || {
            format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            )
        },
        str::to_owned,
    );
    let (body, _) = get_bounded(client, &url, limits).await?;
    let metadata: Discovery = serde_json::from_slice(&body)
        .map_err(|e| FetchError::Invalid(format!("{url}: not an OIDC discovery document: {e}")))?;
    if metadata.issuer != issuer {
        return Err(FetchError::IssuerMismatch {
            expected: issuer.to_owned(),
            got: metadata.issuer,
        });
    }
    let jwks_uri = metadata.jwks_uri;
    if let Some(why) = jwks_url_refused(&jwks_uri, hosts) {
        return Err(FetchError::JwksUriRefused(format!("{url}: jwks_uri {why}")));
    }
    Ok(jwks_uri)
}

/// The OpenID Provider Metadata members OIDC Discovery 1.0 (section 3)
/// requires; a document without one of them is not a discovery document.
/// Only `issuer` and `jwks_uri` are used. (openidconnect's metadata type
/// reads the same, at the price of its signing stack in the server.)
#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    #[serde(rename = "authorization_endpoint")]
    _authorization_endpoint: String,
    #[serde(rename = "response_types_supported")]
    _response_types_supported: Vec<String>,
    #[serde(rename = "subject_types_supported")]
    _subject_types_supported: Vec<String>,
    #[serde(rename = "id_token_signing_alg_values_supported")]
    _id_token_signing_alg_values_supported: Vec<String>,
}

async fn get_bounded(
    client: &reqwest::Client,
    url: &str,
    limits: Limits,
) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
    let Limits {
        bytes: limit,
        timeout,
    } = limits;
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            FetchError::Timeout(timeout)
        } else if e.is_connect() {
            FetchError::Connect(error_chain(&e))
        } else {
            FetchError::Invalid(format!("{url}: {}", error_chain(&e)))
        }
    };
    let mut resp = client
        .get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(classify)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let too_large = || FetchError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let max_age = max_age(resp.headers());
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, max_age))
}

fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case("max-age") {
            v.trim()
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs)
        } else {
            None
        }
    })
}

/// reqwest's Display stops at the outermost error; TLS and DNS causes are
/// further down, and they are what an operator needs.
#[cfg(test)]
mod tests {
    use super::*;

    /// Dex's document is read; one without a member OIDC Discovery requires
    /// is not a discovery document (as with openidconnect's type before).
    #[test]
    fn discovery_needs_the_required_members() {
        let dex = crate::cmd::demo::issuer::discovery_document("https://d/dex", "https://d/dex");
        let d: Discovery = serde_json::from_value(dex.clone()).unwrap();
        assert_eq!(d.jwks_uri, "https://d/dex/keys");
        for member in [
            "issuer",
            "jwks_uri",
            "authorization_endpoint",
            "response_types_supported",
        ] {
            let mut doc = dex.clone();
            doc.as_object_mut().unwrap().remove(member);
            assert!(
                serde_json::from_value::<Discovery>(doc).is_err(),
                "{member}"
            );
        }
    }

    #[test]
    fn link_local_addresses_are_recognised_however_written() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_link_local(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "::1",
            "fec0::1",
            "2001:db8::1",
            "169.255.0.1",
        ] {
            assert!(!is_link_local(ip.parse().unwrap()), "{ip}");
        }
        assert!(host_is_link_local("[fe80::1]"));
        assert!(!host_is_link_local("keys.example.com"));
    }

    #[test]
    fn a_jwks_url_must_be_https_on_an_allowed_host_never_link_local() {
        let hosts = ["dex.example.com".to_owned(), "169.254.169.254".to_owned()];
        assert_eq!(
            jwks_url_refused("https://DEX.example.com:8443/keys", &hosts),
            None
        );
        for (url, says) in [
            (
                "https://keys.example.com/keys",
                "is not on the issuer's host (dex.example.com)",
            ),
            ("http://dex.example.com/keys", "is not https"),
            ("https://169.254.169.254/keys", "link-local"),
            ("https://[fe80::1%25eth0]/keys", ""),
            ("https://[::ffff:169.254.1.1]/keys", "link-local"),
            ("not a url", "is not a URL"),
        ] {
            let why = jwks_url_refused(url, &hosts).unwrap_or_default();
            assert!(!why.is_empty() && why.contains(says), "{url}: {why}");
        }
    }

    #[test]
    fn waiters_for_a_fetch_are_capped() {
        let count = AtomicUsize::new(0);
        let held: Vec<Waiting<'_>> = (0..MAX_FETCH_WAITERS)
            .map(|_| Waiting::enter(&count).unwrap())
            .collect();
        assert!(Waiting::enter(&count).is_none(), "one over the cap");
        assert_eq!(count.load(Ordering::SeqCst), MAX_FETCH_WAITERS);
        drop(held);
        assert_eq!(count.load(Ordering::SeqCst), 0);
        assert!(Waiting::enter(&count).is_some());
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(CACHE_CONTROL, v.parse().unwrap());
            max_age(&m)
        };
        assert_eq!(
            h("max-age=600, must-revalidate"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(h("public, Max-Age=\"120\""), Some(Duration::from_secs(120)));
        assert_eq!(h("no-cache"), None);
        assert_eq!(h("max-age=soon"), None);
        assert_eq!(max_age(&HeaderMap::new()), None);
    }
}

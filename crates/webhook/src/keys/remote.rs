//! Keys fetched from an issuer: OIDC discovery or a plain JWKS URL. One fetch at a time per issuer; the last good key set
//! stays in use when a fetch fails; unknown-`kid` refetches are rate-limited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderMap};
use tokio::sync::Mutex;

use crate::config::{RemoteKeys as RemoteConfig, RemoteSource};
use crate::keys::{self, KeySet};
use crate::metrics::Metrics;
use kube_authn_common::clock::Clock;
use kube_authn_common::error_chain;

const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const MIN_REFRESH: Duration = Duration::from_secs(60);
const MAX_REFRESH: Duration = Duration::from_secs(3600);
const MAX_RETRY: Duration = Duration::from_secs(60);

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
    #[error("key set has no usable signature keys{0}")]
    NoUsableKeys(String),
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
            FetchError::Internal(_) => "internal_error",
        }
    }
}

/// What requests read: swapped whole after every fetch attempt.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) keys: KeySet,
    /// Fetch attempts so far, good or bad.
    pub(crate) attempts: u64,
    /// Clock time (Unix seconds) of the last good fetch.
    pub(crate) last_success: Option<u64>,
    pub(crate) last_error: Option<FetchError>,
}

struct FetchState {
    last_attempt: Option<Instant>,
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
        Ok(RemoteKeys {
            issuer,
            cfg,
            client,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            fetch: Mutex::new(FetchState {
                last_attempt: None,
                jwks_uri: None,
            }),
            metrics,
            clock,
            runtime,
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

    /// Called when a token names a key we do not hold. Fetches at most once per
    /// `min_refetch_interval`, shared by every request waiting meanwhile.
    /// `issued_at` is the token's (unverified) `iat`: when our keys were fetched
    /// after the token was issued, a refetch cannot find its key, so none is made.
    pub(crate) async fn refresh_for_unknown_kid(
        &self,
        issued_at: Option<i64>,
        skew: Duration,
    ) -> Result<(), FetchError> {
        let seen = self.snapshot.load();
        if let (Some(iat), Some(fetched)) = (issued_at, seen.last_success)
            && fetched as i64 > iat.saturating_add(skew.as_secs() as i64)
        {
            return Ok(());
        }
        let seen_attempts = seen.attempts;
        drop(seen);
        let mut st = self.fetch.lock().await;
        let now = self.snapshot.load();
        if now.attempts != seen_attempts {
            // Somebody fetched while we waited: use their result.
            return match &now.last_error {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            };
        }
        drop(now);
        if let Some(last) = st.last_attempt {
            let next = last + self.cfg.min_refetch_interval;
            tokio::time::sleep_until(next.into()).await;
        }
        self.fetch_locked(&mut st).await.map(|_| ())
    }

    async fn fetch_locked(&self, st: &mut FetchState) -> Result<Duration, FetchError> {
        st.last_attempt = Some(Instant::now());
        let client = self.client.clone();
        let source = self.cfg.source.clone();
        let cached_uri = st.jwks_uri.clone();
        let limit = self.cfg.max_response_bytes;
        let timeout = self.cfg.fetch_timeout;
        let result = self
            .runtime
            .spawn(async move { fetch_keys(&client, &source, cached_uri, limit, timeout).await })
            .await
            .unwrap_or_else(|e| Err(FetchError::Internal(format!("fetch task failed: {e}"))));
        let previous = self.snapshot.load_full();
        let issuer = &*self.issuer;
        match result {
            Ok(fetched) => {
                for s in &fetched.skipped {
                    tracing::warn!(issuer, skipped = %s, "ignoring a key in the issuer's JWKS");
                }
                let count = fetched.keys.len();
                st.jwks_uri = Some(fetched.jwks_uri);
                let now = self.clock.now();
                self.snapshot.store(Arc::new(Snapshot {
                    keys: fetched.keys,
                    attempts: previous.attempts + 1,
                    last_success: Some(now),
                    last_error: None,
                }));
                self.metrics
                    .jwks_fetches
                    .with_label_values(&[issuer, "success"])
                    .inc();
                self.metrics
                    .jwks_last_success
                    .with_label_values(&[issuer])
                    .set(now as f64);
                tracing::info!(issuer, keys = count, "fetched issuer keys");
                Ok(fetched
                    .max_age
                    .unwrap_or(DEFAULT_REFRESH)
                    .clamp(MIN_REFRESH, MAX_REFRESH))
            }
            Err(e) => {
                if matches!(e, FetchError::Status { .. }) {
                    st.jwks_uri = None;
                }
                self.snapshot.store(Arc::new(Snapshot {
                    keys: previous.keys.clone(),
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
                    keeping_keys = previous.keys.len(),
                    "fetching issuer keys failed"
                );
                Err(e)
            }
        }
    }

    /// Keeps the key set fresh until the task is dropped: at the issuer's
    /// `max-age` (within 1m..1h) after a good fetch, with backoff after a bad one.
    pub(crate) async fn refresh_forever(self: Arc<Self>) {
        let mut retry = self.cfg.min_refetch_interval.max(Duration::from_secs(1));
        loop {
            let wait = match self.refresh().await {
                Ok(fresh_for) => {
                    retry = self.cfg.min_refetch_interval.max(Duration::from_secs(1));
                    fresh_for
                }
                Err(_) => {
                    let w = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    w
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

struct Fetched {
    keys: KeySet,
    skipped: Vec<String>,
    jwks_uri: String,
    max_age: Option<Duration>,
}

async fn fetch_keys(
    client: &reqwest::Client,
    source: &RemoteSource,
    cached_uri: Option<String>,
    limit: usize,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    let jwks_uri = match (source, cached_uri) {
        (RemoteSource::Jwks { url }, _) => url.clone(),
        (RemoteSource::Discovery { .. }, Some(uri)) => uri,
        (RemoteSource::Discovery { issuer }, None) => {
            discover(client, issuer, limit, timeout).await?
        }
    };
    let (body, max_age) = get_bounded(client, &jwks_uri, limit, timeout).await?;
    let (keys, skipped) = keys::from_jwks(&body).map_err(FetchError::Invalid)?;
    if keys.is_empty() {
        let why = if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({})", skipped.join("; "))
        };
        return Err(FetchError::NoUsableKeys(why));
    }
    Ok(Fetched {
        keys: KeySet::new(keys),
        skipped,
        jwks_uri,
        max_age,
    })
}

/// Reads the discovery document and returns its `jwks_uri`, refusing a
/// document that speaks for another issuer.
async fn discover(
    client: &reqwest::Client,
    issuer: &str,
    limit: usize,
    timeout: Duration,
) -> Result<String, FetchError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let (body, _) = get_bounded(client, &url, limit, timeout).await?;
    let metadata: Discovery = serde_json::from_slice(&body)
        .map_err(|e| FetchError::Invalid(format!("{url}: not an OIDC discovery document: {e}")))?;
    if metadata.issuer != issuer {
        return Err(FetchError::IssuerMismatch {
            expected: issuer.to_owned(),
            got: metadata.issuer,
        });
    }
    let jwks_uri = metadata.jwks_uri;
    if reqwest::Url::parse(&jwks_uri).is_err() {
        return Err(FetchError::Invalid(format!(
            "{url}: jwks_uri {jwks_uri:?} is not a URL"
        )));
    }
    if !jwks_uri.starts_with("https://") {
        return Err(FetchError::Invalid(format!(
            "{url}: jwks_uri {jwks_uri:?} is not https"
        )));
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
    limit: usize,
    timeout: Duration,
) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
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

//! One TokenReview, end to end: decode the body, answer from the cache or
//! verify, decide audiences, encode the answer, count and log it.

pub mod cache;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::audit::{self, Audit, Claimed, Decision};
use crate::config::UNMATCHED_ISSUER;
use crate::keys::remote::ClientError;
use crate::metrics::Metrics;
use crate::oauth::{self, OAuthVerifier};
use crate::prepare::Prepared;
use crate::review::cache::{Lookup, TokenCache, TokenHash, Verdict};
use crate::revoke::watch::{Current, Watcher};
use crate::revoke::{LoadError, RevocationList};
use crate::verify::{
    Identity, IssuerVerifier, Rejection, Trace, Verified, Verifier, VerifyError, jwt,
};
use crate::wire::{ApiVersion, KIND, TokenReviewRequest, TokenReviewResponse, TokenReviewStatus};
use kube_authn_common::clock::Clock;

/// A request that is not a TokenReview we can answer. Mapped to HTTP in
/// `server` (the only place that knows about status codes).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("no such endpoint: POST a TokenReview to /authenticate")]
    NotFound,
    #[error("the client certificate names no caller allowed by server.tls.allowed_client_names")]
    Forbidden,
    /// Refused whatever the names are: which CN names the caller is a guess.
    #[error(
        "the client certificate has more than one subject CN ({0}); no name from it is trusted: issue it with one CN"
    )]
    SeveralClientCommonNames(usize),
    #[error("the request body did not arrive within the read timeout")]
    RequestTimeout,
    /// More reviews in progress than `server.max_concurrent_reviews`: the
    /// kube-apiserver's webhook client retries a 429 with backoff.
    #[error("more than {limit} reviews in progress (server.max_concurrent_reviews); retry shortly")]
    Busy { limit: usize },
    /// Our fault, not the caller's.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What keeps a `Reviewer` from being built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Keys(#[from] ClientError),
    #[error(transparent)]
    OpenShiftOAuth(#[from] oauth::ClientError),
    #[error("{0}")]
    Revocation(String),
    #[error("{0}")]
    Audit(String),
}

/// One config's way of answering: a reload builds a new one (`reloaded`)
/// and reviews that started on the old one finish on it.
pub struct Reviewer {
    pub verifier: Verifier,
    /// The openshift-oauth issuer: where `sha256~` tokens go, if configured.
    pub(crate) oauth: Option<Arc<OAuthVerifier>>,
    pub cache: TokenCache,
    pub metrics: Arc<Metrics>,
    pub(crate) clock: Clock,
    pub(crate) request_timeout: Duration,
    /// The cache settings `cache` was built with.
    cache_settings: crate::config::Cache,
    /// The list every review is checked against, cache hits included.
    pub(crate) revocations: Current,
    /// Replaces `revocations` when the file changes (`server::start` runs it).
    pub(crate) revocation_watcher: Option<Arc<Watcher>>,
    /// One writer for the process: a reload keeps it (see `reloaded`).
    pub(crate) audit: Option<Arc<Audit>>,
}

/// What one review came to, before encoding.
enum Answer {
    Authenticated(Arc<Identity>, Vec<String>),
    /// Verified, then refused for the requested audiences.
    Refused(Arc<Identity>, Rejection),
    Rejected(Rejection),
    Revoked(Arc<Identity>, &'static str, Option<Arc<str>>),
    Unchecked(Arc<Unchecked>),
}

/// What a token came to, from the cache or not.
enum Decided {
    /// Cached, or verified and now cached.
    Verdict(Verdict),
    /// Refused before routing: not a JWT, too large, or no issuer for its
    /// `iss`. Never cached (see `Reviewer::decide`). With the token's `iss`
    /// (truncated, escaped) when no issuer has it, for the log line.
    Unrouted(Rejection, Option<String>),
    /// Could not be checked: never cached, by us or by the apiserver.
    Unchecked(Arc<Unchecked>),
}

impl Reviewer {
    /// Everything a review needs, built from the config: the issuers' verifiers
    /// (remote keys not fetched yet: `server::start` runs their refresh loops,
    /// a benchmark may call `RemoteKeys::refresh` once), the cache and a fresh
    /// metrics registry. `runtime` is where key fetches run.
    pub fn from_config(
        config: &Prepared,
        clock: Clock,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Reviewer, SetupError> {
        let metrics = Arc::new(Metrics::new());
        let verifier = Verifier::new(
            &config.issuers,
            config.state_dir.as_deref(),
            None,
            &metrics,
            &clock,
            runtime,
        )?;
        let oauth = match &config.openshift_oauth {
            Some(p) => Some(Arc::new(OAuthVerifier::new(p, &metrics, &clock, runtime)?)),
            None => None,
        };
        let watcher = match &config.revocation {
            Some(file) => Some(Arc::new(
                Watcher::start(
                    file.clone(),
                    config.server.tls.reload_interval,
                    metrics.clone(),
                    clock.clone(),
                )
                .map_err(|e| {
                    SetupError::Revocation(match e {
                        LoadError::Invalid(_) => e.to_string(),
                        LoadError::Read(_) => format!("revocation list {}: {e}", file.display()),
                    })
                })?,
            )),
            None => None,
        };
        let revocations = watcher.as_ref().map_or_else(
            || Arc::new(arc_swap::ArcSwap::from_pointee(RevocationList::default())),
            |w| w.current(),
        );
        let audit = match &config.audit {
            Some(a) => Some(Arc::new(
                Audit::start(a, config.audit_salt.as_ref().map(|s| s.0.clone()))
                    .map_err(|e| SetupError::Audit(e.to_string()))?,
            )),
            None => None,
        };
        Ok(Reviewer {
            verifier,
            oauth,
            cache: TokenCache::new(&config.cache),
            metrics,
            clock,
            request_timeout: config.server.request_timeout,
            cache_settings: config.cache.clone(),
            revocations,
            revocation_watcher: watcher,
            audit,
        })
    }

    /// The reviewer for a reloaded config: issuers whose settings and files
    /// did not change are this one's (same keys, no fetch, cached verdicts
    /// still good); the cache is this one's unless its settings changed;
    /// the metrics registry is shared. Nothing is fetched here.
    pub(crate) fn reloaded(
        &self,
        config: &Prepared,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Reviewer, SetupError> {
        let verifier = Verifier::new(
            &config.issuers,
            config.state_dir.as_deref(),
            Some(&self.verifier),
            &self.metrics,
            &self.clock,
            runtime,
        )?;
        // Kept when its settings and kubeconfig are the same: a new one
        // would look every token up again, and its rate limit would answer
        // "could not check" to users beyond it.
        let oauth = match (&config.openshift_oauth, &self.oauth) {
            (Some(p), Some(old)) if old.identity == p.identity => Some(old.clone()),
            (Some(p), _) => Some(Arc::new(OAuthVerifier::new(
                p,
                &self.metrics,
                &self.clock,
                runtime,
            )?)),
            (None, _) => None,
        };
        let cache = if self.cache_settings == config.cache {
            self.cache.clone()
        } else {
            TokenCache::new(&config.cache)
        };
        Ok(Reviewer {
            verifier,
            oauth,
            cache,
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            request_timeout: config.server.request_timeout,
            cache_settings: config.cache.clone(),
            // The list file and the audit writer are the process's: their
            // settings take effect at the next restart (`reload::RestartOnly`).
            revocations: self.revocations.clone(),
            revocation_watcher: self.revocation_watcher.clone(),
            audit: self.audit.clone(),
        })
    }

    /// Writes out the audit lines of every review answered so far (drain).
    pub(crate) fn flush_audit(&self) {
        if let Some(a) = &self.audit
            && !a.flush(Duration::from_secs(10))
        {
            tracing::error!("the audit trail was not written out within 10s");
        }
    }

    /// Answers a TokenReview request body with the response body.
    pub async fn review_body(&self, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        self.review_body_from(body, None).await
    }

    /// `review_body` for a caller known by its client certificate's name
    /// (the audit trail records it).
    pub(crate) async fn review_body_from(
        &self,
        body: &[u8],
        caller: Option<Arc<str>>,
    ) -> Result<Vec<u8>, ApiError> {
        let started = Instant::now();
        let request: TokenReviewRequest = serde_json::from_slice(body).map_err(decode_error)?;
        // Neither value is quoted back: it is the caller's input, and this
        // message goes into the answer and the log.
        if request.kind != KIND {
            return Err(ApiError::BadRequest(if request.kind.is_empty() {
                "kind is missing; expected \"TokenReview\"".to_owned()
            } else {
                "kind is not \"TokenReview\"".to_owned()
            }));
        }
        let version = ApiVersion::parse(&request.api_version).ok_or_else(|| {
            let expected = "\"authentication.k8s.io/v1\" or \"authentication.k8s.io/v1beta1\"";
            ApiError::BadRequest(if request.api_version.is_empty() {
                format!("apiVersion is missing; expected {expected}")
            } else {
                format!("apiVersion is not {expected}")
            })
        })?;
        let spec = request.spec.unwrap_or_default();
        if spec.token.is_empty() {
            return Err(ApiError::BadRequest(
                "spec.token is missing or empty".to_owned(),
            ));
        }
        self.review_token_from(
            version,
            &spec.token,
            &spec.audiences,
            started,
            caller,
            &mut Trace::off(),
        )
        .await
    }

    /// One review from its token on: the cache or a verification, the
    /// audiences, the answer encoded for `version`, counted and logged. The
    /// fuzzer drives this too, so what it explores is what the service runs.
    pub async fn review_token(
        &self,
        version: ApiVersion,
        token: &str,
        audiences: &[String],
        started: Instant,
    ) -> Result<Vec<u8>, ApiError> {
        self.review_token_from(version, token, audiences, started, None, &mut Trace::off())
            .await
    }

    /// `review_token`, recording each check into `trace`: `explain` runs
    /// this, so what it reports is what `serve` decides.
    pub async fn review_token_traced(
        &self,
        version: ApiVersion,
        token: &str,
        audiences: &[String],
        started: Instant,
        trace: &mut Trace,
    ) -> Result<Vec<u8>, ApiError> {
        self.review_token_from(version, token, audiences, started, None, trace)
            .await
    }

    async fn review_token_from(
        &self,
        version: ApiVersion,
        token: &str,
        audiences: &[String],
        started: Instant,
        caller: Option<Arc<str>>,
        trace: &mut Trace,
    ) -> Result<Vec<u8>, ApiError> {
        let hash = sha256(token.as_bytes());
        let now = self.clock.now();
        let (lookup, decided) = self.decide(token, &hash, now, trace).await;
        self.metrics
            .cache_lookups
            .with_label_values(&[lookup.label()])
            .inc();

        let mut unknown_iss = None;
        let (issuer, answer) = match decided {
            // Cached or not, a verified token is checked against the list in
            // force now: a revocation applies from the very next review.
            Decided::Verdict(Verdict::Authenticated(id)) => (
                Some(id.issuer.clone()),
                match self.revocations.load().check(&hash, &id, now) {
                    Some(entry) => {
                        let kind = entry.target.kind();
                        let reason = entry.reason.clone();
                        self.metrics
                            .revoked
                            .with_label_values(&[&id.issuer, kind])
                            .inc();
                        trace.note("revocation", || {
                            format!("revoked by a {kind} entry of the revocation list")
                        });
                        Answer::Revoked(id, kind, reason)
                    }
                    None => match trace.step(
                        "requested audiences",
                        || {
                            format!(
                                "the kube-apiserver asked for {audiences:?}; the token has {:?}{}",
                                id.token_audiences,
                                if id.trust_implicit_audience {
                                    " (trust_implicit_audience: the apiserver's own audience is trusted)"
                                } else {
                                    ""
                                }
                            )
                        },
                        id.audiences_for(audiences),
                    ) {
                        Ok(auds) => Answer::Authenticated(id, auds),
                        Err(r) => Answer::Refused(id, r),
                    },
                },
            ),
            Decided::Verdict(Verdict::Rejected { issuer, rejection }) => {
                (issuer, Answer::Rejected(rejection))
            }
            Decided::Unrouted(rejection, iss) => {
                unknown_iss = iss;
                (None, Answer::Rejected(rejection))
            }
            Decided::Unchecked(u) => (Some(u.issuer.clone()), Answer::Unchecked(u)),
        };
        let issuer_label = issuer.as_deref().unwrap_or(UNMATCHED_ISSUER);
        let (outcome, reason) = match &answer {
            Answer::Authenticated(..) => ("authenticated", "ok"),
            Answer::Rejected(r) | Answer::Refused(_, r) => ("rejected", r.reason()),
            Answer::Revoked(..) => ("rejected", Rejection::Revoked.reason()),
            Answer::Unchecked(u) => (u.error.outcome(), u.error.reason()),
        };
        let status = match &answer {
            Answer::Authenticated(id, auds) => TokenReviewStatus {
                authenticated: true,
                user: Some(&*id.user),
                audiences: auds.clone(),
                error: None,
            },
            Answer::Rejected(_) | Answer::Refused(..) | Answer::Revoked(..) => {
                TokenReviewStatus::default()
            }
            Answer::Unchecked(u) => TokenReviewStatus {
                error: Some(u.error.to_string()),
                ..TokenReviewStatus::default()
            },
        };
        let print = fingerprint(&hash);
        let body = serde_json::to_vec(&TokenReviewResponse {
            api_version: version.as_str(),
            kind: KIND,
            status,
        });
        let (body, outcome, reason) = match body {
            Ok(b) => (Ok(b), outcome, reason),
            // Our own answer, not the caller's request: a server fault.
            Err(e) => {
                tracing::error!(issuer = issuer_label, token = %print, error = %e, "cannot encode a TokenReview answer");
                (
                    Err(ApiError::Internal("cannot encode the answer".to_owned())),
                    "error",
                    "internal_error",
                )
            }
        };

        if let Some(audit) = &self.audit {
            let (decision, identity, revocation) = match &answer {
                _ if outcome == "error" && !matches!(answer, Answer::Unchecked(_)) => {
                    (Decision::CouldNotCheck, None, None)
                }
                Answer::Authenticated(id, _) => (Decision::Authenticated, Some(id.clone()), None),
                Answer::Refused(id, _) => (Decision::Refused, Some(id.clone()), None),
                Answer::Rejected(_) => (Decision::Refused, None, None),
                Answer::Revoked(id, kind, why) => (
                    Decision::Revoked,
                    Some(id.clone()),
                    Some((*kind, why.clone())),
                ),
                Answer::Unchecked(_) => (Decision::CouldNotCheck, None, None),
            };
            audit.record(audit::Event {
                time: SystemTime::now(),
                caller,
                issuer: issuer.clone(),
                // Only a token that was not verified is read again, for
                // what it claims to be.
                claimed: identity.is_none().then(|| Claimed::of(token)).flatten(),
                identity,
                decision,
                reason,
                revocation,
                cache: lookup.label(),
                api_version: version.short(),
                token: hash,
            });
        }
        let elapsed = started.elapsed();
        self.metrics
            .tokenreviews
            .with_label_values(&[issuer_label, outcome, reason])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
        let latency_us = elapsed.as_micros() as u64;
        let api_version = version.short();
        let cache = lookup.label();
        match &answer {
            Answer::Unchecked(u) => tracing::warn!(
                issuer = issuer_label, outcome, reason, cache, api_version,
                latency_us, token = %print, error = %u.error, "tokenreview"
            ),
            // Which iss nobody serves: the first thing to look at when a
            // new issuer's users are refused.
            _ if unknown_iss.is_some() => tracing::info!(
                issuer = issuer_label, outcome, reason, cache, api_version,
                latency_us, token = %print, iss = unknown_iss.as_deref().unwrap_or_default(),
                "tokenreview"
            ),
            // A rule's message or a CEL error says which rule: the reason
            // label alone would not.
            Answer::Rejected(
                r @ (Rejection::ClaimValidationFailed(_)
                | Rejection::UserValidationFailed(_)
                | Rejection::CelError(_)),
            ) => tracing::info!(
                issuer = issuer_label, outcome, reason, cache, api_version,
                latency_us, token = %print, detail = %r, "tokenreview"
            ),
            _ => tracing::info!(
                issuer = issuer_label, outcome, reason, cache, api_version,
                latency_us, token = %print, "tokenreview"
            ),
        }
        body
    }

    /// The one way a token is checked, by the service and by the fuzzer: the
    /// cache first; on a miss, the token is taken apart and routed by `iss`
    /// (no I/O), then checked by its issuer within `request_timeout`, one
    /// check shared by concurrent reviews of the token, and cached.
    ///
    /// A token refused before routing (not a JWT, too large, no issuer for
    /// its `iss`) is answered from the token alone and never reaches the
    /// cache's single flight or storage: deciding it again costs less than
    /// either, and a flood of distinct ones (anyone can make them) would
    /// otherwise push real identities out of a full cache. The apiserver
    /// still caches the refusal on its side (no `status.error`).
    ///
    /// A `sha256~` token is an OpenShift OAuth access token, never a JWT: it
    /// goes to the openshift-oauth issuer if there is one and looks like one
    /// (a lookup on the API server, rate-limited, its verdict cached like a
    /// JWT's), and is refused without a request otherwise.
    async fn decide(
        &self,
        token: &str,
        hash: &TokenHash,
        now: u64,
        trace: &mut Trace,
    ) -> (Lookup, Decided) {
        let live = |generation| {
            self.verifier.is_live(generation)
                || self
                    .oauth
                    .as_ref()
                    .is_some_and(|o| o.generation == generation)
        };
        if let Some(verdict) = self.cache.get(hash, now, live).await {
            trace.note("cache", || "answered from the cache".to_owned());
            return (Lookup::Hit, Decided::Verdict(verdict));
        }
        let unrouted = |r| (Lookup::Miss, Decided::Unrouted(r, None));
        if let Some(rest) = token.strip_prefix(oauth::TOKEN_PREFIX) {
            let Some(issuer) = self.oauth.as_ref().filter(|_| oauth::plausible(rest)) else {
                return unrouted(Rejection::Malformed);
            };
            let check = self.oauth_check(issuer, rest, hash, now);
            let once = self
                .cache
                .verify_once(*hash, now, issuer.generation, live, check)
                .await;
            // A verdict of the issuer a reload replaced: look it up again.
            let (lookup, result) = match once {
                Some(decided) => decided,
                None => (
                    Lookup::Miss,
                    self.oauth_check(issuer, rest, hash, now)
                        .await
                        .map_err(Arc::new),
                ),
            };
            return match result {
                Ok(verdict) => (lookup, Decided::Verdict(verdict)),
                Err(unchecked) => (lookup, Decided::Unchecked(unchecked)),
            };
        }
        let jwt = match trace.step(
            "decode",
            || format!("{} bytes", token.len()),
            jwt::split(token),
        ) {
            Ok(j) => j,
            Err(r) => return unrouted(r),
        };
        trace.note("header", || {
            format!(
                "alg {:?}, kid {}",
                jwt.alg,
                jwt.kid
                    .as_deref()
                    .map_or_else(|| "(none)".to_owned(), |k| format!("\"{}\"", printable(k)))
            )
        });
        let claims = match trace.step(
            "payload",
            || "one JSON object".to_owned(),
            jwt::Claims::parse(&jwt.payload),
        ) {
            Ok(c) => c,
            Err(r) => return unrouted(r),
        };
        let routed = self.verifier.route(&claims);
        let routed_to = routed.as_ref().ok().copied();
        let issuer = match trace.step(
            "issuer",
            || self.verifier.describe_route(&claims, routed_to),
            routed,
        ) {
            Ok(i) => i,
            Err(r) => {
                let iss = crate::verify::iss_for_display(&claims);
                return (Lookup::Miss, Decided::Unrouted(r, Some(iss)));
            }
        };
        let verify = self.verify(issuer, &jwt, &claims, hash, now, trace);
        let once = self
            .cache
            .verify_once(*hash, now, issuer.generation, live, verify)
            .await;
        let (lookup, result) = match once {
            Some(decided) => decided,
            // A verdict of a verifier a reload retired was in the way.
            None => (
                Lookup::Miss,
                self.verify(issuer, &jwt, &claims, hash, now, trace)
                    .await
                    .map_err(Arc::new),
            ),
        };
        match result {
            Ok(verdict) => (lookup, Decided::Verdict(verdict)),
            Err(unchecked) => (lookup, Decided::Unchecked(unchecked)),
        }
    }

    /// Looks a `sha256~` token up on the API server within `request_timeout`.
    async fn oauth_check(
        &self,
        issuer: &OAuthVerifier,
        rest: &str,
        hash: &TokenHash,
        now: u64,
    ) -> Result<Verdict, Unchecked> {
        let deadline = self.request_timeout;
        let result = tokio::time::timeout(deadline, issuer.verify(rest, now))
            .await
            .unwrap_or(Err(VerifyError::Timeout(deadline)));
        settle(&issuer.name, result, hash)
    }

    /// Checks a routed token the cache does not hold: a verdict (which the
    /// cache keeps), or "could not check" (which it does not). Routing comes
    /// first so a timeout keeps its issuer.
    async fn verify(
        &self,
        issuer: &IssuerVerifier,
        jwt: &jwt::UnverifiedJwt<'_>,
        claims: &jwt::Claims<'_>,
        hash: &TokenHash,
        now: u64,
        trace: &mut Trace,
    ) -> Result<Verdict, Unchecked> {
        let deadline = self.request_timeout;
        let result = tokio::time::timeout(deadline, issuer.verify_traced(jwt, claims, now, trace))
            .await
            .unwrap_or(Err(VerifyError::Timeout(deadline)));
        settle(&issuer.name, result, hash)
    }
}

/// What a check came to, as the cache takes it: a verdict, or "could not
/// check" (never cached).
fn settle(
    name: &Arc<str>,
    result: Result<Verified, VerifyError>,
    hash: &TokenHash,
) -> Result<Verdict, Unchecked> {
    match result {
        Ok(v) => {
            if v.dropped_system_groups > 0 {
                tracing::warn!(
                    issuer = &**name,
                    dropped = v.dropped_system_groups,
                    token = %fingerprint(hash),
                    "left out groups that would start with system:"
                );
            }
            Ok(Verdict::Authenticated(Arc::new(v.identity)))
        }
        Err(VerifyError::Rejected(rejection)) => Ok(Verdict::Rejected {
            issuer: Some(name.clone()),
            rejection,
        }),
        Err(error) => Err(Unchecked {
            issuer: name.clone(),
            error,
        }),
    }
}

/// A token that could not be checked, and the issuer it was routed to.
#[derive(Debug)]
struct Unchecked {
    issuer: Arc<str>,
    error: VerifyError,
}

/// serde_json quotes offending values ("invalid type: string \"eyJ...\""),
/// and a misplaced token is still a token: say where, not what.
fn decode_error(e: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "is not valid JSON",
        Category::Eof => "ends in the middle of the JSON",
        Category::Data => "has a field of the wrong type",
        Category::Io => "could not be read",
    };
    ApiError::BadRequest(format!(
        "body is not a TokenReview: it {what} (line {}, column {})",
        e.line(),
        e.column()
    ))
}

pub(crate) fn sha256(data: &[u8]) -> TokenHash {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// At most `MAX_SHOWN` characters of a value taken from an untrusted token,
/// control characters escaped: safe to print or log on one line.
pub(crate) fn printable(s: &str) -> String {
    const MAX_SHOWN: usize = 128;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_SHOWN {
            out.push_str(&format!("... ({} bytes)", s.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The first 8 hex characters of the token's SHA-256: enough to follow one
/// token through the logs, useless for replaying it.
pub(crate) fn fingerprint(hash: &TokenHash) -> String {
    hex::encode(&hash[..4])
}

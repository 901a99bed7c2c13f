//! One TokenReview, end to end: decode the body, answer from the cache or
//! verify, decide audiences, encode the answer, count and log it.

pub mod cache;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::UNMATCHED_ISSUER;
use crate::keys::remote::ClientError;
use crate::metrics::Metrics;
use crate::prepare::Prepared;
use crate::review::cache::{Lookup, TokenCache, TokenHash, Verdict};
use crate::verify::{Identity, IssuerVerifier, Rejection, Verifier, VerifyError, jwt};
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
    /// Our fault, not the caller's.
    #[error("internal error: {0}")]
    Internal(String),
}

pub struct Reviewer {
    pub verifier: Verifier,
    pub cache: TokenCache,
    pub metrics: Arc<Metrics>,
    pub(crate) clock: Clock,
    pub(crate) request_timeout: Duration,
}

/// What one review came to, before encoding.
enum Answer {
    Authenticated(Arc<Identity>, Vec<String>),
    Rejected(Rejection),
    Unchecked(Arc<Unchecked>),
}

/// What a token came to, from the cache or not.
enum Decided {
    /// Cached, or verified and now cached.
    Verdict(Verdict),
    /// Refused before routing: not a JWT, too large, or no issuer for its
    /// `iss`. Never cached (see `Reviewer::decide`).
    Unrouted(Rejection),
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
    ) -> Result<Reviewer, ClientError> {
        let metrics = Arc::new(Metrics::new());
        let verifier = Verifier::new(&config.issuers, &metrics, &clock, runtime)?;
        Ok(Reviewer {
            verifier,
            cache: TokenCache::new(&config.cache),
            metrics,
            clock,
            request_timeout: config.server.request_timeout,
        })
    }

    /// Answers a TokenReview request body with the response body.
    pub async fn review_body(&self, body: &[u8]) -> Result<Vec<u8>, ApiError> {
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
        self.review_token(version, &spec.token, &spec.audiences, started)
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
        let hash = sha256(token.as_bytes());
        let now = self.clock.now();
        let (lookup, decided) = self.decide(token, &hash, now).await;
        self.metrics
            .cache_lookups
            .with_label_values(&[lookup.label()])
            .inc();

        let (issuer, answer) = match decided {
            Decided::Verdict(Verdict::Authenticated(id)) => (
                Some(id.issuer.clone()),
                match id.audiences_for(audiences) {
                    Ok(auds) => Answer::Authenticated(id, auds),
                    Err(r) => Answer::Rejected(r),
                },
            ),
            Decided::Verdict(Verdict::Rejected { issuer, rejection }) => {
                (issuer, Answer::Rejected(rejection))
            }
            Decided::Unrouted(rejection) => (None, Answer::Rejected(rejection)),
            Decided::Unchecked(u) => (Some(u.issuer.clone()), Answer::Unchecked(u)),
        };
        let issuer_label = issuer.as_deref().unwrap_or(UNMATCHED_ISSUER);
        let (outcome, reason) = match &answer {
            Answer::Authenticated(..) => ("authenticated", "ok"),
            Answer::Rejected(r) => ("rejected", r.reason()),
            Answer::Unchecked(u) => (u.error.outcome(), u.error.reason()),
        };
        let status = match &answer {
            Answer::Authenticated(id, auds) => TokenReviewStatus {
                authenticated: true,
                user: Some(&*id.user),
                audiences: auds.clone(),
                error: None,
            },
            Answer::Rejected(_) => TokenReviewStatus::default(),
            Answer::Unchecked(u) => TokenReviewStatus {
                error: Some(u.error.to_string()),
                ..TokenReviewStatus::default()
            },
        };
        let token = fingerprint(&hash);
        let body = serde_json::to_vec(&TokenReviewResponse {
            api_version: version.as_str(),
            kind: KIND,
            status,
        });
        let (body, outcome, reason) = match body {
            Ok(b) => (Ok(b), outcome, reason),
            // Our own answer, not the caller's request: a server fault.
            Err(e) => {
                tracing::error!(issuer = issuer_label, token = %token, error = %e, "cannot encode a TokenReview answer");
                (
                    Err(ApiError::Internal("cannot encode the answer".to_owned())),
                    "error",
                    "internal_error",
                )
            }
        };

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
                latency_us, token = %token, error = %u.error, "tokenreview"
            ),
            // A rule's message or a CEL error says which rule: the reason
            // label alone would not.
            Answer::Rejected(
                r @ (Rejection::ClaimValidationFailed(_)
                | Rejection::UserValidationFailed(_)
                | Rejection::CelError(_)),
            ) => tracing::info!(
                issuer = issuer_label, outcome, reason, cache, api_version,
                latency_us, token = %token, detail = %r, "tokenreview"
            ),
            _ => tracing::info!(
                issuer = issuer_label, outcome, reason, cache, api_version,
                latency_us, token = %token, "tokenreview"
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
    async fn decide(&self, token: &str, hash: &TokenHash, now: u64) -> (Lookup, Decided) {
        if let Some(verdict) = self.cache.get(hash, now).await {
            return (Lookup::Hit, Decided::Verdict(verdict));
        }
        let unrouted = |r| (Lookup::Miss, Decided::Unrouted(r));
        let jwt = match jwt::split(token) {
            Ok(j) => j,
            Err(r) => return unrouted(r),
        };
        let claims = match jwt::Claims::parse(&jwt.payload) {
            Ok(c) => c,
            Err(r) => return unrouted(r),
        };
        let issuer = match self.verifier.route(&claims) {
            Ok(i) => i,
            Err(r) => return unrouted(r),
        };
        let (lookup, result) = self
            .cache
            .verify_once(*hash, now, self.verify(issuer, &jwt, &claims, hash, now))
            .await;
        match result {
            Ok(verdict) => (lookup, Decided::Verdict(verdict)),
            Err(unchecked) => (lookup, Decided::Unchecked(unchecked)),
        }
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
    ) -> Result<Verdict, Unchecked> {
        let deadline = self.request_timeout;
        let result = tokio::time::timeout(deadline, issuer.verify(jwt, claims, now))
            .await
            .unwrap_or(Err(VerifyError::Timeout(deadline)));
        let name = issuer.name.clone();
        match result {
            Ok(v) => {
                if v.dropped_system_groups > 0 {
                    tracing::warn!(
                        issuer = &*name,
                        dropped = v.dropped_system_groups,
                        token = %fingerprint(hash),
                        "left out groups that would start with system:"
                    );
                }
                Ok(Verdict::Authenticated(Arc::new(v.identity)))
            }
            Err(VerifyError::Rejected(rejection)) => Ok(Verdict::Rejected {
                issuer: Some(name),
                rejection,
            }),
            Err(error) => Err(Unchecked {
                issuer: name,
                error,
            }),
        }
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

/// The first 8 hex characters of the token's SHA-256: enough to follow one
/// token through the logs, useless for replaying it.
pub(crate) fn fingerprint(hash: &TokenHash) -> String {
    hex::encode(&hash[..4])
}

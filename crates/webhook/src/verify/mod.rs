//! From a bearer token to a verified identity, or the reason there is none.
//!
//! Order matters for the "no outbound traffic for garbage" rule: the token is
//! taken apart, routed by `iss`, and its algorithm and time and audience claims
//! checked before any key is looked up, so only a token that names a known
//! issuer, an allowed algorithm, and plausible claims can cause a key refetch.

pub(crate) mod claims;
pub(crate) mod jwt;
pub mod trace;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::value::RawValue;

use crate::config::IssuerKind;
use crate::keys::remote::{ClientError, RemoteKeys};
use crate::keys::{self, KeyError, KeySet, VerifyKey};
use crate::metrics::Metrics;
use crate::prepare;
use crate::wire::UserInfo;
use claims::ClaimMapping;
use kube_authn_common::clock::Clock;
pub use trace::Trace;

/// The leeway on `nbf` when `clock_skew` is smaller: go-oidc's, which the
/// kube-apiserver's OIDC authenticator uses (its `exp` has none).
pub(crate) const NBF_LEEWAY: Duration = Duration::from_secs(60);

/// A token that was checked and is not valid: a definite "no" the apiserver
/// may cache. The label is the `reason` of the metric and the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejection {
    #[error("not a JWT")]
    Malformed,
    #[error("token larger than 256 KiB")]
    TokenTooLarge,
    #[error("no issuer is configured for the token's iss")]
    UnknownIssuer,
    #[error("signing algorithm not allowed for this issuer")]
    UnsupportedAlgorithm,
    #[error("no key of the issuer has the token's kid")]
    UnknownKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("required claim {0} missing")]
    MissingClaim(&'static str),
    #[error("claim {0} has the wrong type")]
    InvalidClaim(&'static str),
    #[error("token audience is not one this issuer accepts")]
    AudienceMismatch,
    #[error("token audience does not include the requested audiences")]
    AudienceNotRequested,
    #[error("no username claim present")]
    NoUsername,
    #[error("username would start with system:")]
    SystemUsername,
    #[error("email used as username is not verified")]
    EmailUnverified,
    #[error("no such OAuth access token")]
    TokenNotFound,
    #[error("the OAuth access token is being deleted")]
    TokenBeingDeleted,
    #[error("the OAuth access token timed out for inactivity")]
    TokenInactive,
    #[error("the OAuth access token's user does not exist")]
    UserNotFound,
    #[error("the OAuth access token was issued to another user of that name (UID differs)")]
    UserUidMismatch,
    #[error("token lifetime (exp - iat) is longer than the issuer's max_token_lifetime")]
    LifetimeTooLong,
    /// Verified, and refused by the revocation list.
    #[error("token revoked")]
    Revoked,
    /// A `claimValidationRules` entry refused the claims: its `message` (or
    /// what the required claim was), as the apiserver reports it.
    #[error("claim validation rule failed: {0}")]
    ClaimValidationFailed(Arc<str>),
    /// A `userValidationRules` entry refused the mapped user: its `message`.
    #[error("user validation rule failed: {0}")]
    UserValidationFailed(Arc<str>),
    /// A CEL expression failed on this token, or gave a value of the wrong
    /// type; which expression and why. Refused, as upstream.
    #[error("{0}")]
    CelError(Arc<str>),
}

impl Rejection {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed_token",
            Rejection::TokenTooLarge => "token_too_large",
            Rejection::UnknownIssuer => "unknown_issuer",
            Rejection::UnsupportedAlgorithm => "unsupported_algorithm",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::MissingClaim(_) => "missing_claim",
            Rejection::InvalidClaim(_) => "invalid_claim",
            Rejection::AudienceMismatch => "audience_mismatch",
            Rejection::AudienceNotRequested => "audience_not_requested",
            Rejection::NoUsername => "no_username",
            Rejection::SystemUsername => "system_username",
            Rejection::EmailUnverified => "email_unverified",
            Rejection::TokenNotFound => "token_not_found",
            Rejection::TokenBeingDeleted => "token_being_deleted",
            Rejection::TokenInactive => "token_inactive",
            Rejection::UserNotFound => "user_not_found",
            Rejection::UserUidMismatch => "user_uid_mismatch",
            Rejection::LifetimeTooLong => "token_lifetime_too_long",
            Rejection::Revoked => "revoked",
            Rejection::ClaimValidationFailed(_) => "claim_validation_failed",
            Rejection::UserValidationFailed(_) => "user_validation_failed",
            Rejection::CelError(_) => "cel_error",
        }
    }
}

/// Why a review did not authenticate: refused, or could not be checked.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum VerifyError {
    #[error("{0}")]
    Rejected(#[from] Rejection),
    /// The apiserver logs this and does not cache it.
    #[error("issuer {issuer}: signing keys unavailable: {source}")]
    KeysUnavailable { issuer: Arc<str>, source: KeyError },
    #[error("review did not finish within {0:?}")]
    Timeout(Duration),
    /// An openshift-oauth lookup failed: the token may well be valid.
    #[error("issuer {issuer}: could not look the token up: {what}")]
    ApiUnavailable { issuer: Arc<str>, what: String },
    /// More new sha256~ tokens than max_lookups_per_second: not a refusal,
    /// which the apiserver would cache for a real token.
    #[error("issuer {issuer}: too many lookups of new tokens (max_lookups_per_second); try again")]
    RateLimited { issuer: Arc<str> },
}

impl VerifyError {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            VerifyError::Rejected(r) => r.reason(),
            VerifyError::KeysUnavailable { .. } => "keys_unavailable",
            VerifyError::Timeout(_) => "timeout",
            VerifyError::ApiUnavailable { .. } => "api_unavailable",
            VerifyError::RateLimited { .. } => "rate_limited",
        }
    }

    /// `rejected` (definite) or `error` (could not check).
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            VerifyError::Rejected(_) => "rejected",
            _ => "error",
        }
    }
}

/// A verified token's identity, kept in the cache; audiences are decided per
/// request from it.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) issuer: Arc<str>,
    /// The `UserInfo` as the answer carries it, encoded once: a cached
    /// identity is one small allocation instead of a dozen (100,000 of them
    /// must fit in well under 120 MiB), and a cache hit copies it as is.
    pub(crate) user: Box<RawValue>,
    /// Shared with the issuer's other identities (`SharedAudiences`).
    pub(crate) token_audiences: Arc<[String]>,
    /// The token's `exp`: nothing outlives it.
    pub(crate) expires_at: u64,
    pub(crate) trust_implicit_audience: bool,
    /// The key that verified the token: nor does the identity outlive it
    /// (withdrawn by the issuer, past `max_key_age`, certificate expired).
    /// `None` for an identity looked up rather than verified (openshift-oauth).
    pub(crate) key: Option<Arc<VerifyKey>>,
    /// What the revocation check and the audit trail read, kept so a cache
    /// hit is checked without decoding `user` again.
    pub(crate) facts: TokenFacts,
}

/// A verified token's claims the revocation list can name, and its `alg`.
/// The names sit back to back in one allocation, behind their lengths: a
/// cached identity holds these beside the encoded user, and a `Box<str>`
/// each took a 100,000-identity cache from 101 to 138 MiB.
#[derive(Debug)]
pub(crate) struct TokenFacts {
    /// `None` for an identity looked up rather than verified.
    pub(crate) alg: Option<Algorithm>,
    pub(crate) iat: Option<i64>,
    /// The number of parts, then each part's length (`write_length`), then
    /// the parts: the username (after mapping, prefix included: what the
    /// answer carries), `sub`, `jti`, then each group (mapped). Lengths are
    /// `char`s so the whole stays one `str`; a name shorter than 128 bytes
    /// costs one byte more.
    text: Box<str>,
}

/// Below it, a length is one `char` of its own value.
const SHORT: u32 = 0xD7FE;
/// An absent `sub` or `jti`.
const ABSENT: char = '\u{D7FE}';
/// A length of `SHORT` or more follows as six 11-bit digits, most
/// significant first: any `usize` on a 64-bit machine. A mapped name is not
/// bounded by the token (CEL can join claims), and a length that could not
/// be written would misplace every name after it.
const LONG: char = '\u{D7FF}';

fn write_length(text: &mut String, n: usize) {
    match u32::try_from(n)
        .ok()
        .filter(|&n| n < SHORT)
        .and_then(char::from_u32)
    {
        Some(c) => text.push(c),
        None => {
            text.push(LONG);
            let n = n as u64;
            for shift in (0..6).rev() {
                // Each digit is under 0x800: a char below the surrogates.
                let digit = ((n >> (11 * shift)) & 0x7FF) as u32;
                text.push(char::from_u32(digit).unwrap_or('\0'));
            }
        }
    }
}

/// The next length: `None` at the end of the header, `Some(None)` for
/// `ABSENT`.
fn read_length(header: &mut std::str::Chars<'_>) -> Option<Option<usize>> {
    match header.next()? {
        ABSENT => Some(None),
        LONG => {
            let mut n: u64 = 0;
            for _ in 0..6 {
                n = (n << 11) | u64::from(header.next()?);
            }
            Some(usize::try_from(n).ok())
        }
        c => Some(Some(c as usize)),
    }
}

impl TokenFacts {
    /// `jti` only when it is a string (RFC 7519 4.1.7); another type is not
    /// one a list could name, and is ignored as the kube-apiserver ignores it.
    pub(crate) fn new<G: AsRef<str>>(
        alg: Option<Algorithm>,
        iat: Option<i64>,
        username: &str,
        groups: &[G],
        sub: Option<&str>,
        jti: Option<&str>,
    ) -> TokenFacts {
        let parts = || {
            [Some(username), sub, jti]
                .into_iter()
                .chain(groups.iter().map(|g| Some(g.as_ref())))
        };
        let mut text = String::new();
        write_length(&mut text, 3 + groups.len());
        for part in parts() {
            match part {
                Some(p) => write_length(&mut text, p.len()),
                None => text.push(ABSENT),
            }
        }
        for part in parts().flatten() {
            text.push_str(part);
        }
        TokenFacts {
            alg,
            iat,
            text: text.into_boxed_str(),
        }
    }

    /// Each part, in order, `None` for an absent `sub` or `jti`.
    fn parts(&self) -> impl Iterator<Item = Option<&str>> + Clone + '_ {
        let mut header = self.text.chars();
        let count = read_length(&mut header).flatten().unwrap_or(0);
        let mut body = header.clone();
        for _ in 0..count {
            read_length(&mut body);
        }
        let mut at = self.text.len() - body.as_str().len();
        (0..count).map(move |_| {
            let len = read_length(&mut header).flatten()?;
            let start = at;
            at += len;
            self.text.get(start..at)
        })
    }

    pub(crate) fn username(&self) -> &str {
        self.parts().next().flatten().unwrap_or("")
    }

    pub(crate) fn sub(&self) -> Option<&str> {
        self.parts().nth(1).flatten()
    }

    pub(crate) fn jti(&self) -> Option<&str> {
        self.parts().nth(2).flatten()
    }

    pub(crate) fn groups(&self) -> impl Iterator<Item = &str> + Clone + '_ {
        self.parts().skip(3).flatten()
    }
}

impl Identity {
    /// `status.audiences` for a request: the intersection with what the
    /// apiserver asked for, or empty when the token is valid for this issuer
    /// and the issuer trusts the apiserver's implicit audience. Never the
    /// token's own `aud`: the apiserver would refuse a value it did not ask for.
    pub(crate) fn audiences_for(&self, requested: &[String]) -> Result<Vec<String>, Rejection> {
        if requested.is_empty() {
            return Ok(Vec::new());
        }
        let both: Vec<String> = requested
            .iter()
            .filter(|a| self.token_audiences.contains(a))
            .cloned()
            .collect();
        if !both.is_empty() || self.trust_implicit_audience {
            Ok(both)
        } else {
            Err(Rejection::AudienceNotRequested)
        }
    }
}

/// Hands a verified token's `aud` out as the `Arc` of the last list it saw
/// when the two are equal. The tokens of an issuer nearly always name the
/// same audiences (Dex: the client id), and a list of their own per cached
/// identity was two allocations of each of 100,000.
#[derive(Debug)]
struct SharedAudiences(Mutex<Arc<[String]>>);

impl SharedAudiences {
    fn new(first: &[String]) -> SharedAudiences {
        SharedAudiences(Mutex::new(first.into()))
    }

    fn share(&self, audiences: Vec<String>) -> Arc<[String]> {
        // Only a list is ever stored: a poisoned lock holds a whole one.
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if **last == *audiences {
            return last.clone();
        }
        let fresh: Arc<[String]> = audiences.into();
        *last = fresh.clone();
        fresh
    }
}

/// The audiences of an identity that has none (looked up, not a JWT).
pub(crate) fn no_audiences() -> Arc<[String]> {
    static NONE: LazyLock<Arc<[String]>> = LazyLock::new(|| Arc::from([]));
    NONE.clone()
}

pub struct IssuerVerifier {
    pub(crate) name: Arc<str>,
    pub(crate) kind: IssuerKind,
    audiences: Vec<String>,
    shared_audiences: SharedAudiences,
    allow_any_audience: bool,
    trust_implicit_audience: bool,
    algorithms: Vec<Algorithm>,
    /// Leeway on `exp` (`clock_skew`, none by default).
    exp_leeway: Duration,
    /// Leeway on `nbf`, and how far `iat` may be from our clock when deciding
    /// whether a token is newer than our last key fetch: `clock_skew` or
    /// `NBF_LEEWAY`, whichever is larger.
    clock_leeway: Duration,
    max_token_lifetime: Option<Duration>,
    claims: ClaimMapping,
    static_keys: KeySet,
    pub remote: Option<Arc<RemoteKeys>>,
    /// `prepare::Issuer::identity` of the settings and files it was built from.
    identity: prepare::FileHash,
    /// What `remote` was built from (`remote_identity`).
    remote_identity: Option<prepare::FileHash>,
    /// Unique to this verifier in the process: cached verdicts carry it, and
    /// one whose verifier is gone (removed or changed by a reload) is a miss.
    pub(crate) generation: u64,
    /// `/readyz` waits for this issuer's keys.
    pub(crate) required: bool,
}

/// The name, fetch settings, CA bundle and `state_dir` a `RemoteKeys` is
/// built from: all that decides which keys it fetches, how, and where it
/// saves them (a new `state_dir` takes effect by building the key sets anew).
fn remote_identity(
    name: &str,
    remote: &crate::config::RemoteKeys,
    ca_pem: Option<&[u8]>,
    state_dir: Option<&std::path::Path>,
) -> prepare::FileHash {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(format!("{name}\0{remote:?}\0{state_dir:?}\0").as_bytes());
    if let Some(ca) = ca_pem {
        ctx.update(ca);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Generations are never reused, so a verdict cached by a verifier that a
/// reload dropped is never taken for one of a later verifier with the same
/// settings (whose keys are tracked afresh).
static GENERATION: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

impl IssuerVerifier {
    /// Keys in use now: static plus last fetched.
    pub(crate) fn key_count(&self) -> usize {
        self.static_keys.len() + self.remote.as_ref().map_or(0, |r| r.snapshot().keys.len())
    }

    /// Keys that may still verify at `now` (clock seconds).
    pub(crate) fn usable_key_count(&self, now: u64) -> usize {
        self.static_keys.usable_count(now)
            + self
                .remote
                .as_ref()
                .map_or(0, |r| r.snapshot().keys.usable_count(now))
    }

    /// The keys that may check a token with this kid and alg at `now`:
    /// static ones, then the last fetched. Keys the token may be checked
    /// against but that may no longer verify (a certificate past notAfter,
    /// fetched keys older than `max_key_age`) make it "could not check".
    fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        now: u64,
    ) -> Result<Vec<Arc<VerifyKey>>, KeyError> {
        let mut c = self.static_keys.candidates(kid, alg);
        if let Some(r) = &self.remote {
            c.extend(r.snapshot().keys.candidates(kid, alg));
        }
        let Some(unusable) = c.iter().find(|k| !k.usable_at(now)).cloned() else {
            return Ok(c);
        };
        c.retain(|k| k.usable_at(now));
        if !c.is_empty() {
            return Ok(c);
        }
        match (unusable.certificate, &self.remote) {
            (Some(cert), _) => Err(KeyError::CertificateExpired(keys::rfc3339(cert.not_after))),
            (None, Some(r)) => r.stale_at(now).map_or(Ok(c), Err),
            // Withdrawn since the key set was read: as if never held.
            (None, None) => Ok(c),
        }
    }

    /// Checks a routed token: claims first, then the key (fetching when the
    /// kid is new), the signature, and the claims-to-user mapping; each
    /// check is recorded into `trace` (`explain` reads it, `serve` passes
    /// `Trace::off()`).
    pub(crate) async fn verify_traced(
        &self,
        jwt: &jwt::UnverifiedJwt<'_>,
        claims: &jwt::Claims<'_>,
        now: u64,
        trace: &mut Trace,
    ) -> Result<Verified, VerifyError> {
        trace.step(
            "algorithm",
            || format!("{:?}; this issuer allows {:?}", jwt.alg, self.algorithms),
            if self.algorithms.contains(&jwt.alg) {
                Ok(())
            } else {
                Err(Rejection::UnsupportedAlgorithm)
            },
        )?;
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        let times = || self.describe_times(claims, now_i);
        let exp = trace.step(
            "exp/nbf/iat",
            times,
            jwt::numeric_date(claims, "exp")
                .and_then(|e| e.ok_or(Rejection::MissingClaim("exp")))
                .and_then(|exp| {
                    check_times(
                        now_i,
                        exp,
                        jwt::numeric_date(claims, "nbf")?,
                        self.exp_leeway,
                        self.clock_leeway,
                    )?;
                    // Read (a malformed iat refuses the token) but not
                    // compared with our clock, as the kube-apiserver: it only
                    // decides whether a new kid may be worth a refetch.
                    Ok((exp, jwt::numeric_date(claims, "iat")?))
                }),
        )?;
        let (exp, iat) = exp;
        if let Some(max) = self.max_token_lifetime {
            // Without iat the lifetime is unknown: refused, not assumed short.
            let iat = iat.ok_or(Rejection::MissingClaim("iat"))?;
            let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
            if exp.saturating_sub(iat) > max {
                return Err(Rejection::LifetimeTooLong.into());
            }
        }
        // OpenID Connect's sub is a string; go-oidc refuses any other type
        // whatever the mapping.
        if self.kind == IssuerKind::Oidc {
            trace.step(
                "sub",
                || "an OpenID Connect sub is a string when present".to_owned(),
                if claims
                    .get("sub")
                    .is_some_and(|s| !(s.is_string() || s.is_null()))
                {
                    Err(Rejection::InvalidClaim("sub"))
                } else {
                    Ok(())
                },
            )?;
        }
        let token_audiences = trace.step("aud", String::new, jwt::audiences(claims))?;
        trace.step(
            "aud",
            || {
                if self.allow_any_audience {
                    format!("{token_audiences:?}; any audience is accepted (allow_any_audience)")
                } else {
                    format!(
                        "{token_audiences:?}; this issuer accepts {:?}",
                        self.audiences
                    )
                }
            },
            if self.allow_any_audience || token_audiences.iter().any(|a| self.audiences.contains(a))
            {
                Ok(())
            } else {
                Err(Rejection::AudienceMismatch)
            },
        )?;

        let kid = jwt.kid.as_deref();
        let unavailable = |source| VerifyError::KeysUnavailable {
            issuer: self.name.clone(),
            source,
        };
        let keys_detail = || {
            format!(
                "kid {}: {} key(s) held ({} configured, {} fetched)",
                kid.map_or_else(
                    || "(none)".to_owned(),
                    |k| format!("\"{}\"", crate::review::printable(k))
                ),
                self.key_count(),
                self.static_keys.len(),
                self.remote.as_ref().map_or(0, |r| r.snapshot().keys.len())
            )
        };
        let mut candidates = self.candidates(kid, jwt.alg, now).map_err(unavailable);
        if let Ok(c) = &candidates
            && c.is_empty()
            && let Some(remote) = &self.remote
        {
            let refetched = remote
                .refresh_for_unknown_kid(iat, self.clock_leeway)
                .await
                .map_err(unavailable);
            trace.note("key", || match &refetched {
                Ok(()) => "no held key matched: asked for a refetch (made unless our keys are newer than the token's iat)".to_owned(),
                Err(e) => format!("no held key matched; asking the issuer again failed: {e}"),
            });
            candidates =
                refetched.and_then(|()| self.candidates(kid, jwt.alg, now).map_err(unavailable));
        }
        let candidates = trace.step(
            "key",
            keys_detail,
            candidates.and_then(|c| {
                if c.is_empty() {
                    Err(Rejection::UnknownKey.into())
                } else {
                    Ok(c)
                }
            }),
        )?;
        let key = trace.step(
            "signature",
            || format!("{:?} over header and payload", jwt.alg),
            candidates
                .into_iter()
                .find(|k| k.verify(jwt.signing_input, jwt.signature, jwt.alg))
                .ok_or(Rejection::BadSignature),
        )?;

        let mapped = trace.step(
            "claims",
            || self.claims.describe(),
            claims.to_map().and_then(|m| self.claims.map(&m)),
        )?;
        let dropped = mapped.dropped_system_groups;
        trace.note("user", || {
            let u = &mapped.user;
            let mut s = format!("username {:?}, groups {:?}", u.username, u.groups);
            if let Some(uid) = &u.uid {
                s.push_str(&format!(", uid {uid:?}"));
            }
            if !u.extra.is_empty() {
                s.push_str(&format!(", extra {:?}", u.extra));
            }
            if dropped > 0 {
                s.push_str(&format!(
                    " ({dropped} group(s) starting with system: left out)"
                ));
            }
            s
        });
        let string = |name: &str| match claims.get(name) {
            Some(serde_json::Value::String(s)) => Some(s),
            _ => None,
        };
        let facts = TokenFacts::new(
            Some(jwt.alg),
            iat,
            &mapped.user.username,
            &mapped.user.groups,
            string("sub").as_deref(),
            string("jti").as_deref(),
        );
        Ok(Verified {
            identity: Identity {
                issuer: self.name.clone(),
                user: encode_user(&mapped.user)?,
                token_audiences: self.shared_audiences.share(token_audiences),
                expires_at: u64::try_from(exp).unwrap_or(0),
                trust_implicit_audience: self.trust_implicit_audience,
                key: Some(key),
                facts,
            },
            dropped_system_groups: dropped,
        })
    }

    /// The token's times against ours, for `explain`.
    fn describe_times(&self, claims: &jwt::Claims<'_>, now: i64) -> String {
        let show = |name: &str| match claims.get(name) {
            None => format!("{name} (none)"),
            Some(serde_json::Value::Number(n)) => match n.as_i64() {
                Some(t) => format!("{name} {} ({})", keys::rfc3339(t), relative(t, now)),
                None => format!("{name} {n}"),
            },
            Some(_) => format!("{name} (not a number)"),
        };
        format!(
            "now {}; {}; {}; {}; leeway on exp {}, on nbf {}",
            keys::rfc3339(now),
            show("exp"),
            show("nbf"),
            show("iat"),
            humantime::format_duration(self.exp_leeway),
            humantime::format_duration(self.clock_leeway),
        )
    }
}

/// `t` relative to `now`: "in 5m", "10s ago", "now".
fn relative(t: i64, now: i64) -> String {
    let d = |s: i64| humantime::format_duration(Duration::from_secs(s.unsigned_abs()));
    match t.saturating_sub(now) {
        0 => "now".to_owned(),
        s if s > 0 => format!("in {}", d(s)),
        s => format!("{} ago", d(s)),
    }
}

/// `exp` with no leeway but `exp_leeway` (expired from the second `exp`
/// names: valid while now < exp, RFC 7519 4.1.4), `nbf` with `nbf_leeway`.
fn check_times(
    now: i64,
    exp: i64,
    nbf: Option<i64>,
    exp_leeway: Duration,
    nbf_leeway: Duration,
) -> Result<(), Rejection> {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if now >= exp.saturating_add(secs(exp_leeway)) {
        return Err(Rejection::Expired);
    }
    if nbf.is_some_and(|nbf| now.saturating_add(secs(nbf_leeway)) < nbf) {
        return Err(Rejection::NotYetValid);
    }
    Ok(())
}

/// Strings and string lists only: encoding cannot fail in practice; if it
/// did, the token is refused rather than answered without a user.
pub(crate) fn encode_user(user: &UserInfo) -> Result<Box<RawValue>, Rejection> {
    serde_json::value::to_raw_value(user).map_err(|_| Rejection::InvalidClaim("user"))
}

pub(crate) struct Verified {
    pub(crate) identity: Identity,
    pub(crate) dropped_system_groups: usize,
}

pub struct Verifier {
    issuers: Vec<Arc<IssuerVerifier>>,
    by_iss: HashMap<String, usize>,
    without_iss: Option<usize>,
}

impl Verifier {
    /// Builds the verifiers; fetching keys is left to the caller (see
    /// `server::start`), so an issuer that is down does not hold up the rest.
    /// An issuer whose identity (settings and files) a verifier of
    /// `previous` has is that verifier, shared: its keys, refresh loop and
    /// cached verdicts carry over a reload. One that changed in other ways
    /// than where and how its keys are fetched (a claim mapping, audiences)
    /// is a new verifier on the old one's `RemoteKeys`: new generation, same
    /// keys, no fetch.
    pub(crate) fn new(
        issuers: &[prepare::Issuer],
        state_dir: Option<&std::path::Path>,
        previous: Option<&Verifier>,
        metrics: &Arc<Metrics>,
        clock: &Clock,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Verifier, ClientError> {
        let mut out = Vec::new();
        let mut by_iss = HashMap::new();
        let mut without_iss = None;
        for (i, p) in issuers.iter().enumerate() {
            let c = &p.spec;
            match &c.url {
                Some(u) => {
                    by_iss.insert(u.clone(), i);
                }
                None => without_iss = Some(i),
            }
            let remote_identity = c
                .remote
                .as_ref()
                .map(|r| remote_identity(&c.name, r, p.ca_pem.as_deref(), state_dir));
            if let Some(kept) = previous.and_then(|v| {
                v.issuers.iter().find(|old| {
                    old.identity == p.identity
                        && *old.name == *c.name
                        && old.remote_identity == remote_identity
                })
            }) {
                out.push(kept.clone());
                continue;
            }
            let name: Arc<str> = Arc::from(c.name.as_str());
            metrics.register_issuer(&name);
            metrics
                .issuer_required
                .with_label_values(&[&name])
                .set(i64::from(c.required));
            let kept_remote = previous.and_then(|v| {
                v.issuers
                    .iter()
                    .find(|old| remote_identity.is_some() && old.remote_identity == remote_identity)
                    .and_then(|old| old.remote.clone())
            });
            let remote = match (&c.remote, kept_remote) {
                (Some(_), Some(kept)) => Some(kept),
                (Some(r), None) => Some(Arc::new(RemoteKeys::new(
                    name.clone(),
                    r.clone(),
                    p.ca_pem.as_deref(),
                    metrics.clone(),
                    clock.clone(),
                    runtime.clone(),
                    state_dir,
                )?)),
                (None, _) => None,
            };
            keys::report_certificates(&name, &p.static_keys, metrics);
            let static_keys = KeySet::new(p.static_keys.iter().cloned());
            if !static_keys.is_empty() {
                metrics
                    .jwks_last_success
                    .with_label_values(&[&name])
                    .set(clock.now() as f64);
            }
            out.push(Arc::new(IssuerVerifier {
                name,
                kind: c.kind,
                audiences: c.audiences.clone(),
                shared_audiences: SharedAudiences::new(&c.audiences),
                allow_any_audience: c.allow_any_audience,
                trust_implicit_audience: c.trust_implicit_audience,
                algorithms: p.algorithms.clone(),
                exp_leeway: c.clock_skew,
                clock_leeway: c.clock_skew.max(NBF_LEEWAY),
                max_token_lifetime: c.max_token_lifetime,
                claims: c.claims.clone(),
                static_keys,
                remote,
                remote_identity,
                identity: p.identity,
                generation: next_generation(),
                required: c.required,
            }));
        }
        Ok(Verifier {
            issuers: out,
            by_iss,
            without_iss,
        })
    }

    pub fn issuers(&self) -> &[Arc<IssuerVerifier>] {
        &self.issuers
    }

    /// Whether a verdict cached under `generation` may be served: its
    /// verifier is one of these.
    pub(crate) fn is_live(&self, generation: u64) -> bool {
        self.issuers.iter().any(|i| i.generation == generation)
    }

    /// Finds a token's issuer from its claims (not trusted yet); no I/O, so
    /// garbage and unknown issuers cost nothing and fetch nothing. The
    /// review (`Reviewer::decide`) takes the token apart with `jwt::split`
    /// and `jwt::Claims::parse`, routes it here, then runs the issuer's
    /// `verify`.
    pub(crate) fn route(&self, claims: &jwt::Claims<'_>) -> Result<&IssuerVerifier, Rejection> {
        let idx = match claims.get("iss") {
            Some(serde_json::Value::String(iss)) => self.by_iss.get(iss.as_str()).copied(),
            None => self.without_iss,
            Some(_) => None,
        };
        idx.map(|i| &*self.issuers[i])
            .ok_or(Rejection::UnknownIssuer)
    }

    /// Why `route` chose `chosen` (or none), for `explain`.
    pub(crate) fn describe_route(
        &self,
        claims: &jwt::Claims<'_>,
        chosen: Option<&IssuerVerifier>,
    ) -> String {
        let iss = iss_for_display(claims);
        match (chosen, claims.get("iss")) {
            (Some(i), Some(_)) => format!("{} (iss {iss} is its url)", i.name),
            (Some(i), None) => format!(
                "{} (the token has no iss; {} is the issuer without a url)",
                i.name, i.name
            ),
            (None, None) => "none (the token has no iss, and every issuer has a url)".to_owned(),
            (None, Some(_)) => {
                let mut urls: Vec<&str> = self.by_iss.keys().map(String::as_str).collect();
                urls.sort_unstable();
                format!("none (iss {iss}; the configured urls are {urls:?})")
            }
        }
    }
}

/// The token's (untrusted) `iss` as logs and `explain` show it: quoted,
/// truncated, control characters escaped; other JSON types by name.
pub(crate) fn iss_for_display(claims: &jwt::Claims<'_>) -> String {
    match claims.get("iss") {
        None => "(none)".to_owned(),
        Some(serde_json::Value::String(s)) => {
            format!("\"{}\"", crate::review::printable(&s))
        }
        Some(serde_json::Value::Null) => "null".to_owned(),
        Some(serde_json::Value::Bool(_)) => "(a boolean, not a string)".to_owned(),
        Some(serde_json::Value::Number(_)) => "(a number, not a string)".to_owned(),
        Some(serde_json::Value::Array(_)) => "(an array, not a string)".to_owned(),
        Some(serde_json::Value::Object(_)) => "(an object, not a string)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(token_aud: &[&str], trust: bool) -> Identity {
        Identity {
            issuer: Arc::from("dex"),
            user: encode_user(&UserInfo {
                username: "u".into(),
                uid: None,
                groups: vec![],
                extra: Default::default(),
            })
            .unwrap(),
            token_audiences: token_aud.iter().map(|s| s.to_string()).collect(),
            expires_at: 0,
            trust_implicit_audience: trust,
            key: Some(Arc::new(VerifyKey::new(
                None,
                keys::KeyKind::Hmac,
                jsonwebtoken::DecodingKey::from_secret(b"k"),
            ))),
            facts: TokenFacts::new::<&str>(Some(Algorithm::RS256), None, "u", &[], None, None),
        }
    }

    /// Packed into one string, the facts read back as they were given:
    /// empty names stay names, an absent `sub` or `jti` stays absent, and
    /// no group can run into the next.
    #[test]
    fn token_facts_read_back_what_was_packed() {
        let f = TokenFacts::new(
            Some(Algorithm::ES256),
            Some(7),
            "oidc:jane",
            &["", "a\u{0}b", "ops", "\u{e9}t\u{e9}"],
            None,
            Some(""),
        );
        assert_eq!(f.username(), "oidc:jane");
        assert_eq!(f.sub(), None);
        assert_eq!(f.jti(), Some(""));
        assert_eq!(
            f.groups().collect::<Vec<_>>(),
            ["", "a\u{0}b", "ops", "\u{e9}t\u{e9}"]
        );
        let none = TokenFacts::new::<&str>(None, None, "", &[], Some("s"), None);
        assert_eq!(
            (none.username(), none.sub(), none.jti()),
            ("", Some("s"), None)
        );
        assert_eq!(none.groups().count(), 0);
    }

    /// Identities whose tokens name the same audiences hold one list; one
    /// naming others gets its own, and the list a later token is compared
    /// with.
    #[test]
    fn equal_audience_lists_are_held_once() {
        let shared = SharedAudiences::new(&v(&["kubernetes"]));
        let a = shared.share(v(&["kubernetes"]));
        let b = shared.share(v(&["kubernetes"]));
        assert!(Arc::ptr_eq(&a, &b));
        let other = shared.share(v(&["kubernetes", "api"]));
        assert_eq!(*other, *v(&["kubernetes", "api"]));
        assert!(Arc::ptr_eq(
            &other,
            &shared.share(v(&["kubernetes", "api"]))
        ));
        let back = shared.share(v(&["kubernetes"]));
        assert_eq!(*back, *v(&["kubernetes"]));
        assert!(!Arc::ptr_eq(&back, &a), "only the last list is held");
    }

    /// Every length reads back, the short ones around the markers and
    /// the long ones past what one `char` holds, and so does a name longer
    /// than any token (CEL can join claims) and more parts than one byte
    /// can count.
    #[test]
    fn token_facts_keep_long_names_and_many_groups() {
        for n in (0..70_000).chain([1_114_111, 1_200_000, u32::MAX as usize, usize::MAX]) {
            let mut text = String::new();
            write_length(&mut text, n);
            assert_eq!(read_length(&mut text.chars()), Some(Some(n)), "length {n}");
        }
        let long = |n: usize| "x".repeat(n);
        let groups: Vec<String> = [0xD7FD, 0xD7FE, 0xD7FF, 0xD800, 0xE000, 1_200_000]
            .into_iter()
            .map(long)
            .chain((0..200).map(|i| format!("g{i}")))
            .collect();
        let f = TokenFacts::new(None, None, &long(1_300_000), &groups, None, Some("j"));
        assert_eq!(f.username(), long(1_300_000));
        assert_eq!(f.sub(), None);
        assert_eq!(f.jti(), Some("j"));
        assert_eq!(f.groups().collect::<Vec<_>>(), groups);
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exp_has_no_leeway_by_default_and_nbf_a_minute() {
        let none = Duration::ZERO;
        let nbf = NBF_LEEWAY;
        // exp: valid while now < exp.
        assert_eq!(check_times(99, 100, None, none, nbf), Ok(()));
        assert_eq!(
            check_times(100, 100, None, none, nbf),
            Err(Rejection::Expired)
        );
        assert_eq!(
            check_times(110, 100, None, none, nbf),
            Err(Rejection::Expired)
        );
        // clock_skew is a leeway on exp.
        let skew = Duration::from_secs(30);
        assert_eq!(check_times(129, 100, None, skew, nbf), Ok(()));
        assert_eq!(
            check_times(130, 100, None, skew, nbf),
            Err(Rejection::Expired)
        );
        // nbf: up to 60 s ahead of us is fine (go-oidc), more is not.
        assert_eq!(check_times(0, 1000, Some(60), none, nbf), Ok(()));
        assert_eq!(
            check_times(0, 1000, Some(61), none, nbf),
            Err(Rejection::NotYetValid)
        );
        assert_eq!(
            check_times(0, 1000, Some(200), none, Duration::from_secs(300)),
            Ok(())
        );
        // No overflow at the edges.
        assert_eq!(check_times(i64::MAX - 1, i64::MAX, None, skew, nbf), Ok(()));
        assert_eq!(
            check_times(i64::MAX, 0, Some(i64::MIN), none, nbf),
            Err(Rejection::Expired)
        );
    }

    #[test]
    fn audiences_are_the_intersection_never_the_token_aud() {
        let id = identity(&["kubernetes", "other"], true);
        assert_eq!(
            id.audiences_for(&v(&["api", "kubernetes"])),
            Ok(v(&["kubernetes"]))
        );
        assert_eq!(id.audiences_for(&v(&["api"])), Ok(vec![]));
        assert_eq!(id.audiences_for(&[]), Ok(vec![]));
        let strict = identity(&["kubernetes"], false);
        assert_eq!(
            strict.audiences_for(&v(&["api"])),
            Err(Rejection::AudienceNotRequested)
        );
        assert_eq!(strict.audiences_for(&[]), Ok(vec![]));
    }
}

//! From a bearer token to a verified identity, or the reason there is none.
//!
//! Order matters for the "no outbound traffic for garbage" rule: the token is
//! taken apart, routed by `iss`, and its algorithm and time and audience claims
//! checked before any key is looked up, so only a token that names a known
//! issuer, an allowed algorithm, and plausible claims can cause a key refetch.

pub(crate) mod claims;
pub(crate) mod jwt;

use std::collections::HashMap;
use std::sync::Arc;
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
}

impl VerifyError {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            VerifyError::Rejected(r) => r.reason(),
            VerifyError::KeysUnavailable { .. } => "keys_unavailable",
            VerifyError::Timeout(_) => "timeout",
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
    pub(crate) token_audiences: Vec<String>,
    /// The token's `exp`: nothing outlives it.
    pub(crate) expires_at: u64,
    pub(crate) trust_implicit_audience: bool,
    /// The key that verified the token: nor does the identity outlive it
    /// (withdrawn by the issuer, past `max_key_age`, certificate expired).
    pub(crate) key: Arc<VerifyKey>,
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

pub struct IssuerVerifier {
    pub(crate) name: Arc<str>,
    pub(crate) kind: IssuerKind,
    audiences: Vec<String>,
    allow_any_audience: bool,
    trust_implicit_audience: bool,
    algorithms: Vec<Algorithm>,
    /// Leeway on `exp` (`clock_skew`, none by default).
    exp_leeway: Duration,
    /// Leeway on `nbf`, and how far `iat` may be from our clock when deciding
    /// whether a token is newer than our last key fetch: `clock_skew` or
    /// `NBF_LEEWAY`, whichever is larger.
    clock_leeway: Duration,
    claims: ClaimMapping,
    static_keys: KeySet,
    pub remote: Option<Arc<RemoteKeys>>,
}

impl IssuerVerifier {
    /// Keys in use now: static plus last fetched.
    pub(crate) fn key_count(&self) -> usize {
        self.static_keys.len() + self.remote.as_ref().map_or(0, |r| r.snapshot().keys.len())
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
    /// kid is new), the signature, and the claims-to-user mapping.
    pub(crate) async fn verify(
        &self,
        jwt: &jwt::UnverifiedJwt<'_>,
        claims: &jwt::Claims<'_>,
        now: u64,
    ) -> Result<Verified, VerifyError> {
        if !self.algorithms.contains(&jwt.alg) {
            return Err(Rejection::UnsupportedAlgorithm.into());
        }
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        let exp = jwt::numeric_date(claims, "exp")?.ok_or(Rejection::MissingClaim("exp"))?;
        check_times(
            now_i,
            exp,
            jwt::numeric_date(claims, "nbf")?,
            self.exp_leeway,
            self.clock_leeway,
        )?;
        // Read (a malformed iat refuses the token) but not compared with our
        // clock, as the kube-apiserver: it only decides whether a new kid
        // may be worth a refetch.
        let iat = jwt::numeric_date(claims, "iat")?;
        // OpenID Connect's sub is a string; go-oidc refuses any other type
        // whatever the mapping.
        if self.kind == IssuerKind::Oidc
            && claims
                .get("sub")
                .is_some_and(|s| !(s.is_string() || s.is_null()))
        {
            return Err(Rejection::InvalidClaim("sub").into());
        }
        let token_audiences = jwt::audiences(claims)?;
        if !self.allow_any_audience && !token_audiences.iter().any(|a| self.audiences.contains(a)) {
            return Err(Rejection::AudienceMismatch.into());
        }

        let kid = jwt.kid.as_deref();
        let unavailable = |source| VerifyError::KeysUnavailable {
            issuer: self.name.clone(),
            source,
        };
        let mut candidates = self.candidates(kid, jwt.alg, now).map_err(unavailable)?;
        if candidates.is_empty()
            && let Some(remote) = &self.remote
        {
            remote
                .refresh_for_unknown_kid(iat, self.clock_leeway)
                .await
                .map_err(unavailable)?;
            candidates = self.candidates(kid, jwt.alg, now).map_err(unavailable)?;
        }
        if candidates.is_empty() {
            return Err(Rejection::UnknownKey.into());
        }
        let Some(key) = candidates
            .into_iter()
            .find(|k| k.verify(jwt.signing_input, jwt.signature, jwt.alg))
        else {
            return Err(Rejection::BadSignature.into());
        };

        let mapped = self.claims.map(&claims.to_map()?)?;
        Ok(Verified {
            identity: Identity {
                issuer: self.name.clone(),
                user: encode_user(&mapped.user)?,
                token_audiences,
                expires_at: u64::try_from(exp).unwrap_or(0),
                trust_implicit_audience: self.trust_implicit_audience,
                key,
            },
            dropped_system_groups: mapped.dropped_system_groups,
        })
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
fn encode_user(user: &UserInfo) -> Result<Box<RawValue>, Rejection> {
    serde_json::value::to_raw_value(user).map_err(|_| Rejection::InvalidClaim("user"))
}

pub(crate) struct Verified {
    pub(crate) identity: Identity,
    pub(crate) dropped_system_groups: usize,
}

pub struct Verifier {
    issuers: Vec<IssuerVerifier>,
    by_iss: HashMap<String, usize>,
    without_iss: Option<usize>,
}

impl Verifier {
    /// Builds the verifiers; fetching keys is left to the caller (see
    /// `server::start`), so an issuer that is down does not hold up the rest.
    pub(crate) fn new(
        issuers: &[prepare::Issuer],
        metrics: &Arc<Metrics>,
        clock: &Clock,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Verifier, ClientError> {
        let mut out = Vec::new();
        let mut by_iss = HashMap::new();
        let mut without_iss = None;
        for (i, p) in issuers.iter().enumerate() {
            let c = &p.spec;
            let name: Arc<str> = Arc::from(c.name.as_str());
            metrics.register_issuer(&name);
            let remote = match &c.remote {
                Some(r) => Some(Arc::new(RemoteKeys::new(
                    name.clone(),
                    r.clone(),
                    p.ca_pem.as_deref(),
                    metrics.clone(),
                    clock.clone(),
                    runtime.clone(),
                )?)),
                None => None,
            };
            keys::report_certificates(&name, &p.static_keys, metrics);
            let static_keys = KeySet::new(p.static_keys.iter().cloned());
            if !static_keys.is_empty() {
                metrics
                    .jwks_last_success
                    .with_label_values(&[&name])
                    .set(clock.now() as f64);
            }
            match &c.url {
                Some(u) => {
                    by_iss.insert(u.clone(), i);
                }
                None => without_iss = Some(i),
            }
            out.push(IssuerVerifier {
                name,
                kind: c.kind,
                audiences: c.audiences.clone(),
                allow_any_audience: c.allow_any_audience,
                trust_implicit_audience: c.trust_implicit_audience,
                algorithms: p.algorithms.clone(),
                exp_leeway: c.clock_skew,
                clock_leeway: c.clock_skew.max(NBF_LEEWAY),
                claims: c.claims.clone(),
                static_keys,
                remote,
            });
        }
        Ok(Verifier {
            issuers: out,
            by_iss,
            without_iss,
        })
    }

    pub fn issuers(&self) -> &[IssuerVerifier] {
        &self.issuers
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
        idx.map(|i| &self.issuers[i])
            .ok_or(Rejection::UnknownIssuer)
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
            key: Arc::new(VerifyKey::new(
                None,
                keys::KeyKind::Hmac,
                jsonwebtoken::DecodingKey::from_secret(b"k"),
            )),
        }
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

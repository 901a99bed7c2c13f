//! Verification keys: one signature key each, with the algorithms it may check.
//! A key's family is fixed when it is loaded, so an HS* token can never be
//! checked against an RSA or EC public key (algorithm confusion).

mod points;
pub(crate) mod remote;
mod saved;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::signature::ParsedPublicKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

const MIN_RSA_BITS: usize = 2048;
/// The most aws-lc-rs verifies (`RSA_PKCS1_2048_8192_*`).
const MAX_RSA_BITS: usize = 8192;

/// Why a token's keys could not be used: "could not check" (`status.error`,
/// never cached), not a verdict on the token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Fetch(#[from] remote::FetchError),
    /// The issuer has not been reached for longer than `max_key_age`.
    #[error(
        "the last good key set is {} old, more than max_key_age ({}); the issuer must be reachable again{}",
        humantime::format_duration(*age),
        humantime::format_duration(*max),
        last_error.as_ref().map(|e| format!(" (last fetch: {e})")).unwrap_or_default()
    )]
    Stale {
        age: Duration,
        max: Duration,
        last_error: Option<remote::FetchError>,
    },
    /// A certificate in `keys.public_key_files` is past its notAfter.
    #[error(
        "its certificate (keys.public_key_files) expired at {0}: install the issuer's new certificate, or set keys.allow_expired_certificate"
    )]
    CertificateExpired(String),
    /// An unknown kid asked for a refetch sooner than
    /// `jwks_min_refetch_interval` allows. Never waited for: the next
    /// allowed fetch is made in the background.
    #[error(
        "the token's key is not in the key set, and keys were fetched for an unknown key less than jwks_min_refetch_interval ago; the next fetch is in {}",
        humantime::format_duration(*.0)
    )]
    RefetchLimited(Duration),
    /// Too many reviews already wait for this issuer's fetch in flight.
    #[error("too many reviews are waiting for this issuer's key fetch")]
    TooManyWaiters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Hmac,
}

impl KeyKind {
    /// Every algorithm a key of this kind may check.
    fn algorithms(self) -> &'static [Algorithm] {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
            KeyKind::EcP256 => &[ES256],
            KeyKind::EcP384 => &[ES384],
            KeyKind::Ed25519 => &[EdDSA],
            KeyKind::Hmac => &[HS256, HS384, HS512],
        }
    }

    pub(crate) fn accepts(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
            KeyKind::Hmac => matches!(alg, HS256 | HS384 | HS512),
        }
    }
}

pub struct VerifyKey {
    pub(crate) kid: Option<String>,
    pub(crate) kind: KeyKind,
    /// The JWK's own `alg`, when it names one: the key then checks only that.
    pub(crate) alg: Option<Algorithm>,
    key: DecodingKey,
    /// The public key parsed by aws-lc-rs once, for each algorithm it may
    /// check: jsonwebtoken's `crypto::verify` parses the key again on every
    /// check (for RS256 about a fifth of the check, for ES256 more). Empty
    /// for HMAC, which jsonwebtoken checks.
    parsed: Vec<(Algorithm, ParsedPublicKey)>,
    /// Clock time (Unix seconds) from which the key verifies nothing more:
    /// never (`u64::MAX`) for a key file, a certificate's notAfter, the last
    /// good fetch plus `max_key_age` for a fetched key, 0 once the issuer no
    /// longer publishes it. A cached identity checks it on every hit.
    trusted_until: AtomicU64,
    /// For a key taken from an X.509 certificate: its validity.
    pub(crate) certificate: Option<Validity>,
}

/// An X.509 certificate's validity, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

impl Validity {
    /// Why the certificate is not valid at `now`, if it is not.
    pub(crate) fn problem_at(&self, now: u64) -> Option<String> {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        if now >= self.not_after {
            Some(format!("expired at {}", rfc3339(self.not_after)))
        } else if now < self.not_before {
            Some(format!("is not valid before {}", rfc3339(self.not_before)))
        } else {
            None
        }
    }
}

/// A Unix time for people (UTC, RFC 3339).
pub(crate) fn rfc3339(t: i64) -> String {
    let secs = u64::try_from(t).unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

impl Clone for VerifyKey {
    fn clone(&self) -> Self {
        VerifyKey {
            kid: self.kid.clone(),
            kind: self.kind,
            alg: self.alg,
            key: self.key.clone(),
            parsed: self.parsed.clone(),
            trusted_until: AtomicU64::new(self.trusted_until.load(Ordering::Relaxed)),
            certificate: self.certificate,
        }
    }
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    pub(crate) fn new(kid: Option<String>, kind: KeyKind, key: DecodingKey) -> Self {
        Self::with_alg(kid, kind, None, key)
    }

    fn with_alg(
        kid: Option<String>,
        kind: KeyKind,
        alg: Option<Algorithm>,
        key: DecodingKey,
    ) -> Self {
        let algorithms = match alg {
            Some(a) => vec![a],
            None => kind.algorithms().to_vec(),
        };
        let parsed = algorithms
            .into_iter()
            .filter_map(|a| Some((a, parse_public_key(&key, a)?)))
            .collect();
        VerifyKey {
            kid,
            kind,
            alg,
            key,
            parsed,
            trusted_until: AtomicU64::new(u64::MAX),
            certificate: None,
        }
    }

    /// Whether the key may still verify at `now` (clock seconds): one atomic
    /// load, cheap enough for every cache hit.
    pub(crate) fn usable_at(&self, now: u64) -> bool {
        now < self.trusted_until.load(Ordering::Relaxed)
    }

    pub(crate) fn trust_until(&self, until: u64) {
        self.trusted_until.store(until, Ordering::Relaxed);
    }

    /// The issuer no longer publishes this key: it verifies nothing from now
    /// on, and identities it verified leave the cache at their next hit.
    pub(crate) fn withdraw(&self) {
        self.trust_until(0);
    }

    /// The same key as `other`: kid, family, `alg` and key material.
    pub(crate) fn same_key(&self, other: &VerifyKey) -> bool {
        use jsonwebtoken::DecodingKeyKind as K;
        self.kid == other.kid
            && self.kind == other.kind
            && self.alg == other.alg
            && match (self.key.kind(), other.key.kind()) {
                (K::SecretOrDer(a), K::SecretOrDer(b)) => a == b,
                (K::RsaModulusExponent { n, e }, K::RsaModulusExponent { n: n2, e: e2 }) => {
                    n == n2 && e == e2
                }
                _ => false,
            }
    }

    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.accepts(alg) && self.alg.is_none_or(|a| a == alg)
    }

    /// The algorithm a key of this kind is most often used with.
    pub(crate) fn default_algorithm(&self) -> Algorithm {
        if let Some(a) = self.alg {
            return a;
        }
        match self.kind {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::EcP256 => Algorithm::ES256,
            KeyKind::EcP384 => Algorithm::ES384,
            KeyKind::Ed25519 => Algorithm::EdDSA,
            KeyKind::Hmac => Algorithm::HS256,
        }
    }

    /// Checks `signature` (base64url) over `signing_input`: with the key
    /// aws-lc-rs parsed once when there is one (every public key), else
    /// (HMAC) with jsonwebtoken's aws-lc-rs backend. Both answer alike for
    /// every algorithm and key source, good and forged signatures alike
    /// (`parsed_keys_answer_as_jsonwebtoken_does`).
    pub fn verify(&self, signing_input: &str, signature: &str, alg: Algorithm) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        match self.parsed.iter().find(|(a, _)| *a == alg) {
            Some((_, key)) => {
                let mut buf = [0u8; SIGNATURE_BUFFER];
                decode_signature(signature, &mut buf)
                    .is_some_and(|sig| key.verify_sig(signing_input.as_bytes(), sig).is_ok())
            }
            None => {
                jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &self.key, alg)
                    .unwrap_or(false)
            }
        }
    }

    /// jsonwebtoken's own check, whatever `verify` uses: for benchmarks
    /// and the test that the two agree.
    pub fn verify_with_jsonwebtoken(
        &self,
        signing_input: &str,
        signature: &str,
        alg: Algorithm,
    ) -> bool {
        self.accepts(alg)
            && jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &self.key, alg)
                .unwrap_or(false)
    }
}

/// The largest signature a public-key algorithm here makes is RSA-8192's
/// 1,024 bytes; base64 asks for room for its rounded-up estimate (1,026 for
/// the 1,366 characters of 1,024 bytes).
const SIGNATURE_BUFFER: usize = 1026;

/// A base64url signature decoded on the stack; `None` when it is not
/// base64url or longer than any signature (which aws-lc-rs would fail too).
fn decode_signature<'b>(signature: &str, buf: &'b mut [u8; SIGNATURE_BUFFER]) -> Option<&'b [u8]> {
    let n = URL_SAFE_NO_PAD.decode_slice(signature, buf).ok()?;
    buf.get(..n)
}

/// `key` parsed by aws-lc-rs for `alg`, with the parameters jsonwebtoken's
/// aws-lc-rs backend uses for it (so both accept the same keys and
/// signatures). `None` for HMAC, and for a key aws-lc-rs refuses for `alg`
/// (jsonwebtoken's check, used then, refuses it too).
fn parse_public_key(key: &DecodingKey, alg: Algorithm) -> Option<ParsedPublicKey> {
    use aws_lc_rs::signature as s;
    use jsonwebtoken::DecodingKeyKind;
    let rsa: Option<&'static s::RsaParameters> = match alg {
        Algorithm::RS256 => Some(&s::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Some(&s::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Some(&s::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Some(&s::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Some(&s::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Some(&s::RSA_PSS_2048_8192_SHA512),
        _ => None,
    };
    let params: &'static dyn s::VerificationAlgorithm = match (rsa, alg) {
        (Some(r), _) => r,
        (None, Algorithm::ES256) => &s::ECDSA_P256_SHA256_FIXED,
        (None, Algorithm::ES384) => &s::ECDSA_P384_SHA384_FIXED,
        (None, Algorithm::EdDSA) => &s::ED25519,
        _ => return None,
    };
    match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => ParsedPublicKey::new(params, bytes).ok(),
        DecodingKeyKind::RsaModulusExponent { n, e } => s::RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(rsa?)
            .ok(),
    }
}

/// Keys by `kid`, and those without one.
#[derive(Debug, Default, Clone)]
pub(crate) struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    unnamed: Vec<Arc<VerifyKey>>,
}

/// How many keys a token without `kid` may be tried against: bounds the
/// crypto work one forged token can cost.
const MAX_KEYS_TRIED: usize = 8;

impl KeySet {
    pub(crate) fn new(keys: impl IntoIterator<Item = VerifyKey>) -> Self {
        let mut set = KeySet::default();
        for k in keys {
            let k = Arc::new(k);
            match &k.kid {
                Some(kid) => {
                    set.by_kid.insert(kid.clone(), k);
                }
                None => set.unnamed.push(k),
            }
        }
        set
    }

    pub(crate) fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<VerifyKey>> {
        self.by_kid.values().chain(&self.unnamed)
    }

    /// The key set a fresh fetch of `keys` makes of `self`, each key trusted
    /// until `trusted_until`: a key `self` already holds is kept as is (so
    /// identities it verified stay cached), and every key of `self` that is
    /// not fetched again is withdrawn. Returns the set and how many keys were
    /// withdrawn.
    pub(crate) fn refreshed(
        &self,
        keys: impl IntoIterator<Item = VerifyKey>,
        trusted_until: u64,
    ) -> (KeySet, usize) {
        let mut kept: Vec<Arc<VerifyKey>> = Vec::new();
        let fresh = KeySet::new(keys);
        let mut out = KeySet::default();
        for k in fresh.iter() {
            let known = self.iter().find(|old| old.same_key(k)).cloned();
            let k = known.unwrap_or_else(|| k.clone());
            k.trust_until(trusted_until);
            kept.push(k.clone());
            match &k.kid {
                Some(kid) => {
                    out.by_kid.insert(kid.clone(), k);
                }
                None => out.unnamed.push(k),
            }
        }
        let mut withdrawn = 0;
        for old in self.iter() {
            if !kept.iter().any(|k| Arc::ptr_eq(k, old)) {
                old.withdraw();
                withdrawn += 1;
            }
        }
        (out, withdrawn)
    }

    /// Withdraws every key (they outlived `max_key_age`).
    pub(crate) fn withdraw_all(&self) {
        for k in self.iter() {
            k.withdraw();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys that may still verify at `now`.
    pub(crate) fn usable_count(&self, now: u64) -> usize {
        self.iter().filter(|k| k.usable_at(now)).count()
    }

    /// The keys a token with this `kid` and `alg` may be checked against. A
    /// named key wins; otherwise keys without a kid (a PEM file has none).
    /// Empty means the kid is unknown here.
    pub(crate) fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Arc<VerifyKey>> {
        if let Some(k) = kid.and_then(|kid| self.by_kid.get(kid)) {
            return vec![k.clone()];
        }
        let mut out: Vec<Arc<VerifyKey>> = self
            .unnamed
            .iter()
            .filter(|k| k.accepts(alg))
            .take(MAX_KEYS_TRIED)
            .cloned()
            .collect();
        if kid.is_none() && out.len() < MAX_KEYS_TRIED {
            out.extend(
                self.by_kid
                    .values()
                    .filter(|k| k.accepts(alg))
                    .take(MAX_KEYS_TRIED - out.len())
                    .cloned(),
            );
        }
        out
    }
}

/// Every key in a PEM file: `PUBLIC KEY` (SPKI), `RSA PUBLIC KEY` (PKCS#1) or
/// `CERTIFICATE` (X.509, as EFA distributes its "JWT certificate"; the key
/// carries the certificate's validity, which `prepare` checks).
pub fn from_pem(pem: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let mut keys = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("not valid PEM ({e})"))?;
        let key = match block.label.as_str() {
            "CERTIFICATE" => {
                let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
                    .map_err(|e| format!("bad X.509 certificate: {e}"))?;
                let mut key = from_spki(cert.public_key())?;
                key.certificate = Some(Validity {
                    not_before: cert.validity().not_before.timestamp(),
                    not_after: cert.validity().not_after.timestamp(),
                });
                key
            }
            "PUBLIC KEY" => {
                let (_, spki) = SubjectPublicKeyInfo::from_der(&block.contents)
                    .map_err(|e| format!("bad PUBLIC KEY block: {e}"))?;
                from_spki(&spki)?
            }
            "RSA PUBLIC KEY" => rsa_from_pkcs1(&block.contents)?,
            label if label.contains("PRIVATE") => {
                return Err(format!(
                    "holds a {label}: give the public key or certificate only, never the private key"
                ));
            }
            other => {
                return Err(format!(
                    "a PEM block labelled {other:?} is not a public key or certificate"
                ));
            }
        };
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("no PEM public key or certificate found".to_owned());
    }
    Ok(keys)
}

/// A PKCS#1 `RSAPublicKey`, checked as a JWK's components are.
fn rsa_from_pkcs1(pkcs1: &[u8]) -> Result<VerifyKey, String> {
    let public = aws_lc_rs::rsa::PublicKey::from_der(pkcs1)
        .map_err(|e| format!("bad RSA public key: {e}"))?;
    let c = aws_lc_rs::signature::RsaPublicKeyComponents::<Vec<u8>>::from(&public);
    rsa_usable(&c.n, &c.e)?;
    Ok(VerifyKey::new(
        None,
        KeyKind::Rsa,
        DecodingKey::from_rsa_der(pkcs1),
    ))
}

/// Why an RSA public key (big-endian `n` and `e`, shortest form) cannot be
/// trusted, if it cannot: too small or too large for the verifier, an even
/// modulus, or an exponent of 1 (every "signature" is its own message) or an
/// even one. aws-lc-rs has the last word.
fn rsa_usable(n: &[u8], e: &[u8]) -> Result<(), String> {
    let bits = bit_length(n);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA key of {bits} bits is too small (at least {MIN_RSA_BITS})"
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "RSA key of {bits} bits is larger than the {MAX_RSA_BITS} bits this verifier checks"
        ));
    }
    if n.last().is_none_or(|b| b % 2 == 0) {
        return Err("RSA modulus n is even: not an RSA key".to_owned());
    }
    match e.last() {
        None => return Err("RSA exponent e is empty".to_owned()),
        Some(last) if last % 2 == 0 => {
            return Err("RSA exponent e is even: not an RSA key".to_owned());
        }
        Some(_) if bit_length(e) <= 1 => {
            return Err("RSA exponent e is 1: every signature would be its own message".to_owned());
        }
        Some(_) => {}
    }
    aws_lc_rs::signature::RsaPublicKeyComponents { n, e }
        .to_parsed_public_key(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256)
        .map(|_| ())
        .map_err(|err| format!("RSA key refused by aws-lc: {err}"))
}

/// Bits of a big-endian unsigned integer, leading zeros not counted.
fn bit_length(be: &[u8]) -> usize {
    let digits: Vec<&u8> = be.iter().skip_while(|b| **b == 0).collect();
    match digits.first() {
        None => 0,
        Some(top) => (digits.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// An EC point (SEC 1 encoding) aws-lc-rs accepts for `kind`'s curve: on the
/// curve, not the point at infinity.
fn ec_point_usable(kind: KeyKind, point: &[u8]) -> Result<(), String> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ParsedPublicKey};
    let (alg, curve) = match kind {
        KeyKind::EcP384 => (&ECDSA_P384_SHA384_FIXED, "P-384"),
        _ => (&ECDSA_P256_SHA256_FIXED, "P-256"),
    };
    ParsedPublicKey::new(alg, point)
        .map(|_| ())
        .map_err(|_| format!("EC public key is not a point on {curve}"))
}

fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<VerifyKey, String> {
    let bits: &[u8] = &spki.subject_public_key.data;
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        return rsa_from_pkcs1(bits);
    }
    if *oid == OID_SIG_ED25519 {
        points::ed25519_usable(bits)?;
        return Ok(VerifyKey::new(
            None,
            KeyKind::Ed25519,
            DecodingKey::from_ed_der(bits),
        ));
    }
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        let kind = match curve {
            Some(c) if c == OID_EC_P256 => KeyKind::EcP256,
            Some(c) if c == OID_NIST_EC_P384 => KeyKind::EcP384,
            _ => return Err("EC key on a curve other than P-256 or P-384".to_owned()),
        };
        ec_point_usable(kind, bits)?;
        return Ok(VerifyKey::new(None, kind, DecodingKey::from_ec_der(bits)));
    }
    Err(format!("unsupported public key algorithm {oid}"))
}

/// Exports the earliest notAfter of an issuer's certificates (one trusted
/// outside its validity is a config warning, see `prepare`).
pub(crate) fn report_certificates(
    issuer: &str,
    keys: &[VerifyKey],
    metrics: &crate::metrics::Metrics,
) {
    if let Some(first) = keys
        .iter()
        .filter_map(|k| k.certificate)
        .map(|c| c.not_after)
        .min()
    {
        metrics
            .efa_cert_expiry
            .with_label_values(&[issuer])
            .set(first as f64);
    }
}

/// An HS256/384/512 shared secret. A trailing newline (as `echo` writes) is not
/// part of the secret.
pub(crate) fn hmac_secret(bytes: &[u8]) -> Result<VerifyKey, String> {
    let secret = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
    if secret.len() < 32 {
        return Err(format!(
            "the shared secret has {} bytes; HS256 needs at least 32",
            secret.len()
        ));
    }
    Ok(VerifyKey::new(
        None,
        KeyKind::Hmac,
        DecodingKey::from_secret(secret),
    ))
}

/// Usable signature keys of a JWKS document, and why others were skipped.
pub fn from_jwks(body: &[u8]) -> Result<(Vec<VerifyKey>, Vec<String>), String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, value) in doc.keys.into_iter().enumerate() {
        match from_jwk(value) {
            Ok(Some(k)) => keys.push(k),
            Ok(None) => {}
            Err(e) => skipped.push(format!("keys[{i}]: {e}")),
        }
    }
    Ok((keys, skipped))
}

fn from_jwk(value: serde_json::Value) -> Result<Option<VerifyKey>, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("unreadable JWK: {e}"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Ok(None);
    }
    let b64 = |what: &str, v: &str| {
        URL_SAFE_NO_PAD
            .decode(v)
            .map_err(|_| format!("{what} is not base64url"))
    };
    let (kind, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = b64("RSA n", &p.n)?;
            let e = b64("RSA e", &p.e)?;
            // RFC 7518 6.3.1: the shortest big-endian form. A leading zero
            // is how a hand-made or buggy key set pads; refuse it rather
            // than guess.
            if n.first() == Some(&0) || e.first() == Some(&0) {
                return Err(
                    "RSA n or e has a leading zero byte (RFC 7518 6.3.1 wants the shortest form)"
                        .to_owned(),
                );
            }
            rsa_usable(&n, &e)?;
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (kind, size) = match p.curve {
                EllipticCurve::P256 => (KeyKind::EcP256, 32),
                EllipticCurve::P384 => (KeyKind::EcP384, 48),
                _ => return Err("EC curve not supported".to_owned()),
            };
            let x = b64("EC x", &p.x)?;
            let y = b64("EC y", &p.y)?;
            if x.len() != size || y.len() != size {
                return Err(format!(
                    "EC x and y must be {size} bytes each for {:?}",
                    p.curve
                ));
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            ec_point_usable(kind, &point)?;
            (kind, DecodingKey::from_ec_der(&point))
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            let x = b64("OKP x", &p.x)?;
            points::ed25519_usable(&x)?;
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        // A symmetric key in a public key set would turn every reader of the
        // set into a token minter.
        AlgorithmParameters::OctetKey(_) => {
            return Err("kty oct (shared secret) is refused in a JWKS".to_owned());
        }
        _ => return Err("key type not supported".to_owned()),
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(ka) => Some(
            Algorithm::try_from(ka)
                .map_err(|_| format!("alg {ka:?} is not a signature algorithm"))?,
        ),
    };
    if let Some(a) = alg
        && !kind.accepts(a)
    {
        return Err(format!("alg {a:?} does not fit a {kind:?} key"));
    }
    Ok(Some(VerifyKey::with_alg(jwk.common.key_id, kind, alg, key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A key pair for the agreement test, with its public key in every form
    /// the service loads: JWK (with and without `alg`), SPKI PEM, PKCS#1 PEM
    /// (RSA) and an X.509 certificate.
    struct TestKey {
        kind: KeyKind,
        signer: jsonwebtoken::EncodingKey,
        loaded: Vec<(&'static str, VerifyKey)>,
    }

    fn test_key(kind: KeyKind) -> TestKey {
        use rcgen::{
            CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
            PKCS_ED25519, PKCS_RSA_SHA256, RsaKeySize,
        };
        let kp = match kind {
            KeyKind::Rsa => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
            KeyKind::EcP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
            KeyKind::EcP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
            KeyKind::Ed25519 => KeyPair::generate_for(&PKCS_ED25519),
            KeyKind::Hmac => unreachable!("public keys only"),
        }
        .expect("key pair");
        let raw = kp.public_key_raw();
        let pkcs8 = kp.serialize_der();
        let (signer, jwk) = match kind {
            KeyKind::Rsa => {
                let public = aws_lc_rs::rsa::PublicKey::from_der(raw).expect("pkcs1");
                let c = aws_lc_rs::signature::RsaPublicKeyComponents::<Vec<u8>>::from(&public);
                (
                    jsonwebtoken::EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes())
                        .expect("rsa pem"),
                    json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)}),
                )
            }
            KeyKind::EcP256 | KeyKind::EcP384 => {
                let (x, y) = raw[1..].split_at((raw.len() - 1) / 2);
                let crv = if kind == KeyKind::EcP256 {
                    "P-256"
                } else {
                    "P-384"
                };
                (
                    jsonwebtoken::EncodingKey::from_ec_der(&pkcs8),
                    json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)}),
                )
            }
            _ => (
                jsonwebtoken::EncodingKey::from_ed_der(&pkcs8),
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}),
            ),
        };
        let mut loaded = Vec::new();
        let from_doc = |jwk: &serde_json::Value| {
            let (mut keys, skipped) =
                from_jwks(json!({"keys": [jwk]}).to_string().as_bytes()).expect("jwks");
            assert!(skipped.is_empty(), "{skipped:?}");
            keys.remove(0)
        };
        loaded.push(("jwk", from_doc(&jwk)));
        for alg in kind.algorithms() {
            let mut named = jwk.clone();
            named["alg"] = json!(format!("{alg:?}"));
            loaded.push(("jwk with alg", from_doc(&named)));
        }
        let one = |pem: String| {
            let mut keys = from_pem(pem.as_bytes()).expect("pem");
            assert_eq!(keys.len(), 1);
            keys.remove(0)
        };
        loaded.push(("spki pem", one(kp.public_key_pem())));
        if kind == KeyKind::Rsa {
            loaded.push((
                "pkcs1 pem",
                one(pem::encode(&pem::Pem::new("RSA PUBLIC KEY", raw.to_vec()))),
            ));
        }
        let cert = CertificateParams::new(vec!["efa.example".to_owned()])
            .expect("params")
            .self_signed(&kp)
            .expect("certificate");
        loaded.push(("certificate", one(cert.pem())));
        TestKey {
            kind,
            signer,
            loaded,
        }
    }

    /// The pre-parsed aws-lc-rs check answers exactly as jsonwebtoken's
    /// `crypto::verify`, for every public-key algorithm and every form a key
    /// is loaded from: good signatures pass, and forged, truncated, padded,
    /// oversized, non-base64, other keys' and other algorithms' fail.
    #[test]
    fn parsed_keys_answer_as_jsonwebtoken_does() {
        crate::install_crypto_providers();
        let kinds = [
            KeyKind::Rsa,
            KeyKind::EcP256,
            KeyKind::EcP384,
            KeyKind::Ed25519,
        ];
        // Every algorithm, HMAC's too: a public key must refuse those.
        let all: Vec<Algorithm> = kinds
            .iter()
            .chain([&KeyKind::Hmac])
            .flat_map(|k| k.algorithms().iter().copied())
            .collect();
        let keys: Vec<TestKey> = kinds.into_iter().map(test_key).collect();
        let other: Vec<TestKey> = kinds.into_iter().map(test_key).collect();
        let input = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0";
        let mut checked = 0;
        for (key, stranger) in keys.iter().zip(&other) {
            for &alg in key.kind.algorithms() {
                let sign = |k: &jsonwebtoken::EncodingKey| {
                    jsonwebtoken::crypto::sign(input.as_bytes(), k, alg).expect("sign")
                };
                let good = sign(&key.signer);
                let mut flipped = good.clone().into_bytes();
                flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
                let flipped = String::from_utf8(flipped).expect("ascii");
                let forged = [
                    flipped,
                    good[..good.len() - 4].to_owned(),
                    format!("{good}AAAA"),
                    format!("{good}="),
                    format!("+{}", &good[1..]),
                    "A".repeat(1366),
                    "A".repeat(4000),
                    String::new(),
                    "!!!!".to_owned(),
                    sign(&stranger.signer),
                ];
                for (source, k) in &key.loaded {
                    if !k.accepts(alg) {
                        continue;
                    }
                    assert!(k.verify(input, &good, alg), "{alg:?} {source}: good");
                    assert!(
                        k.verify_with_jsonwebtoken(input, &good, alg),
                        "{alg:?} {source}: good, jsonwebtoken"
                    );
                    assert!(
                        !k.verify("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ5In0", &good, alg),
                        "{alg:?} {source}: another message"
                    );
                    for sig in &forged {
                        assert!(!k.verify(input, sig, alg), "{alg:?} {source}: {sig:.40}");
                        assert!(
                            !k.verify_with_jsonwebtoken(input, sig, alg),
                            "{alg:?} {source}: {sig:.40}, jsonwebtoken"
                        );
                    }
                    for &a in &all {
                        assert_eq!(
                            k.verify(input, &good, a),
                            k.verify_with_jsonwebtoken(input, &good, a),
                            "{alg:?}-signed, checked as {a:?}, {source}"
                        );
                    }
                    checked += 1;
                }
            }
        }
        // 6 RSA algorithms x (jwk, its own jwk-with-alg, spki, pkcs1,
        // certificate), 3 x 4 for the other kinds.
        assert_eq!(checked, 6 * 5 + 3 * 4);
        // The longest signature (RSA-8192) fits the buffer.
        let mut buf = [0u8; SIGNATURE_BUFFER];
        assert_eq!(
            decode_signature(&"A".repeat(1366), &mut buf).map(<[u8]>::len),
            Some(1024)
        );
    }

    #[test]
    fn key_kinds_accept_only_their_family() {
        assert!(KeyKind::Rsa.accepts(Algorithm::PS256));
        assert!(!KeyKind::Rsa.accepts(Algorithm::HS256));
        assert!(!KeyKind::EcP256.accepts(Algorithm::ES384));
        assert!(!KeyKind::Hmac.accepts(Algorithm::RS256));
        assert!(KeyKind::Ed25519.accepts(Algorithm::EdDSA));
    }

    #[test]
    fn jwks_refuses_shared_secrets_and_mismatched_algs() {
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "alg": "RS256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "good", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"}
        ]});
        let (keys, skipped) = from_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("good"));
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped.iter().any(|s| s.contains("oct")));
        assert!(from_jwks(b"<html>").is_err());
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn unb64(v: &serde_json::Value) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap()
    }

    /// Each unusable key is skipped with its reason, never loaded; the real
    /// keys beside them load.
    #[test]
    fn unusable_keys_are_skipped_with_a_reason() {
        use crate::cmd::demo::issuer::DevKey;
        let rsa = DevKey::generate(Algorithm::RS256).unwrap().jwk;
        let ec = DevKey::generate(Algorithm::ES256).unwrap().jwk;
        let ed = DevKey::generate(Algorithm::EdDSA).unwrap().jwk;
        let n = unb64(&rsa["n"]);
        let with = |base: &serde_json::Value, field: &str, value: String| {
            let mut k = base.clone();
            k[field] = json!(value);
            k["kid"] = json!(format!("bad-{field}"));
            k
        };
        let mut leading_zero = vec![0u8];
        leading_zero.extend_from_slice(&n);
        let mut even = n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        let mut short = n.clone();
        short[0] = (short[0] & 0x7f) | 0x40;
        let mut y = unb64(&ec["y"]);
        y[31] ^= 1;
        let mut identity = vec![0u8; 32];
        identity[0] = 1;
        let mut off_curve = vec![0u8; 32];
        off_curve[0] = 2;
        // y = p + 1: the identity written a second way.
        let mut p_plus_1 = vec![0xff_u8; 32];
        p_plus_1[0] = 0xee;
        p_plus_1[31] = 0x7f;
        let cases = [
            (with(&rsa, "e", b64(&[1])), "e is 1"),
            (with(&rsa, "e", b64(&[1, 0, 0])), "e is even"),
            (with(&rsa, "n", b64(&leading_zero)), "leading zero"),
            (with(&rsa, "n", b64(&even)), "modulus n is even"),
            (with(&rsa, "n", b64(&short)), "2047 bits is too small"),
            (
                with(&rsa, "n", b64(&[0xff; 1025])),
                "larger than the 8192 bits",
            ),
            (with(&ec, "y", b64(&y)), "not a point on P-256"),
            (with(&ec, "x", b64(&[1; 31])), "must be 32 bytes"),
            (with(&ed, "x", b64(&identity)), "small-order"),
            (with(&ed, "x", b64(&off_curve)), "not a point on the curve"),
            (with(&ed, "x", b64(&p_plus_1)), "not a canonical encoding"),
        ];
        for (jwk, says) in &cases {
            let doc = json!({"keys": [jwk, rsa, ec, ed]}).to_string();
            let (keys, skipped) = from_jwks(doc.as_bytes()).unwrap();
            assert_eq!(keys.len(), 3, "{says}: {skipped:?}");
            assert_eq!(skipped.len(), 1, "{says}");
            assert!(
                skipped[0].starts_with("keys[0]: ") && skipped[0].contains(says),
                "{says}: {skipped:?}"
            );
        }
    }

    /// The same checks for key files, which are refused instead.
    #[test]
    fn unusable_pem_keys_are_refused() {
        // SPKI of Ed25519 with the identity point (small order).
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00, 0x01,
        ];
        der.extend_from_slice(&[0; 31]);
        let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", der));
        let err = from_pem(pem.as_bytes()).unwrap_err();
        assert!(err.contains("small-order"), "{err}");
        let good = crate::cmd::demo::issuer::DevKey::generate(Algorithm::EdDSA).unwrap();
        assert_eq!(from_pem(good.public_pem.as_bytes()).unwrap().len(), 1);
    }

    /// A fresh fetch keeps the keys it lists again (the same `Arc`, so the
    /// identities they verified stay cached), trusts them anew, and
    /// withdraws the rest.
    #[test]
    fn a_refetch_keeps_listed_keys_and_withdraws_the_others() {
        let key = |kid: &str, secret: &[u8]| {
            VerifyKey::new(
                Some(kid.into()),
                KeyKind::Hmac,
                DecodingKey::from_secret(secret),
            )
        };
        let (old, _) = KeySet::default().refreshed([key("a", b"1"), key("b", b"2")], 100);
        let a = old.candidates(Some("a"), Algorithm::HS256).remove(0);
        let b = old.candidates(Some("b"), Algorithm::HS256).remove(0);
        assert!(a.usable_at(99) && !a.usable_at(100));
        // "a" listed again, "b" gone, "b2" new; a kid with other material
        // is another key.
        let (new, withdrawn) = old.refreshed([key("a", b"1"), key("c", b"3")], 200);
        assert_eq!(withdrawn, 1);
        let a2 = new.candidates(Some("a"), Algorithm::HS256).remove(0);
        assert!(Arc::ptr_eq(&a, &a2), "the same key object");
        assert!(a.usable_at(150), "trusted until the new fetch's limit");
        assert!(!b.usable_at(0), "withdrawn");
        let (_, withdrawn) = new.refreshed([key("a", b"changed"), key("c", b"3")], 300);
        assert_eq!(withdrawn, 1);
        assert!(
            !a.usable_at(0),
            "same kid, other key: the old one is withdrawn"
        );
    }

    #[test]
    fn certificate_validity_says_what_is_wrong() {
        let v = Validity {
            not_before: 1_000,
            not_after: 2_000,
        };
        assert_eq!(v.problem_at(1_500), None);
        assert!(v.problem_at(2_000).unwrap().starts_with("expired at 1970-"));
        assert!(v.problem_at(10).unwrap().contains("not valid before"));
    }

    #[test]
    fn pem_with_a_private_key_is_refused() {
        let err = from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap_err();
        assert!(err.contains("never the private key"), "{err}");
        assert!(from_pem(b"nothing here").is_err());
    }

    #[test]
    fn short_hmac_secrets_are_refused_and_newline_stripped() {
        assert!(hmac_secret(b"short\n").is_err());
        assert!(hmac_secret(&[b'x'; 32]).is_ok());
        let mut with_newline = vec![b'x'; 31];
        with_newline.push(b'\n');
        assert!(
            hmac_secret(&with_newline).is_err(),
            "the newline does not count"
        );
    }

    #[test]
    fn candidates_prefer_the_named_key() {
        let named = VerifyKey::new(
            Some("k1".into()),
            KeyKind::Hmac,
            DecodingKey::from_secret(b"a"),
        );
        let unnamed = VerifyKey::new(None, KeyKind::Hmac, DecodingKey::from_secret(b"b"));
        let set = KeySet::new([named, unnamed]);
        assert_eq!(set.candidates(Some("k1"), Algorithm::HS256).len(), 1);
        assert_eq!(
            set.candidates(Some("other"), Algorithm::HS256).len(),
            1,
            "falls back to unnamed keys"
        );
        assert_eq!(set.candidates(None, Algorithm::HS256).len(), 2);
        assert!(set.candidates(None, Algorithm::RS256).is_empty());
    }
}

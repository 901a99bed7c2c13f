//! Verification keys: one signature key each, with the algorithms it may check.
//! A key's family is fixed when it is loaded, so an HS* token can never be
//! checked against an RSA or EC public key (algorithm confusion).

pub(crate) mod remote;

use std::collections::HashMap;
use std::sync::Arc;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Hmac,
}

impl KeyKind {
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

#[derive(Clone)]
pub struct VerifyKey {
    pub(crate) kid: Option<String>,
    pub(crate) kind: KeyKind,
    /// The JWK's own `alg`, when it names one: the key then checks only that.
    pub(crate) alg: Option<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
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
        VerifyKey {
            kid,
            kind,
            alg,
            key,
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

    /// Checks `signature` (base64url) over `signing_input` with jsonwebtoken's
    /// aws-lc-rs backend, as every signature check in the service is.
    pub fn verify(&self, signing_input: &str, signature: &str, alg: Algorithm) -> bool {
        self.accepts(alg)
            && jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &self.key, alg)
                .unwrap_or(false)
    }

    /// The jsonwebtoken key, for benchmarks comparing its check with a
    /// pre-parsed one.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
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

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
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
/// `CERTIFICATE` (X.509, as EFA distributes its "JWT certificate").
pub fn from_pem(pem: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let mut keys = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("not valid PEM ({e})"))?;
        let key = match block.label.as_str() {
            "CERTIFICATE" => {
                let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
                    .map_err(|e| format!("bad X.509 certificate: {e}"))?;
                from_spki(cert.public_key())?
            }
            "PUBLIC KEY" => {
                let (_, spki) = SubjectPublicKeyInfo::from_der(&block.contents)
                    .map_err(|e| format!("bad PUBLIC KEY block: {e}"))?;
                from_spki(&spki)?
            }
            "RSA PUBLIC KEY" => {
                rsa_size_ok(&block.contents)?;
                VerifyKey::new(
                    None,
                    KeyKind::Rsa,
                    DecodingKey::from_rsa_der(&block.contents),
                )
            }
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

fn rsa_size_ok(pkcs1: &[u8]) -> Result<(), String> {
    let public = aws_lc_rs::rsa::PublicKey::from_der(pkcs1)
        .map_err(|e| format!("bad RSA public key: {e}"))?;
    let bits = aws_lc_rs::signature::RsaPublicKeyComponents::<Vec<u8>>::from(&public)
        .n
        .iter()
        .skip_while(|b| **b == 0)
        .count()
        * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA key of {bits} bits is too small (at least {MIN_RSA_BITS})"
        ));
    }
    Ok(())
}

fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<VerifyKey, String> {
    let bits: &[u8] = &spki.subject_public_key.data;
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        rsa_size_ok(bits)?;
        return Ok(VerifyKey::new(
            None,
            KeyKind::Rsa,
            DecodingKey::from_rsa_der(bits),
        ));
    }
    if *oid == OID_SIG_ED25519 {
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
        return Ok(VerifyKey::new(None, kind, DecodingKey::from_ec_der(bits)));
    }
    Err(format!("unsupported public key algorithm {oid}"))
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
    let (kind, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = URL_SAFE_NO_PAD
                .decode(&p.n)
                .map_err(|_| "RSA n is not base64url")?;
            let e = URL_SAFE_NO_PAD
                .decode(&p.e)
                .map_err(|_| "RSA e is not base64url")?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA key of {bits} bits is too small"));
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let kind = match p.curve {
                EllipticCurve::P256 => KeyKind::EcP256,
                EllipticCurve::P384 => KeyKind::EcP384,
                _ => return Err("EC curve not supported".to_owned()),
            };
            let key = DecodingKey::from_ec_components(&p.x, &p.y).map_err(|e| e.to_string())?;
            (kind, key)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => (
            KeyKind::Ed25519,
            DecodingKey::from_ed_components(&p.x).map_err(|e| e.to_string())?,
        ),
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

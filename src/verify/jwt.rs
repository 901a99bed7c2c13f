//! Taking a compact JWS apart without trusting any of it. Routing reads the
//! claims before the signature is checked; nothing here leaves the process.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Rejection;

/// Larger tokens are refused before any decoding. Dex tokens with hundreds of
/// groups reach 60 KB; nothing legitimate comes near this.
pub const MAX_TOKEN_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub struct UnverifiedJwt<'a> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    pub signature: &'a str,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// Extensions the verifier must understand; we understand none.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

pub fn split(token: &str) -> Result<UnverifiedJwt<'_>, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::TokenTooLarge);
    }
    let (signing_input, signature) = token.rsplit_once('.').ok_or(Rejection::Malformed)?;
    let (header_b64, payload_b64) = signing_input.split_once('.').ok_or(Rejection::Malformed)?;
    // A JWE has five parts; a JWS exactly three, none empty but possibly the
    // signature (alg none), which we refuse anyway.
    if payload_b64.contains('.') || header_b64.is_empty() || payload_b64.is_empty() {
        return Err(Rejection::Malformed);
    }
    let header_json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| Rejection::Malformed)?;
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| Rejection::Malformed)?;
    if header.crit.is_some() {
        return Err(Rejection::UnsupportedAlgorithm);
    }
    let alg: Algorithm = header
        .alg
        .parse()
        .map_err(|_| Rejection::UnsupportedAlgorithm)?;
    if signature.is_empty() {
        return Err(Rejection::BadSignature);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| Rejection::Malformed)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| Rejection::Malformed)?;
    Ok(UnverifiedJwt {
        alg,
        kid: header.kid,
        claims,
        signing_input,
        signature,
    })
}

/// A NumericDate claim: absent is `Ok(None)`; present but not a number is an
/// error (treating it as absent would skip the check: CVE-2026-25537).
pub fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or(Rejection::InvalidClaim(name)),
        Some(_) => Err(Rejection::InvalidClaim(name)),
    }
}

/// `aud` as a list: a string or an array of strings.
pub fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, Rejection> {
    match claims.get("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(Rejection::InvalidClaim("aud"))
            })
            .collect(),
        Some(_) => Err(Rejection::InvalidClaim("aud")),
    }
}

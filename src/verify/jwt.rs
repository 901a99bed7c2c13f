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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn token(header: Value, claims: Value, sig: &str) -> String {
        format!("{}.{}.{sig}", b64(&header), b64(&claims))
    }

    #[test]
    fn splits_a_well_formed_jws() {
        let t = token(
            json!({"alg": "RS256", "kid": "k1"}),
            json!({"iss": "x"}),
            "c2ln",
        );
        let jwt = split(&t).unwrap();
        assert_eq!(jwt.alg, Algorithm::RS256);
        assert_eq!(jwt.kid.as_deref(), Some("k1"));
        assert_eq!(jwt.claims["iss"], "x");
        assert_eq!(jwt.signature, "c2ln");
        assert!(t.starts_with(jwt.signing_input));
    }

    #[test]
    fn refuses_what_is_not_a_jws() {
        let claims = json!({"iss": "x"});
        for (t, want) in [
            ("".to_owned(), Rejection::Malformed),
            ("abc".to_owned(), Rejection::Malformed),
            ("a.b".to_owned(), Rejection::Malformed),
            ("a.b.c.d.e".to_owned(), Rejection::Malformed),
            (
                token(json!({"alg": "none"}), claims.clone(), ""),
                Rejection::UnsupportedAlgorithm,
            ),
            (
                token(json!({"alg": "RS256"}), claims.clone(), ""),
                Rejection::BadSignature,
            ),
            (
                token(
                    json!({"alg": "RS256", "crit": ["exp"]}),
                    claims.clone(),
                    "c2ln",
                ),
                Rejection::UnsupportedAlgorithm,
            ),
            (
                token(json!({"alg": "XX999"}), claims.clone(), "c2ln"),
                Rejection::UnsupportedAlgorithm,
            ),
            (
                token(json!({"alg": "RS256"}), json!([1, 2]), "c2ln"),
                Rejection::Malformed,
            ),
            (
                format!("{}.!!!.c2ln", b64(&json!({"alg": "RS256"}))),
                Rejection::Malformed,
            ),
            ("x".repeat(MAX_TOKEN_BYTES + 1), Rejection::TokenTooLarge),
        ] {
            assert_eq!(split(&t).unwrap_err(), want, "{t:.60}");
        }
    }

    #[test]
    fn numeric_dates_must_be_numbers() {
        let c = json!({"a": 10, "b": 10.7, "c": "10", "d": null, "e": 1e300});
        let c = c.as_object().unwrap();
        assert_eq!(numeric_date(c, "a"), Ok(Some(10)));
        assert_eq!(numeric_date(c, "b"), Ok(Some(10)));
        assert_eq!(numeric_date(c, "missing"), Ok(None));
        assert_eq!(numeric_date(c, "c"), Err(Rejection::InvalidClaim("c")));
        assert_eq!(numeric_date(c, "d"), Err(Rejection::InvalidClaim("d")));
        assert_eq!(numeric_date(c, "e"), Ok(Some(i64::MAX)));
    }

    #[test]
    fn aud_is_a_string_or_a_list_of_strings() {
        let get = |v: Value| audiences(json!({"aud": v}).as_object().unwrap());
        assert_eq!(get(json!("k")), Ok(vec!["k".to_owned()]));
        assert_eq!(
            get(json!(["a", "b"])),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(get(json!(["a", 1])), Err(Rejection::InvalidClaim("aud")));
        assert_eq!(get(json!(7)), Err(Rejection::InvalidClaim("aud")));
    }
}

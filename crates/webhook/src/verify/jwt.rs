//! Taking a compact JWS apart without trusting any of it. Routing reads the
//! claims before the signature is checked; nothing here leaves the process.

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::Rejection;

/// Larger tokens are refused before any decoding. Dex tokens with hundreds of
/// groups reach 60 KB; nothing legitimate comes near this.
pub(crate) const MAX_TOKEN_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub(crate) struct UnverifiedJwt<'a> {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    /// The decoded payload, JSON; read it with `Claims::parse`.
    pub(crate) payload: Vec<u8>,
    /// `header.payload`, the bytes the signature covers.
    pub(crate) signing_input: &'a str,
    pub(crate) signature: &'a str,
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

pub(crate) fn split(token: &str) -> Result<UnverifiedJwt<'_>, Rejection> {
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
    Ok(UnverifiedJwt {
        alg,
        kid: header.kid,
        payload,
        signing_input,
        signature,
    })
}

/// The payload's top-level claims, checked to be one JSON object but not
/// built: routing and the time and audience checks read a handful of them, so
/// a token refused there (unknown issuer, expired...) never pays for building
/// the rest. A claim given twice counts with its last value, as in a `Map`.
#[derive(Debug)]
pub(crate) struct Claims<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Claims<'a> {
    pub(crate) fn parse(payload: &'a [u8]) -> Result<Claims<'a>, Rejection> {
        serde_json::from_slice(payload).map_err(|_| Rejection::Malformed)
    }

    /// One claim, built; `None` when absent.
    pub(crate) fn get(&self, name: &str) -> Option<Value> {
        let (_, raw) = self.members.iter().rev().find(|(k, _)| k == name)?;
        // Already checked to be valid JSON by `parse`.
        serde_json::from_str(raw.get()).ok()
    }

    /// Every claim, built, for mapping a verified token to a user.
    pub(crate) fn to_map(&self) -> Result<Map<String, Value>, Rejection> {
        let mut map = Map::new();
        for (k, raw) in &self.members {
            let v: Value = serde_json::from_str(raw.get()).map_err(|_| Rejection::Malformed)?;
            map.insert(k.clone().into_owned(), v);
        }
        Ok(map)
    }
}

impl<'de> Deserialize<'de> for Claims<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Claims<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of claims")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Claims<'de>, A::Error> {
                let mut members = Vec::with_capacity(m.size_hint().unwrap_or(16));
                while let Some(k) = m.next_key::<Key<'de>>()? {
                    members.push((k.0, m.next_value::<&'de RawValue>()?));
                }
                Ok(Claims { members })
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

/// A member name, borrowed from the payload unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a claim name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// A NumericDate claim: absent is `Ok(None)`; present but not a number is an
/// error (treating it as absent would skip the check: CVE-2026-25537).
pub(crate) fn numeric_date(
    claims: &Claims<'_>,
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
pub(crate) fn audiences(claims: &Claims<'_>) -> Result<Vec<String>, Rejection> {
    match claims.get("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
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
        let claims = Claims::parse(&jwt.payload).unwrap();
        assert_eq!(claims.get("iss"), Some(json!("x")));
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
            // The claims are read after the split, by `Claims::parse`.
            let got = match split(&t) {
                Err(r) => r,
                Ok(jwt) => Claims::parse(&jwt.payload).map(|_| ()).unwrap_err(),
            };
            assert_eq!(got, want, "{t:.60}");
        }
    }

    #[test]
    fn numeric_dates_must_be_numbers() {
        let json = json!({"a": 10, "b": 10.7, "c": "10", "d": null, "e": 1e300}).to_string();
        let c = &Claims::parse(json.as_bytes()).unwrap();
        assert_eq!(numeric_date(c, "a"), Ok(Some(10)));
        assert_eq!(numeric_date(c, "b"), Ok(Some(10)));
        assert_eq!(numeric_date(c, "missing"), Ok(None));
        assert_eq!(numeric_date(c, "c"), Err(Rejection::InvalidClaim("c")));
        assert_eq!(numeric_date(c, "d"), Err(Rejection::InvalidClaim("d")));
        assert_eq!(numeric_date(c, "e"), Ok(Some(i64::MAX)));
    }

    #[test]
    fn aud_is_a_string_or_a_list_of_strings() {
        let get = |v: Value| {
            let json = json!({"aud": v}).to_string();
            audiences(&Claims::parse(json.as_bytes()).unwrap())
        };
        assert_eq!(get(json!("k")), Ok(vec!["k".to_owned()]));
        assert_eq!(
            get(json!(["a", "b"])),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(get(json!(["a", 1])), Err(Rejection::InvalidClaim("aud")));
        assert_eq!(get(json!(7)), Err(Rejection::InvalidClaim("aud")));
    }

    #[test]
    fn claims_read_like_a_map() {
        let payload = br#"{"iss":"a","exp":1.5,"i\u0073s":"b","aud":["x","y"],"n":{"k":[1]}}"#;
        let c = Claims::parse(payload).expect("an object");
        // A name with escapes is the same name; the last of two wins, as in a Map.
        assert_eq!(c.get("iss"), Some(Value::String("b".into())));
        assert_eq!(numeric_date(&c, "exp"), Ok(Some(1)));
        assert_eq!(numeric_date(&c, "nbf"), Ok(None));
        assert_eq!(audiences(&c), Ok(vec!["x".to_owned(), "y".to_owned()]));
        let whole: Map<String, Value> = serde_json::from_slice(payload).expect("json");
        assert_eq!(c.to_map(), Ok(whole));
    }

    #[test]
    fn claims_must_be_one_json_object() {
        for bad in [
            &br#"["iss"]"#[..],
            b"\"x\"",
            b"{\"iss\":}",
            b"{\"a\":1} x",
            b"",
        ] {
            assert_eq!(
                Claims::parse(bad).map(|_| ()),
                Err(Rejection::Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            numeric_date(&Claims::parse(br#"{"exp":"1"}"#).expect("object"), "exp"),
            Err(Rejection::InvalidClaim("exp"))
        );
    }
}

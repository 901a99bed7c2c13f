//! The client-go exec credential protocol: what kubectl tells the plugin in
//! `KUBERNETES_EXEC_INFO`, and the `ExecCredential` the plugin prints.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

pub(crate) const API_V1: &str = "client.authentication.k8s.io/v1";
pub(crate) const API_V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// What kubectl passed in `KUBERNETES_EXEC_INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecInfo {
    /// The apiVersion to answer with (v1 unless kubectl asked for v1beta1).
    pub(crate) api_version: &'static str,
    /// `spec.interactive`: kubectl gave the plugin the terminal
    /// (`interactiveMode: IfAvailable` with a terminal, or `Always`).
    /// `None` when the variable is absent: not run by kubectl.
    pub(crate) interactive: Option<bool>,
}

impl ExecInfo {
    /// Parses the variable's value. An unreadable value is treated as absent
    /// rather than failing the login: the answer's shape is then v1, which
    /// every kubectl since 1.22 reads.
    pub(crate) fn parse(raw: Option<&str>) -> ExecInfo {
        let absent = ExecInfo {
            api_version: API_V1,
            interactive: None,
        };
        let Some(raw) = raw else {
            return absent;
        };
        let Ok(v) = serde_json::from_str::<Value>(raw) else {
            tracing::warn!("KUBERNETES_EXEC_INFO is not JSON; ignoring it");
            return absent;
        };
        let api_version = match v["apiVersion"].as_str() {
            Some(API_V1BETA1) => API_V1BETA1,
            _ => API_V1,
        };
        ExecInfo {
            api_version,
            interactive: Some(v["spec"]["interactive"].as_bool().unwrap_or(false)),
        }
    }
}

/// The `ExecCredential` kubectl reads from the plugin's stdout.
pub(crate) fn exec_credential(api_version: &str, token: &str, expiry: u64) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "status": {
            "token": token,
            "expirationTimestamp": rfc3339(expiry),
        }
    })
}

/// `2026-11-23T13:47:06Z`: the RFC 3339 form client-go parses.
pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The claims of a JWT, read without checking the signature: the plugin
/// only needs `exp` to know when to renew; the webhook does the verifying.
pub fn unverified_claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A JWT's `exp` (seconds since the epoch), if it has a numeric one.
pub fn jwt_exp(token: &str) -> Option<u64> {
    let claims = unverified_claims(token)?;
    match &claims["exp"] {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &Value) -> String {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            b(br#"{"alg":"RS256"}"#),
            b(claims.to_string().as_bytes()),
            b(b"sig")
        )
    }

    #[test]
    fn exp_is_read_from_the_payload() {
        assert_eq!(
            jwt_exp(&jwt(&json!({"exp": 1_800_000_000}))),
            Some(1_800_000_000)
        );
        assert_eq!(jwt_exp(&jwt(&json!({"exp": 1.8e9}))), Some(1_800_000_000));
        assert_eq!(jwt_exp(&jwt(&json!({"exp": "1800000000"}))), None);
        assert_eq!(jwt_exp(&jwt(&json!({"sub": "x"}))), None);
        assert_eq!(jwt_exp("not-a-jwt"), None);
        assert_eq!(jwt_exp("a.b.c.d"), None);
        assert_eq!(jwt_exp("a.!!!.c"), None);
    }

    #[test]
    fn credential_has_the_client_go_shape() {
        let c = exec_credential(API_V1, "tok", 1_795_000_000);
        assert_eq!(
            c,
            json!({
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {"token": "tok", "expirationTimestamp": "2026-11-18T11:06:40Z"}
            })
        );
    }

    #[test]
    fn exec_info_says_interactive_and_version() {
        assert_eq!(ExecInfo::parse(None).interactive, None);
        let i = ExecInfo::parse(Some(
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":true}}"#,
        ));
        assert_eq!(i.interactive, Some(true));
        assert_eq!(i.api_version, API_V1);
        let i = ExecInfo::parse(Some(
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{}}"#,
        ));
        assert_eq!(i.interactive, Some(false));
        assert_eq!(i.api_version, API_V1BETA1);
        assert_eq!(ExecInfo::parse(Some("{nope")).api_version, API_V1);
    }
}

//! EFA / XCO's auth service, with its hyphenated field names:
//!
//! - `POST /v1/auth/token/access-token` `{username, password}`
//! - `POST /v1/auth/token/client-access-token` `{username, password, clientId}`
//!   (an XCO client token: no refresh token)
//! - `POST /v1/auth/token/refresh` `{"grant-type": "refresh_token", "refresh-token": ...}`
//!
//! Answers: `access-token`, `token-type` (Bearer), `refresh-token`, `message`.
//! Errors: `{code, message}`.

use serde::Deserialize;
use serde_json::json;

use super::error::{LoginError, Service};
use super::exec::jwt_exp;
use super::http::{Http, Reply};
use super::password::Secret;
use super::{Issued, Target, cache::Entry, service_message};

const ACCESS_TOKEN_PATH: &str = "/v1/auth/token/access-token";
const CLIENT_ACCESS_TOKEN_PATH: &str = "/v1/auth/token/client-access-token";
const REFRESH_PATH: &str = "/v1/auth/token/refresh";

/// EFA's documented default token lifetime, for a token whose `exp` cannot
/// be read.
const DEFAULT_LIFETIME_SECONDS: u64 = 3600;

#[derive(Deserialize)]
struct EfaTokens {
    #[serde(rename = "access-token")]
    access_token: Option<String>,
    #[serde(rename = "token-type")]
    token_type: Option<String>,
    #[serde(rename = "refresh-token")]
    refresh_token: Option<String>,
    message: Option<String>,
}

pub(crate) async fn login(
    http: &Http,
    target: &Target,
    password: &Secret,
    now: u64,
) -> Result<Issued, LoginError> {
    let (path, body) = match target.client_id() {
        None => (
            ACCESS_TOKEN_PATH,
            json!({"username": target.username(), "password": password.expose()}),
        ),
        Some(client_id) => (
            CLIENT_ACCESS_TOKEN_PATH,
            json!({
                "username": target.username(),
                "password": password.expose(),
                "clientId": client_id,
            }),
        ),
    };
    let url = target.endpoint().join(path);
    let reply = http.post_json(Service::Efa, &url, &body, &[]).await?;
    drop(body);
    if matches!(reply.status, 401 | 403) {
        let client = target
            .client_id()
            .map(|c| format!(" and that client id {c} is registered (--client-id)"))
            .unwrap_or_default();
        return Err(LoginError::WrongPassword {
            service: Service::Efa,
            url,
            user: target.username().to_owned(),
            hint: format!(
                "check the user name and password{client}{}",
                service_message(&reply)
                    .strip_prefix(": ")
                    .map(|m| format!("; EFA says: {m}"))
                    .unwrap_or_default()
            ),
        });
    }
    tokens(&url, &reply, now)
}

pub(crate) async fn refresh(
    http: &Http,
    target: &Target,
    old: &Entry,
    now: u64,
) -> Result<Issued, LoginError> {
    let Some(refresh_token) = &old.refresh_token else {
        return Err(LoginError::Usage(
            "the cache holds no refresh token".to_owned(),
        ));
    };
    let url = target.endpoint().join(REFRESH_PATH);
    let body = json!({"grant-type": "refresh_token", "refresh-token": refresh_token});
    let reply = http.post_json(Service::Efa, &url, &body, &[]).await?;
    tokens(&url, &reply, now)
}

fn tokens(url: &str, reply: &Reply, now: u64) -> Result<Issued, LoginError> {
    if !(200..300).contains(&reply.status) {
        let hint = match reply.status {
            404 => "no EFA auth service at this path: --endpoint should be https://<efa-host>",
            s if s >= 500 => "the EFA auth service is failing: try again later",
            _ => "check --endpoint and --client-id",
        };
        return Err(LoginError::Http {
            service: Service::Efa,
            url: url.to_owned(),
            status: reply.status,
            detail: service_message(reply),
            hint: hint.to_owned(),
        });
    }
    let bad = |why: String| LoginError::BadResponse {
        service: Service::Efa,
        url: url.to_owned(),
        why,
    };
    let t: EfaTokens = serde_json::from_slice(&reply.body)
        .map_err(|e| bad(format!("not a token answer ({e}): {}", reply.snippet())))?;
    let token = t
        .access_token
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("no access-token in the answer".to_owned()))?;
    if let Some(kind) = t.token_type.as_deref()
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(bad(format!("token-type is {kind:?}, not Bearer")));
    }
    let expiry = jwt_exp(&token).unwrap_or_else(|| {
        tracing::debug!("the access-token has no readable exp; assuming EFA's default 1 h");
        now.saturating_add(DEFAULT_LIFETIME_SECONDS)
    });
    Ok(Issued {
        token,
        expiry,
        refresh_token: t.refresh_token.filter(|s| !s.is_empty()),
        dex_client_secret: None,
        notice: t
            .message
            .filter(|m| !m.trim().is_empty())
            .map(|m| format!("EFA at {url} says: {m}")),
    })
}

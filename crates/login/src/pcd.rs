//! PCD-K (Platform9): Keystone → resmgr → Dex, as the PCD-K API documents it.
//!
//! 1. `POST /keystone/v3/auth/tokens` (password method); the token is the
//!    `X-Subject-Token` header of the 201 answer.
//! 2. `GET /resmgr/v2/dexclients` with `x-auth-token`: a map of Dex client
//!    id → secret; we need `kubernetes`.
//! 3. `POST /dex/token` (form): `grant_type=password`, `client_id=kubernetes`,
//!    the secret, the user's name and password,
//!    `scope=openid offline_access groups email profile`, `connector_id=default`.
//!    The `id_token` is the bearer token; `offline_access` brings a refresh
//!    token, used later with `grant_type=refresh_token`.

use serde::Deserialize;
use serde_json::json;

use super::error::{LoginError, Service};
use super::exec::jwt_exp;
use super::http::{Http, Reply};
use super::password::Secret;
use super::{Issued, Target, cache::Entry, service_message};

pub const DEX_CLIENT_ID: &str = "kubernetes";
pub const DEX_SCOPE: &str = "openid offline_access groups email profile";
pub const DEX_CONNECTOR: &str = "default";

const KEYSTONE_PATH: &str = "/keystone/v3/auth/tokens";
const DEXCLIENTS_PATH: &str = "/resmgr/v2/dexclients";
const DEX_TOKEN_PATH: &str = "/dex/token";

pub(crate) async fn login(
    http: &Http,
    target: &Target,
    password: &Secret,
    now: u64,
) -> Result<Issued, LoginError> {
    let keystone_token = keystone_token(http, target, password).await?;
    let client_secret = dex_client_secret(http, target, &keystone_token).await?;
    drop(keystone_token);
    let url = target.endpoint().join(DEX_TOKEN_PATH);
    let reply = http
        .post_form(
            Service::Dex,
            &url,
            &[
                ("grant_type", "password"),
                ("client_id", DEX_CLIENT_ID),
                ("client_secret", client_secret.expose()),
                ("username", target.username()),
                ("password", password.expose()),
                ("scope", DEX_SCOPE),
                ("connector_id", DEX_CONNECTOR),
            ],
        )
        .await?;
    let mut issued = dex_tokens(&url, "password", &reply, now)?;
    issued.dex_client_secret = Some(client_secret.expose().to_owned());
    Ok(issued)
}

pub(crate) async fn refresh(
    http: &Http,
    target: &Target,
    old: &Entry,
    now: u64,
) -> Result<Issued, LoginError> {
    let url = target.endpoint().join(DEX_TOKEN_PATH);
    let (Some(refresh_token), Some(secret)) = (&old.refresh_token, &old.dex_client_secret) else {
        return Err(LoginError::Usage(
            "the cache holds no refresh token or client secret".to_owned(),
        ));
    };
    // No scope: Dex then grants the scopes of the original login.
    let reply = http
        .post_form(
            Service::Dex,
            &url,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", DEX_CLIENT_ID),
                ("client_secret", secret),
                ("refresh_token", refresh_token),
            ],
        )
        .await?;
    dex_tokens(&url, "refresh_token", &reply, now)
}

async fn keystone_token(
    http: &Http,
    target: &Target,
    password: &Secret,
) -> Result<Secret, LoginError> {
    let Target::Pcd {
        endpoint,
        username,
        domain,
        project,
    } = target
    else {
        return Err(LoginError::Usage("not a PCD-K target".to_owned()));
    };
    let domain_ref = match domain {
        Some(name) => json!({ "name": name }),
        None => json!({ "id": "default" }),
    };
    let mut body = json!({
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": username,
                        "domain": domain_ref,
                        "password": password.expose(),
                    }
                }
            }
        }
    });
    if let Some(project) = project {
        body["auth"]["scope"] = json!({
            "project": { "name": project, "domain": domain_ref }
        });
    }
    let url = endpoint.join(KEYSTONE_PATH);
    let reply = http.post_json(Service::Keystone, &url, &body, &[]).await?;
    drop(body);
    match reply.status {
        200 | 201 => {}
        401 => {
            let domain_text = domain
                .as_deref()
                .map(|d| format!("domain {d}"))
                .unwrap_or_else(|| "the default domain".to_owned());
            let project_text = project
                .as_deref()
                .map(|p| format!(", project {p}"))
                .unwrap_or_default();
            return Err(LoginError::WrongPassword {
                service: Service::Keystone,
                url,
                user: username.clone(),
                hint: format!(
                    "check the user name and password, and that the user is in {domain_text}\
                     {project_text} (--domain, --project){}",
                    service_message(&reply)
                        .strip_prefix(": ")
                        .map(|m| format!("; Keystone says: {m}"))
                        .unwrap_or_default()
                ),
            });
        }
        status => {
            return Err(LoginError::Http {
                service: Service::Keystone,
                url,
                status,
                detail: service_message(&reply),
                hint: keystone_hint(status),
            });
        }
    }
    let token = reply
        .headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| LoginError::BadResponse {
            service: Service::Keystone,
            url: url.clone(),
            why: format!(
                "HTTP {} without an X-Subject-Token header: is --endpoint a PCD management plane?",
                reply.status
            ),
        })?;
    Ok(Secret::new(token))
}

fn keystone_hint(status: u16) -> String {
    match status {
        404 => "no Keystone at this path: --endpoint should be the PCD management plane, \
                https://<du-fqdn>"
            .to_owned(),
        400 => "Keystone did not accept the request: check --domain and --project".to_owned(),
        403 => "Keystone refused the user: is the account disabled or locked?".to_owned(),
        s if s >= 500 => {
            "Keystone is failing: try again later, or tell your PCD administrator".to_owned()
        }
        _ => "check --endpoint".to_owned(),
    }
}

async fn dex_client_secret(
    http: &Http,
    target: &Target,
    keystone_token: &Secret,
) -> Result<Secret, LoginError> {
    let url = target.endpoint().join(DEXCLIENTS_PATH);
    let reply = http
        .get(
            Service::Resmgr,
            &url,
            &[("x-auth-token", keystone_token.expose())],
        )
        .await?;
    if reply.status != 200 {
        let hint = match reply.status {
            401 | 403 => {
                let scoped = matches!(
                    target,
                    Target::Pcd {
                        project: Some(_),
                        ..
                    }
                );
                if scoped {
                    "resmgr refused the Keystone token: does the user have a role in --project?"
                        .to_owned()
                } else {
                    "resmgr refused the Keystone token: it may need a project-scoped token, \
                     pass --project <a project you have a role in>"
                        .to_owned()
                }
            }
            404 => "no resmgr at this path: is --endpoint a PCD-K management plane?".to_owned(),
            s if s >= 500 => "resmgr is failing: try again later".to_owned(),
            _ => "check --endpoint".to_owned(),
        };
        return Err(LoginError::Http {
            service: Service::Resmgr,
            url,
            status: reply.status,
            detail: service_message(&reply),
            hint,
        });
    }
    let clients = reply
        .json()
        .and_then(|v| v.as_object().cloned())
        .ok_or_else(|| LoginError::BadResponse {
            service: Service::Resmgr,
            url: url.clone(),
            why: format!(
                "dexclients is not a JSON object of client id to secret: {}",
                reply.snippet()
            ),
        })?;
    match clients.get(DEX_CLIENT_ID).and_then(|v| v.as_str()) {
        Some(secret) if !secret.is_empty() => Ok(Secret::new(secret)),
        _ => {
            let mut names: Vec<&str> = clients.keys().map(String::as_str).collect();
            names.sort_unstable();
            let listed = if names.is_empty() {
                "it lists none".to_owned()
            } else {
                format!("it lists: {}", names.join(", "))
            };
            Err(LoginError::NoKubernetesClient { url, listed })
        }
    }
}

#[derive(Deserialize)]
struct DexTokenResponse {
    id_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

fn dex_tokens(
    url: &str,
    grant: &'static str,
    reply: &Reply,
    now: u64,
) -> Result<Issued, LoginError> {
    if reply.status != 200 {
        if let Ok(e) = serde_json::from_slice::<OAuthError>(&reply.body) {
            return Err(LoginError::DexRefused {
                url: url.to_owned(),
                grant,
                hint: dex_hint(grant, &e.error),
                error: e.error,
                description: e
                    .error_description
                    .filter(|d| !d.is_empty())
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default(),
            });
        }
        return Err(LoginError::Http {
            service: Service::Dex,
            url: url.to_owned(),
            status: reply.status,
            detail: service_message(reply),
            hint: if reply.status == 404 {
                "no Dex at this path: is PCD-K's Dex enabled on this region?".to_owned()
            } else {
                "Dex is failing: try again later, or tell your PCD administrator".to_owned()
            },
        });
    }
    let bad = |why: String| LoginError::BadResponse {
        service: Service::Dex,
        url: url.to_owned(),
        why,
    };
    let tokens: DexTokenResponse = serde_json::from_slice(&reply.body)
        .map_err(|e| bad(format!("not a token response ({e}): {}", reply.snippet())))?;
    let id_token = tokens
        .id_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("no id_token (was the openid scope dropped?)".to_owned()))?;
    let expiry = jwt_exp(&id_token)
        .or_else(|| tokens.expires_in.map(|s| now.saturating_add(s)))
        .ok_or_else(|| bad("the id_token has no exp and the answer no expires_in".to_owned()))?;
    Ok(Issued {
        token: id_token,
        expiry,
        refresh_token: tokens.refresh_token.filter(|t| !t.is_empty()),
        dex_client_secret: None,
        notice: None,
    })
}

fn dex_hint(grant: &str, error: &str) -> String {
    match (grant, error) {
        ("password", "access_denied" | "invalid_grant") => {
            "Keystone accepted this user name and password, but Dex's Keystone connector did not: \
             ask your PCD administrator to check Dex (connector_id=default)"
                .to_owned()
        }
        (_, "invalid_client" | "unauthorized_client") => {
            "Dex does not accept the secret resmgr lists for client `kubernetes`: tell your PCD \
             administrator the two disagree"
                .to_owned()
        }
        (_, "unsupported_grant_type") => format!(
            "this Dex does not allow the {grant} grant for client `kubernetes`: tell your PCD \
             administrator"
        ),
        (_, "invalid_scope") => {
            format!("Dex refused the scopes {DEX_SCOPE:?}: tell your PCD administrator")
        }
        _ => "tell your PCD administrator what Dex said".to_owned(),
    }
}

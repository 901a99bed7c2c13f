//! PCD-K (Platform9): Keystone → resmgr → Dex, as the PCD-K API documents it.
//!
//! 1. `POST /keystone/v3/auth/tokens` (password method); the token is the
//!    `X-Subject-Token` header of the 201 answer.
//! 2. `GET /resmgr/v2/dexclients` with `x-auth-token`: a map of Dex client
//!    id → secret; we need `kubernetes`.
//! 3. Dex's password grant with that secret (`dex`): the `id_token` is the
//!    bearer token; the refresh token that comes with it renews it later
//!    (Dex's refresh grant, with the secret kept in the cache).

use serde_json::json;

use super::cache::Entry;
use super::dex;
use super::error::{LoginError, Service};
use super::http::Http;
use super::password::Secret;
use super::{Issued, Target, service_message};

const KEYSTONE_PATH: &str = "/keystone/v3/auth/tokens";
const DEXCLIENTS_PATH: &str = "/resmgr/v2/dexclients";

pub(crate) async fn login(
    http: &Http,
    target: &Target,
    password: &Secret,
    now: u64,
) -> Result<Issued, LoginError> {
    let keystone_token = keystone_token(http, target, password).await?;
    let client_secret = dex_client_secret(http, target, &keystone_token).await?;
    drop(keystone_token);
    let mut issued = dex::password_grant(
        http,
        target.endpoint(),
        &client_secret,
        target.username(),
        password,
        now,
    )
    .await?;
    issued.dex_client_secret = Some(client_secret.expose().to_owned());
    Ok(issued)
}

pub(crate) async fn refresh(
    http: &Http,
    target: &Target,
    old: &Entry,
    now: u64,
) -> Result<Issued, LoginError> {
    let (Some(refresh_token), Some(secret)) = (&old.refresh_token, &old.dex_client_secret) else {
        return Err(LoginError::Usage(
            "the cache holds no refresh token or client secret".to_owned(),
        ));
    };
    dex::refresh_grant(http, target.endpoint(), secret, refresh_token, now).await
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
    match clients.get(dex::CLIENT_ID).and_then(|v| v.as_str()) {
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

//! Dex's token endpoint, `POST /dex/token`, through `openidconnect`: the
//! password grant that ends a PCD-K login and the refresh grant that renews
//! it. openidconnect builds the requests and reads the answers (an OpenID
//! Connect token response, or an OAuth 2.0 error, RFC 6749 §5.2); they travel
//! over the plugin's own [`Http`] (its timeouts, CA bundle, https only, no
//! redirects, bounded answers, error wording), adapted to openidconnect's
//! [`AsyncHttpClient`].
//!
//! - password: `grant_type=password`, the user's name and password,
//!   `scope=openid offline_access groups email profile`, `connector_id=default`
//!   (Dex's Keystone connector). `offline_access` brings a refresh token.
//! - refresh: `grant_type=refresh_token` and the refresh token, no scope: Dex
//!   then grants the scopes of the original login. Dex rotates refresh
//!   tokens, so the answer's new one replaces the old in the cache.
//!
//! Both authenticate as client `kubernetes`, with `client_id` and
//! `client_secret` in the form body.

use std::future::Future;
use std::pin::Pin;

use openidconnect::core::{CoreClient, CoreErrorResponseType, CoreTokenResponse};
use openidconnect::{
    AsyncHttpClient, AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, IssuerUrl, JsonWebKeySet, OAuth2TokenResponse, PasswordTokenRequest,
    RefreshToken, RequestTokenError, ResourceOwnerPassword, ResourceOwnerUsername, Scope,
    StandardErrorResponse, TokenResponse, TokenUrl,
};

use super::error::{LoginError, Service};
use super::exec::jwt_exp;
use super::http::{Http, Reply, snippet};
use super::password::Secret;
use super::{Endpoint, Issued, service_message};

/// The Dex client PCD-K registers for Kubernetes; resmgr lists its secret.
pub(crate) const CLIENT_ID: &str = "kubernetes";
const SCOPE: &str = "openid offline_access groups email profile";
const CONNECTOR: &str = "default";

/// Dex's issuer and token endpoint under the PCD management plane.
const ISSUER_PATH: &str = "/dex";
const TOKEN_PATH: &str = "/dex/token";

/// The grants, as `grant_type` names them (and error messages with it).
const PASSWORD: &str = "password";
const REFRESH: &str = "refresh_token";

type ErrorResponse = StandardErrorResponse<CoreErrorResponseType>;

/// A client with only a token endpoint: the plugin neither redirects a
/// browser nor verifies the id_token (the webhook does).
type DexClient = CoreClient<
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

/// The password grant: Dex's id_token (and refresh token) for the user.
pub(crate) async fn password_grant(
    http: &Http,
    endpoint: &Endpoint,
    client_secret: &Secret,
    username: &str,
    password: &Secret,
    now: u64,
) -> Result<Issued, LoginError> {
    let (client, url) = client(endpoint, client_secret.expose())?;
    let username = ResourceOwnerUsername::new(username.to_owned());
    let password = ResourceOwnerPassword::new(password.expose().to_owned());
    let answer = password_request(&client, &username, &password)
        .request_async(&Transport { http, url: &url })
        .await;
    issued(&url, PASSWORD, answer, now)
}

/// The refresh grant: a new id_token for the refresh token of a login.
pub(crate) async fn refresh_grant(
    http: &Http,
    endpoint: &Endpoint,
    client_secret: &str,
    refresh_token: &str,
    now: u64,
) -> Result<Issued, LoginError> {
    let (client, url) = client(endpoint, client_secret)?;
    let refresh_token = RefreshToken::new(refresh_token.to_owned());
    let answer = client
        .exchange_refresh_token(&refresh_token)
        .request_async(&Transport { http, url: &url })
        .await;
    issued(&url, REFRESH, answer, now)
}

/// Client `kubernetes` of the Dex under `endpoint`, and its token endpoint.
fn client(endpoint: &Endpoint, client_secret: &str) -> Result<(DexClient, String), LoginError> {
    let url = endpoint.join(TOKEN_PATH);
    let bad_url = |e: openidconnect::url::ParseError| {
        LoginError::Usage(format!("--endpoint {}: {e}", endpoint.as_str()))
    };
    let issuer = IssuerUrl::new(endpoint.join(ISSUER_PATH)).map_err(bad_url)?;
    let token_url = TokenUrl::new(url.clone()).map_err(bad_url)?;
    let client = CoreClient::new(
        ClientId::new(CLIENT_ID.to_owned()),
        issuer,
        JsonWebKeySet::default(),
    )
    .set_client_secret(ClientSecret::new(client_secret.to_owned()))
    .set_auth_type(AuthType::RequestBody)
    .set_token_uri(token_url);
    Ok((client, url))
}

fn password_request<'a>(
    client: &'a DexClient,
    username: &'a ResourceOwnerUsername,
    password: &'a ResourceOwnerPassword,
) -> PasswordTokenRequest<'a, ErrorResponse, CoreTokenResponse> {
    client
        .exchange_password(username, password)
        .add_scopes(SCOPE.split(' ').map(|s| Scope::new(s.to_owned())))
        .add_extra_param("connector_id", CONNECTOR)
}

/// What the grant returned, or why it did not.
fn issued(
    url: &str,
    grant: &'static str,
    answer: Result<CoreTokenResponse, RequestTokenError<LoginError, ErrorResponse>>,
    now: u64,
) -> Result<Issued, LoginError> {
    let bad = |why: String| LoginError::BadResponse {
        service: Service::Dex,
        url: url.to_owned(),
        why,
    };
    let tokens = answer.map_err(|e| match e {
        RequestTokenError::Request(e) => e,
        RequestTokenError::ServerResponse(e) => LoginError::DexRefused {
            url: url.to_owned(),
            grant,
            hint: hint(grant, e.error().as_ref()),
            error: e.error().to_string(),
            description: e
                .error_description()
                .filter(|d| !d.is_empty())
                .map(|d| format!(": {d}"))
                .unwrap_or_default(),
        },
        // A JSON answer that is not a token response is not quoted: it
        // may hold tokens.
        RequestTokenError::Parse(e, body) => {
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(_) => bad(format!("not a token response ({e})")),
                Err(_) => bad(format!("not a token response ({e}): {}", snippet(&body))),
            }
        }
        RequestTokenError::Other(why) => bad(why),
    })?;
    // The token as Dex sent it: openidconnect keeps the signed part verbatim
    // and writes the signature back in the same unpadded base64url.
    let id_token = tokens
        .id_token()
        .map(ToString::to_string)
        .ok_or_else(|| bad("no id_token (was the openid scope dropped?)".to_owned()))?;
    let expiry = jwt_exp(&id_token)
        .or_else(|| tokens.expires_in().map(|d| now.saturating_add(d.as_secs())))
        .ok_or_else(|| bad("the id_token has no exp and the answer no expires_in".to_owned()))?;
    Ok(Issued {
        token: id_token,
        expiry,
        refresh_token: tokens
            .refresh_token()
            .map(|t| t.secret().to_owned())
            .filter(|t| !t.is_empty()),
        dex_client_secret: None,
        notice: None,
    })
}

/// openidconnect's HTTP client: the token request goes out through [`Http`].
/// An answer other than 200 that is not an OAuth 2.0 error (a proxy's 502, a
/// 404 page) is reported here, with its status, which openidconnect's error
/// type has no room for; OAuth 2.0 errors go on to openidconnect.
struct Transport<'a> {
    http: &'a Http,
    /// The token endpoint, as error messages name it.
    url: &'a str,
}

impl<'c> AsyncHttpClient<'c> for Transport<'_> {
    type Error = LoginError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, LoginError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let reply = self.http.send_http(Service::Dex, self.url, request).await?;
            if let Some(e) = not_an_oauth_error(self.url, &reply) {
                return Err(e);
            }
            reply.into_http(Service::Dex, self.url)
        })
    }
}

/// An answer other than 200 that is not an OAuth 2.0 error, as an error
/// naming its status.
fn not_an_oauth_error(url: &str, reply: &Reply) -> Option<LoginError> {
    if reply.status == 200 || serde_json::from_slice::<ErrorResponse>(&reply.body).is_ok() {
        return None;
    }
    Some(LoginError::Http {
        service: Service::Dex,
        url: url.to_owned(),
        status: reply.status,
        detail: service_message(reply),
        hint: if reply.status == 404 {
            "no Dex at this path: is PCD-K's Dex enabled on this region?".to_owned()
        } else {
            "Dex is failing: try again later, or tell your PCD administrator".to_owned()
        },
    })
}

fn hint(grant: &str, error: &str) -> String {
    match (grant, error) {
        (PASSWORD, "access_denied" | "invalid_grant") => {
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
            format!("Dex refused the scopes {SCOPE:?}: tell your PCD administrator")
        }
        _ => "tell your PCD administrator what Dex said".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use openidconnect::{http, url};
    use serde_json::{Value, json};

    use super::*;

    const URL: &str = "https://du.example.com/dex/token";

    fn id_token(exp: u64) -> String {
        let b = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.{}",
            b(&json!({"alg": "RS256", "kid": "k1"})),
            b(&json!({
                "iss": "https://du.example.com/dex", "sub": "CgNqYW5l", "aud": "kubernetes",
                "exp": exp, "iat": exp - 86_400, "email": "jane@example.com",
                "groups": ["admins"],
            })),
            URL_SAFE_NO_PAD.encode([7u8; 256])
        )
    }

    fn answer(status: u16, content_type: &str, body: &str) -> HttpResponse {
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body.as_bytes().to_vec())
            .unwrap()
    }

    /// Runs the password grant against `reply`; returns the form sent.
    async fn password_grant_answered(
        reply: HttpResponse,
    ) -> (Vec<(String, String)>, Result<Issued, LoginError>) {
        let (client, url) = client(&Endpoint::parse("du.example.com").unwrap(), "s3cret").unwrap();
        assert_eq!(url, URL);
        let sent = Mutex::new(None);
        let fake = |req: HttpRequest| {
            *sent.lock().unwrap() = Some(req);
            let reply = reply.clone();
            async move { Ok::<_, LoginError>(reply) }
        };
        let username = ResourceOwnerUsername::new("jane".into());
        let password = ResourceOwnerPassword::new("hunter2 &=".into());
        let answer = password_request(&client, &username, &password)
            .request_async(&fake)
            .await;
        let req = sent.lock().unwrap().take().unwrap();
        assert_eq!(req.uri(), URL);
        assert_eq!(
            req.headers()[http::header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert!(req.headers().get(http::header::AUTHORIZATION).is_none());
        let mut form: Vec<(String, String)> = url::form_urlencoded::parse(req.body())
            .into_owned()
            .collect();
        form.sort();
        (form, issued(URL, PASSWORD, answer, 1_000))
    }

    #[tokio::test]
    async fn the_password_grant_sends_dexs_fields_and_hands_out_the_id_token_as_sent() {
        let token = id_token(1_800_000_000);
        let body = json!({
            "access_token": "at", "token_type": "bearer", "expires_in": 86_399,
            "refresh_token": "ChlyZWZyZXNo", "id_token": token,
        });
        let (form, issued) =
            password_grant_answered(answer(200, "application/json", &body.to_string())).await;
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            form,
            [
                pair("client_id", "kubernetes"),
                pair("client_secret", "s3cret"),
                pair("connector_id", "default"),
                pair("grant_type", "password"),
                pair("password", "hunter2 &="),
                pair("scope", "openid offline_access groups email profile"),
                pair("username", "jane"),
            ]
        );
        let issued = issued.unwrap();
        assert_eq!(issued.token, token);
        assert_eq!(issued.expiry, 1_800_000_000);
        assert_eq!(issued.refresh_token.as_deref(), Some("ChlyZWZyZXNo"));
    }

    #[tokio::test]
    async fn a_refusal_names_dexs_error_and_what_to_do() {
        let body =
            r#"{"error":"access_denied","error_description":"Invalid username or password"}"#;
        let (_, issued) = password_grant_answered(answer(401, "application/json", body)).await;
        let e = issued.err().unwrap().to_string();
        assert!(
            e.starts_with(
                "Dex at https://du.example.com/dex/token refused the password grant: \
                 access_denied: Invalid username or password\n  Keystone accepted"
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_answer_that_is_no_token_response_is_reported_without_its_tokens() {
        // No id_token: the openid scope was dropped somewhere.
        let body = json!({"access_token": "at-secret", "token_type": "bearer"}).to_string();
        let (_, issued) = password_grant_answered(answer(200, "application/json", &body)).await;
        let e = issued.err().unwrap().to_string();
        assert!(e.contains("no id_token"), "{e}");
        // An id_token that is not a JWT: named, but tokens are not quoted.
        let body = json!({"access_token": "at-secret", "token_type": "bearer",
                          "refresh_token": "rt-secret", "id_token": "opaque"})
        .to_string();
        let (_, issued) = password_grant_answered(answer(200, "application/json", &body)).await;
        let e = issued.err().unwrap().to_string();
        assert!(
            e.contains("answered something this plugin cannot use: not a token response (Invalid JSON web token"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
        // Not JSON at all: quoted, it is what a proxy put there.
        let (_, issued) =
            password_grant_answered(answer(200, "application/json", "<html>oops</html>")).await;
        let e = issued.err().unwrap().to_string();
        assert!(e.contains("<html>oops</html>"), "{e}");
    }

    #[test]
    fn other_answers_than_oauth_errors_are_reported_with_their_status() {
        let reply = |status: u16, body: &str| Reply {
            status,
            headers: http::HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        };
        let e = not_an_oauth_error(URL, &reply(404, "404 page not found"))
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "Dex at https://du.example.com/dex/token answered HTTP 404: 404 page not found\n  \
             no Dex at this path: is PCD-K's Dex enabled on this region?"
        );
        let e = not_an_oauth_error(URL, &reply(502, ""))
            .unwrap()
            .to_string();
        assert!(e.contains("answered HTTP 502\n  Dex is failing"), "{e}");
        let refusal =
            r#"{"error":"invalid_request","error_description":"Refresh token is invalid"}"#;
        assert!(not_an_oauth_error(URL, &reply(400, refusal)).is_none());
        assert!(not_an_oauth_error(URL, &reply(200, "{}")).is_none());
    }
}

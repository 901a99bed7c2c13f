//! A loopback HTTPS stand-in of an OpenShift API server, as far as the
//! openshift-oauth issuer reads it: `OAuthAccessToken` objects
//! (oauth.openshift.io/v1, named as seed 004 says: `sha256~` + unpadded
//! base64url of the SHA-256 of the token), `User` and `Group` objects
//! (user.openshift.io/v1), in the shapes the real API serves, behind a
//! ServiceAccount bearer token. It records every request (method, path and
//! query, headers), can answer 503 ("down") or answer late on command, and
//! refuses verbs and resources the issuer has no business using, so a test
//! can assert what the webhook asked for and that no token text was in it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use kube_authn_webhook::cmd::demo::issuer::serve_loopback;
use kube_authn_webhook::pki::Ca;
use serde_json::{Value, json};

/// The webhook's ServiceAccount token, as the stand-in expects it.
pub const SA_TOKEN: &str = "openshift-api-standin-serviceaccount-token";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The object a token is stored as, worked out here independently of the
/// webhook's own code.
pub fn object_name(token: &str) -> String {
    let rest = token.strip_prefix("sha256~").expect("an OAuth token");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, rest.as_bytes());
    format!("sha256~{}", URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// A fresh token as the OAuth server makes them: 32 random bytes, base64url.
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    format!("sha256~{}", URL_SAFE_NO_PAD.encode(b))
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// An `OAuthAccessToken` to store, with what `oc login` gets by default.
#[derive(Debug, Clone)]
pub struct OAuthToken {
    pub user_name: String,
    pub user_uid: String,
    /// `creationTimestamp`, Unix seconds.
    pub created: u64,
    pub expires_in: i64,
    pub inactivity_timeout_seconds: Option<i64>,
    pub scopes: Vec<String>,
    /// `deletionTimestamp` set (a finalizer holds the object).
    pub being_deleted: bool,
}

impl OAuthToken {
    /// A `user:full` token of `user`, created at `created`, for 24 h.
    pub fn new(user: &User, created: u64) -> OAuthToken {
        OAuthToken {
            user_name: user.name.clone(),
            user_uid: user.uid.clone(),
            created,
            expires_in: 86_400,
            inactivity_timeout_seconds: None,
            scopes: vec!["user:full".to_owned()],
            being_deleted: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: String,
    /// The User object's own (deprecated) `groups`.
    pub groups: Vec<String>,
}

impl User {
    pub fn new(name: &str) -> User {
        let mut b = [0u8; 16];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        let h = hex::encode(b);
        User {
            name: name.to_owned(),
            uid: format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            ),
            groups: Vec::new(),
        }
    }
}

#[derive(Default)]
struct State {
    tokens: Mutex<BTreeMap<String, Value>>,
    users: Mutex<BTreeMap<String, Value>>,
    groups: Mutex<BTreeMap<String, Value>>,
    requests: Mutex<Vec<String>>,
    problems: Mutex<Vec<String>>,
    down: AtomicBool,
    /// The OpenShift APIs not served: 404 with a plain-text body, as for
    /// any path the API server does not know.
    unserved: AtomicBool,
    delay_ms: AtomicU64,
}

pub struct OpenShiftApi {
    state: Arc<State>,
    _handle: ServerHandle,
    pub addr: SocketAddr,
}

impl OpenShiftApi {
    pub async fn start(ca: &Ca) -> OpenShiftApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let s = state.clone();
        let handle = serve_loopback(ca, listener, 2, move |cfg| {
            cfg.app_data(web::Data::from(s.clone()))
                .default_service(web::to(route));
        })
        .unwrap();
        OpenShiftApi {
            state,
            _handle: handle,
            addr,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A kubeconfig for the webhook: this server, trusting `ca`, with the
    /// ServiceAccount token.
    pub fn kubeconfig(&self, ca: &Ca) -> String {
        kubeconfig_for(&self.url(), ca)
    }

    pub fn add_user(&self, user: &User) {
        lock(&self.state.users).insert(
            user.name.clone(),
            json!({
                "kind": "User", "apiVersion": "user.openshift.io/v1",
                "metadata": {
                    "name": user.name, "uid": user.uid, "resourceVersion": "1001",
                    "creationTimestamp": "2026-01-05T09:00:00Z"
                },
                "fullName": user.name, "identities": [format!("htpasswd:{}", user.name)],
                "groups": if user.groups.is_empty() { Value::Null } else { json!(user.groups) }
            }),
        );
    }

    pub fn delete_user(&self, name: &str) {
        lock(&self.state.users).remove(name);
    }

    /// A group (`users: null` when `users` is empty, as the API serves it).
    pub fn add_group(&self, name: &str, users: &[&str]) {
        let users = if users.is_empty() {
            Value::Null
        } else {
            json!(users)
        };
        lock(&self.state.groups).insert(
            name.to_owned(),
            json!({
                "kind": "Group", "apiVersion": "user.openshift.io/v1",
                "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "2002",
                              "creationTimestamp": "2026-01-05T09:00:00Z"},
                "users": users
            }),
        );
    }

    /// Stores `token` as its `OAuthAccessToken` (the object carries only the
    /// hash, as the real one does).
    pub fn add_token(&self, token: &str, t: &OAuthToken) {
        let name = object_name(token);
        let mut metadata = json!({
            "name": name, "uid": "6c7d6d2f-1a8e-4c3f-9a51-3d7f5c2b9e10", "resourceVersion": "3003",
            "creationTimestamp": rfc3339(t.created)
        });
        if t.being_deleted {
            metadata["deletionTimestamp"] = json!(rfc3339(t.created + 1));
            metadata["finalizers"] = json!(["example.com/hold"]);
        }
        let mut obj = json!({
            "kind": "OAuthAccessToken", "apiVersion": "oauth.openshift.io/v1",
            "metadata": metadata,
            "clientName": "openshift-challenging-client",
            "expiresIn": t.expires_in,
            "scopes": t.scopes,
            "redirectURI": "https://oauth-openshift.apps.example.com/oauth/token/implicit",
            "userName": t.user_name,
            "userUID": t.user_uid,
            "authorizeToken": "sha256~0h9oGZ2mHnQGlqk2bqF7XhJ0Vb3qPoN8JxFvYb2m3Zk"
        });
        if let Some(i) = t.inactivity_timeout_seconds {
            obj["inactivityTimeoutSeconds"] = json!(i);
        }
        lock(&self.state.tokens).insert(name, obj);
    }

    /// `oc delete oauthaccesstoken <name>`.
    pub fn delete_token(&self, token: &str) {
        lock(&self.state.tokens).remove(&object_name(token));
    }

    /// Answer every request 503, or serve again.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Stop serving the OpenShift APIs (as a cluster without them), or serve
    /// them again.
    pub fn set_unserved(&self, unserved: bool) {
        self.state.unserved.store(unserved, Ordering::SeqCst);
    }

    /// Answer every request this late.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every request so far: `METHOD path?query`, then its headers.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// Requests that were not what the issuer should send.
    pub fn problems(&self) -> Vec<String> {
        lock(&self.state.problems).clone()
    }
}

/// A kubeconfig for an API server at `server` whose certificate `ca` signed.
pub fn kubeconfig_for(server: &str, ca: &Ca) -> String {
    format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: openshift
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: webhook
  user:
    token: {SA_TOKEN}
contexts:
- name: webhook
  context: {{cluster: openshift, user: webhook}}
current-context: webhook
"#,
        ca = STANDARD.encode(&ca.cert_pem)
    )
}

fn status(code: u16, reason: &str, message: String) -> HttpResponse {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    });
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap()).json(body)
}

/// The API server's answer for an object that does not exist: a Status
/// naming it (`resource` is e.g. `oauthaccesstokens.oauth.openshift.io`).
fn not_found(resource: &str, name: &str) -> HttpResponse {
    let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
    HttpResponse::NotFound().json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{resource} \"{name}\" not found"), "reason": "NotFound",
        "details": {"name": name, "group": group, "kind": kind}, "code": 404
    }))
}

fn query(req: &HttpRequest) -> BTreeMap<String, String> {
    reqwest::Url::parse(&format!("http://x{}", req.uri()))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

async fn route(req: HttpRequest, s: web::Data<State>) -> HttpResponse {
    let headers: Vec<String> = req
        .headers()
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
        .collect();
    lock(&s.requests).push(format!(
        "{} {}\n{}",
        req.method(),
        req.uri(),
        headers.join("\n")
    ));
    let delay = s.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if s.down.load(Ordering::SeqCst) {
        return status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request".to_owned(),
        );
    }
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(SA_TOKEN) {
        lock(&s.problems).push(format!("{}: no ServiceAccount token", req.uri()));
        return status(401, "Unauthorized", "Unauthorized".to_owned());
    }
    let forbidden = |why: String| {
        lock(&s.problems).push(why.clone());
        status(403, "Forbidden", why)
    };
    if req.method() != actix_web::http::Method::GET {
        return forbidden(format!(
            "{} {}: the webhook only reads",
            req.method(),
            req.uri()
        ));
    }
    let path = req.uri().path().to_owned();
    if s.unserved.load(Ordering::SeqCst) {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("404 page not found\n");
    }
    if let Some(name) = path.strip_prefix("/apis/oauth.openshift.io/v1/oauthaccesstokens/") {
        return match lock(&s.tokens).get(name) {
            Some(obj) => HttpResponse::Ok().json(obj),
            None => not_found("oauthaccesstokens.oauth.openshift.io", name),
        };
    }
    if let Some(name) = path.strip_prefix("/apis/user.openshift.io/v1/users/") {
        return match lock(&s.users).get(name) {
            Some(obj) => HttpResponse::Ok().json(obj),
            None => not_found("users.user.openshift.io", name),
        };
    }
    if path == "/apis/user.openshift.io/v1/groups" {
        // Paged as the API server pages (limit, continue).
        let q = query(&req);
        let groups: Vec<Value> = lock(&s.groups).values().cloned().collect();
        let start: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit: usize = q
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let end = start.saturating_add(limit).min(groups.len());
        let mut metadata = json!({"resourceVersion": "4004"});
        if end < groups.len() {
            metadata["continue"] = json!(end.to_string());
        }
        return HttpResponse::Ok().json(json!({
            "kind": "GroupList", "apiVersion": "user.openshift.io/v1",
            "metadata": metadata,
            "items": groups.get(start..end).unwrap_or_default()
        }));
    }
    forbidden(format!(
        "GET {}: not a resource the webhook reads",
        req.uri()
    ))
}

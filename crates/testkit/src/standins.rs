//! Loopback HTTPS stand-ins for the services `kube-authn-login`
//! talks to, shaped after the seed documents (000: PCD-K, 001: EFA). Each
//! counts its calls, checks the request shapes the documents describe, and
//! records every deviation in `problems()` (answering 400 as the real
//! service would), so a test can assert the plugin spoke the protocol.
//!
//! - `Pcd`: one PCD management plane (`https://<du>`), as in production:
//!   Keystone (`/keystone/v3/auth/tokens`), resmgr (`/resmgr/v2/dexclients`)
//!   and Dex (`/dex/token`, plus discovery and JWKS so our webhook can verify
//!   the id_tokens it issues).
//! - `Efa`: EFA's auth service (`/v1/auth/token/...`), hyphenated fields,
//!   HS256 access tokens.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{HttpRequest, HttpResponse, web};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kube_authn_common::clock::Clock;
use kube_authn_webhook::cmd::demo::apiserver_request;
use kube_authn_webhook::cmd::demo::issuer::{
    DevKey, dex_claims, discovery_document, jwks_document, serve_loopback,
};
use kube_authn_webhook::pki::Ca;
use kube_authn_webhook::wire::ApiVersion;
use serde_json::{Map, Value, json};

pub const PCD_USER: &str = "jane";
pub const PCD_EMAIL: &str = "jane@example.com";
pub const PCD_PASSWORD: &str = "pcd-Pa55word-never-logged";
pub const PCD_GROUPS: [&str; 2] = ["pcd-default-service-admin", "developers"];
pub const DEX_CLIENT_SECRET: &str = "dex-kubernetes-client-secret-0123456789";
pub const DEX_SCOPES: [&str; 5] = ["openid", "offline_access", "groups", "email", "profile"];

pub const EFA_USER: &str = "netadmin";
pub const EFA_PASSWORD: &str = "efa-Pa55word-never-logged";
pub const EFA_CLIENT_ID: &str = "xco-client-7";
pub const EFA_ROLES: [&str; 2] = ["FabricAdmin", "NetworkOperator"];
/// Shared with the webhook's `hmac_secret_file` in end-to-end tests.
pub const EFA_HMAC_SECRET: &str = "efa-test-hmac-secret-of-at-least-32-bytes!";
pub const EFA_MESSAGE: &str = "Certificates will expire soon, please renew";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_token(prefix: &str) -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    format!("{prefix}{}", hex::encode(b))
}

/// Protocol bookkeeping common to both stand-ins.
#[derive(Default)]
struct Record {
    /// Calls per route name.
    calls: Mutex<HashMap<&'static str, usize>>,
    problems: Mutex<Vec<String>>,
    /// Every request: route, headers and body, as text.
    seen: Mutex<Vec<String>>,
}

impl Record {
    fn call(&self, route: &'static str, req: &HttpRequest, body: &[u8]) {
        *lock(&self.calls).entry(route).or_default() += 1;
        let headers: Vec<String> = req
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect();
        lock(&self.seen).push(format!(
            "{route} {} {}\n{}\n\n{}",
            req.method(),
            req.uri(),
            headers.join("\n"),
            String::from_utf8_lossy(body)
        ));
    }

    fn count(&self, route: &str) -> usize {
        lock(&self.calls).get(route).copied().unwrap_or(0)
    }

    /// Records a deviation and returns the 400 the service would answer.
    fn problem(&self, route: &str, why: impl Into<String>) -> HttpResponse {
        let why = why.into();
        lock(&self.problems).push(format!("{route}: {why}"));
        HttpResponse::BadRequest().json(json!({"error": "invalid_request", "message": why}))
    }
}

fn content_type(req: &HttpRequest) -> String {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// `application/x-www-form-urlencoded` fields, decoded.
fn form_fields(body: &[u8]) -> HashMap<String, Vec<String>> {
    let text = String::from_utf8_lossy(body);
    let url = reqwest::Url::parse(&format!("http://form/?{text}")).unwrap();
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in url.query_pairs() {
        m.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    m
}

fn start_server(
    ca: &Ca,
    listener: TcpListener,
    app: impl Fn(&mut web::ServiceConfig) + Send + Sync + Clone + 'static,
) -> ServerHandle {
    serve_loopback(ca, listener, 2, app).unwrap()
}

// --- PCD-K ------------------------------------------------------------------

/// What Dex answers to a password grant instead of tokens.
#[derive(Clone)]
pub struct DexRefusal {
    pub status: u16,
    pub error: &'static str,
    pub description: &'static str,
}

struct PcdState {
    url: String,
    clock: Clock,
    key: DevKey,
    record: Record,
    dexclients: Mutex<Map<String, Value>>,
    keystone_tokens: Mutex<HashSet<String>>,
    /// Valid refresh tokens (Dex rotates them: each is good once).
    refresh_tokens: Mutex<HashSet<String>>,
    id_token_lifetime: AtomicU64,
    dex_delay_ms: AtomicU64,
    dex_refusal: Mutex<Option<DexRefusal>>,
    keystone_scopes: Mutex<Vec<Value>>,
}

pub struct Pcd {
    state: Arc<PcdState>,
    handle: ServerHandle,
}

/// Calls per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PcdCounts {
    pub keystone: usize,
    pub dexclients: usize,
    pub dex_password: usize,
    pub dex_refresh: usize,
}

impl Pcd {
    pub async fn start(ca: &Ca, clock: Clock) -> Pcd {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(PcdState {
            url: format!("https://{addr}"),
            clock,
            key: DevKey::generate(Algorithm::RS256).unwrap(),
            record: Record::default(),
            dexclients: Mutex::new(
                json!({"kubernetes": DEX_CLIENT_SECRET, "grafana": "grafana-secret"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            keystone_tokens: Mutex::default(),
            refresh_tokens: Mutex::default(),
            id_token_lifetime: AtomicU64::new(86_399),
            dex_delay_ms: AtomicU64::new(0),
            dex_refusal: Mutex::new(None),
            keystone_scopes: Mutex::default(),
        });
        let s = state.clone();
        let handle = start_server(ca, listener, move |cfg| {
            cfg.app_data(web::Data::from(s.clone()))
                .route("/keystone/v3/auth/tokens", web::post().to(keystone))
                .route("/resmgr/v2/dexclients", web::get().to(dexclients))
                .route("/dex/token", web::post().to(dex_token))
                .route(
                    "/dex/.well-known/openid-configuration",
                    web::get().to(dex_discovery),
                )
                .route("/dex/keys", web::get().to(dex_keys));
        });
        Pcd { state, handle }
    }

    /// The management plane, what `--endpoint` takes.
    pub fn url(&self) -> String {
        self.state.url.clone()
    }

    /// Dex's issuer, `<url>/dex`.
    pub fn issuer(&self) -> String {
        format!("{}/dex", self.state.url)
    }

    pub fn counts(&self) -> PcdCounts {
        let r = &self.state.record;
        PcdCounts {
            keystone: r.count("keystone"),
            dexclients: r.count("dexclients"),
            dex_password: r.count("dex-password"),
            dex_refresh: r.count("dex-refresh"),
        }
    }

    pub fn discovery_and_jwks_fetches(&self) -> usize {
        self.state.record.count("discovery") + self.state.record.count("jwks")
    }

    /// Protocol deviations seen so far.
    pub fn problems(&self) -> Vec<String> {
        lock(&self.state.record.problems).clone()
    }

    /// Every request seen, as text (headers and body).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state.record.seen).clone()
    }

    /// The `auth.scope` of each Keystone request (null when unscoped).
    pub fn keystone_scopes(&self) -> Vec<Value> {
        lock(&self.state.keystone_scopes).clone()
    }

    /// Dex waits this long before answering a password grant, so parallel
    /// logins overlap.
    pub fn set_dex_delay(&self, d: Duration) {
        self.state
            .dex_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_dexclients(&self, clients: Value) {
        *lock(&self.state.dexclients) = clients.as_object().unwrap().clone();
    }

    pub fn refuse_password_grant(&self, refusal: Option<DexRefusal>) {
        *lock(&self.state.dex_refusal) = refusal;
    }

    /// Forgets every refresh token (as a Dex restart with in-memory storage,
    /// or an admin revoking the session, does).
    pub fn revoke_refresh_tokens(&self) {
        lock(&self.state.refresh_tokens).clear();
    }

    pub fn refresh_token_is_valid(&self, t: &str) -> bool {
        lock(&self.state.refresh_tokens).contains(t)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn keystone_error(status: u16, title: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({"error": {"code": status, "title": title, "message": message}}))
}

async fn keystone(req: HttpRequest, body: web::Bytes, s: web::Data<PcdState>) -> HttpResponse {
    const R: &str = "keystone";
    s.record.call(R, &req, &body);
    if !content_type(&req).starts_with("application/json") {
        return s.record.problem(R, "Content-Type is not application/json");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return s.record.problem(R, "body is not JSON");
    };
    let identity = &v["auth"]["identity"];
    if identity["methods"] != json!(["password"]) {
        return s
            .record
            .problem(R, "auth.identity.methods is not [\"password\"]");
    }
    let user = &identity["password"]["user"];
    let (Some(name), Some(password)) = (user["name"].as_str(), user["password"].as_str()) else {
        return s
            .record
            .problem(R, "auth.identity.password.user needs name and password");
    };
    let domain = &user["domain"];
    let domain_ok = domain == &json!({"id": "default"}) || domain["name"].as_str().is_some();
    if !domain_ok {
        return s
            .record
            .problem(R, "user.domain must be {\"id\": ..} or {\"name\": ..}");
    }
    let scope = v["auth"].get("scope").cloned().unwrap_or(Value::Null);
    if !scope.is_null()
        && (scope["project"]["name"].as_str().is_none() || !scope["project"]["domain"].is_object())
    {
        return s
            .record
            .problem(R, "scope.project needs a name and a domain");
    }
    lock(&s.keystone_scopes).push(scope);
    // Jane lives in the default domain (or "Default" by name).
    let in_domain = domain == &json!({"id": "default"}) || domain["name"] == json!("Default");
    if name != PCD_USER || password != PCD_PASSWORD || !in_domain {
        return keystone_error(
            401,
            "Unauthorized",
            "The request you have made requires authentication.",
        );
    }
    let token = random_token("gAAAAAB");
    lock(&s.keystone_tokens).insert(token.clone());
    let now = s.clock.now();
    HttpResponse::Created()
        .insert_header(("X-Subject-Token", token))
        .json(json!({"token": {
            "methods": ["password"],
            "user": {"name": PCD_USER, "id": "6ba7b8109dad11d180b400c04fd430c8",
                     "domain": {"id": "default", "name": "Default"}},
            "issued_at": rfc3339(now),
            "expires_at": rfc3339(now + 86_400),
        }}))
}

async fn dexclients(req: HttpRequest, s: web::Data<PcdState>) -> HttpResponse {
    const R: &str = "dexclients";
    s.record.call(R, &req, b"");
    let Some(token) = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
    else {
        lock(&s.record.problems).push(format!("{R}: no x-auth-token header"));
        return keystone_error(401, "Unauthorized", "missing x-auth-token");
    };
    if !lock(&s.keystone_tokens).contains(token) {
        return keystone_error(401, "Unauthorized", "The token is invalid");
    }
    HttpResponse::Ok().json(Value::Object(lock(&s.dexclients).clone()))
}

fn oauth_error(status: u16, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({"error": error, "error_description": description}))
}

async fn dex_token(req: HttpRequest, body: web::Bytes, s: web::Data<PcdState>) -> HttpResponse {
    if !content_type(&req).starts_with("application/x-www-form-urlencoded") {
        s.record.call("dex-other", &req, &body);
        return s.record.problem(
            "dex",
            "Content-Type is not application/x-www-form-urlencoded",
        );
    }
    let f = form_fields(&body);
    let one = |k: &str| match f.get(k).map(Vec::as_slice) {
        Some([v]) => Some(v.clone()),
        _ => None,
    };
    let grant = one("grant_type").unwrap_or_default();
    let route = match grant.as_str() {
        "password" => "dex-password",
        "refresh_token" => "dex-refresh",
        _ => "dex-other",
    };
    s.record.call(route, &req, &body);
    if one("client_id").as_deref() != Some("kubernetes") {
        return s.record.problem(route, "client_id is not kubernetes");
    }
    let secret = lock(&s.dexclients)
        .get("kubernetes")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    if one("client_secret") != secret {
        return oauth_error(401, "invalid_client", "Invalid client credentials.");
    }
    let username = match grant.as_str() {
        "password" => {
            let scope = one("scope").unwrap_or_default();
            let scopes: HashSet<&str> = scope.split(' ').collect();
            if let Some(missing) = DEX_SCOPES.iter().find(|w| !scopes.contains(*w)) {
                return s.record.problem(route, format!("scope lacks {missing}"));
            }
            if one("connector_id").as_deref() != Some("default") {
                return s.record.problem(route, "connector_id is not default");
            }
            let delay = s.dex_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if let Some(r) = lock(&s.dex_refusal).clone() {
                return oauth_error(r.status, r.error, r.description);
            }
            if one("username").as_deref() != Some(PCD_USER)
                || one("password").as_deref() != Some(PCD_PASSWORD)
            {
                return oauth_error(401, "access_denied", "Invalid username or password");
            }
            PCD_USER
        }
        "refresh_token" => {
            if f.contains_key("password") {
                return s
                    .record
                    .problem(route, "a refresh grant carries a password");
            }
            if let Some(scope) = one("scope")
                && scope.split(' ').any(|w| !DEX_SCOPES.contains(&w))
            {
                return s.record.problem(route, "refresh asks for new scopes");
            }
            let presented = one("refresh_token").unwrap_or_default();
            if !lock(&s.refresh_tokens).remove(&presented) {
                return oauth_error(
                    400,
                    "invalid_request",
                    "Refresh token is invalid or has already been claimed by another client.",
                );
            }
            PCD_USER
        }
        other => return s.record.problem(route, format!("grant_type {other:?}")),
    };
    let now = s.clock.now();
    let lifetime = s.id_token_lifetime.load(Ordering::SeqCst);
    let mut claims = dex_claims(
        &format!("{}/dex", s.url),
        now,
        Some(PCD_EMAIL),
        username,
        &PCD_GROUPS,
    );
    claims["exp"] = json!(now + lifetime);
    // Distinct tokens even within one second.
    claims["nonce"] = json!(random_token(""));
    let refresh = random_token("ChlyZWZyZXNo");
    lock(&s.refresh_tokens).insert(refresh.clone());
    HttpResponse::Ok().json(json!({
        "access_token": random_token("at-"),
        "token_type": "bearer",
        "expires_in": lifetime,
        "refresh_token": refresh,
        "id_token": s.key.sign(&claims),
    }))
}

async fn dex_discovery(req: HttpRequest, s: web::Data<PcdState>) -> HttpResponse {
    s.record.call("discovery", &req, b"");
    let issuer = format!("{}/dex", s.url);
    let mut doc = discovery_document(&issuer, &issuer);
    doc["grant_types_supported"] = json!(["authorization_code", "refresh_token", "password"]);
    HttpResponse::Ok().json(doc)
}

async fn dex_keys(req: HttpRequest, s: web::Data<PcdState>) -> HttpResponse {
    s.record.call("jwks", &req, b"");
    HttpResponse::Ok().json(jwks_document([&s.key]))
}

// --- EFA ------------------------------------------------------------------------

struct EfaState {
    clock: Clock,
    record: Record,
    refresh_tokens: Mutex<HashSet<String>>,
    lifetime: AtomicU64,
    serial: AtomicUsize,
}

pub struct Efa {
    state: Arc<EfaState>,
    handle: ServerHandle,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EfaCounts {
    pub access_token: usize,
    pub client_access_token: usize,
    pub refresh: usize,
}

impl Efa {
    pub async fn start(ca: &Ca, clock: Clock) -> Efa {
        let state = Arc::new(EfaState {
            clock,
            record: Record::default(),
            refresh_tokens: Mutex::default(),
            lifetime: AtomicU64::new(3600),
            serial: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let s = state.clone();
        let handle = start_server(ca, listener, move |cfg| {
            cfg.app_data(web::Data::from(s.clone()))
                .route("/v1/auth/token/access-token", web::post().to(efa_access))
                .route(
                    "/v1/auth/token/client-access-token",
                    web::post().to(efa_client_access),
                )
                .route("/v1/auth/token/refresh", web::post().to(efa_refresh));
        });
        Efa {
            state,
            handle,
            addr,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn counts(&self) -> EfaCounts {
        let r = &self.state.record;
        EfaCounts {
            access_token: r.count("access-token"),
            client_access_token: r.count("client-access-token"),
            refresh: r.count("refresh"),
        }
    }

    pub fn problems(&self) -> Vec<String> {
        lock(&self.state.record.problems).clone()
    }

    pub fn requests(&self) -> Vec<String> {
        lock(&self.state.record.seen).clone()
    }

    pub fn revoke_refresh_tokens(&self) {
        lock(&self.state.refresh_tokens).clear();
    }

    pub fn refresh_token_is_valid(&self, t: &str) -> bool {
        lock(&self.state.refresh_tokens).contains(t)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn efa_error(status: u16, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({"code": status, "message": message}))
}

/// The JSON object body, or the 400 for a deviation.
fn efa_body(
    s: &EfaState,
    route: &'static str,
    req: &HttpRequest,
    body: &[u8],
    keys: &[&str],
) -> Result<Map<String, Value>, Box<HttpResponse>> {
    s.record.call(route, req, body);
    if !content_type(req).starts_with("application/json") {
        return Err(Box::new(
            s.record
                .problem(route, "Content-Type is not application/json"),
        ));
    }
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return Err(Box::new(
            s.record.problem(route, "body is not a JSON object"),
        ));
    };
    let mut got: Vec<&str> = m.keys().map(String::as_str).collect();
    got.sort_unstable();
    let mut want = keys.to_vec();
    want.sort_unstable();
    if got != want {
        return Err(Box::new(s.record.problem(
            route,
            format!("fields {got:?}, the API documents {want:?}"),
        )));
    }
    Ok(m)
}

fn efa_tokens(s: &EfaState, with_refresh: bool) -> HttpResponse {
    let now = s.clock.now();
    let serial = s.serial.fetch_add(1, Ordering::SeqCst);
    let claims = json!({
        "username": EFA_USER,
        "roles": EFA_ROLES,
        "iat": now,
        "exp": now + s.lifetime.load(Ordering::SeqCst),
        "jti": format!("t{serial}"),
    });
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(EFA_HMAC_SECRET.as_bytes()),
    )
    .unwrap();
    let mut answer = json!({
        "access-token": token,
        "token-type": "Bearer",
        "message": EFA_MESSAGE,
    });
    if with_refresh {
        let refresh = random_token("efa-refresh-");
        lock(&s.refresh_tokens).insert(refresh.clone());
        answer["refresh-token"] = json!(refresh);
    }
    HttpResponse::Ok().json(answer)
}

async fn efa_access(req: HttpRequest, body: web::Bytes, s: web::Data<EfaState>) -> HttpResponse {
    let m = match efa_body(&s, "access-token", &req, &body, &["username", "password"]) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if m["username"] != EFA_USER || m["password"] != EFA_PASSWORD {
        return efa_error(401, "Invalid username or password");
    }
    efa_tokens(&s, true)
}

async fn efa_client_access(
    req: HttpRequest,
    body: web::Bytes,
    s: web::Data<EfaState>,
) -> HttpResponse {
    let m = match efa_body(
        &s,
        "client-access-token",
        &req,
        &body,
        &["username", "password", "clientId"],
    ) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if m["username"] != EFA_USER || m["password"] != EFA_PASSWORD {
        return efa_error(401, "Invalid username or password");
    }
    if m["clientId"] != EFA_CLIENT_ID {
        return efa_error(401, "Unknown client");
    }
    // XCO client tokens come without a refresh token.
    efa_tokens(&s, false)
}

async fn efa_refresh(req: HttpRequest, body: web::Bytes, s: web::Data<EfaState>) -> HttpResponse {
    let m = match efa_body(&s, "refresh", &req, &body, &["grant-type", "refresh-token"]) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if m["grant-type"] != "refresh_token" {
        return s
            .record
            .problem("refresh", "grant-type is not refresh_token");
    }
    let presented = m["refresh-token"].as_str().unwrap_or_default();
    if !lock(&s.refresh_tokens).remove(presented) {
        return efa_error(401, "Invalid or expired refresh token");
    }
    efa_tokens(&s, true)
}

// --- A kube-apiserver, as far as kubectl's bearer tokens go ------------------------

/// Answers `GET /version` for requests whose bearer token our webhook
/// authenticates (a TokenReview per request, as the kube-apiserver sends
/// with its cache off), 401 otherwise: enough for `kubectl get --raw
/// /version` to prove kubectl ran the plugin and used its token.
pub struct ApiServer {
    state: Arc<ApiState>,
    _handle: ServerHandle,
    pub addr: SocketAddr,
}

struct ApiState {
    client: reqwest::Client,
    webhook: Mutex<Option<String>>,
    record: Record,
    users: Mutex<Vec<String>>,
}

impl ApiServer {
    pub async fn start(ca: &Ca) -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ApiState {
            client: reqwest::Client::builder()
                .tls_certs_only(
                    reqwest::Certificate::from_pem_bundle(ca.cert_pem.as_bytes()).unwrap(),
                )
                .build()
                .unwrap(),
            webhook: Mutex::new(None),
            record: Record::default(),
            users: Mutex::default(),
        });
        let s = state.clone();
        let handle = start_server(ca, listener, move |cfg| {
            cfg.app_data(web::Data::from(s.clone()))
                .route("/version", web::get().to(api_version));
        });
        ApiServer {
            state,
            _handle: handle,
            addr,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Where TokenReviews go.
    pub fn set_webhook(&self, url: String) {
        *lock(&self.state.webhook) = Some(url);
    }

    pub fn requests(&self) -> usize {
        self.state.record.count("version")
    }

    /// The user of every authenticated request.
    pub fn users(&self) -> Vec<String> {
        lock(&self.state.users).clone()
    }
}

async fn api_version(req: HttpRequest, s: web::Data<ApiState>) -> HttpResponse {
    s.record.call("version", &req, b"");
    let unauthorized = || {
        HttpResponse::Unauthorized().json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Unauthorized", "reason": "Unauthorized", "code": 401
        }))
    };
    let Some(token) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return unauthorized();
    };
    let webhook = lock(&s.webhook).clone().unwrap();
    let review = apiserver_request(ApiVersion::V1, token, &["https://kubernetes.default.svc"]);
    let answer: Value = s
        .client
        .post(webhook)
        .header("Content-Type", "application/json")
        .body(review.to_string())
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    if answer["status"]["authenticated"] != true {
        return unauthorized();
    }
    lock(&s.users).push(
        answer["status"]["user"]["username"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    HttpResponse::Ok().json(json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0",
        "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64"
    }))
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

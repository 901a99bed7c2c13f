//! The one loopback OIDC issuer of the tests, benches and load tools, shaped
//! like Dex: HTTPS on 127.0.0.1, discovery at
//! `<url>/.well-known/openid-configuration`, JWKS at `<url>/keys`. Tests
//! rotate its keys, take it down, or make it answer wrong, and count what it
//! was asked for.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{HttpResponse, web};
use jsonwebtoken::Algorithm;
use kube_authn_webhook::cmd::demo::issuer::{
    DevKey, discovery_document, jwks_document, serve_loopback,
};
use kube_authn_webhook::pki::Ca;
use serde_json::{Value, json};

/// What the issuer does when asked for discovery or keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    /// 503 on every request.
    Unavailable,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with an HTML error page, as a misrouted proxy answers.
    Html,
    /// A JWKS with no keys.
    EmptyKeys,
    /// Waits this long before answering.
    Slow(Duration),
    /// Discovery names another issuer.
    WrongIssuer,
    /// A JWKS of this many bytes.
    Oversized(usize),
    /// 200 with this document as the JWKS (keys the tests craft: none
    /// usable, small-order points, weak RSA...).
    Publish(Value),
    /// Discovery names this `jwks_uri` (another host, a link-local
    /// address...); the JWKS itself is served as usual.
    JwksUri(String),
    /// Discovery names this `issuer` (an external URL while the document is
    /// fetched from the issuer's own address, as an in-cluster Dex Service
    /// serves it); `jwks_uri` stays on the issuer's own address.
    Advertise(String),
}

struct State {
    url: String,
    /// Published keys, the signing one among them.
    keys: RwLock<Vec<DevKey>>,
    signing: RwLock<DevKey>,
    behaviour: RwLock<Behaviour>,
    max_age: RwLock<Option<u64>>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

pub struct TestIssuer {
    state: Arc<State>,
    handle: ServerHandle,
    pub addr: SocketAddr,
    /// The CA that signed the issuer's serving certificate.
    pub ca_pem: String,
}

impl TestIssuer {
    /// Starts on a free loopback port with one key of `alg`.
    pub async fn start(ca: &Ca, alg: Algorithm) -> Result<TestIssuer, String> {
        Self::start_on(
            ca,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            vec![DevKey::generate(alg).map_err(|e| e.to_string())?],
        )
        .await
    }

    /// Starts on `addr` publishing `keys` (the last one signs); used to bring
    /// an issuer back on the port it had.
    pub async fn start_on(
        ca: &Ca,
        addr: SocketAddr,
        keys: Vec<DevKey>,
    ) -> Result<TestIssuer, String> {
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("test issuer: cannot bind {addr}: {e}"))?;
        Self::start_with_listener(ca, listener, keys).await
    }

    /// Starts on a listener the caller bound, e.g. a port it held (bound,
    /// not listening, so connections were refused) while the issuer was "down".
    pub async fn start_with_listener(
        ca: &Ca,
        listener: TcpListener,
        keys: Vec<DevKey>,
    ) -> Result<TestIssuer, String> {
        let signing = keys
            .last()
            .cloned()
            .ok_or("test issuer: no key to sign with")?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(State {
            url: format!("https://{addr}/dex"),
            keys: RwLock::new(keys),
            signing: RwLock::new(signing),
            behaviour: RwLock::new(Behaviour::Normal),
            max_age: RwLock::new(None),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
        });
        let data = web::Data::from(state.clone());
        let handle = serve_loopback(ca, listener, 1, move |app| {
            app.app_data(data.clone())
                .route(
                    "/dex/.well-known/openid-configuration",
                    web::get().to(discovery),
                )
                .route("/dex/keys", web::get().to(jwks));
        })
        .map_err(|e| e.to_string())?;
        Ok(TestIssuer {
            state,
            handle,
            addr,
            ca_pem: ca.cert_pem.clone(),
        })
    }

    /// The issuer URL, the `iss` of its tokens.
    pub fn url(&self) -> &str {
        &self.state.url
    }

    pub fn current_key(&self) -> DevKey {
        self.state
            .signing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn keys(&self) -> Vec<DevKey> {
        self.state
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Signs `claims` with the current key.
    pub fn mint(&self, claims: &Value) -> String {
        self.current_key().sign(claims)
    }

    /// Like Dex: a new key signs from now on, published at the same moment;
    /// old keys stay published. Returns the new kid.
    pub fn rotate(&self, alg: Algorithm) -> Result<String, String> {
        let key = DevKey::generate(alg).map_err(|e| e.to_string())?;
        let kid = key.kid.clone();
        self.state
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(key.clone());
        *self
            .state
            .signing
            .write()
            .unwrap_or_else(|e| e.into_inner()) = key;
        Ok(kid)
    }

    /// Unpublishes every key but the current one.
    pub fn retire_old_keys(&self) {
        let current = self.current_key();
        *self.state.keys.write().unwrap_or_else(|e| e.into_inner()) = vec![current];
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        *self
            .state
            .behaviour
            .write()
            .unwrap_or_else(|e| e.into_inner()) = b;
    }

    /// `Cache-Control: max-age` on the JWKS answer.
    pub fn set_max_age(&self, seconds: Option<u64>) {
        *self
            .state
            .max_age
            .write()
            .unwrap_or_else(|e| e.into_inner()) = seconds;
    }

    pub fn discovery_fetches(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// Every request the issuer has seen.
    pub fn fetches(&self) -> usize {
        self.discovery_fetches() + self.jwks_fetches()
    }

    /// Stops listening; connections are refused from now on.
    pub async fn stop(self) -> Vec<DevKey> {
        self.handle.stop(false).await;
        self.keys()
    }
}

impl State {
    /// The behaviour set now (one copy, so a handler sees one behaviour).
    fn behaviour(&self) -> Behaviour {
        self.behaviour
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Applies the failure behaviours; `None` means answer normally.
async fn misbehave(state: &State) -> Option<HttpResponse> {
    let b = state.behaviour();
    match b {
        Behaviour::Normal
        | Behaviour::EmptyKeys
        | Behaviour::WrongIssuer
        | Behaviour::Oversized(_)
        | Behaviour::Publish(_)
        | Behaviour::JwksUri(_)
        | Behaviour::Advertise(_) => None,
        Behaviour::Unavailable => {
            Some(HttpResponse::ServiceUnavailable().body("issuer unavailable"))
        }
        Behaviour::Garbage => Some(
            HttpResponse::Ok()
                .content_type("application/json")
                .body("{\"keys\": [tru"),
        ),
        Behaviour::Html => Some(
            HttpResponse::Ok()
                .content_type("text/html")
                .body("<html><body><h1>502 Bad Gateway</h1></body></html>"),
        ),
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            None
        }
    }
}

async fn discovery(state: web::Data<State>) -> HttpResponse {
    state.discovery_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = misbehave(&state).await {
        return r;
    }
    let behaviour = state.behaviour();
    let url = &state.url;
    let issuer = match &behaviour {
        Behaviour::WrongIssuer => format!("{url}-impostor"),
        Behaviour::Advertise(iss) => iss.clone(),
        _ => url.clone(),
    };
    let mut doc = discovery_document(url, &issuer);
    if let Behaviour::JwksUri(uri) = behaviour {
        doc["jwks_uri"] = json!(uri);
    }
    HttpResponse::Ok().json(doc)
}

async fn jwks(state: web::Data<State>) -> HttpResponse {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = misbehave(&state).await {
        return r;
    }
    let behaviour = state.behaviour();
    let body = match behaviour {
        Behaviour::EmptyKeys => json!({"keys": []}).to_string(),
        Behaviour::Oversized(n) => format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(n)),
        Behaviour::Publish(doc) => doc.to_string(),
        _ => jwks_document(state.keys.read().unwrap_or_else(|e| e.into_inner()).iter()).to_string(),
    };
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/json");
    if let Some(age) = *state.max_age.read().unwrap_or_else(|e| e.into_inner()) {
        resp.insert_header(("Cache-Control", format!("max-age={age}, must-revalidate")));
    }
    resp.body(body)
}

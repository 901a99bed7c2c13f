//! A local OIDC issuer shaped like Dex: HTTPS on loopback, discovery at
//! `<url>/.well-known/openid-configuration`, JWKS at `<url>/keys`, keys it
//! generated itself. The demo shows a review against it; tests rotate its
//! keys, take it down, or make it answer wrong. Never for production.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{HttpResponse, web};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256, RsaKeySize};
use serde_json::{Value, json};

use crate::certs::Ca;

/// A signing key with its public halves in every shape a verifier may want.
#[derive(Clone)]
pub struct DevKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The public key as a JWK (with kid, alg and use).
    pub jwk: Value,
    /// The public key as a PEM `PUBLIC KEY` (SPKI).
    pub public_pem: String,
    pkcs8_der: Vec<u8>,
}

impl DevKey {
    /// A fresh key: RS256 (RSA-2048, as Dex's local signer), ES256 (P-256) or EdDSA (Ed25519).
    pub fn generate(alg: Algorithm) -> Result<DevKey, String> {
        let e = |e: rcgen::Error| format!("key generation failed: {e}");
        let kp = match alg {
            Algorithm::RS256 => {
                KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).map_err(e)?
            }
            Algorithm::ES256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(e)?,
            Algorithm::EdDSA => KeyPair::generate_for(&PKCS_ED25519).map_err(e)?,
            other => {
                return Err(format!(
                    "the dev issuer signs RS256, ES256 or EdDSA, not {other:?}"
                ));
            }
        };
        let pkcs8_der = kp.serialize_der();
        let raw = kp.public_key_raw();
        let b64 =
            |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
        let kid = random_hex(20);
        let (encoding, jwk) = match alg {
            Algorithm::RS256 => {
                let public = aws_lc_rs::rsa::PublicKey::from_der(raw)
                    .map_err(|e| format!("bad generated RSA key: {e}"))?;
                let c = aws_lc_rs::signature::RsaPublicKeyComponents::<Vec<u8>>::from(&public);
                let enc = EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes())
                    .map_err(|e| format!("bad generated RSA key: {e}"))?;
                (enc, json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)}))
            }
            Algorithm::ES256 => {
                let (x, y) = raw[1..].split_at(32);
                (
                    EncodingKey::from_ec_der(&pkcs8_der),
                    json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)}),
                )
            }
            _ => (
                EncodingKey::from_ed_der(&pkcs8_der),
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}),
            ),
        };
        let mut jwk = jwk;
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(format!("{alg:?}"));
        Ok(DevKey {
            kid,
            alg,
            encoding,
            jwk,
            public_pem: kp.public_key_pem(),
            pkcs8_der,
        })
    }

    /// A signed JWT with this key's `alg` and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with_header(&header, claims)
    }

    /// A signed JWT with whatever header the caller wants (no kid, other typ).
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        // Signing with a key we generated over claims we built cannot fail
        // unless the header names another key family; then the test is wrong.
        jsonwebtoken::encode(header, claims, &self.encoding)
            .unwrap_or_else(|e| format!("signing-failed:{e}"))
    }

    /// A self-signed X.509 certificate for this key, like the "JWT certificate"
    /// EFA distributes.
    pub fn certificate_pem(&self, common_name: &str) -> Result<String, String> {
        let alg = match self.alg {
            Algorithm::RS256 => &PKCS_RSA_SHA256,
            Algorithm::ES256 => &PKCS_ECDSA_P256_SHA256,
            _ => &PKCS_ED25519,
        };
        let kp = KeyPair::from_pkcs8_der_and_sign_algo(&self.pkcs8_der.as_slice().into(), alg)
            .map_err(|e| e.to_string())?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Extreme Networks");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        Ok(params.self_signed(&kp).map_err(|e| e.to_string())?.pem())
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The system RNG failing is not something a dev key id can recover from;
    // an all-zero id still works.
    let _ = aws_lc_rs::rand::fill(&mut buf);
    hex::encode(buf)
}

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

pub struct DevIssuer {
    state: Arc<State>,
    handle: ServerHandle,
    pub addr: SocketAddr,
    /// The CA that signed the issuer's serving certificate.
    pub ca_pem: String,
}

impl DevIssuer {
    /// Starts on a free loopback port with one key of `alg`.
    pub async fn start(ca: &Ca, alg: Algorithm) -> Result<DevIssuer, String> {
        Self::start_on(
            ca,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            vec![DevKey::generate(alg)?],
        )
        .await
    }

    /// Starts on `addr` publishing `keys` (the last one signs); used to bring
    /// an issuer back on the port it had.
    pub async fn start_on(
        ca: &Ca,
        addr: SocketAddr,
        keys: Vec<DevKey>,
    ) -> Result<DevIssuer, String> {
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("dev issuer: cannot bind {addr}: {e}"))?;
        Self::start_with_listener(ca, listener, keys).await
    }

    /// Starts on a listener the caller bound, e.g. a port it held (bound,
    /// not listening, so connections were refused) while the issuer was "down".
    pub async fn start_with_listener(
        ca: &Ca,
        listener: TcpListener,
        keys: Vec<DevKey>,
    ) -> Result<DevIssuer, String> {
        let signing = keys
            .last()
            .cloned()
            .ok_or("dev issuer: no key to sign with")?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let tls = ca
            .server(&["127.0.0.1".to_owned(), "localhost".to_owned()], 30)
            .map_err(|e| e.to_string())?;
        let config = rustls_server_config(&tls.cert_pem, &tls.key_pem)?;
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
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .route(
                    "/dex/.well-known/openid-configuration",
                    web::get().to(discovery),
                )
                .route("/dex/keys", web::get().to(jwks))
        })
        .workers(1)
        .shutdown_timeout(0)
        .disable_signals()
        .listen_rustls_0_23(listener, config)
        .map_err(|e| e.to_string())?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(DevIssuer {
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
        let key = DevKey::generate(alg)?;
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

fn rustls_server_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())
}

/// Applies the failure behaviours; `None` means answer normally.
async fn misbehave(state: &State) -> Option<HttpResponse> {
    let b = state
        .behaviour
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match b {
        Behaviour::Normal
        | Behaviour::EmptyKeys
        | Behaviour::WrongIssuer
        | Behaviour::Oversized(_) => None,
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
    let wrong =
        *state.behaviour.read().unwrap_or_else(|e| e.into_inner()) == Behaviour::WrongIssuer;
    let url = &state.url;
    let issuer = if wrong {
        format!("{url}-impostor")
    } else {
        url.clone()
    };
    HttpResponse::Ok().json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{url}/auth"),
        "token_endpoint": format!("{url}/token"),
        "jwks_uri": format!("{url}/keys"),
        "userinfo_endpoint": format!("{url}/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        "scopes_supported": ["openid", "email", "groups", "profile", "offline_access"],
        "claims_supported": ["iss", "sub", "aud", "iat", "exp", "email", "email_verified", "groups", "name"]
    }))
}

async fn jwks(state: web::Data<State>) -> HttpResponse {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = misbehave(&state).await {
        return r;
    }
    let behaviour = state
        .behaviour
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let body = match behaviour {
        Behaviour::EmptyKeys => json!({"keys": []}).to_string(),
        Behaviour::Oversized(n) => format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(n)),
        _ => {
            let keys: Vec<Value> = state
                .keys
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|k| k.jwk.clone())
                .collect();
            json!({ "keys": keys }).to_string()
        }
    };
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/json");
    if let Some(age) = *state.max_age.read().unwrap_or_else(|e| e.into_inner()) {
        resp.insert_header(("Cache-Control", format!("max-age={age}, must-revalidate")));
    }
    resp.body(body)
}

/// Claims of a Dex id_token as Platform9 PCD-K issues them (Keystone connector,
/// scopes openid email groups profile), valid for 24 hours from `now`.
pub fn dex_claims(
    issuer: &str,
    now: u64,
    email: Option<&str>,
    name: &str,
    groups: &[&str],
) -> Value {
    let mut c = json!({
        "iss": issuer,
        // base64url(protobuf{1: user_id, 2: connector_id}), as Dex encodes sub.
        "sub": "CiQ2YmE3YjgxMC05ZGFkLTExZDEtODBiNC0wMGMwNGZkNDMwYzgSB2RlZmF1bHQ",
        "aud": "kubernetes",
        "exp": now + 86_399,
        "iat": now,
        "nonce": "demo",
        "at_hash": "XZ7jqCPLkIXw8ZYw1o3Ejg",
        "groups": groups,
        "name": name,
        "federated_claims": {"connector_id": "default", "user_id": "6ba7b810-9dad-11d1-80b4-00c04fd430c8"}
    });
    if let Some(e) = email {
        c["email"] = json!(e);
        c["email_verified"] = json!(true);
    }
    c
}

/// The `i`th token of a refused-token flood, a third of each kind that is
/// refused before any key lookup: not a JWT, a JWT from an issuer nobody
/// configured, and an expired token of `issuer`. All distinct.
pub fn refused_token(i: usize, issuer: &str, now: u64, key: &DevKey) -> String {
    match i % 3 {
        0 => format!("garbage-{i}-{}", random_hex(96)),
        1 => key.sign(&dex_claims(
            "https://unknown.example.com/dex",
            now,
            Some(&format!("mallory{i}@example.com")),
            "mallory",
            &["developers"],
        )),
        _ => {
            let mut c = dex_claims(
                issuer,
                now - 2 * 86_400,
                Some(&format!("old{i}@example.com")),
                "old",
                &["developers"],
            );
            c["exp"] = json!(now - 86_400);
            key.sign(&c)
        }
    }
}

//! The demo's OIDC issuer, shaped like Dex: HTTPS on loopback, discovery at
//! `<url>/.well-known/openid-configuration`, JWKS at `<url>/keys`, a key it
//! generated itself. Only `demo` starts it; the test kit builds its
//! fault-injecting issuer from the same keys and documents.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{HttpResponse, web};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256, RsaKeySize};
use serde_json::{Value, json};

use crate::pki::Ca;

/// Why a loopback issuer (the demo's, or the test kit's) could not start.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("the dev issuer signs RS256, ES256 or EdDSA, not {0:?}")]
    Algorithm(Algorithm),
    #[error("key or certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the generated key is not usable: {0}")]
    GeneratedKey(String),
    #[error("bad PEM: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen on loopback: {0}")]
    Listen(std::io::Error),
}

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
    pub fn generate(alg: Algorithm) -> Result<DevKey, IssuerError> {
        let kp = match alg {
            Algorithm::RS256 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?,
            Algorithm::ES256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
            Algorithm::EdDSA => KeyPair::generate_for(&PKCS_ED25519)?,
            other => return Err(IssuerError::Algorithm(other)),
        };
        let pkcs8_der = kp.serialize_der();
        let raw = kp.public_key_raw();
        let b64 =
            |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
        let kid = random_hex(20);
        let (encoding, jwk) = match alg {
            Algorithm::RS256 => {
                let public = aws_lc_rs::rsa::PublicKey::from_der(raw)
                    .map_err(|e| IssuerError::GeneratedKey(e.to_string()))?;
                let c = aws_lc_rs::signature::RsaPublicKeyComponents::<Vec<u8>>::from(&public);
                let enc = EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes())
                    .map_err(|e| IssuerError::GeneratedKey(e.to_string()))?;
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

    /// Signs `claims` under `header` (which must name this key's family).
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        // Signing with a key we generated over claims we built cannot fail
        // unless the header names another key family: a caller's mistake,
        // which the verifier then refuses as a malformed token.
        jsonwebtoken::encode(header, claims, &self.encoding)
            .unwrap_or_else(|e| format!("signing-failed:{e}"))
    }

    /// The private key, PKCS#8 DER (for a certificate over this key).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8_der
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The system RNG failing is not something a dev key id can recover from;
    // an all-zero id still works.
    let _ = aws_lc_rs::rand::fill(&mut buf);
    hex::encode(buf)
}

/// The discovery document of an issuer at `url`, as Dex serves it.
pub fn discovery_document(url: &str, issuer: &str) -> Value {
    json!({
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
    })
}

/// A JWKS publishing `keys`.
pub fn jwks_document<'a>(keys: impl IntoIterator<Item = &'a DevKey>) -> Value {
    let keys: Vec<&Value> = keys.into_iter().map(|k| &k.jwk).collect();
    json!({ "keys": keys })
}

/// A rustls server config for a PEM certificate chain and key.
fn rustls_server_config(
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, IssuerError> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    Ok(
        rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?,
    )
}

/// Serves `routes` over HTTPS on `listener` (a loopback port) with a
/// certificate for 127.0.0.1 and localhost signed by `ca`, on `workers`
/// threads, in the background; the handle stops it. The demo's issuer and
/// the test kit's issuer and stand-ins all run on this.
pub fn serve_loopback(
    ca: &Ca,
    listener: TcpListener,
    workers: usize,
    routes: impl Fn(&mut web::ServiceConfig) + Send + Sync + Clone + 'static,
) -> Result<ServerHandle, IssuerError> {
    let tls = ca.server(&["127.0.0.1".to_owned(), "localhost".to_owned()], 2)?;
    let config = rustls_server_config(&tls.cert_pem, &tls.key_pem)?;
    let server =
        actix_web::HttpServer::new(move || actix_web::App::new().configure(routes.clone()))
            .workers(workers)
            .shutdown_timeout(0)
            .disable_signals()
            .listen_rustls_0_23(listener, config)
            .map_err(IssuerError::Listen)?
            .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(handle)
}

struct State {
    url: String,
    key: DevKey,
}

/// The running demo issuer.
pub(crate) struct DemoIssuer {
    state: Arc<State>,
    handle: ServerHandle,
}

impl DemoIssuer {
    /// Starts on a free loopback port with one key of `alg`, its serving
    /// certificate signed by `ca`.
    pub(crate) async fn start(ca: &Ca, alg: Algorithm) -> Result<DemoIssuer, IssuerError> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(IssuerError::Listen)?;
        let addr = listener.local_addr().map_err(IssuerError::Listen)?;
        let state = Arc::new(State {
            url: format!("https://{addr}/dex"),
            key: DevKey::generate(alg)?,
        });
        let data = web::Data::from(state.clone());
        let handle = serve_loopback(ca, listener, 1, move |app| {
            app.app_data(data.clone())
                .route(
                    "/dex/.well-known/openid-configuration",
                    web::get().to(|s: web::Data<State>| async move {
                        HttpResponse::Ok().json(discovery_document(&s.url, &s.url))
                    }),
                )
                .route(
                    "/dex/keys",
                    web::get().to(|s: web::Data<State>| async move {
                        HttpResponse::Ok().json(jwks_document([&s.key]))
                    }),
                );
        })?;
        Ok(DemoIssuer { state, handle })
    }

    /// The issuer URL, the `iss` of its tokens.
    pub(crate) fn url(&self) -> &str {
        &self.state.url
    }

    /// Signs `claims` with the issuer's key.
    pub(crate) fn mint(&self, claims: &Value) -> String {
        self.state.key.sign(claims)
    }

    pub(crate) async fn stop(self) {
        self.handle.stop(false).await;
    }
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

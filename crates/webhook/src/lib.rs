//! kube-authn-webhook: a Kubernetes TokenReview webhook for Dex id_tokens and
//! Extreme EFA/XCO bearer tokens. `main.rs` only wires these together.

pub(crate) mod audit;
pub(crate) mod authcfg;
#[doc(hidden)]
pub mod cel;
pub mod cmd;
pub mod config;
pub mod http;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod oauth;
pub mod pki;
pub mod prepare;
pub(crate) mod reload;
pub mod review;
pub(crate) mod revoke;
pub mod tls;
pub mod verify;
pub mod wire;

/// Installs aws-lc-rs as the process's rustls and jsonwebtoken crypto
/// provider. Call once, first thing: with two backends compiled in, either
/// crate would otherwise panic on first use. Repeated calls are harmless.
pub fn install_crypto_providers() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

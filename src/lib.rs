//! kube-authn-webhook: a Kubernetes TokenReview webhook for Dex id_tokens and
//! Extreme EFA/XCO bearer tokens. `main.rs` only wires these together.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod cache;
pub mod certs;
pub mod clock;
pub mod config;
pub mod demo;
pub mod dev_issuer;
pub mod jwks;
pub mod kubeconfig;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod review;
pub mod server;
pub mod tls;
pub mod tokenreview;
pub mod verify;

/// Installs aws-lc-rs as the process's rustls and jsonwebtoken crypto
/// provider. Call once, first thing: with two backends compiled in, either
/// crate would otherwise panic on first use. Repeated calls are harmless.
pub fn install_crypto_providers() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

//! Fixtures for the tests, benches and load tools of every crate: the one
//! loopback issuer, the stand-ins for the services the login plugin talks
//! to, the webhook harness, config builders and a runner for the binaries.
//! Setup failures panic: a fixture that cannot start is a broken test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod apiserver;
pub mod authcfg;
pub mod bin;
pub mod certs;
pub mod config;
pub mod harness;
pub mod issuer;
pub mod openshift;
pub mod proxy;
pub mod standins;
pub mod tokens;

pub use kube_authn_webhook::cmd::demo::issuer::{DevKey, dex_claims};

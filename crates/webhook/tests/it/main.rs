//! Integration tests: the real server over real TLS on 127.0.0.1, a real
//! HTTPS client, and a loopback issuer with keys the tests generate. One test
//! binary, so the suite links once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod authcfg;
mod cli;
mod config;
mod deploy;
mod dex;
mod efa;
mod explain;
mod faults;
mod http;
mod http2;
mod keys;
mod lifecycle;
mod oauth;
mod packaging;
mod readiness;
mod reload;
mod revoke;
mod upstream;

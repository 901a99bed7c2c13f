//! A reviewer with static EFA keys only, so no input can cause network I/O.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use kube_authn_common::clock::Clock;
use kube_authn_webhook::prepare::Prepared;
use kube_authn_webhook::review::Reviewer;

/// The HS256 secret the seed corpus tokens are signed with.
pub const SECRET: &str = "fuzzing-secret-0123456789abcdef0123456789";

pub struct Fixture {
    pub runtime: tokio::runtime::Runtime,
    pub reviewer: Reviewer,
    /// Holds the files the config names.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        kube_authn_webhook::install_crypto_providers();
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let ca = kube_authn_webhook::pki::Ca::new("fuzz", 1).expect("ca");
        let tls = ca.server(&["127.0.0.1".to_owned()], 1).expect("cert");
        std::fs::write(dir.join("tls.crt"), &tls.cert_pem).expect("write");
        std::fs::write(dir.join("tls.key"), &tls.key_pem).expect("write");
        std::fs::write(dir.join("ca.crt"), &ca.cert_pem).expect("write");
        std::fs::write(dir.join("secret"), SECRET).expect("write");
        let config = Prepared::from_yaml(CONFIG, &dir.join("config.yaml")).expect("fuzz config");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // A fixed clock far ahead of the seeds' iat: no token is too new.
        let reviewer = Reviewer::from_config(&config, Clock::manual(1_900_000_000), runtime.handle())
            .expect("reviewer");
        Fixture { runtime, reviewer, dir, _tmp: tmp }
    })
}

pub const CONFIG: &str = r#"
server:
  listen: 127.0.0.1:0
  tls: {cert_file: tls.crt, key_file: tls.key, client_ca_file: ca.crt}
telemetry: {listen: 127.0.0.1:0}
cache: {max_entries: 1000, max_ttl: 5m, negative_ttl: 10s}
issuers:
  - name: efa
    kind: efa
    keys: {hmac_secret_file: secret}
    algorithms: [HS256]
    audiences: [kubernetes]
    claims:
      username: {claims: [username, sub], prefix: "efa:"}
      groups: {claims: [roles, role], prefix: "efa:"}
      extra: {"example.com/tenant": tenant.name}
  - name: efa-with-iss
    kind: efa
    url: https://efa.example.com
    keys: {hmac_secret_file: secret}
    algorithms: [HS256, HS512]
    allow_any_audience: true
    claims:
      username: {claims: [username, sub], prefix: "efa-iss:"}
      groups: {claims: [roles, role], prefix: "efa-iss:"}
"#;

//! `kube-authn-webhook demo`: the whole service on loopback with nothing
//! outside it: a Dex-like dev issuer, the webhook with a fresh certificate,
//! and one TokenReview round trip over TLS, printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use kube_authn_common::clock::{Clock, unix_now};

use crate::config::{ConfigError, LogFormat};
use crate::http::StartError;
use crate::pki::Ca;
use crate::prepare::Prepared;
use crate::wire::{self, ApiVersion};
use crate::{http as server, logging};

pub mod issuer;

use issuer::{DemoIssuer, IssuerError, dex_claims};

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot create a temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error("cannot write {path}: {source}", path = .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificates: {0}")]
    Certs(#[from] rcgen::Error),
    #[error("the demo issuer: {0}")]
    Issuer(#[from] IssuerError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the webhook did not fetch the demo issuer's keys within 10s")]
    NotReady,
    #[error("POST {url}: {source}")]
    Post { url: String, source: reqwest::Error },
    #[error("the webhook's answer is not JSON: {0}")]
    Answer(serde_json::Error),
    #[error("the demo token was not authenticated; see the answer above")]
    NotAuthenticated,
}

pub async fn run(once: bool) -> Result<(), DemoError> {
    let _log = logging::init(LogFormat::Text);
    let dir = tempfile::Builder::new()
        .prefix("kube-authn-webhook-demo-")
        .tempdir()
        .map_err(DemoError::TempDir)?;
    let ca = Ca::new("kube-authn-webhook demo CA", 1)?;
    let issuer = DemoIssuer::start(&ca, Algorithm::RS256).await?;
    let tls = ca.server(&["127.0.0.1".to_owned(), "localhost".to_owned()], 1)?;
    write(dir.path(), "ca.crt", &ca.cert_pem)?;
    write(dir.path(), "tls.crt", &tls.cert_pem)?;
    write_private(dir.path(), "tls.key", &tls.key_pem)?;
    let config_text = format!(
        r#"# Written by `kube-authn-webhook demo`.
server:
  listen: 127.0.0.1:0
  tls: {{cert_file: tls.crt, key_file: tls.key}}
telemetry: {{listen: 127.0.0.1:0, log_format: text}}
cache: {{max_entries: 10000, max_ttl: 5m, negative_ttl: 10s}}
issuers:
  - name: demo-dex
    kind: oidc
    url: {url}
    certificate_authority_file: ca.crt
    audiences: [kubernetes]
    algorithms: [RS256]
    claims:
      username: {{claims: [email, name], prefix: ""}}
      groups: {{claim: groups, prefix: ""}}
      uid: {{claim: sub}}
      extra: {{"authn.k8s.io/connector-id": federated_claims.connector_id}}
"#,
        url = issuer.url()
    );
    let config_path = write(dir.path(), "config.yaml", &config_text)?;
    let config = Prepared::load(&config_path)?;

    let running = server::start(&config, Clock::System).await?;
    if !running.wait_ready(Duration::from_secs(10)).await {
        return Err(DemoError::NotReady);
    }
    let addr = running.addr;
    let url = format!("https://{addr}/authenticate");

    println!("\n== kube-authn-webhook demo ==");
    println!("dev OIDC issuer (Dex-like): {}", issuer.url());
    println!("webhook (TLS):              {url}");
    println!(
        "telemetry:                  http://{}/metrics",
        running.telemetry_addr
    );
    println!("config:                     {}\n", config_path.display());

    let token = mint(&issuer);
    let request = review_request(&token);
    let post = |source| DemoError::Post {
        url: url.clone(),
        source,
    };
    let client = reqwest::Client::builder()
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(ca.cert_pem.as_bytes()).map_err(post)?,
        )
        .build()
        .map_err(post)?;
    let resp = client
        .post(&url)
        .header("Content-Type", "application/json")
        .body(request.to_string())
        .send()
        .await
        .map_err(post)?;
    let status = resp.status();
    let body: Value =
        serde_json::from_slice(&resp.bytes().await.map_err(post)?).map_err(DemoError::Answer)?;

    let mut shown = request.clone();
    shown["spec"]["token"] = json!(format!(
        "{}... ({} bytes)",
        &token[..24.min(token.len())],
        token.len()
    ));
    println!("POST {url}");
    println!("{}\n", pretty(&shown));
    println!("HTTP {status}");
    println!("{}\n", pretty(&body));

    let authenticated = body["status"]["authenticated"] == json!(true);
    let fresh = write(
        dir.path(),
        "review.json",
        &review_request(&mint(&issuer)).to_string(),
    )?;
    let ca_file = dir.path().join("ca.crt");
    println!("Try it yourself with a fresh token (valid 24h):");
    println!(
        "  curl --cacert {} -H 'Content-Type: application/json' --data @{} {url}\n",
        ca_file.display(),
        fresh.display()
    );
    println!(
        "Metrics: curl -s http://{}/metrics | grep authn_webhook_",
        running.telemetry_addr
    );
    println!(
        "Ready:   curl -s http://{}/readyz\n",
        running.telemetry_addr
    );

    if !authenticated {
        running.shutdown().await;
        return Err(DemoError::NotAuthenticated);
    }
    if !once {
        println!("Serving until Ctrl-C.");
        let _ = tokio::signal::ctrl_c().await;
    }
    running.shutdown().await;
    issuer.stop().await;
    Ok(())
}

/// A TokenReview request as the kube-apiserver sends it, empty `metadata`
/// and `status` included (the test kit sends the demo's request too).
pub fn apiserver_request(
    version: ApiVersion,
    token: &str,
    audiences: &[&str],
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": version.as_str(),
        "kind": wire::KIND,
        "metadata": {"creationTimestamp": null},
        "spec": {"token": token, "audiences": audiences},
        "status": {"user": {}}
    })
}

fn mint(issuer: &DemoIssuer) -> String {
    issuer.mint(&dex_claims(
        issuer.url(),
        unix_now(),
        Some("jane@example.com"),
        "jane",
        &["pcd-default-service-admin", "developers"],
    ))
}

fn review_request(token: &str) -> Value {
    apiserver_request(ApiVersion::V1, token, &["https://kubernetes.default.svc"])
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// The serving key: 0600 from its creation on, as `certs` writes keys, even
/// in a temporary directory that goes away when the demo ends.
fn write_private(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, DemoError> {
    let p = dir.join(name);
    kube_authn_common::fs::write_atomic(
        &p,
        contents.as_bytes(),
        0o600,
        kube_authn_common::fs::Existing::Replace,
    )
    .map_err(|source| DemoError::Write {
        path: p.clone(),
        source,
    })?;
    Ok(p)
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, DemoError> {
    let p = dir.join(name);
    std::fs::write(&p, contents).map_err(|source| DemoError::Write {
        path: p.clone(),
        source,
    })?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn the_demo_key_is_written_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = super::write_private(dir.path(), "tls.key", "key").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "key");
    }
}

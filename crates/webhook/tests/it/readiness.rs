//! Issue 13, items 2-4: readiness that one issuer cannot take down, keys
//! that survive a restart (`state_dir`), egress through a proxy, and
//! `discovery_url`.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use kube_authn_common::clock::{Clock, unix_now};
use kube_authn_testkit::DevKey;
use kube_authn_testkit::bin::Binary;
use kube_authn_testkit::config::DexIssuer;
use kube_authn_testkit::issuer::{Behaviour, TestIssuer};
use kube_authn_testkit::proxy::ConnectProxy;
use kube_authn_webhook::config::{Config, ConfigError};
use kube_authn_webhook::prepare::Prepared;
use serde_json::{Value, json};

use kube_authn_testkit::harness::*;

const WEBHOOK: Binary = Binary::new(env!("CARGO_BIN_EXE_kube-authn-webhook"));

/// An efa issuer trusting `efa.pem` (in the harness directory).
const EFA: &str = r#"
  - name: efa
    kind: efa
    keys: {public_key_files: [efa.pem]}
    algorithms: [RS256]
    allow_any_audience: true
    claims:
      username: {claims: [username, sub], prefix: "efa:"}
      groups: {claims: [roles, role], prefix: "efa:"}
"#;

fn efa_token(key: &DevKey) -> String {
    let now = unix_now();
    key.sign_with_header(
        &Header::new(Algorithm::RS256),
        &json!({"username": "netadmin", "roles": ["FabricAdmin", "NetworkOperator"], "iat": now, "exp": now + 3600}),
    )
}

/// A Dex issuer entry with `lines` (each indented four spaces) added.
fn dex_with(name: &str, url: &str, lines: &str) -> String {
    DexIssuer {
        prefix: "dex:",
        ..DexIssuer::new(name, url)
    }
    .yaml()
    .replace("    claims:\n", &format!("{lines}    claims:\n"))
}

/// Top-level keys after the issuers list.
fn with_top(issuers: &str, top: &str) -> String {
    format!("{issuers}{top}")
}

fn state_dir_line(dir: &Path) -> String {
    format!("state_dir: {}\n", dir.display())
}

async fn readyz(h: &Harness) -> (u16, Value) {
    let (code, body) = h.telemetry("/readyz").await;
    (code, serde_json::from_str(&body).expect("/readyz is JSON"))
}

fn issuer_state<'a>(ready: &'a Value, name: &str) -> &'a Value {
    ready["issuers"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no issuer {name} in {ready}"))
}

/// Log lines of `issuer` whose message starts with `message`.
fn log_lines(issuer: &str, message: &str) -> Vec<Value> {
    logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["fields"]["issuer"] == issuer
                && v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
        })
        .collect()
}

/// A Dex outage at start makes Dex tokens "could not check", and nothing
/// else: /readyz is 200 (the pod gets endpoints), EFA users are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dex_down_at_start_locks_out_no_efa_user() {
    let (_held, addr) = held_port();
    let url = format!("https://{addr}/dex");
    let efa_key = DevKey::generate(Algorithm::RS256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "efa.pem", &efa_key.public_pem);
    let yaml = format!("{}{EFA}", dex_with("dex-down", &url, ""));
    let h = Harness::start_in(dir, new_ca(), &yaml, Options::default()).await;

    // The first fetch is refused at once; wait until it has been tried.
    assert!(
        eventually(Duration::from_secs(10), || async {
            issuer_state(&readyz(&h).await.1, "dex-down")["last_error"].is_string()
        })
        .await
    );
    let (code, ready) = readyz(&h).await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["ready"], true);
    let dex = issuer_state(&ready, "dex-down");
    assert_eq!(dex["ready"], false, "{ready}");
    assert_eq!(dex["required"], false);
    assert_eq!(dex["source"], "none");
    assert_eq!(dex["keys"], 0);
    assert!(
        dex["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{ready}"
    );
    let efa = issuer_state(&ready, "efa");
    assert_eq!(efa["ready"], true);
    assert_eq!(efa["source"], "static");
    assert!(efa.get("key_age_seconds").is_none(), "{ready}");

    assert_efa_netadmin(&h.review(&efa_token(&efa_key)).await);
    let dex_key = DevKey::generate(Algorithm::RS256).unwrap();
    assert_unchecked(&h.review(&dex_key.sign(&jane(&url))).await);

    for (source, value) in [("none", 1.0), ("fetched", 0.0), ("snapshot", 0.0)] {
        assert_eq!(
            h.metric(
                "authn_webhook_issuer_keys_source",
                &[("issuer", "dex-down"), ("source", source)]
            )
            .await,
            value,
            "{source}"
        );
    }
    assert_eq!(
        h.metric(
            "authn_webhook_issuer_keys_source",
            &[("issuer", "efa"), ("source", "static")]
        )
        .await,
        1.0
    );
}

/// `required: true` gates readiness on that issuer's keys, and only that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_issuer_without_keys_keeps_readyz_at_503() {
    let ca = new_ca();
    let (held, addr) = held_port();
    let url = format!("https://{addr}/dex");
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    let h = Harness::start(
        ca,
        &dex_with("dex-required", &url, "    required: true\n"),
        Options::default(),
    )
    .await;
    let (code, ready) = readyz(&h).await;
    assert_eq!(code, 503, "{ready}");
    assert_eq!(issuer_state(&ready, "dex-required")["required"], true);
    assert_eq!(
        h.metric(
            "authn_webhook_issuer_required",
            &[("issuer", "dex-required")]
        )
        .await,
        1.0
    );

    let listener = held.listen(1024).unwrap().into_std().unwrap();
    let issuer = TestIssuer::start_with_listener(&h.ca, listener, vec![key.clone()])
        .await
        .unwrap();
    assert!(h.running.wait_ready(Duration::from_secs(20)).await);
    let (code, ready) = readyz(&h).await;
    assert_eq!(code, 200, "{ready}");
    let dex = issuer_state(&ready, "dex-required");
    assert_eq!(dex["source"], "fetched");
    assert!(dex["key_age_seconds"].is_u64(), "{ready}");
    let answer = h.review(&key.sign(&jane(&url))).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    issuer.stop().await;
}

/// Fetch keys, stop the issuer, restart the webhook: a token of the old key
/// verifies with the keys saved in `state_dir`, reported as a snapshot, and
/// they satisfy `required`; max_key_age after their fetch they stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_saved_in_state_dir_outlive_a_restart_while_the_issuer_is_down() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let url = issuer.url().to_owned();
    let top = tempfile::tempdir().unwrap();
    // Not there yet: serve creates it, for the webhook only.
    let state = top.path().join("state");
    let file = state.join("dex-saved.keys.json");
    // The first run's harness CA is the issuer's (its ca.crt), so it can
    // fetch; the second's is not, and the issuer is down anyway.
    let yaml = with_top(
        &dex_with(
            "dex-saved",
            &url,
            "    required: true
    max_key_age: 5m
",
        ),
        &state_dir_line(&state),
    );
    {
        let dir = tempfile::tempdir().unwrap();
        let h = Harness::start_in(dir, ca, &yaml, Options::default()).await;
        assert!(h.running.wait_ready(Duration::from_secs(10)).await);
        h.running.shutdown().await;
    }
    let token = issuer.mint(&jane(&url));
    issuer.stop().await;

    let text = std::fs::read_to_string(&file).expect("keys saved");
    let saved: Value = serde_json::from_str(&text).unwrap();
    assert!(saved["sha256"].is_string(), "{text}");
    assert_eq!(saved["content"]["url"], url.as_str());
    assert!(saved["content"]["fetched_at"].is_u64());
    assert_eq!(saved["content"]["discovery"]["issuer"], url.as_str());
    for private in ["\"d\"", "\"p\"", "\"q\"", "\"k\""] {
        assert!(!text.contains(private), "only public keys: {text}");
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&state), 0o700);
    }

    let fetched_at = saved["content"]["fetched_at"].as_u64().unwrap();
    let clock = Clock::manual(unix_now());
    let h = Harness::start(
        new_ca(),
        &yaml,
        Options {
            clock: clock.clone(),
            ..Options::default()
        },
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            issuer_state(&readyz(&h).await.1, "dex-saved")["source"] == "snapshot"
        })
        .await,
        "the saved keys are used"
    );
    let (code, ready) = readyz(&h).await;
    assert_eq!(code, 200);
    let dex = issuer_state(&ready, "dex-saved");
    assert_eq!(dex["ready"], true, "{ready}");
    assert_eq!(dex["keys"], 1);
    assert!(
        dex["last_error"].is_string(),
        "the outage is shown: {ready}"
    );
    let answer = h.review(&token).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(
        h.metric(
            "authn_webhook_key_snapshot_loads_total",
            &[("issuer", "dex-saved"), ("result", "loaded")]
        )
        .await,
        1.0
    );
    assert_eq!(
        h.metric(
            "authn_webhook_issuer_keys_source",
            &[("issuer", "dex-saved"), ("source", "snapshot")]
        )
        .await,
        1.0
    );
    assert!(
        !log_lines(
            "dex-saved",
            "the issuer cannot be reached: using its keys saved"
        )
        .is_empty()
    );

    // max_key_age after the original fetch, not after the restart: the
    // cached identity goes with its key, and the issuer is required again.
    clock.set(fetched_at + 5 * 60);
    let answer = h.review(&token).await;
    assert_unchecked(&answer);
    assert!(
        answer["status"]["error"]
            .as_str()
            .unwrap()
            .contains("more than max_key_age (5m)"),
        "{answer}"
    );
    let (code, ready) = readyz(&h).await;
    assert_eq!(code, 503, "{ready}");
}

/// A saved key set that was edited, or is older than max_key_age by the
/// clock, is not used; the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_too_old_saved_keys_are_ignored_with_a_log_line() {
    for (name, reason) in [("dex-damaged", "checksum_mismatch"), ("dex-old", "too_old")] {
        let ca = new_ca();
        let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
        let url = issuer.url().to_owned();
        let state = tempfile::tempdir().unwrap();
        let yaml = with_top(
            &dex_with(name, &url, "    max_key_age: 5m\n"),
            &state_dir_line(state.path()),
        );
        {
            let dir = tempfile::tempdir().unwrap();
            let h = Harness::start_in(dir, ca, &yaml, Options::default()).await;
            assert!(h.running.wait_ready(Duration::from_secs(10)).await);
            h.running.shutdown().await;
        }
        let token = issuer.mint(&jane(&url));
        issuer.stop().await;
        let file = state.path().join(format!("{name}.keys.json"));
        let mut clock = Clock::System;
        if reason == "checksum_mismatch" {
            // One character of the key's modulus changed, the checksum not.
            let text = std::fs::read_to_string(&file).unwrap();
            let at = text.find("\"n\":\"").unwrap() + 10;
            let mut bytes = text.into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            std::fs::write(&file, bytes).unwrap();
        } else {
            clock = Clock::manual(unix_now() + 6 * 60);
        }
        let h = Harness::start(
            new_ca(),
            &yaml,
            Options {
                clock,
                ..Options::default()
            },
        )
        .await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                h.metric(
                    "authn_webhook_key_snapshot_loads_total",
                    &[("issuer", name), ("result", reason)],
                )
                .await
                    == 1.0
            })
            .await,
            "{name}: refused as {reason}"
        );
        let lines = log_lines(name, "ignoring the keys saved in state_dir");
        assert!(
            lines.iter().any(|l| l["fields"]["reason"] == reason),
            "{name}: {lines:?}"
        );
        let (code, ready) = readyz(&h).await;
        assert_eq!(code, 200, "not required");
        assert_eq!(issuer_state(&ready, name)["source"], "none", "{ready}");
        assert_unchecked(&h.review(&token).await);
    }
}

/// `proxy_url`: the fetch goes through the CONNECT proxy; with the proxy
/// down, a fetch fails (counted) and the last good keys stay in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_url_carries_the_key_fetch_and_its_outage_keeps_the_last_keys() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let url = issuer.url().to_owned();
    let proxy = ConnectProxy::start().await;
    let yaml = dex_with(
        "dex-proxied",
        &url,
        &format!("    proxy_url: {}\n", proxy.url()),
    );
    let h = Harness::start(ca, &yaml, Options::default()).await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    assert!(proxy.tunnels() >= 1);
    assert!(
        proxy
            .targets()
            .iter()
            .all(|t| *t == issuer.addr.to_string()),
        "{:?}",
        proxy.targets()
    );
    assert_eq!(issuer.fetches(), 2, "discovery and JWKS, through the proxy");
    let answer = h.review(&issuer.mint(&jane(&url))).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");

    proxy.stop();
    // A kid we do not hold, in a fresh token, asks for a fetch.
    let stranger = DevKey::generate(Algorithm::RS256).unwrap();
    assert_unchecked(&h.review(&stranger.sign(&jane(&url))).await);
    assert!(
        h.metric(
            "authn_webhook_jwks_fetches_total",
            &[("issuer", "dex-proxied"), ("result", "connect_error")]
        )
        .await
            >= 1.0
    );
    assert_eq!(issuer.fetches(), 2, "nothing reached the issuer directly");
    let mut other = jane(&url);
    other["email"] = json!("other@example.com");
    let answer = h.review(&issuer.mint(&other)).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    let (_, ready) = readyz(&h).await;
    let dex = issuer_state(&ready, "dex-proxied");
    assert_eq!(dex["source"], "fetched");
    assert!(dex["last_error"].is_string(), "{ready}");
    issuer.stop().await;
}

/// A proxy that never answers the CONNECT holds a fetch no longer than
/// `jwks_fetch_timeout`: the fetch is counted as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_never_answers_is_bounded_by_the_fetch_timeout() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let proxy = ConnectProxy::start_silent().await;
    let yaml = dex_with(
        "dex-silent-proxy",
        issuer.url(),
        &format!(
            "    proxy_url: {}
    jwks_fetch_timeout: 1s
",
            proxy.url()
        ),
    );
    let h = Harness::start(ca, &yaml, Options::default()).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            h.metric(
                "authn_webhook_jwks_fetches_total",
                &[("issuer", "dex-silent-proxy"), ("result", "timeout")],
            )
            .await
                >= 1.0
        })
        .await
    );
    assert_eq!(issuer.fetches(), 0);
    assert_eq!(proxy.tunnels(), 0);
    issuer.stop().await;
}

/// `discovery_url`: the document comes from there (an in-cluster address)
/// while tokens keep `iss: url`; a document naming another issuer is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_url_is_fetched_while_iss_stays_url() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    // The external URL: never contacted (nothing listens there).
    let (_held, external) = held_port();
    let url = format!("https://localhost:{}/dex", external.port());
    let discovery = format!("{}/.well-known/openid-configuration", issuer.url());
    issuer.set_behaviour(Behaviour::Advertise(url.clone()));
    let h = Harness::start(
        ca,
        &dex_with(
            "dex-internal",
            &url,
            &format!("    discovery_url: {discovery}\n"),
        ),
        Options::default(),
    )
    .await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    assert_eq!(issuer.discovery_fetches(), 1);
    assert_eq!(issuer.jwks_fetches(), 1);
    let answer = h.review(&issuer.mint(&jane(&url))).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    // The address discovery is read from is not an issuer of its own.
    assert_rejected(&h.review(&issuer.mint(&jane(issuer.url()))).await);

    issuer.stop().await;
}

/// A document fetched from `discovery_url` that names the address it is
/// served from, not `url`, is refused: its keys are never fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_document_from_discovery_url_naming_another_issuer_is_refused() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let (_held, external) = held_port();
    let url = format!("https://localhost:{}/dex", external.port());
    let discovery = format!("{}/.well-known/openid-configuration", issuer.url());
    let h = Harness::start(
        ca,
        &dex_with(
            "dex-elsewhere",
            &url,
            &format!("    discovery_url: {discovery}\n"),
        ),
        Options::default(),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            h.metric(
                "authn_webhook_jwks_fetches_total",
                &[("issuer", "dex-elsewhere"), ("result", "issuer_mismatch")],
            )
            .await
                >= 1.0
        })
        .await
    );
    assert_eq!(issuer.jwks_fetches(), 0, "its keys are never fetched");
    let (code, ready) = readyz(&h).await;
    assert_eq!(code, 200, "not required");
    let state = issuer_state(&ready, "dex-elsewhere");
    assert_eq!(state["ready"], false);
    assert!(
        state["last_error"]
            .as_str()
            .unwrap()
            .contains(&format!("expected {url:?}")),
        "{ready}"
    );
    assert_unchecked(&h.review(&issuer.mint(&jane(&url))).await);
    issuer.stop().await;
}

/// Starts `serve` with `env` on a config for `issuer` (its CA in `dir`);
/// returns the child and its telemetry address once it serves.
async fn serve_with_env(
    dir: &Path,
    issuer: &TestIssuer,
    env: &[(&str, String)],
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let ca = new_ca();
    let tls = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
    write(dir, "tls.crt", &tls.cert_pem);
    write(dir, "tls.key", &tls.key_pem);
    write(dir, "ca.crt", &issuer.ca_pem);
    let config = write(
        dir,
        "config.yaml",
        format!(
            "server:\n  listen: 127.0.0.1:0\n  tls: {{cert_file: tls.crt, key_file: tls.key}}\ntelemetry: {{listen: 127.0.0.1:0}}\nissuers:{}",
            dex_with("dex", issuer.url(), "")
        ),
    );
    let mut cmd = WEBHOOK.command();
    cmd.args(["serve", "--config"]).arg(&config);
    for k in [
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let telemetry = tokio::time::timeout(Duration::from_secs(20), async {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).await.unwrap() > 0,
                "the server exited before serving"
            );
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "serving TokenReviews" {
                return v["telemetry_addr"].as_str().unwrap().to_owned();
            }
        }
    })
    .await
    .expect("the server starts serving");
    // Keep reading its log so it never blocks on a full pipe.
    tokio::spawn(async move {
        let mut line = String::new();
        while stdout.read_line(&mut line).await.is_ok_and(|n| n > 0) {
            line.clear();
        }
    });
    (child, telemetry)
}

async fn keys_fetched(telemetry: &str) -> bool {
    eventually(Duration::from_secs(20), || async {
        let Ok(r) = reqwest::get(format!("http://{telemetry}/readyz")).await else {
            return false;
        };
        let text = r.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        v["issuers"][0]["source"] == "fetched"
    })
    .await
}

/// The environment's HTTPS_PROXY carries the fetch of `serve`; NO_PROXY
/// naming the issuer's host bypasses it. A spawned binary, so the variables
/// reach no other test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_from_the_environment_is_used_unless_no_proxy_names_the_host() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let proxy = ConnectProxy::start().await;

    let dir = tempfile::tempdir().unwrap();
    let (mut child, telemetry) =
        serve_with_env(dir.path(), &issuer, &[("HTTPS_PROXY", proxy.url())]).await;
    assert!(keys_fetched(&telemetry).await);
    assert!(proxy.tunnels() >= 1, "HTTPS_PROXY is used");
    assert_eq!(proxy.targets()[0], issuer.addr.to_string());
    child.kill().await.unwrap();

    let before = proxy.tunnels();
    let fetches = issuer.fetches();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, telemetry) = serve_with_env(
        dir.path(),
        &issuer,
        &[
            ("HTTPS_PROXY", proxy.url()),
            ("NO_PROXY", "localhost,127.0.0.1".to_owned()),
        ],
    )
    .await;
    assert!(keys_fetched(&telemetry).await);
    assert!(issuer.fetches() > fetches);
    assert_eq!(proxy.tunnels(), before, "NO_PROXY bypasses the proxy");
    child.kill().await.unwrap();
    issuer.stop().await;
}

fn refused(text: &str) -> ConfigError {
    Config::from_yaml(text, Path::new("/etc/kube-authn-webhook/config.yaml"))
        .expect_err("the config should be refused")
}

/// Each new setting names its field and says what to write.
#[test]
fn proxy_discovery_and_state_dir_settings_validate() {
    let server = "server:\n  tls: {cert_file: tls.crt, key_file: tls.key}\nissuers:";
    let dex = |lines: &str| {
        format!(
            "{server}{}",
            dex_with("dex", "https://dex.example.com/dex", lines)
        )
    };
    let at = "issuers[0] (dex)";
    let cases = [
        (
            dex("    proxy_url: socks5://p:1080\n"),
            format!("{at}.proxy_url"),
            "http:// or https://",
        ),
        (
            dex("    proxy_url: http://p:3128/x\n"),
            format!("{at}.proxy_url"),
            "without a path",
        ),
        (
            dex("    proxy_url: p:3128\n"),
            format!("{at}.proxy_url"),
            "http:// or https://",
        ),
        (
            dex("    discovery_url: http://dex.dex.svc/dex/.well-known/openid-configuration\n"),
            format!("{at}.discovery_url"),
            "https://",
        ),
        (
            dex("    discovery_url: https://dex.example.com/dex/\n"),
            format!("{at}.discovery_url"),
            "issuer url itself",
        ),
        (
            dex("    discovery_url: https://169.254.169.254/x\n"),
            format!("{at}.discovery_url"),
            "link-local",
        ),
        (
            dex("    discovery_url: https://d.svc/x\n    jwks_url: https://dex.example.com/keys\n"),
            format!("{at}.discovery_url"),
            "not both",
        ),
        (
            format!(
                "{server}\n  - name: efa\n    kind: efa\n    keys: {{hmac_secret_file: s}}\n    algorithms: [HS256]\n    allow_any_audience: true\n    proxy_url: http://p:3128\n    discovery_url: https://e/x\n    claims: {{username: {{prefix: \"efa:\"}}, groups: {{prefix: \"efa:\"}}}}\n"
            ),
            "issuers[0] (efa).proxy_url".to_owned(),
            "fetches none",
        ),
        (
            format!(
                "{server}\n  - name: efa\n    kind: efa\n    keys: {{hmac_secret_file: s}}\n    algorithms: [HS256]\n    allow_any_audience: true\n    discovery_url: https://e/x\n    claims: {{username: {{prefix: \"efa:\"}}, groups: {{prefix: \"efa:\"}}}}\n"
            ),
            "issuers[0] (efa).discovery_url".to_owned(),
            "oidc issuers",
        ),
    ];
    for (text, field, says) in &cases {
        let err = refused(text);
        assert!(
            err.problems
                .iter()
                .any(|p| p.field.to_string() == *field && p.message.contains(says)),
            "expected {field} saying {says:?}: {err}\n{text}"
        );
        // A proxy's credentials are never repeated in a message.
        assert!(!err.to_string().contains("secret-pw"));
    }
    let err = refused(&dex("    proxy_url: ftp://user:secret-pw@p:21\n"));
    assert!(!err.to_string().contains("secret-pw"), "{err}");

    // The issuer's discovery_url host may serve the jwks_uri; valid as is.
    Config::from_yaml(
        &dex("    discovery_url: https://dex.dex.svc:5556/dex/.well-known/openid-configuration\n    proxy_url: http://proxy.corp:3128\n    required: true\n"),
        Path::new("c.yaml"),
    )
    .unwrap();

    // state_dir must be a directory that exists.
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "not-a-dir", "x");
    for (state_dir, says) in [
        (dir.path().join("missing").join("state"), "create it"),
        (file, "is not a directory"),
    ] {
        let text = format!("{}state_dir: {}\n", dex(""), state_dir.display());
        let err = Prepared::from_yaml(&text, &dir.path().join("config.yaml")).unwrap_err();
        assert!(
            err.problems
                .iter()
                .any(|p| p.field.to_string() == "state_dir" && p.message.contains(says)),
            "{says}: {err}"
        );
    }
}

fn repo_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn probe_path(container: &serde_norway::Value, probe: &str) -> Option<String> {
    container[probe]["httpGet"]["path"]
        .as_str()
        .map(str::to_owned)
}

/// The shipped manifests follow the readiness semantics: an issuer outage
/// never restarts a pod (startup and liveness on /healthz), readiness is
/// /readyz, and the Deployment's state_dir is a volume it mounts.
#[test]
fn the_manifests_probe_healthz_for_start_and_life_and_keep_state() {
    let deployment: serde_norway::Value =
        serde_norway::from_str(&repo_file("deploy/kubernetes/deployment.yaml")).unwrap();
    let spec = &deployment["spec"]["template"]["spec"];
    let webhook = spec["containers"]
        .as_sequence()
        .and_then(|c| c.iter().find(|c| c["name"] == "webhook"))
        .expect("the webhook container");
    assert_eq!(
        probe_path(webhook, "startupProbe").as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(webhook, "livenessProbe").as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(webhook, "readinessProbe").as_deref(),
        Some("/readyz")
    );

    // kustomization.yaml's configMapGenerator makes the ConfigMap of this file.
    let config: serde_norway::Value =
        serde_norway::from_str(&repo_file("deploy/kubernetes/config.yaml")).unwrap();
    let state_dir = config["state_dir"].as_str().expect("state_dir is set");
    let mount = webhook["volumeMounts"]
        .as_sequence()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == state_dir))
        .expect("state_dir is a mount");
    assert_ne!(mount["readOnly"], true, "state_dir is writable");
    let volume = spec["volumes"]
        .as_sequence()
        .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
        .expect("the state volume");
    assert!(volume["emptyDir"].is_mapping(), "{volume:?}");

    let sidecar: serde_norway::Value =
        serde_norway::from_str(&repo_file("deploy/sidecar/webhook-sidecar-patch.yaml")).unwrap();
    for c in sidecar["spec"]["containers"].as_sequence().unwrap() {
        for probe in ["startupProbe", "livenessProbe"] {
            assert_ne!(probe_path(c, probe).as_deref(), Some("/readyz"), "{probe}");
        }
    }
}

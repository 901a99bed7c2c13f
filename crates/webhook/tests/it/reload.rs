//! Config changes without a restart: the real server over TLS, started from
//! a config file on disk that the tests rewrite (by rename, as a ConfigMap
//! update does), polled every 200 ms; and the built binary reloading on
//! SIGHUP. Outcomes are polled for with generous deadlines, never timed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use kube_authn_testkit::bin::Binary;
use kube_authn_testkit::config::DexIssuer;
use kube_authn_testkit::harness::*;
use kube_authn_testkit::issuer::TestIssuer;
use kube_authn_webhook::cmd::demo::apiserver_request;
use kube_authn_webhook::wire::ApiVersion;
use serde_json::Value;

const WEBHOOK: Binary = Binary::new(env!("CARGO_BIN_EXE_kube-authn-webhook"));

/// Long enough for any reload on a loaded machine; outcomes are polled.
const DEADLINE: Duration = Duration::from_secs(20);

fn watching() -> Options {
    Options {
        tls_extra: ", reload_interval: 200ms",
        ..Options::default()
    }
}

fn dex(name: &str, url: &str, prefix: &str) -> String {
    let mut d = DexIssuer::new(name, url);
    d.prefix = prefix;
    d.yaml()
}

async fn reloads(h: &Harness, result: &str) -> f64 {
    h.metric("authn_webhook_config_reloads_total", &[("result", result)])
        .await
}

/// The one `config_info` series' hash.
async fn config_hash(h: &Harness) -> String {
    let (_, text) = h.telemetry("/metrics").await;
    let hashes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("authn_webhook_config_info{hash=\""))
        .filter_map(|rest| rest.split_once('"').map(|(hash, _)| hash))
        .collect();
    assert_eq!(hashes.len(), 1, "one config_info series: {hashes:?}");
    hashes[0].to_owned()
}

/// Rewrites the config with `issuers` and waits until a reload succeeded.
async fn reload_to(h: &Harness, issuers: &str) {
    let before = reloads(h, "success").await;
    h.rewrite_config(issuers);
    assert!(
        eventually(DEADLINE, || async { reloads(h, "success").await > before }).await,
        "the new config is loaded"
    );
}

fn username(answer: &Value) -> Option<&str> {
    if answer["status"]["authenticated"] != true {
        return None;
    }
    answer["status"]["user"]["username"].as_str()
}

async fn two_issuers() -> (Harness, TestIssuer, TestIssuer) {
    let ca = new_ca();
    let a = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let b = TestIssuer::start(&ca, Algorithm::ES256).await.unwrap();
    let h = Harness::start_watching(ca, &dex("a", a.url(), "a:"), watching()).await;
    assert!(h.running.wait_ready(DEADLINE).await, "issuer a ready");
    (h, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_issuer_starts_working_and_a_removed_one_stops() {
    let (h, a, b) = two_issuers().await;
    let token_a = a.mint(&jane(a.url()));
    let token_b = b.mint(&jane(b.url()));
    assert_eq!(
        username(&h.review(&token_a).await),
        Some("a:jane@example.com")
    );
    assert_rejected(&h.review(&token_b).await);
    let first = config_hash(&h).await;

    reload_to(
        &h,
        &format!("{}{}", dex("a", a.url(), "a:"), dex("b", b.url(), "b:")),
    )
    .await;
    // The new issuer's keys are fetched in the background or on its first
    // token; either way its tokens now authenticate.
    assert!(
        eventually(DEADLINE, || async {
            username(&h.review(&token_b).await) == Some("b:jane@example.com")
        })
        .await,
        "issuer b works after the reload"
    );
    let second = config_hash(&h).await;
    assert_ne!(first, second, "config_info shows the new config");

    // a's verdict is cached (a hit), then a is removed: its cached
    // verdict is not served, its tokens are refused from the next review.
    assert_eq!(
        username(&h.review(&token_a).await),
        Some("a:jane@example.com")
    );
    reload_to(&h, &dex("b", b.url(), "b:")).await;
    let answer = h.review(&token_a).await;
    assert_rejected(&answer);
    assert_eq!(
        h.reviews(&[("issuer", "unmatched"), ("reason", "unknown_issuer")])
            .await,
        2.0,
        "b's token before b was added, a's after a was removed"
    );
    assert_eq!(
        username(&h.review(&token_b).await),
        Some("b:jane@example.com")
    );
    assert_eq!(reloads(&h, "failure").await, 0.0);
    let (_, metrics) = h.telemetry("/metrics").await;
    assert!(
        !metrics.contains("authn_webhook_jwks_keys{issuer=\"a\"}"),
        "the removed issuer's key gauge is gone"
    );
    assert!(logs().contains("config reloaded"), "the reload is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_leaves_the_old_one_serving() {
    let (h, a, b) = two_issuers().await;
    let token_a = a.mint(&jane(a.url()));
    let token_b = b.mint(&jane(b.url()));
    let good = config_hash(&h).await;
    let path = h.config_path().display().to_string();

    // Not YAML at all.
    h.write_config("server: [this is not\n");
    assert!(
        eventually(DEADLINE, || async { reloads(&h, "failure").await == 1.0 }).await,
        "the broken config is counted"
    );
    assert_eq!(
        username(&h.review(&token_a).await),
        Some("a:jane@example.com"),
        "the old config keeps answering"
    );
    assert_eq!(config_hash(&h).await, good);

    // Valid YAML that adds b, but names a CA file that is not there: the
    // whole config is refused, b is not half added.
    let mut broken_b = DexIssuer::new("b", b.url());
    broken_b.prefix = "b:";
    broken_b.ca_file = "missing-ca.crt";
    h.rewrite_config(&format!("{}{}", dex("a", a.url(), "a:"), broken_b.yaml()));
    assert!(
        eventually(DEADLINE, || async { reloads(&h, "failure").await == 2.0 }).await,
        "the config naming a missing file is counted"
    );
    assert_rejected(&h.review(&token_b).await);
    assert_eq!(
        username(&h.review(&token_a).await),
        Some("a:jane@example.com")
    );
    // The log names the file, the field and the missing file; each distinct
    // failure once, however many polls see the same broken files.
    let failures = || {
        logs()
            .lines()
            .filter(|l| l.contains(&path) && l.contains("the changed config is not valid"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let logged = failures();
    assert_eq!(logged.len(), 2, "{logged:#?}");
    assert!(
        logged[1].contains("certificate_authority_file") && logged[1].contains("missing-ca.crt"),
        "{}",
        logged[1]
    );
    // A second poll of the unchanged broken files loads nothing: wait for
    // a later, unrelated reload to be sure polls ran, then count again.
    h.write_config("still: [broken\n");
    assert!(eventually(DEADLINE, || async { reloads(&h, "failure").await == 3.0 }).await);
    assert_eq!(failures().len(), 3);

    // Fixed: the reload goes through.
    reload_to(
        &h,
        &format!("{}{}", dex("a", a.url(), "a:"), dex("b", b.url(), "b:")),
    )
    .await;
    assert!(
        eventually(DEADLINE, || async {
            username(&h.review(&token_b).await) == Some("b:jane@example.com")
        })
        .await
    );
    assert_eq!(reloads(&h, "failure").await, 3.0);
    assert_ne!(config_hash(&h).await, good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_mapping_changes_the_next_answer_even_for_a_cached_token() {
    let (h, a, _b) = two_issuers().await;
    let token = a.mint(&jane(a.url()));
    assert_eq!(
        username(&h.review(&token).await),
        Some("a:jane@example.com")
    );
    let hits = h
        .metric("authn_webhook_cache_lookups_total", &[("result", "hit")])
        .await;
    assert_eq!(
        username(&h.review(&token).await),
        Some("a:jane@example.com")
    );
    assert_eq!(
        h.metric("authn_webhook_cache_lookups_total", &[("result", "hit")])
            .await,
        hits + 1.0,
        "the verdict is cached"
    );

    let fetches = a.fetches();
    reload_to(&h, &dex("a", a.url(), "changed:")).await;
    assert_eq!(
        username(&h.review(&token).await),
        Some("changed:jane@example.com"),
        "the first review after the reload uses the new mapping"
    );
    assert_eq!(
        a.fetches(),
        fetches,
        "a new mapping on the same key source keeps the keys"
    );

    // A change to how keys are fetched is a new key set, fetched afresh.
    let mut refetch = DexIssuer::new("a", a.url());
    refetch.prefix = "changed:";
    refetch.min_refetch = Some("2s");
    reload_to(&h, &refetch.yaml()).await;
    assert!(
        eventually(DEADLINE, || async { a.fetches() > fetches }).await,
        "the new key set fetches"
    );
    assert_eq!(
        username(&h.review(&token).await),
        Some("changed:jane@example.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_issuers_keep_their_keys_and_verdicts() {
    let (h, a, b) = two_issuers().await;
    let token_a = a.mint(&jane(a.url()));
    assert_eq!(
        username(&h.review(&token_a).await),
        Some("a:jane@example.com")
    );
    let fetches = a.fetches();
    assert!(fetches > 0);
    let hits = h
        .metric("authn_webhook_cache_lookups_total", &[("result", "hit")])
        .await;

    // Add b, then change b, then change the cache-unrelated server setting
    // max_body_bytes: a's settings and files never change.
    reload_to(
        &h,
        &format!("{}{}", dex("a", a.url(), "a:"), dex("b", b.url(), "b:")),
    )
    .await;
    reload_to(
        &h,
        &format!("{}{}", dex("a", a.url(), "a:"), dex("b", b.url(), "bb:")),
    )
    .await;
    assert_eq!(
        username(&h.review(&token_a).await),
        Some("a:jane@example.com")
    );
    assert_eq!(a.fetches(), fetches, "a's keys were not fetched again");
    assert_eq!(
        h.metric("authn_webhook_cache_lookups_total", &[("result", "hit")])
            .await,
        hits + 1.0,
        "a's cached verdict is still served"
    );
    // Only the issuer that changed fetched.
    assert!(
        eventually(DEADLINE, || async { b.fetches() > 0 }).await,
        "the new issuer fetches its keys"
    );
    assert_eq!(a.fetches(), fetches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_clients_see_no_failure_and_no_wrong_answer_through_twenty_reloads() {
    let (h, a, b) = two_issuers().await;
    let h = Arc::new(h);
    let token_a = a.mint(&jane(a.url()));
    let token_b = b.mint(&jane(b.url()));
    // b's prefix alternates between two values: each reload changes b (a
    // new verifier on the same key set) and leaves a as it is.
    let config = |i: usize| {
        let prefix = format!("b{}:", i % 2);
        format!("{}{}", dex("a", a.url(), "a:"), dex("b", b.url(), &prefix))
    };
    reload_to(&h, &config(0)).await;
    assert!(
        eventually(DEADLINE, || async {
            username(&h.review(&token_b).await) == Some("b0:jane@example.com")
        })
        .await
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (h, stop, answered) = (h.clone(), stop.clone(), answered.clone());
        let (token_a, token_b) = (token_a.clone(), token_b.clone());
        clients.push(tokio::spawn(async move {
            let mut wrong = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                // `review` insists on HTTP 200: any other status fails here.
                let a = h.review(&token_a).await;
                if username(&a) != Some("a:jane@example.com") {
                    wrong.push(format!("client {c}, a: {a}"));
                }
                let b = h.review(&token_b).await;
                match username(&b) {
                    Some("b0:jane@example.com" | "b1:jane@example.com") => {}
                    _ => wrong.push(format!("client {c}, b: {b}")),
                }
                answered.fetch_add(2, Ordering::SeqCst);
            }
            wrong
        }));
    }
    for i in 1..=20 {
        reload_to(&h, &config(i)).await;
        let want = format!("b{}:jane@example.com", i % 2);
        assert!(
            eventually(DEADLINE, || async {
                username(&h.review(&token_b).await) == Some(want.as_str())
            })
            .await,
            "reload {i} applies"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let mut wrong = Vec::new();
    for c in clients {
        wrong.extend(c.await.expect("a client panicked (a failed request)"));
    }
    assert!(wrong.is_empty(), "wrong answers: {wrong:#?}");
    assert!(answered.load(Ordering::SeqCst) > 0);
    assert_eq!(reloads(&h, "failure").await, 0.0);
    assert_eq!(
        h.reviews(&[("outcome", "error")]).await,
        0.0,
        "no review failed to be checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_of_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let tls = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
    write(dir.path(), "ca.crt", &ca.cert_pem);
    write(dir.path(), "tls.crt", &tls.cert_pem);
    write(dir.path(), "tls.key", &tls.key_pem);
    // Polled hourly: only SIGHUP can make this reload within the test.
    let config = |prefix: &'static str| {
        format!(
            "server:\n  listen: 127.0.0.1:0\n  tls: {{cert_file: tls.crt, key_file: tls.key, reload_interval: 1h}}\ntelemetry: {{listen: 127.0.0.1:0}}\nissuers:{}",
            dex("dex", issuer.url(), prefix)
        )
    };
    let path = write(dir.path(), "config.yaml", config("before:"));
    let mut served = WEBHOOK.serve(&path).await;
    let client = https_client(&ca.cert_pem, None);
    let token = issuer.mint(&jane(issuer.url()));
    let url = format!("https://{}/authenticate", served.addr);
    let review = || async {
        let body = apiserver_request(ApiVersion::V1, &token, &[API_AUDIENCE]);
        let bytes = client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    assert!(
        eventually(DEADLINE, || async {
            username(&review().await) == Some("before:jane@example.com")
        })
        .await,
        "the binary serves the first config"
    );

    replace_file(dir.path(), "config.yaml", config("after:"));
    served.signal("HUP");
    assert!(
        served
            .wait_for(DEADLINE, |v| v["message"] == "config reloaded")
            .await
            .is_some(),
        "SIGHUP reloads:\n{}",
        served.log
    );
    assert_eq!(username(&review().await), Some("after:jane@example.com"));
    let metrics = reqwest::get(format!("http://{}/metrics", served.telemetry_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_value(
            &metrics,
            "authn_webhook_config_reloads_total",
            &[("result", "success")]
        ),
        1.0
    );
    assert!(served.child.try_wait().unwrap().is_none(), "still running");
    served.signal("TERM");
    let status = tokio::time::timeout(DEADLINE, served.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_server_settings_apply_and_restart_only_ones_wait_with_a_warning() {
    let (h, a, _b) = two_issuers().await;
    let token = a.mint(&jane(a.url()));
    let text = std::fs::read_to_string(h.config_path()).unwrap();
    assert!(text.contains("workers: 1\n") && text.contains("max_body_bytes: 1048576\n"));
    let before = reloads(&h, "success").await;
    // max_body_bytes changes live; workers (the actix worker count) and the
    // reload interval only at a restart.
    h.write_config(
        &text
            .replace("workers: 1\n", "workers: 3\n")
            .replace("max_body_bytes: 1048576\n", "max_body_bytes: 3000\n")
            .replace("reload_interval: 200ms", "reload_interval: 250ms"),
    );
    assert!(
        eventually(DEADLINE, || async { reloads(&h, "success").await > before }).await,
        "a config that changes restart-only settings still loads"
    );
    let (status, _) = h.post("/authenticate", "x".repeat(4000)).await;
    assert_eq!(status, 413, "the new max_body_bytes is in use");
    assert_eq!(
        username(&h.review(&token).await),
        Some("a:jane@example.com")
    );
    let path = h.config_path().display().to_string();
    let warning = logs()
        .lines()
        .find(|l| l.contains(&path) && l.contains("take effect only at the next restart"))
        .map(str::to_owned)
        .expect("the restart-only change is logged");
    assert!(
        warning.contains("server.tls.reload_interval") && warning.contains("server.workers"),
        "{warning}"
    );
    assert!(!warning.contains("max_body_bytes"), "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_in_flight_finishes_with_the_config_it_started_with() {
    let (h, a, b) = two_issuers().await;
    let h = Arc::new(h);
    let token_b = b.mint(&jane(b.url()));
    // b is added while down, with a 5m retry: after its first failed fetch
    // nothing but a review's unknown-kid fetch asks b for keys.
    b.set_behaviour(kube_authn_testkit::issuer::Behaviour::Unavailable);
    let mut slow_b = DexIssuer::new("b", b.url());
    slow_b.prefix = "b:";
    slow_b.min_refetch = Some("5m");
    reload_to(&h, &format!("{}{}", dex("a", a.url(), "a:"), slow_b.yaml())).await;
    assert!(
        eventually(DEADLINE, || async {
            let (_, body) = h.telemetry("/readyz").await;
            let r: Value = serde_json::from_str(&body).unwrap();
            r["issuers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["name"] == "b" && i["last_error"].is_string())
        })
        .await,
        "b's first fetch failed"
    );
    b.set_behaviour(kube_authn_testkit::issuer::Behaviour::Slow(
        Duration::from_millis(1500),
    ));
    let asked = b.fetches();
    let in_flight = {
        let (h, token_b) = (h.clone(), token_b.clone());
        tokio::spawn(async move { h.review(&token_b).await })
    };
    // The review is at b, waiting for its keys: it started on this config.
    assert!(
        eventually(DEADLINE, || async { b.fetches() > asked }).await,
        "the review asks b for keys"
    );
    reload_to(&h, &dex("a", a.url(), "a:")).await;
    assert_rejected(&h.review(&token_b).await);
    assert_eq!(
        username(&in_flight.await.unwrap()),
        Some("b:jane@example.com"),
        "the review that started before b was removed is answered by the config it started with"
    );
}

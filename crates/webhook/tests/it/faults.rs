//! Issuer faults: slow, down, garbage, HTML, oversized, an impostor
//! discovery document, TLS failure. The last good keys keep working, other
//! issuers and cached tokens are never held up, and the cause is reported.
//! (A key set with no usable key is not a fault but the issuer's word: see
//! keys.rs.)

use std::time::Duration;

use jsonwebtoken::Algorithm;
use kube_authn_testkit::config::DexIssuer;
use kube_authn_testkit::{issuer::Behaviour, issuer::TestIssuer};
use serde_json::Value;

use kube_authn_testkit::harness::*;

/// A dex issuer named `name` whose fetch timeout is 1 s.
async fn dex_named(name: &str) -> (Harness, TestIssuer) {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let yaml = dex_issuer_yaml(name, issuer.url()).replace(
        "    jwks_min_refetch_interval: 1s\n",
        "    jwks_min_refetch_interval: 200ms\n    jwks_fetch_timeout: 1s\n",
    );
    let h = Harness::start(ca, &yaml, Options::default()).await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    (h, issuer)
}

fn log_lines_of(issuer: &str, message: &str) -> Vec<Value> {
    logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["issuer"] == issuer && v["fields"]["message"] == message)
        .collect()
}

/// After the issuer turns bad, a token from a new key cannot be checked
/// (status.error), a token from the old key still verifies, the fetch result
/// is counted under `label`, and the failure is logged with its cause.
async fn keys_fault(name: &str, behaviour: Behaviour, label: &str, cause: &str) {
    let (h, issuer) = dex_named(name).await;
    let old = issuer.mint(&jane(issuer.url()));
    issuer.set_behaviour(behaviour);
    issuer.rotate(Algorithm::RS256).unwrap();
    let new = issuer.mint(&jane(issuer.url()));
    let answer = h.review(&new).await;
    assert_unchecked(&answer);
    assert!(
        answer["status"]["error"].as_str().unwrap().contains(name),
        "the error names the issuer: {answer}"
    );
    assert_eq!(
        h.review(&old).await["status"]["authenticated"],
        true,
        "last good keys stay in use"
    );
    assert!(
        h.metric(
            "authn_webhook_jwks_fetches_total",
            &[("issuer", name), ("result", label)]
        )
        .await
            >= 1.0,
        "fetch failure counted as {label}"
    );
    assert_eq!(
        h.reviews(&[("issuer", name), ("reason", "keys_unavailable")])
            .await,
        1.0
    );
    let lines = log_lines_of(name, "fetching issuer keys failed");
    assert!(!lines.is_empty(), "the failure is logged");
    assert!(
        lines.iter().any(|l| l["fields"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains(cause)),
        "the log says why ({cause}): {lines:?}"
    );
    let (code, ready) = h.telemetry("/readyz").await;
    assert_eq!(code, 200, "old keys are usable keys: {ready}");
    assert!(
        ready.contains("last_error"),
        "readyz shows the last error: {ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_answering_503() {
    keys_fault("dex-503", Behaviour::Unavailable, "http_error", "503").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_answering_garbage() {
    keys_fault(
        "dex-garbage",
        Behaviour::Garbage,
        "invalid",
        "not a JWKS document",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_answering_html() {
    keys_fault(
        "dex-html",
        Behaviour::Html,
        "invalid",
        "not a JWKS document",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_answering_an_oversized_body() {
    keys_fault(
        "dex-huge",
        Behaviour::Oversized(2 * 1024 * 1024),
        "too_large",
        "more than 1048576 bytes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_too_slow_times_out_without_holding_up_others() {
    let (h, issuer) = dex_named("dex-slow").await;
    let cached = issuer.mint(&jane(issuer.url()));
    assert_eq!(h.review(&cached).await["status"]["authenticated"], true);
    issuer.set_behaviour(Behaviour::Slow(Duration::from_secs(3)));
    issuer.rotate(Algorithm::RS256).unwrap();
    let new = issuer.mint(&jane(issuer.url()));
    let slow = h.review(&new);
    tokio::pin!(slow);
    // While the fetch hangs, a cached token is answered.
    tokio::select! {
        a = &mut slow => panic!("the slow review finished first: {a}"),
        a = h.review(&cached) => assert_eq!(a["status"]["authenticated"], true),
    }
    let answer = slow.await;
    assert_unchecked(&answer);
    assert!(
        answer["status"]["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{answer}"
    );
    assert_eq!(
        h.metric(
            "authn_webhook_jwks_fetches_total",
            &[("issuer", "dex-slow"), ("result", "timeout")]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_issuer_does_not_hold_up_another_issuer() {
    let ca = new_ca();
    let slow = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let fine = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    // Two issuers in one config, so each has a prefix of its own.
    let yaml = format!(
        "{}{}",
        DexIssuer {
            prefix: "slow:",
            ..DexIssuer::new("slow", slow.url())
        }
        .yaml()
        .replace(
            "    jwks_min_refetch_interval: 1s\n",
            "    jwks_min_refetch_interval: 200ms\n    jwks_fetch_timeout: 2s\n"
        ),
        DexIssuer {
            prefix: "fine:",
            ..DexIssuer::new("fine", fine.url())
        }
        .yaml()
    );
    let h = Harness::start(ca, &yaml, Options::default()).await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    slow.set_behaviour(Behaviour::Slow(Duration::from_secs(4)));
    slow.rotate(Algorithm::RS256).unwrap();
    let slow_token = slow.mint(&jane(slow.url()));
    let stuck = h.review(&slow_token);
    tokio::pin!(stuck);
    let first_time = fine.mint(&jane(fine.url()));
    tokio::select! {
        a = &mut stuck => panic!("the slow issuer's review finished first: {a}"),
        a = h.review(&first_time) => assert_eq!(a["status"]["authenticated"], true),
    }
    assert_unchecked(&stuck.await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_for_another_issuer_is_refused() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    issuer.set_behaviour(Behaviour::WrongIssuer);
    let h = Harness::start(
        ca,
        &dex_issuer_yaml("dex-impostor", issuer.url()),
        Options::default(),
    )
    .await;
    assert!(
        !h.running.wait_ready(Duration::from_millis(1500)).await,
        "never ready on an impostor's keys"
    );
    assert_unchecked(&h.review(&issuer.mint(&jane(issuer.url()))).await);
    assert!(
        h.metric(
            "authn_webhook_jwks_fetches_total",
            &[("issuer", "dex-impostor"), ("result", "issuer_mismatch")]
        )
        .await
            >= 1.0
    );
    assert_eq!(
        issuer.jwks_fetches(),
        0,
        "the impostor's JWKS is never fetched"
    );
    // Not `required`: the instance stays ready, the issuer's entry says why.
    let (code, body) = h.telemetry("/readyz").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"ready\":false"), "{body}");
    assert!(body.contains("impostor"), "readyz says why: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_with_an_untrusted_certificate_is_a_tls_failure() {
    let issuer_ca = new_ca();
    let issuer = TestIssuer::start(&issuer_ca, Algorithm::RS256)
        .await
        .unwrap();
    // The webhook trusts ca.crt (the harness CA), which did not sign the issuer.
    let h = Harness::start(
        new_ca(),
        &dex_issuer_yaml("dex-tls", issuer.url()),
        Options::default(),
    )
    .await;
    assert!(!h.running.wait_ready(Duration::from_millis(1500)).await);
    assert_unchecked(&h.review(&issuer.mint(&jane(issuer.url()))).await);
    assert!(
        h.metric(
            "authn_webhook_jwks_fetches_total",
            &[("issuer", "dex-tls"), ("result", "connect_error")]
        )
        .await
            >= 1.0
    );
    let lines = log_lines_of("dex-tls", "fetching issuer keys failed");
    assert!(
        lines.iter().any(|l| l["fields"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("certificate")),
        "the log names the certificate problem: {lines:?}"
    );
    assert_eq!(
        issuer.fetches(),
        0,
        "no request got through the failed handshake"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_token_floods_cause_no_outbound_traffic() {
    let (h, issuer) = dex_named("dex-flood").await;
    let before = issuer.fetches();
    let stranger = kube_authn_testkit::DevKey::generate(Algorithm::ES256).unwrap();
    let mut tokens = Vec::new();
    for i in 0..100 {
        tokens.push(format!("garbage-{i}-{}", "x".repeat(i)));
        let mut c = jane("https://unknown.example.com/dex");
        c["sub"] = serde_json::json!(format!("user-{i}"));
        tokens.push(stranger.sign(&c));
    }
    let valid = issuer.mint(&jane(issuer.url()));
    let flood = futures_util::future::join_all(tokens.iter().map(|t| h.review(t)));
    let (answers, good) = tokio::join!(flood, h.review(&valid));
    for a in &answers {
        assert_rejected(a);
    }
    assert_eq!(good["status"]["authenticated"], true);
    assert_eq!(issuer.fetches(), before);
}

//! The HTTP contract: what is a 400, a 413, a 404, and who may call.

use futures_util::StreamExt;
use jsonwebtoken::Algorithm;
use kube_authn_common::clock::unix_now;
use kube_authn_testkit::tokens::refused_token;
use kube_authn_testkit::{DevKey, dex_claims};
use serde_json::json;

use kube_authn_webhook::cmd::demo::apiserver_request;
use kube_authn_webhook::wire::ApiVersion;

use kube_authn_testkit::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_with_a_status_that_says_why() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let token = issuer.mint(&jane(issuer.url()));
    // A wrong kind or apiVersion is caller input: the answer and the log say
    // what is wrong without quoting it (these values appear nowhere else).
    let kind = "SubjectAccessReview-\u{1b}[2Jechoed";
    let api_version = "authentication.k8s.io/v2-echoed";
    let cases = [
        ("{not json".to_owned(), "not a TokenReview", None),
        // A token where an object belongs must not be quoted back.
        (json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": token}).to_string(), "wrong type", None),
        (json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token, "audiences": token}}).to_string(), "wrong type", None),
        (json!({"apiVersion": "authentication.k8s.io/v1", "kind": kind, "spec": {"token": token}}).to_string(), "kind is not \"TokenReview\"", Some("SubjectAccessReview-")),
        (json!({"apiVersion": api_version, "kind": "TokenReview", "spec": {"token": token}}).to_string(), "apiVersion is not", Some("v2-echoed")),
        (json!({"apiVersion": "authentication.k8s.io/v1", "spec": {"token": token}}).to_string(), "kind is missing", None),
        (json!({"kind": "TokenReview", "spec": {"token": token}}).to_string(), "apiVersion is missing", None),
        (json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}}).to_string(), "spec.token", None),
        (json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview"}).to_string(), "spec.token", None),
    ];
    let n = cases.len();
    for (body, mentions, caller_value) in cases {
        let (code, answer) = h.post("/authenticate", body.clone()).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert_eq!(answer["kind"], "Status");
        assert_eq!(answer["code"], 400);
        let msg = answer["message"].as_str().unwrap();
        assert!(msg.contains(mentions), "{msg:?} should mention {mentions}");
        assert!(!msg.contains(&token), "the answer never echoes the token");
        if let Some(v) = caller_value {
            assert!(!msg.contains(v), "{msg:?} echoes the caller's value");
        }
    }
    assert_eq!(
        h.metric("authn_webhook_bad_requests_total", &[("code", "400")])
            .await,
        n as f64
    );
    let logs = logs();
    assert!(logs.contains("kind is not"), "the refusal is logged");
    for v in ["SubjectAccessReview-", "v2-echoed"] {
        assert!(!logs.contains(v), "the log echoes the caller's {v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    let (h, issuer) = Harness::with_dex(Options {
        max_body_bytes: 4096,
        ..Options::default()
    })
    .await;
    let big = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "x".repeat(8000)}});
    let (code, answer) = h.post("/authenticate", big.to_string()).await;
    assert_eq!(code, 413, "{answer}");
    assert_eq!(answer["reason"], "RequestEntityTooLarge");
    // Streamed without a length, the limit still holds.
    let stream =
        futures_util::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let (code, _) = h
        .post("/authenticate", reqwest::Body::wrap_stream(stream))
        .await;
    assert_eq!(code, 413);
    // A normal review still fits.
    assert_eq!(
        h.review(&issuer.mint(&jane(issuer.url()))).await["status"]["authenticated"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_style_paths_serve_reviews_and_others_are_404() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let token = issuer.mint(&jane(issuer.url()));
    for (path, version) in [
        ("/apis/authentication.k8s.io/v1/tokenreviews", "v1"),
        (
            "/apis/authentication.k8s.io/v1beta1/tokenreviews",
            "v1beta1",
        ),
    ] {
        let body = json!({"apiVersion": format!("authentication.k8s.io/{version}"), "kind": "TokenReview", "spec": {"token": token}});
        let (code, answer) = h.post(path, body.to_string()).await;
        assert_eq!(code, 200);
        assert_eq!(answer["status"]["authenticated"], true);
        assert_eq!(
            answer["apiVersion"],
            format!("authentication.k8s.io/{version}")
        );
    }
    let (code, answer) = h.post("/elsewhere", "{}").await;
    assert_eq!(code, 404);
    assert_eq!(answer["kind"], "Status");
    let (code, _) = h.telemetry("/nothing-here").await;
    assert_eq!(code, 404);
    // Both listeners' 404s are counted and logged, with the path only.
    assert_eq!(
        h.metric("authn_webhook_bad_requests_total", &[("code", "404")])
            .await,
        2.0
    );
    let logs = logs();
    assert!(logs.contains("/elsewhere") && logs.contains("/nothing-here"));
}

/// A burst of one new token is verified once: every other request waits
/// for that verification and shares its verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reviews_of_one_new_token_verify_it_once() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let token = issuer.mint(&jane(issuer.url()));
    let answers = futures_util::future::join_all((0..16).map(|_| h.review(&token))).await;
    for a in &answers {
        assert_eq!(a["status"]["authenticated"], true, "{a}");
    }
    let lookups = "authn_webhook_cache_lookups_total";
    assert_eq!(h.metric(lookups, &[("result", "miss")]).await, 1.0);
    assert_eq!(h.metric(lookups, &[("result", "hit")]).await, 15.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_tokens_are_refused_not_errors() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let before = issuer.fetches();
    for t in [
        "garbage",
        "a.b.c",
        "sha256~AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg",
        "eyJhbGciOiJSUzI1NiJ9..",
        "a.b.c.d.e",
    ] {
        assert_rejected(&h.review(t).await);
    }
    assert_rejected(&h.review(&"A".repeat(300 * 1024)).await);
    assert_eq!(
        issuer.fetches(),
        before,
        "garbage never causes outbound traffic"
    );
    assert_eq!(h.reviews(&[("reason", "token_too_large")]).await, 1.0);
}

/// Tokens refused before routing (not a JWT, no issuer for their `iss`, too
/// large) cost less to decide again than to cache: a flood of distinct ones
/// must not push real identities out of a full cache, nor fetch anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unroutable_tokens_leaves_cached_identities_alone() {
    let (h, issuer) = Harness::with_dex(Options {
        cache: "{max_entries: 50, max_ttl: 5m, negative_ttl: 10s}",
        ..Options::default()
    })
    .await;
    let now = unix_now();
    let users: Vec<String> = (0..40)
        .map(|i| {
            let email = format!("cached{i}@example.com");
            issuer.mint(&dex_claims(issuer.url(), now, Some(&email), "c", &["devs"]))
        })
        .collect();
    for t in &users {
        assert_eq!(h.review(t).await["status"]["authenticated"], true);
    }
    let fetches = issuer.fetches();

    // Not a JWT and an unknown issuer in turn (the key signs for nobody we
    // know), all distinct, plus a few too large to parse.
    let key = DevKey::generate(Algorithm::ES256).unwrap();
    let mut flood: Vec<String> = (0..4500)
        .filter(|i| i % 3 != 2)
        .map(|i| refused_token(i, issuer.url(), now, &key))
        .collect();
    flood.extend((0..3).map(|i| format!("{i}{}", "A".repeat(300 * 1024))));
    let total = flood.len();
    // A few through `review`, whose harness checks no token reaches the log.
    for t in &flood[..4] {
        assert_rejected(&h.review(t).await);
    }
    let answers: Vec<(u16, serde_json::Value)> = futures_util::stream::iter(&flood[4..])
        .map(|t| {
            let body = apiserver_request(ApiVersion::V1, t, &[API_AUDIENCE]).to_string();
            h.post("/authenticate", body)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (code, answer) in &answers {
        assert_eq!(*code, 200, "{answer}");
        assert_rejected(answer);
    }
    assert_eq!(
        h.reviews(&[("issuer", "unmatched"), ("outcome", "rejected")])
            .await,
        total as f64
    );

    let lookups = "authn_webhook_cache_lookups_total";
    let hits = h.metric(lookups, &[("result", "hit")]).await;
    for t in &users {
        assert_eq!(h.review(t).await["status"]["authenticated"], true);
    }
    assert_eq!(
        h.metric(lookups, &[("result", "hit")]).await - hits,
        users.len() as f64,
        "every cached identity survived the flood"
    );
    assert_eq!(issuer.fetches(), fetches, "the flood fetched nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_callers_without_a_client_certificate() {
    let (h, issuer) = Harness::with_dex(Options {
        mtls: true,
        ..Options::default()
    })
    .await;
    let token = issuer.mint(&jane(issuer.url()));
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);

    let body = apiserver_request(ApiVersion::V1, &token, &[]).to_string();
    let stranger = new_ca().client("kube-apiserver", 1).unwrap();
    for (caller, identity) in [
        ("no client certificate", None),
        ("a client certificate from another CA", Some(&stranger)),
    ] {
        let result = https_client(&h.ca.cert_pem, identity)
            .post(h.url("/authenticate"))
            .body(body.clone())
            .send()
            .await;
        assert!(
            result.is_err(),
            "no TokenReview answer with {caller}: {result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_reports_health_readiness_and_metrics() {
    let (h, _issuer) = Harness::with_dex(Options::default()).await;
    let (code, _) = h.telemetry("/healthz").await;
    assert_eq!(code, 200);
    let (code, body) = h.telemetry("/readyz").await;
    assert_eq!(code, 200);
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["issuers"][0]["name"], "dex");
    assert_eq!(r["issuers"][0]["keys"], 1);
    let (_, metrics) = h.telemetry("/metrics").await;
    for name in [
        "authn_webhook_cache_lookups_total",
        "authn_webhook_cache_entries",
        "authn_webhook_jwks_fetches_total",
        "authn_webhook_jwks_keys",
        "authn_webhook_jwks_last_success_timestamp_seconds",
        "authn_webhook_build_info",
        "authn_webhook_tls_certificate_expiry_errors_total",
        // The process collector (Linux).
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(metrics.contains(name), "{name} exported");
    }
    assert!(
        h.metric("process_resident_memory_bytes", &[]).await > 0.0,
        "the process collector reads /proc"
    );
    assert_eq!(
        h.metric(
            "authn_webhook_jwks_fetches_total",
            &[("issuer", "dex"), ("result", "success")]
        )
        .await,
        1.0
    );
}

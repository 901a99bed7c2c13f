//! Issuer keys: rotation, unknown-kid floods, an issuer that is down.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Header};
use kube_authn_testkit::{DevKey, issuer::TestIssuer};

use kube_authn_testkit::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_a_rotated_key_is_accepted_after_one_refetch() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let before = issuer.jwks_fetches();
    // Dex signs with a new key the moment it rotates.
    issuer.rotate(Algorithm::RS256).unwrap();
    let answer = h.review(&issuer.mint(&jane(issuer.url()))).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(issuer.jwks_fetches(), before + 1);
    // Tokens of the old key still verify: Dex keeps it published for 24 h.
    assert_eq!(
        h.metric("authn_webhook_jwks_keys", &[("issuer", "dex")])
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_flood_refetches_within_the_rate_limit() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let valid = issuer.mint(&jane(issuer.url()));
    let stranger = DevKey::generate(Algorithm::RS256).unwrap();
    let before = issuer.jwks_fetches();
    let started = Instant::now();
    let flood = (0..60).map(|i| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(format!("unknown-{i}"));
        let token = stranger.sign_with_header(&header, &jane(issuer.url()));
        let h = &h;
        async move { h.review(&token).await }
    });
    let (answers, good) = tokio::join!(futures_util::future::join_all(flood), h.review(&valid));
    let elapsed = started.elapsed();
    assert_eq!(
        good["status"]["authenticated"], true,
        "valid tokens are answered meanwhile"
    );
    for a in &answers {
        assert_rejected(a);
    }
    let fetched = issuer.jwks_fetches() - before;
    // jwks_min_refetch_interval is 1s in the test config.
    let allowed = 1 + elapsed.as_secs() as usize;
    assert!(fetched >= 1, "an unknown kid triggers a refetch");
    assert!(
        fetched <= allowed,
        "{fetched} fetches in {elapsed:?}, at most {allowed} allowed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_down_at_start_up_is_served_once_it_comes_up() {
    let ca = new_ca();
    let (held, addr) = held_port();
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    let url = format!("https://{addr}/dex");
    let h = Harness::start(ca, &dex_issuer_yaml("dex", &url), Options::default()).await;

    let (code, body) = h.telemetry("/readyz").await;
    assert_eq!(code, 503, "not ready without keys: {body}");
    let token = key.sign(&jane(&url));
    // Keys unavailable is not a verdict on the token: status.error, not cached.
    assert_unchecked(&h.review(&token).await);

    let listener = held.listen(1024).unwrap().into_std().unwrap();
    let issuer = TestIssuer::start_with_listener(&h.ca, listener, vec![key])
        .await
        .unwrap();
    assert!(
        h.running.wait_ready(Duration::from_secs(20)).await,
        "ready once the issuer is up"
    );
    let answer = h.review(&token).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    let (code, _) = h.telemetry("/readyz").await;
    assert_eq!(code, 200);
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_good_keys_stay_in_use_when_the_issuer_goes_down() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let url = issuer.url().to_owned();
    let first = issuer.mint(&jane(&url));
    let keys = issuer.stop().await;
    let mut c = jane(&url);
    c["email"] = serde_json::json!("other@example.com");
    let second = keys.last().unwrap().sign(&c);
    assert_eq!(h.review(&first).await["status"]["authenticated"], true);
    assert_eq!(h.review(&second).await["status"]["authenticated"], true);
    let (code, _) = h.telemetry("/readyz").await;
    assert_eq!(code, 200, "old keys are still usable keys");
}

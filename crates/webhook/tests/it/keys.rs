//! Issuer keys: rotation, withdrawal, how old they may get, unknown-kid
//! floods, keys that must never be trusted, certificates past their dates,
//! an issuer that is down.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
use kube_authn_common::clock::{Clock, unix_now};
use kube_authn_testkit::config::DexIssuer;
use kube_authn_testkit::issuer::Behaviour;
use kube_authn_testkit::{DevKey, dex_claims, issuer::TestIssuer};
use kube_authn_webhook::cmd::demo::issuer::jwks_document;
use kube_authn_webhook::prepare::Prepared;
use serde_json::{Value, json};

use kube_authn_testkit::harness::*;

/// Dex claims for `email`, issued at `iat` (and valid for a day from it).
fn claims_at(url: &str, iat: u64, email: &str) -> Value {
    dex_claims(url, iat, Some(email), "u", &["developers"])
}

/// Five minutes old: older than the last fetch by more than clock_skew, so
/// a key it names that we do not hold is unknown without a refetch.
fn issued_earlier() -> u64 {
    unix_now() - 300
}

fn log_lines(issuer: &str, message: &str) -> Vec<Value> {
    logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["issuer"] == issuer && v["fields"]["message"] == message)
        .collect()
}

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
async fn issuer_down_at_start_up_is_served_once_it_comes_up() {
    let ca = new_ca();
    let (held, addr) = held_port();
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    let url = format!("https://{addr}/dex");
    let h = Harness::start(ca, &dex_issuer_yaml("dex", &url), Options::default()).await;

    // Not `required`: ready, with the issuer's entry saying it has no keys.
    let (code, body) = h.telemetry("/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"ready\":false"), "{body}");
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

/// Issue 11, item 11. Anyone can make a token with a fresh `iat` and a kid
/// nobody has: none of them is held for the refetch rate limit. They join
/// the one fetch allowed (refused: the kid is not there either), or are
/// "could not check" at once; with a 30 s interval and a 5 s review
/// deadline, a review held for the slot would be answered "did not finish".
/// A key the issuer really rotated to is authenticated once the interval
/// allows the next fetch, which the flood itself scheduled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_flood_is_never_held_for_the_refetch_slot() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let yaml = DexIssuer {
        min_refetch: Some("30s"),
        ..DexIssuer::new("dex", issuer.url())
    }
    .yaml();
    let h = Harness::start(
        ca,
        &yaml,
        Options {
            server_extra: "  request_timeout: 5s\n",
            ..Options::default()
        },
    )
    .await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    let valid = issuer.mint(&jane(issuer.url()));
    let stranger = DevKey::generate(Algorithm::RS256).unwrap();
    let before = issuer.jwks_fetches();
    let flood = (0..160).map(|i| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(format!("forged-{i}"));
        let token = stranger.sign_with_header(&header, &jane(issuer.url()));
        let h = &h;
        async move { h.review(&token).await }
    });
    let (answers, good) = tokio::join!(futures_util::future::join_all(flood), h.review(&valid));
    assert_eq!(
        good["status"]["authenticated"], true,
        "valid tokens are answered meanwhile: {good}"
    );
    let (mut refused, mut unchecked) = (0, 0);
    for a in &answers {
        match a["status"]["error"].as_str() {
            None => {
                assert_rejected(a);
                refused += 1;
            }
            Some(e) => {
                assert_unchecked(a);
                assert!(!e.contains("did not finish"), "held for the slot: {a}");
                unchecked += 1;
            }
        }
    }
    assert_eq!(refused + unchecked, 160);
    assert_eq!(h.reviews(&[("reason", "timeout")]).await, 0.0);
    assert!(
        issuer.jwks_fetches() - before <= 1,
        "at most one fetch in the interval, whatever the flood"
    );

    issuer.rotate(Algorithm::RS256).unwrap();
    let rotated = issuer.mint(&jane(issuer.url()));
    assert!(
        eventually(Duration::from_secs(60), || async {
            h.review(&rotated).await["status"]["authenticated"] == true
        })
        .await,
        "a genuinely new key is authenticated once the interval allows a fetch"
    );
    assert!(issuer.jwks_fetches() - before <= 2);
}

/// Issue 11, item 7. A key set the issuer serves is its word, even with no
/// usable key in it: the keys it listed before stop verifying (refused, not
/// "could not check"), cached identities of theirs included (item 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_without_usable_keys_withdraws_the_old_keys() {
    let small_rsa = json!({"kty": "RSA", "kid": "small", "use": "sig", "n": "AQAB", "e": "AQAB"});
    for (case, doc) in [
        ("empty", Some(json!({"keys": []}))),
        ("small", Some(json!({"keys": [small_rsa]}))),
        ("enc", None),
    ] {
        let (h, issuer) = Harness::with_dex(Options::default()).await;
        let url = issuer.url().to_owned();
        let cached = issuer.mint(&claims_at(&url, issued_earlier(), "cached@example.com"));
        let uncached = issuer.mint(&claims_at(&url, issued_earlier(), "other@example.com"));
        assert_eq!(h.review(&cached).await["status"]["authenticated"], true);
        let doc = doc.unwrap_or_else(|| {
            let mut d = jwks_document(issuer.keys().iter());
            for k in d["keys"].as_array_mut().unwrap() {
                k["use"] = json!("enc");
            }
            d
        });
        issuer.set_behaviour(Behaviour::Publish(doc));
        // A kid we do not hold, issued now: fetches the new key set.
        let stranger = DevKey::generate(Algorithm::RS256).unwrap();
        assert_rejected(&h.review(&stranger.sign(&jane(&url))).await);
        for token in [&uncached, &cached] {
            let answer = h.review(token).await;
            assert_rejected(&answer);
        }
        assert_eq!(
            h.reviews(&[("issuer", "dex"), ("reason", "unknown_key")])
                .await,
            3.0,
            "{case}"
        );
        assert!(
            h.metric(
                "authn_webhook_jwks_fetches_total",
                &[("issuer", "dex"), ("result", "no_usable_keys")]
            )
            .await
                >= 1.0,
            "{case}"
        );
        assert_eq!(
            h.metric("authn_webhook_jwks_keys", &[("issuer", "dex")])
                .await,
            0.0,
            "{case}"
        );
        let (code, ready) = h.telemetry("/readyz").await;
        assert_eq!(code, 200, "{case}: not required: {ready}");
        assert!(ready.contains("\"ready\":false"), "{case}: {ready}");
        assert!(
            ready.contains("lists no usable signature key"),
            "{case}: {ready}"
        );
    }
}

/// Issue 11, item 8. The issuer rotates and stops publishing the old key
/// (Dex does so after 24 h): the identity that key verified, cached
/// moments ago, goes with it instead of living to cache.max_ttl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_identity_does_not_outlive_its_key() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let url = issuer.url().to_owned();
    let old = issuer.mint(&claims_at(&url, issued_earlier(), "old@example.com"));
    assert_eq!(h.review(&old).await["status"]["authenticated"], true);
    assert_eq!(h.review(&old).await["status"]["authenticated"], true);
    assert_eq!(
        h.metric("authn_webhook_cache_lookups_total", &[("result", "hit")])
            .await,
        1.0,
        "cached"
    );
    issuer.rotate(Algorithm::RS256).unwrap();
    issuer.retire_old_keys();
    // The new key's first token fetches the key set without the old key.
    let new = issuer.mint(&jane(&url));
    assert_eq!(h.review(&new).await["status"]["authenticated"], true);
    let answer = h.review(&old).await;
    assert_rejected(&answer);
    assert_eq!(
        h.reviews(&[("issuer", "dex"), ("reason", "unknown_key")])
            .await,
        1.0
    );
    // The new key's identity is cached as usual.
    assert_eq!(h.review(&new).await["status"]["authenticated"], true);
}

/// Issue 11, item 7. While the issuer cannot be reached, its last good keys
/// verify for `max_key_age` (the issuer's own here; the top-level value is
/// the default), cached identities too; after that its tokens "could not
/// be checked", and the keys are dropped at the next failed fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_good_keys_are_used_up_to_max_key_age() {
    let t0 = unix_now();
    let clock = Clock::manual(t0);
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let url = issuer.url().to_owned();
    let yaml = dex_issuer_yaml("dex", &url).replace(
        "    jwks_min_refetch_interval: 1s\n",
        "    jwks_min_refetch_interval: 1s\n    max_key_age: 10m\n",
    );
    let h = Harness::start(
        ca,
        &yaml,
        Options {
            clock: clock.clone(),
            ..Options::default()
        },
    )
    .await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    assert_eq!(
        h.metric(
            "authn_webhook_jwks_max_key_age_seconds",
            &[("issuer", "dex")]
        )
        .await,
        600.0
    );
    let key = issuer.current_key();
    let cached = key.sign(&claims_at(&url, t0, "cached@example.com"));
    assert_eq!(h.review(&cached).await["status"]["authenticated"], true);
    issuer.stop().await;

    clock.set(t0 + 9 * 60);
    let fresh = key.sign(&claims_at(&url, t0 + 9 * 60, "a@example.com"));
    assert_eq!(
        h.review(&fresh).await["status"]["authenticated"],
        true,
        "an outage keeps the last good keys"
    );
    assert_eq!(h.review(&cached).await["status"]["authenticated"], true);

    clock.set(t0 + 11 * 60);
    let late = key.sign(&claims_at(&url, t0 + 11 * 60, "b@example.com"));
    for token in [&late, &cached] {
        let answer = h.review(token).await;
        assert_unchecked(&answer);
        assert!(
            answer["status"]["error"]
                .as_str()
                .unwrap()
                .contains("more than max_key_age (10m)"),
            "{answer}"
        );
    }
    // The next fetch fails too (a kid we do not hold asks for one): the
    // keys are dropped, and the instance says it has none.
    let stranger = DevKey::generate(Algorithm::RS256).unwrap();
    assert_unchecked(
        &h.review(&stranger.sign(&claims_at(&url, t0 + 11 * 60, "c@x")))
            .await,
    );
    assert_eq!(
        h.metric("authn_webhook_jwks_keys", &[("issuer", "dex")])
            .await,
        0.0
    );
    let (code, ready) = h.telemetry("/readyz").await;
    assert_eq!(code, 200, "not required: {ready}");
    assert!(ready.contains("\"ready\":false"), "{ready}");
    assert_eq!(
        h.metric(
            "authn_webhook_jwks_last_success_timestamp_seconds",
            &[("issuer", "dex")]
        )
        .await,
        t0 as f64,
        "what the alert compares with max_key_age"
    );
}

/// The Ed25519 identity point as a public key: with R = identity and
/// s = 0, "signature" of every message.
fn forged_with_the_identity_key(claims: &Value) -> String {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let header = b64(json!({"alg": "EdDSA", "kid": "identity", "typ": "JWT"})
        .to_string()
        .as_bytes());
    let payload = b64(claims.to_string().as_bytes());
    let mut signature = [0u8; 64];
    signature[0] = 1;
    format!("{header}.{payload}.{}", b64(&signature))
}

/// Issue 11, item 14. A JWKS with a small-order Ed25519 key (anyone could
/// "sign" for it), an RSA key with e = 1 and one with a leading-zero
/// modulus: each is skipped with its reason, logged and counted, never
/// loaded; the issuer's real key keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_could_be_forged_for_are_skipped_with_a_reason() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let url = issuer.url().to_owned();
    let mut doc = jwks_document(issuer.keys().iter());
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let real = issuer.current_key().jwk;
    let n = URL_SAFE_NO_PAD.decode(real["n"].as_str().unwrap()).unwrap();
    let mut padded = vec![0u8];
    padded.extend_from_slice(&n);
    let keys = doc["keys"].as_array_mut().unwrap();
    keys.push(
        json!({"kty": "OKP", "crv": "Ed25519", "kid": "identity", "alg": "EdDSA", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(identity)}),
    );
    keys.push(
        json!({"kty": "RSA", "kid": "e1", "alg": "RS256", "use": "sig",
        "n": real["n"], "e": "AQ"}),
    );
    keys.push(
        json!({"kty": "RSA", "kid": "padded", "alg": "RS256", "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(&padded), "e": "AQAB"}),
    );
    issuer.set_behaviour(Behaviour::Publish(doc));

    // Names the small-order key, issued now: fetches the key set.
    let forged = forged_with_the_identity_key(&jane(&url));
    assert_rejected(&h.review(&forged).await);
    assert_eq!(
        h.metric("authn_webhook_jwks_skipped_keys", &[("issuer", "dex")])
            .await,
        3.0
    );
    assert_eq!(
        h.metric("authn_webhook_jwks_keys", &[("issuer", "dex")])
            .await,
        1.0
    );
    let skipped: Vec<String> = log_lines("dex", "ignoring a key in the issuer's JWKS")
        .iter()
        .map(|l| {
            l["fields"]["skipped"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for why in ["small-order", "e is 1", "leading zero"] {
        assert!(
            skipped.iter().any(|s| s.contains(why)),
            "{why}: {skipped:?}"
        );
    }
    assert_eq!(
        h.review(&issuer.mint(&jane(&url))).await["status"]["authenticated"],
        true
    );
}

/// A self-signed certificate for `key` valid from `not_before` to
/// `not_after` (Unix seconds), like EFA's "JWT certificate".
pub(crate) fn certificate_pem(key: &DevKey, not_before: u64, not_after: u64) -> String {
    let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &key.pkcs8_der().into(),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Extreme Fabric Automation");
    let at = |t: u64| time::OffsetDateTime::from_unix_timestamp(t as i64).unwrap();
    params.not_before = at(not_before);
    params.not_after = at(not_after);
    params.self_signed(&kp).unwrap().pem()
}

fn efa_claims(now: u64) -> Value {
    json!({"username": "netadmin", "roles": ["FabricAdmin", "NetworkOperator"], "iat": now, "exp": now + 4 * 3600})
}

async fn efa_with_certificate(cert: &str, keys_extra: &str, clock: Clock) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "efa-jwt-cert.pem", cert);
    let yaml = format!(
        r#"
  - name: efa
    kind: efa
    keys: {{public_key_files: [efa-jwt-cert.pem]{keys_extra}}}
    algorithms: [RS256]
    allow_any_audience: true
    claims:
      username: {{claims: [username, sub], prefix: "efa:"}}
      groups: {{claims: [roles, role], prefix: "efa:"}}
"#
    );
    Harness::start_in(
        dir,
        new_ca(),
        &yaml,
        Options {
            clock,
            ..Options::default()
        },
    )
    .await
}

/// Issue 11, item 10. A certificate that is valid when loaded stops being
/// trusted at its notAfter: tokens are "could not check" from then on, the
/// cached identity too. The notAfter is a metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_efa_certificate_is_trusted_until_its_not_after() {
    let now = unix_now();
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    let cert = certificate_pem(&key, now - 3600, now + 3600);
    let clock = Clock::manual(now);
    let h = efa_with_certificate(&cert, "", clock.clone()).await;
    let header = Header::new(Algorithm::RS256);
    let cached = key.sign_with_header(&header, &efa_claims(now));
    assert_efa_netadmin(&h.review(&cached).await);
    assert_eq!(
        h.metric(
            "authn_webhook_efa_certificate_expiry_timestamp_seconds",
            &[("issuer", "efa")]
        )
        .await,
        (now + 3600) as f64
    );
    clock.set(now + 3601);
    let later = key.sign_with_header(&header, &efa_claims(now + 3601));
    for token in [&later, &cached] {
        let answer = h.review(token).await;
        assert_unchecked(&answer);
        assert!(
            answer["status"]["error"]
                .as_str()
                .unwrap()
                .contains("certificate (keys.public_key_files) expired at"),
            "{answer}"
        );
    }
}

/// Issue 11, item 10. An expired certificate is refused at load (see the
/// config tables) unless `keys.allow_expired_certificate` says otherwise;
/// then it is trusted, with a warning, and its past notAfter is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_efa_certificate_is_trusted_only_when_the_config_says_so() {
    let now = unix_now();
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    let cert = certificate_pem(&key, now - 2 * 86_400, now - 86_400);
    let h = efa_with_certificate(&cert, ", allow_expired_certificate: true", Clock::System).await;
    let token = key.sign_with_header(&Header::new(Algorithm::RS256), &efa_claims(now));
    assert_efa_netadmin(&h.review(&token).await);
    assert_eq!(
        h.metric(
            "authn_webhook_efa_certificate_expiry_timestamp_seconds",
            &[("issuer", "efa")]
        )
        .await,
        (now - 86_400) as f64
    );
    // check-config prints it, serve logs it at start.
    let warnings = Prepared::load(&h.dir().join("config.yaml"))
        .unwrap()
        .warnings;
    assert!(
        warnings.iter().any(|w| {
            w.field.to_string() == "issuers[0] (efa).keys.public_key_files[0]"
                && w.message.contains("the certificate expired at")
                && w.message
                    .contains("trusted anyway because keys.allow_expired_certificate is set")
        }),
        "the override is warned about: {warnings:?}"
    );
}

/// Issue 11, item 13. Discovery may not send the key fetch elsewhere than
/// the issuer's host (unless `jwks_hosts` lists it), and never to a
/// link-local address: the document is refused, nothing is fetched there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_cannot_send_the_key_fetch_to_another_host() {
    for (case, jwks_uri, says) in [
        (
            "link-local",
            Some("https://169.254.169.254/latest/keys"),
            "link-local",
        ),
        (
            "link-local v6",
            Some("https://[fe80::1]/keys"),
            "link-local",
        ),
        // The issuer itself, under another name.
        (
            "other host",
            None,
            "is not on the issuer's host (127.0.0.1)",
        ),
    ] {
        let ca = new_ca();
        let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
        let url = issuer.url().to_owned();
        let jwks_uri = jwks_uri
            .map(str::to_owned)
            .unwrap_or_else(|| format!("https://localhost:{}/dex/keys", issuer.addr.port()));
        issuer.set_behaviour(Behaviour::JwksUri(jwks_uri));
        let h = Harness::start(ca, &dex_issuer_yaml("dex", &url), Options::default()).await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                h.metric(
                    "authn_webhook_jwks_fetches_total",
                    &[("issuer", "dex"), ("result", "jwks_uri_refused")],
                )
                .await
                    >= 1.0
            })
            .await,
            "{case}: the discovery document is refused"
        );
        assert_eq!(issuer.jwks_fetches(), 0, "{case}: nothing fetched");
        let (code, ready) = h.telemetry("/readyz").await;
        assert_eq!(code, 200, "{case}: not required");
        assert!(ready.contains("\"ready\":false"), "{case}: {ready}");
        assert!(ready.contains(says), "{case}: {ready}");
        assert_unchecked(&h.review(&issuer.mint(&jane(&url))).await);
    }
}

/// Issue 11, item 13. A host `jwks_hosts` lists is fetched from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_hosts_lets_the_keys_live_on_another_host() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let url = issuer.url().to_owned();
    issuer.set_behaviour(Behaviour::JwksUri(format!(
        "https://localhost:{}/dex/keys",
        issuer.addr.port()
    )));
    let yaml = dex_issuer_yaml("dex", &url).replace(
        "    claims:\n",
        "    jwks_hosts: [LocalHost]\n    claims:\n",
    );
    let h = Harness::start(ca, &yaml, Options::default()).await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    assert_eq!(issuer.jwks_fetches(), 1);
    assert_eq!(
        h.review(&issuer.mint(&jane(&url))).await["status"]["authenticated"],
        true
    );
}

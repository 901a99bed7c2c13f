//! Dex id_tokens (PCD-K shaped) through the full TokenReview path.

use jsonwebtoken::{Algorithm, Header};
use kube_authn_common::clock::{Clock, unix_now};
use kube_authn_testkit::{DevKey, dex_claims, issuer::TestIssuer};
use serde_json::json;

use kube_authn_testkit::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_dex_token_is_authenticated_in_v1() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let answer = h.review(&issuer.mint(&jane(issuer.url()))).await;
    assert_eq!(answer["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(answer["kind"], "TokenReview");
    let status = &answer["status"];
    assert_eq!(status["authenticated"], true);
    assert_eq!(status["user"]["username"], "jane@example.com");
    assert_eq!(
        status["user"]["groups"],
        json!(["pcd-default-service-admin", "developers"])
    );
    assert_eq!(
        status["user"]["uid"],
        "CiQ2YmE3YjgxMC05ZGFkLTExZDEtODBiNC0wMGMwNGZkNDMwYzgSB2RlZmF1bHQ"
    );
    assert_eq!(
        status["user"]["extra"]["authn.k8s.io/connector-id"],
        json!(["default"])
    );
    assert!(status.get("error").is_none());
    // The token's aud (kubernetes) is not what the apiserver asked for: the
    // answer leaves audiences empty so the apiserver applies its own.
    assert!(status.get("audiences").is_none(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1beta1_request_gets_a_v1beta1_answer() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let answer = h
        .review_as(
            "v1beta1",
            &issuer.mint(&jane(issuer.url())),
            &[API_AUDIENCE],
        )
        .await;
    assert_eq!(answer["apiVersion"], "authentication.k8s.io/v1beta1");
    assert_eq!(answer["kind"], "TokenReview");
    assert_eq!(answer["status"]["authenticated"], true);
    assert_eq!(answer["status"]["user"]["username"], "jane@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_falls_back_from_email_to_name() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    // Platform9's Keystone connector sets email only when Keystone has one.
    let claims = dex_claims(issuer.url(), unix_now(), None, "jdoe", &["devs"]);
    let answer = h.review(&issuer.mint(&claims)).await;
    assert_eq!(answer["status"]["user"]["username"], "jdoe");
}

/// A Dex-like issuer whose YAML `edit` changes, ready to review its tokens.
async fn dex_with(edit: impl FnOnce(String) -> String) -> (Harness, TestIssuer) {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let yaml = edit(dex_issuer_yaml("dex", issuer.url()));
    let h = Harness::start(ca, &yaml, Options::default()).await;
    assert!(
        h.running
            .wait_ready(std::time::Duration::from_secs(10))
            .await
    );
    (h, issuer)
}

/// jane's claims with `claim` set to `value` (`None`: removed).
fn jane_with(issuer: &TestIssuer, claim: &str, value: Option<serde_json::Value>) -> String {
    let mut c = jane(issuer.url());
    match value {
        Some(v) => c[claim] = v,
        None => {
            c.as_object_mut().unwrap().remove(claim);
        }
    }
    issuer.mint(&c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_email_is_not_an_identity() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    // Only the JSON boolean true is "verified", as in the kube-apiserver;
    // absent means the issuer did not say.
    for ok in [Some(json!(true)), None] {
        let answer = h.review(&jane_with(&issuer, "email_verified", ok)).await;
        assert_eq!(answer["status"]["user"]["username"], "jane@example.com");
    }
    for v in [
        json!(false),
        json!(null),
        json!(0),
        json!(1),
        json!("no"),
        json!("true"),
        json!([false]),
        json!([true]),
        json!({}),
    ] {
        let answer = h
            .review(&jane_with(&issuer, "email_verified", Some(v.clone())))
            .await;
        assert_rejected(&answer);
    }
    assert_eq!(h.reviews(&[("reason", "email_unverified")]).await, 2.0);
    assert_eq!(h.reviews(&[("reason", "invalid_claim")]).await, 7.0);
    // Not the username: email_verified does not matter.
    let mut c = jane(issuer.url());
    c.as_object_mut().unwrap().remove("email");
    c["email_verified"] = json!("no");
    let answer = h.review(&issuer.mint(&c)).await;
    assert_eq!(answer["status"]["user"]["username"], "jane");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_true_email_verified_counts_only_when_the_issuer_opts_in() {
    let (h, issuer) = dex_with(|y| {
        y.replace(
            "    audiences: [kubernetes]\n",
            "    audiences: [kubernetes]\n    email_verified_accepts_string: true\n",
        )
    })
    .await;
    let answer = h
        .review(&jane_with(&issuer, "email_verified", Some(json!("true"))))
        .await;
    assert_eq!(answer["status"]["user"]["username"], "jane@example.com");
    for v in [json!("false"), json!("yes"), json!(false), json!(1)] {
        assert_rejected(
            &h.review(&jane_with(&issuer, "email_verified", Some(v)))
                .await,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_groups_refuse_the_token() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    // A deny-by-group policy downstream must not be bypassed by a groups
    // claim we cannot read: the token is refused, not answered without it.
    for bad in [
        json!({"admins": true}),
        json!(["developers", 1]),
        json!(["developers", null]),
        json!([["developers"]]),
        json!(5),
        json!(true),
    ] {
        assert_rejected(&h.review(&jane_with(&issuer, "groups", Some(bad))).await);
    }
    assert_eq!(h.reviews(&[("reason", "invalid_claim")]).await, 6.0);
    // A string is one group; null, absent and [] are no groups.
    let answer = h
        .review(&jane_with(&issuer, "groups", Some(json!("developers"))))
        .await;
    assert_eq!(answer["status"]["user"]["groups"], json!(["developers"]));
    for none in [Some(json!(null)), None, Some(json!([]))] {
        let answer = h.review(&jane_with(&issuer, "groups", none)).await;
        assert_eq!(answer["status"]["authenticated"], true, "{answer}");
        assert!(answer["status"]["user"].get("groups").is_none(), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_uid_must_be_a_string() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    // uid: {claim: sub}. Neither "" for a missing sub nor "42" for a number.
    for bad in [
        None,
        Some(json!(null)),
        Some(json!(42)),
        Some(json!("")),
        Some(json!(["s"])),
    ] {
        assert_rejected(&h.review(&jane_with(&issuer, "sub", bad)).await);
    }
    assert_eq!(h.reviews(&[("reason", "missing_claim")]).await, 2.0);
    assert_eq!(h.reviews(&[("reason", "invalid_claim")]).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_sub_that_is_not_a_string_is_refused_whatever_the_uid_maps() {
    let (h, issuer) = dex_with(|y| {
        y.replace(
            "      uid: {claim: sub}\n",
            "      uid: {claim: federated_claims.user_id}\n",
        )
    })
    .await;
    let answer = h.review(&jane_with(&issuer, "sub", None)).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert!(answer["status"]["user"]["uid"].is_string(), "{answer}");
    assert_rejected(&h.review(&jane_with(&issuer, "sub", Some(json!(42)))).await);
    assert_eq!(h.reviews(&[("reason", "invalid_claim")]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_claims_are_enforced() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let now = unix_now();
    let mut expired = jane(issuer.url());
    expired["iat"] = json!(now - 90_000);
    expired["exp"] = json!(now - 3_600);
    assert_rejected(&h.review(&issuer.mint(&expired)).await);

    let mut early = jane(issuer.url());
    early["nbf"] = json!(now + 3_600);
    assert_rejected(&h.review(&issuer.mint(&early)).await);

    // iat is not compared with our clock, as in the kube-apiserver (this
    // was refused as issued_in_future before); a malformed one refuses.
    let mut future = jane(issuer.url());
    future["iat"] = json!(now + 3_600);
    assert_eq!(
        h.review(&issuer.mint(&future)).await["status"]["authenticated"],
        true
    );

    let mut no_exp = jane(issuer.url());
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_rejected(&h.review(&issuer.mint(&no_exp)).await);

    // A string exp must not be read as "no exp" (CVE-2026-25537).
    let mut string_exp = jane(issuer.url());
    string_exp["exp"] = json!("99999999999");
    assert_rejected(&h.review(&issuer.mint(&string_exp)).await);

    for reason in ["expired", "not_yet_valid", "missing_claim", "invalid_claim"] {
        assert_eq!(
            h.reviews(&[("reason", reason)]).await,
            1.0,
            "reason {reason}"
        );
    }
}

/// Was `clock_skew_allows_a_token_expired_seconds_ago`, which asserted the
/// old 60 s default leeway on exp: now exp has none by default, as in the
/// kube-apiserver, and `clock_skew` gives one when written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expired_seconds_ago_is_refused_unless_clock_skew_allows_it() {
    let now = unix_now();
    let clock = Clock::manual(now);
    let (h, issuer) = Harness::with_dex(Options {
        clock: clock.clone(),
        ..Options::default()
    })
    .await;
    let mut c = jane(issuer.url());
    c["exp"] = json!(now - 10);
    assert_rejected(&h.review(&issuer.mint(&c)).await);
    c["exp"] = json!(now);
    assert_rejected(&h.review(&issuer.mint(&c)).await);
    assert_eq!(h.reviews(&[("reason", "expired")]).await, 2.0);
    c["exp"] = json!(now + 1);
    assert_eq!(
        h.review(&issuer.mint(&c)).await["status"]["authenticated"],
        true
    );

    let (h, issuer) = dex_with(|y| {
        y.replace(
            "    audiences: [kubernetes]\n",
            "    audiences: [kubernetes]\n    clock_skew: 30s\n",
        )
    })
    .await;
    let mut c = jane(issuer.url());
    c["exp"] = json!(unix_now() - 10);
    assert_eq!(
        h.review(&issuer.mint(&c)).await["status"]["authenticated"],
        true
    );
    c["exp"] = json!(unix_now() - 40);
    assert_rejected(&h.review(&issuer.mint(&c)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbf_gets_the_kube_apiservers_minute_of_leeway() {
    let now = unix_now();
    let clock = Clock::manual(now);
    let (h, issuer) = Harness::with_dex(Options {
        clock: clock.clone(),
        ..Options::default()
    })
    .await;
    let mut c = jane(issuer.url());
    for ahead in [30, 60] {
        c["nbf"] = json!(now + ahead);
        let answer = h.review(&issuer.mint(&c)).await;
        assert_eq!(answer["status"]["authenticated"], true, "nbf +{ahead}s");
    }
    for ahead in [61, 300] {
        c["nbf"] = json!(now + ahead);
        assert_rejected(&h.review(&issuer.mint(&c)).await);
    }
    assert_eq!(h.reviews(&[("reason", "not_yet_valid")]).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_audience_is_rejected() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let mut c = jane(issuer.url());
    c["aud"] = json!(["some-other-client"]);
    assert_rejected(&h.review(&issuer.mint(&c)).await);
    assert_eq!(h.reviews(&[("reason", "audience_mismatch")]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_issuers_are_refused_without_outbound_requests() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let before = issuer.fetches();
    // Near-miss of the configured issuer, and a stranger: both signed by a
    // key the issuer publishes, so only routing can refuse them.
    for iss in [
        format!("{}/", issuer.url()),
        "https://evil.example.com/dex\u{7}\n".to_owned(),
    ] {
        let mut c = jane(issuer.url());
        c["iss"] = json!(iss);
        assert_rejected(&h.review(&issuer.mint(&c)).await);
    }
    let mut no_iss = jane(issuer.url());
    no_iss.as_object_mut().unwrap().remove("iss");
    assert_rejected(&h.review(&issuer.mint(&no_iss)).await);
    assert_eq!(
        issuer.fetches(),
        before,
        "no fetch for a token no issuer claims"
    );
    assert_eq!(
        h.reviews(&[("issuer", "unmatched"), ("reason", "unknown_issuer")])
            .await,
        3.0
    );
    // The log says which iss nobody serves, its control characters escaped.
    let logs = logs();
    let line = logs
        .lines()
        .find(|l| l.contains("unknown_issuer") && l.contains("evil.example.com/dex"))
        .expect("an unknown_issuer line with the iss");
    assert!(line.contains(r"evil.example.com/dex\\u{7}\\n"), "{line}");
    assert!(
        logs.lines()
            .any(|l| l.contains("unknown_issuer") && l.contains("\"iss\":\"(none)\"")),
        "a token without iss says so"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_rejected() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let published = issuer.current_key();
    // Signed by another key under the published key's kid.
    let impostor = DevKey::generate(Algorithm::RS256).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(published.kid.clone());
    assert_rejected(
        &h.review(&impostor.sign_with_header(&header, &jane(issuer.url())))
            .await,
    );

    // A valid token with its payload swapped for a more generous one.
    let good = issuer.mint(&jane(issuer.url()));
    let mut c = jane(issuer.url());
    c["groups"] = json!(["cluster-admins"]);
    let forged_payload = issuer.mint(&c).split('.').nth(1).unwrap().to_owned();
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_rejected(&h.review(&tampered).await);
    assert_eq!(h.reviews(&[("reason", "bad_signature")]).await, 2.0);
}

fn b64(v: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_never_accepted() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let payload = b64(&jane(issuer.url()));
    for alg in ["none", "None", "NONE"] {
        let header = b64(&json!({"alg": alg, "typ": "JWT", "kid": issuer.current_key().kid}));
        assert_rejected(&h.review(&format!("{header}.{payload}.")).await);
        assert_rejected(&h.review(&format!("{header}.{payload}.c2ln")).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_signed_with_the_public_key_is_rejected() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let key = issuer.current_key();
    // The classic confusion: HMAC keyed with the RSA public key's bytes.
    for secret in [
        key.public_pem.as_bytes().to_vec(),
        key.jwk["n"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(
            &header,
            &jane(issuer.url()),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_rejected(&h.review(&token).await);
    }
    assert_eq!(h.reviews(&[("reason", "unsupported_algorithm")]).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_groups_are_dropped_and_system_users_refused() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let claims = dex_claims(
        issuer.url(),
        unix_now(),
        Some("jane@example.com"),
        "jane",
        &["system:masters", "developers", "system:nodes"],
    );
    let answer = h.review(&issuer.mint(&claims)).await;
    assert_eq!(answer["status"]["authenticated"], true);
    assert_eq!(answer["status"]["user"]["groups"], json!(["developers"]));

    let sneaky = dex_claims(
        issuer.url(),
        unix_now(),
        None,
        "system:kube-controller-manager",
        &[],
    );
    assert_rejected(&h.review(&issuer.mint(&sneaky)).await);
    assert_eq!(h.reviews(&[("reason", "system_username")]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_are_the_intersection_or_left_empty() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let token = issuer.mint(&jane(issuer.url()));
    let answer = h
        .review_as("v1", &token, &["kubernetes", API_AUDIENCE])
        .await;
    assert_eq!(answer["status"]["audiences"], json!(["kubernetes"]));
    let answer = h.review_as("v1", &token, &[API_AUDIENCE]).await;
    assert_eq!(answer["status"]["authenticated"], true);
    assert!(answer["status"].get("audiences").is_none());
    let answer = h.review_as("v1", &token, &[]).await;
    assert_eq!(answer["status"]["authenticated"], true);
    assert!(answer["status"].get("audiences").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_without_implicit_audience_trust_rejects_other_audiences() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let yaml = dex_issuer_yaml("dex", issuer.url()).replace(
        "    audiences: [kubernetes]\n",
        "    audiences: [kubernetes]\n    trust_implicit_audience: false\n",
    );
    let h = Harness::start(ca, &yaml, Options::default()).await;
    assert!(
        h.running
            .wait_ready(std::time::Duration::from_secs(10))
            .await
    );
    let token = issuer.mint(&jane(issuer.url()));
    assert_rejected(&h.review_as("v1", &token, &[API_AUDIENCE]).await);
    // The same cached identity still serves a request that asks for its audience.
    let answer = h.review_as("v1", &token, &["kubernetes"]).await;
    assert_eq!(answer["status"]["audiences"], json!(["kubernetes"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_review_of_a_token_is_a_cache_hit() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let token = issuer.mint(&jane(issuer.url()));
    let first = h.review(&token).await;
    let second = h.review(&token).await;
    assert_eq!(first, second);
    assert_eq!(
        h.metric("authn_webhook_cache_lookups_total", &[("result", "miss")])
            .await,
        1.0
    );
    assert_eq!(
        h.metric("authn_webhook_cache_lookups_total", &[("result", "hit")])
            .await,
        1.0
    );
    assert_eq!(
        h.reviews(&[("issuer", "dex"), ("outcome", "authenticated")])
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_identity_does_not_outlive_the_token() {
    let now = unix_now();
    let clock = Clock::manual(now);
    let (h, issuer) = Harness::with_dex(Options {
        clock: clock.clone(),
        ..Options::default()
    })
    .await;
    let mut c = jane(issuer.url());
    c["exp"] = json!(now + 120);
    let token = issuer.mint(&c);
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
    // Past exp: the cache must not answer for it any more.
    clock.set(now + 200);
    assert_rejected(&h.review(&token).await);
    assert_eq!(
        h.metric("authn_webhook_cache_lookups_total", &[("result", "miss")])
            .await,
        2.0
    );
    assert_eq!(h.reviews(&[("reason", "expired")]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_heavy_tokens_of_60kb_are_accepted() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let groups: Vec<String> = (0..1500)
        .map(|i| format!("pcd-du{i:04}-default-tenant{i:04}-member"))
        .collect();
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let token = issuer.mint(&dex_claims(
        issuer.url(),
        unix_now(),
        Some("jane@example.com"),
        "jane",
        &refs,
    ));
    assert!(token.len() > 60_000, "token is {} bytes", token.len());
    let answer = h.review(&token).await;
    assert_eq!(answer["status"]["authenticated"], true);
    assert_eq!(
        answer["status"]["user"]["groups"].as_array().unwrap().len(),
        1500
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_and_eddsa_keys_verify() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        issuer.rotate(alg).unwrap();
        let token = issuer.mint(&jane(issuer.url()));
        // The second rotation comes within the refetch interval (1s) of
        // the first one's fetch: "could not check" until the next fetch.
        assert!(
            eventually(std::time::Duration::from_secs(10), || async {
                h.review(&token).await["status"]["authenticated"] == true
            })
            .await,
            "{alg:?}"
        );
    }
}

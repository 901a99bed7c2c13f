//! Extreme EFA / XCO tokens: static keys (PEM public key, X.509 certificate,
//! HS256 secret), no discovery, optional iss.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kube_authn_common::clock::unix_now;
use kube_authn_testkit::DevKey;
use kube_authn_testkit::issuer::TestIssuer;
use kube_authn_testkit::tokens::efa_certificate_pem;
use serde_json::{Value, json};

use kube_authn_testkit::harness::*;

fn efa_claims() -> Value {
    let now = unix_now();
    json!({"username": "netadmin", "roles": ["FabricAdmin", "NetworkOperator"], "iat": now, "exp": now + 3600})
}

fn efa_yaml(keys: &str, algorithms: &str) -> String {
    format!(
        r#"
  - name: efa
    kind: efa
    keys: {keys}
    algorithms: {algorithms}
    allow_any_audience: true
    claims:
      username: {{claims: [username, sub], prefix: "efa:"}}
      groups: {{claims: [roles, role], prefix: "efa:"}}
"#
    )
}

async fn efa_harness(files: &[(&str, String)], keys: &str, algorithms: &str) -> Harness {
    efa_harness_with(files, &efa_yaml(keys, algorithms)).await
}

async fn efa_harness_with(files: &[(&str, String)], yaml: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        write(dir.path(), name, contents);
    }
    Harness::start_in(dir, new_ca(), yaml, Options::default()).await
}

/// An efa issuer trusting `key`'s public key from a PEM file.
async fn pem_harness(key: &DevKey, algorithms: &str) -> Harness {
    efa_harness(
        &[("efa.pem", key.public_pem.clone())],
        "{public_key_files: [efa.pem]}",
        algorithms,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efa_token_verifies_against_a_pem_public_key() {
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    let h = pem_harness(&key, "[RS256]").await;
    let token = key.sign_with_header(&Header::new(Algorithm::RS256), &efa_claims());
    assert_efa_netadmin(&h.review(&token).await);
    // EFA tokens carry no kid; a kid the file does not name still finds the key.
    assert_efa_netadmin(&h.review(&key.sign(&efa_claims())).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efa_token_verifies_against_the_jwt_certificate() {
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    let cert = efa_certificate_pem(&key, "Extreme Fabric Automation").unwrap();
    let h = efa_harness(
        &[("efa-jwt-cert.pem", cert)],
        "{public_key_files: [efa-jwt-cert.pem]}",
        "[RS256]",
    )
    .await;
    let token = key.sign_with_header(&Header::new(Algorithm::RS256), &efa_claims());
    assert_efa_netadmin(&h.review(&token).await);
    let other = DevKey::generate(Algorithm::RS256).unwrap();
    assert_rejected(
        &h.review(&other.sign_with_header(&Header::new(Algorithm::RS256), &efa_claims()))
            .await,
    );
}

const SECRET: &str = "efa-shared-secret-0123456789abcdef-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efa_token_verifies_with_an_hs256_secret() {
    let h = efa_harness(
        &[("secret", format!("{SECRET}\n"))],
        "{hmac_secret_file: secret}",
        "[HS256]",
    )
    .await;
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &efa_claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_efa_netadmin(&h.review(&token).await);
    let wrong = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &efa_claims(),
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-not-the-secret"),
    )
    .unwrap();
    assert_rejected(&h.review(&wrong).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_never_verifies_against_the_rsa_key_even_when_hs256_is_allowed() {
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    let h = efa_harness(
        &[
            ("efa.pem", key.public_pem.clone()),
            ("secret", SECRET.to_owned()),
        ],
        "{public_key_files: [efa.pem], hmac_secret_file: secret}",
        "[RS256, HS256]",
    )
    .await;
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &efa_claims(),
        &EncodingKey::from_secret(key.public_pem.as_bytes()),
    )
    .unwrap();
    assert_rejected(&h.review(&confused).await);
    assert_eq!(h.reviews(&[("reason", "bad_signature")]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efa_issuer_without_url_only_takes_tokens_without_iss() {
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    let h = pem_harness(&key, "[RS256]").await;
    let mut c = efa_claims();
    c["iss"] = json!("https://efa.example.com");
    assert_rejected(&h.review(&key.sign(&c)).await);
    assert_eq!(h.reviews(&[("reason", "unknown_issuer")]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efa_single_role_claim_and_sub_fallback() {
    let key = DevKey::generate(Algorithm::ES256).unwrap();
    let h = pem_harness(&key, "[ES256]").await;
    let now = unix_now();
    let token = key.sign(&json!({"sub": "operator1", "role": "SystemAdmin", "exp": now + 60}));
    let answer = h.review(&token).await;
    assert_eq!(answer["status"]["user"]["username"], "efa:operator1");
    assert_eq!(
        answer["status"]["user"]["groups"],
        json!(["efa:SystemAdmin"])
    );
}

/// An efa issuer whose keys are at a JWKS URL (the test issuer's, no
/// discovery), called as the shipped configs are called: over mTLS, by the
/// one client name they list (the one `certs` issues).
async fn jwks_url_harness() -> (Harness, TestIssuer) {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let yaml = format!(
        r#"
  - name: efa-lab
    kind: efa
    certificate_authority_file: ca.crt
    jwks_min_refetch_interval: 100ms
    keys: {{jwks_url: {url}/keys}}
    allow_any_audience: true
    claims:
      username: {{claims: [username, sub], prefix: "efa:"}}
      groups: {{claims: [roles], prefix: "efa:"}}
"#,
        url = issuer.url()
    );
    let h = Harness::start(
        ca,
        &yaml,
        Options {
            mtls: true,
            client_name: "kube-apiserver-authn-client",
            tls_extra: ", allowed_client_names: [kube-apiserver-authn-client]",
            ..Options::default()
        },
    )
    .await;
    assert!(
        h.running.wait_ready(Duration::from_secs(10)).await,
        "keys fetched from the JWKS URL"
    );
    (h, issuer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efa_token_verifies_against_a_jwks_url() {
    let (h, issuer) = jwks_url_harness().await;
    assert_efa_netadmin(&h.review(&issuer.mint(&efa_claims())).await);
    assert_eq!(
        issuer.discovery_fetches(),
        0,
        "keys.jwks_url is fetched as is, no discovery"
    );
    let now = unix_now();
    let expired = issuer.mint(&json!({
        "username": "netadmin", "roles": ["FabricAdmin"], "iat": now - 7200, "exp": now - 3600
    }));
    assert_rejected(&h.review(&expired).await);
    assert_eq!(
        h.reviews(&[("issuer", "efa-lab"), ("reason", "expired")])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efa_jwks_url_gone_means_a_new_key_cannot_be_checked() {
    let (h, issuer) = jwks_url_harness().await;
    issuer.stop().await;
    // A key the webhook has not seen makes it refetch, which fails: "could
    // not check" (status.error, so the apiserver does not cache a "no").
    let unseen = DevKey::generate(Algorithm::RS256).unwrap();
    let answer = h.review(&unseen.sign(&efa_claims())).await;
    assert_unchecked(&answer);
    assert!(
        answer["status"]["error"]
            .as_str()
            .unwrap()
            .contains("efa-lab"),
        "the error names the issuer: {answer}"
    );
    assert_eq!(
        h.reviews(&[("issuer", "efa-lab"), ("reason", "keys_unavailable")])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_efa_issuer_with_audiences_checks_aud() {
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    let yaml = efa_yaml("{public_key_files: [efa.pem]}", "[RS256]").replace(
        "    allow_any_audience: true\n",
        "    audiences: [efa-k8s]\n",
    );
    let h = efa_harness_with(&[("efa.pem", key.public_pem.clone())], &yaml).await;
    let with_aud = |aud: Option<Value>| {
        let mut c = efa_claims();
        if let Some(a) = aud {
            c["aud"] = a;
        }
        key.sign(&c)
    };
    assert_efa_netadmin(&h.review(&with_aud(Some(json!("efa-k8s")))).await);
    assert_efa_netadmin(&h.review(&with_aud(Some(json!(["other", "efa-k8s"])))).await);
    assert_rejected(&h.review(&with_aud(Some(json!("other")))).await);
    assert_rejected(&h.review(&with_aud(None)).await);
    assert_eq!(h.reviews(&[("reason", "audience_mismatch")]).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_audience_takes_any_aud_or_none() {
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    let h = pem_harness(&key, "[RS256]").await;
    for aud in [None, Some(json!("anything")), Some(json!(["a", "b"]))] {
        let mut c = efa_claims();
        if let Some(a) = aud {
            c["aud"] = a;
        }
        assert_efa_netadmin(&h.review(&key.sign(&c)).await);
    }
    // Still a string or a list of strings.
    let mut c = efa_claims();
    c["aud"] = json!(7);
    assert_rejected(&h.review(&key.sign(&c)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_efa_uid_only_when_mapped_and_then_required() {
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    // Not mapped (the efa default): no uid, whatever sub holds.
    let h = pem_harness(&key, "[RS256]").await;
    for sub in [json!("op-1"), json!(42)] {
        let mut c = efa_claims();
        c["sub"] = sub;
        let answer = h.review(&key.sign(&c)).await;
        assert_efa_netadmin(&answer);
        assert!(answer["status"]["user"].get("uid").is_none(), "{answer}");
    }
    drop(h);

    let yaml = format!(
        "{}      uid: {{claim: sub}}\n",
        efa_yaml("{public_key_files: [efa.pem]}", "[RS256]")
    );
    let h = efa_harness_with(&[("efa.pem", key.public_pem.clone())], &yaml).await;
    let mut c = efa_claims();
    c["sub"] = json!("op-1");
    let answer = h.review(&key.sign(&c)).await;
    assert_efa_netadmin(&answer);
    assert_eq!(answer["status"]["user"]["uid"], "op-1");
    // Mapped: a missing or non-string sub is refused, not "" or "42".
    assert_rejected(&h.review(&key.sign(&efa_claims())).await);
    c["sub"] = json!(42);
    assert_rejected(&h.review(&key.sign(&c)).await);
    assert_eq!(h.reviews(&[("reason", "missing_claim")]).await, 1.0);
    assert_eq!(h.reviews(&[("reason", "invalid_claim")]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_efa_roles_refuse_the_token() {
    let key = DevKey::generate(Algorithm::RS256).unwrap();
    let h = pem_harness(&key, "[RS256]").await;
    for roles in [json!({"FabricAdmin": true}), json!(["FabricAdmin", 3])] {
        let mut c = efa_claims();
        c["roles"] = roles;
        assert_rejected(&h.review(&key.sign(&c)).await);
    }
    assert_eq!(h.reviews(&[("reason", "invalid_claim")]).await, 2.0);
}

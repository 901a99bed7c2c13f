//! `explain`: golden output for an authenticated token and for every refusal
//! reason (and "could not check"), from the real review code against a
//! loopback TestIssuer at a fixed time; and the binary's exit codes. The
//! goldens are in tests/it/golden/explain/; `UPDATE_GOLDEN=1` rewrites them
//! (then read the diff).

use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kube_authn_common::clock::{Clock, unix_now};
use kube_authn_testkit::bin::Binary;
use kube_authn_testkit::harness::{dex_issuer_yaml, new_ca, write};
use kube_authn_testkit::issuer::TestIssuer;
use kube_authn_testkit::{DevKey, dex_claims};
use kube_authn_webhook::cmd::explain::{self, Explanation};
use kube_authn_webhook::pki::Ca;
use kube_authn_webhook::prepare::Prepared;
use serde_json::{Value, json};

const WEBHOOK: Binary = Binary::new(env!("CARGO_BIN_EXE_kube-authn-webhook"));
/// 2027-01-15T08:00:00Z: every time in the goldens is relative to it.
const NOW: u64 = 1_800_000_000;
const EFA_SECRET: &str = "an-efa-hmac-secret-of-at-least-32-bytes";

/// A config dir: the dev issuer (not trusting the apiserver's implicit
/// audience, so `audience_not_requested` can be shown) and an EFA issuer
/// without url (tokens without iss), HS256.
fn config_dir(ca: &Ca, issuer_url: &str) -> (tempfile::TempDir, Prepared) {
    let dir = tempfile::tempdir().unwrap();
    let tls = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
    write(dir.path(), "ca.crt", &ca.cert_pem);
    write(dir.path(), "tls.crt", &tls.cert_pem);
    write(dir.path(), "tls.key", &tls.key_pem);
    write(dir.path(), "efa-secret", EFA_SECRET);
    let issuers = format!(
        "{}    trust_implicit_audience: false\n    allow_shared_identities: true\n  - name: efa\n    kind: efa\n    keys: {{hmac_secret_file: efa-secret}}\n    allow_any_audience: true\n    claims:\n      username: {{claims: [username], prefix: \"efa:\"}}\n      groups: {{claims: [roles], prefix: \"efa:\"}}\n    allow_shared_identities: true\n",
        dex_issuer_yaml("dex", issuer_url)
    );
    let path = write(
        dir.path(),
        "config.yaml",
        format!(
            "server:\n  listen: 127.0.0.1:0\n  tls: {{cert_file: tls.crt, key_file: tls.key}}\ntelemetry: {{listen: 127.0.0.1:0}}\nissuers:{issuers}"
        ),
    );
    let prepared = Prepared::load(&path).unwrap_or_else(|e| panic!("{e}"));
    (dir, prepared)
}

fn jane_at(url: &str) -> Value {
    dex_claims(
        url,
        NOW,
        Some("jane@example.com"),
        "jane",
        &["pcd-default-service-admin", "developers"],
    )
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Explains `token` at NOW and compares with the golden `name`, after
/// replacing what differs from run to run (the issuer's port, kids, the
/// fingerprint and token length); the token never appears in the output.
async fn golden(
    name: &str,
    prepared: &Prepared,
    issuer: &TestIssuer,
    token: &str,
    audiences: &[&str],
    code: u8,
) {
    let audiences: Vec<String> = audiences.iter().map(|a| a.to_string()).collect();
    let Explanation { text, code: got } =
        explain::explain(prepared, token, &audiences, Clock::manual(NOW))
            .await
            .unwrap();
    assert!(!text.contains(token), "the token was printed:\n{text}");
    let signature = token.rsplit('.').next().unwrap_or_default();
    if signature.len() >= 16 {
        assert!(!text.contains(signature), "the signature was printed");
    }
    let mut text = text.replace(issuer.url(), "https://<issuer>");
    for key in issuer.keys() {
        text = text.replace(&key.kid, "<kid>");
    }
    let text = normalise(&text);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/golden/explain")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(text, want, "{name}: output differs from {}", path.display());
    assert_eq!(got, code, "{name}: exit code\n{text}");
}

/// The fingerprint and sizes: the token's bytes change with the port.
fn normalise(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut line = line.to_owned();
        if let Some(rest) = line.strip_prefix("token: fingerprint ") {
            let tail = rest.split_once(", ").map_or("", |(_, t)| t);
            let tail = tail.split_once(" bytes").map_or(tail, |(_, t)| t);
            line = format!("token: fingerprint <fp>, <n> bytes{tail}");
        }
        if let Some((head, rest)) = line.split_once("decode: ") {
            let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            line = format!("{head}decode: <n>{rest}");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_reason_is_explained() {
    kube_authn_webhook::install_crypto_providers();
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let url = issuer.url().to_owned();
    let (_dir, prepared) = config_dir(&ca, &url);
    let jane = jane_at(&url);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = jane.clone();
        f(&mut c);
        issuer.mint(&c)
    };

    golden(
        "authenticated",
        &prepared,
        &issuer,
        &issuer.mint(&jane),
        &[],
        0,
    )
    .await;
    let efa = hs256(
        &json!({"username": "netadmin", "roles": ["FabricAdmin"], "exp": NOW + 600}),
        EFA_SECRET.as_bytes(),
    );
    golden("efa_without_iss", &prepared, &issuer, &efa, &[], 0).await;
    golden("malformed_token", &prepared, &issuer, "not-a-jwt", &[], 1).await;
    let huge = format!("eyJ{}", "A".repeat(256 * 1024));
    golden("token_too_large", &prepared, &issuer, &huge, &[], 1).await;
    let evil = with(&|c| c["iss"] = json!("https://evil.example/\u{1b}[31mred"));
    golden("unknown_issuer", &prepared, &issuer, &evil, &[], 1).await;
    let hs = hs256(&jane, EFA_SECRET.as_bytes());
    golden("unsupported_algorithm", &prepared, &issuer, &hs, &[], 1).await;
    let stranger = DevKey::generate(Algorithm::RS256).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("not-a-kid-of-the-issuer".to_owned());
    let stranger_token = stranger.sign_with_header(&header, &jane);
    golden("unknown_key", &prepared, &issuer, &stranger_token, &[], 1).await;
    // Jane's signature over another payload.
    let good = issuer.mint(&jane);
    let other = with(&|c| c["name"] = json!("mallory"));
    let parts: Vec<&str> = other.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        good.rsplit('.').next().unwrap()
    );
    golden("bad_signature", &prepared, &issuer, &forged, &[], 1).await;
    let expired = with(&|c| {
        c["exp"] = json!(NOW - 10);
        c["iat"] = json!(NOW - 3600);
    });
    golden("expired", &prepared, &issuer, &expired, &[], 1).await;
    let early = with(&|c| c["nbf"] = json!(NOW + 3600));
    golden("not_yet_valid", &prepared, &issuer, &early, &[], 1).await;
    let no_exp = with(&|c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    golden("missing_claim", &prepared, &issuer, &no_exp, &[], 1).await;
    let bad_sub = with(&|c| c["sub"] = json!(42));
    golden("invalid_claim", &prepared, &issuer, &bad_sub, &[], 1).await;
    let other_aud = with(&|c| c["aud"] = json!("another-client"));
    golden("audience_mismatch", &prepared, &issuer, &other_aud, &[], 1).await;
    golden(
        "audience_not_requested",
        &prepared,
        &issuer,
        &issuer.mint(&jane),
        &["https://kubernetes.default.svc"],
        1,
    )
    .await;
    let nameless = with(&|c| {
        let m = c.as_object_mut().unwrap();
        m.remove("email");
        m.remove("email_verified");
        m.remove("name");
    });
    golden("no_username", &prepared, &issuer, &nameless, &[], 1).await;
    let system = with(&|c| {
        let m = c.as_object_mut().unwrap();
        m.remove("email");
        m.insert("name".into(), json!("system:admin"));
    });
    golden("system_username", &prepared, &issuer, &system, &[], 1).await;
    let unverified = with(&|c| c["email_verified"] = json!(false));
    golden("email_unverified", &prepared, &issuer, &unverified, &[], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_that_is_down_is_could_not_check() {
    kube_authn_webhook::install_crypto_providers();
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let url = issuer.url().to_owned();
    let (_dir, prepared) = config_dir(&ca, &url);
    let token = issuer.mint(&jane_at(&url));
    let kids: Vec<String> = issuer.keys().iter().map(|k| k.kid.clone()).collect();
    let keys = issuer.stop().await;
    assert!(!keys.is_empty());
    let Explanation { text, code } = explain::explain(&prepared, &token, &[], Clock::manual(NOW))
        .await
        .unwrap();
    let mut text = text.replace(&url, "https://<issuer>");
    for kid in &kids {
        text = text.replace(kid, "<kid>");
    }
    assert_eq!(code, 2, "{text}");
    assert!(!text.contains(&token));
    assert!(
        text.contains("keys: fetching issuer dex's keys failed:"),
        "{text}"
    );
    assert!(
        text.contains("result: could not check: issuer dex: signing keys unavailable"),
        "{text}"
    );
    assert!(
        text.contains("\"error\": \"issuer dex: signing keys unavailable"),
        "{text}"
    );
}

/// The binary: token on stdin or in a file, exit 0 / 1 / 2, the token on
/// neither stdout nor stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_exits_0_1_2_and_never_prints_the_token() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let url = issuer.url().to_owned();
    let (dir, _) = config_dir(&ca, &url);
    let config = dir.path().join("config.yaml");
    let now = unix_now();
    let claims = dex_claims(&url, now, Some("jane@example.com"), "jane", &["dev"]);
    let good = issuer.mint(&claims);
    let mut expired_claims = claims.clone();
    expired_claims["exp"] = json!(now - 5);
    let expired = issuer.mint(&expired_claims);

    let run_stdin = |token: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(WEBHOOK.path())
            .args(["explain", "--config"])
            .arg(&config)
            .args(["--token-file", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = tokio::task::block_in_place(|| run_stdin(&good));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("result: authenticated as \"jane@example.com\""),
        "{stdout}"
    );
    assert!(!stdout.contains(&good) && !String::from_utf8_lossy(&out.stderr).contains(&good));

    let file = write(dir.path(), "token", &expired);
    let out = tokio::task::block_in_place(|| {
        WEBHOOK.run(&[
            Path::new("explain"),
            Path::new("--config"),
            &config,
            Path::new("--token-file"),
            &file,
        ])
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL exp/nbf/iat:") && stdout.contains("token expired"),
        "{stdout}"
    );
    assert!(!stdout.contains(&expired));

    // Could not check: the config cannot be loaded.
    let out = tokio::task::block_in_place(|| {
        WEBHOOK.run(&[
            Path::new("explain"),
            Path::new("--config"),
            Path::new("/nonexistent/config.yaml"),
            Path::new("--token-file"),
            &file,
        ])
    });
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    // And an empty token file.
    let empty = write(dir.path(), "empty", "\n");
    let out = tokio::task::block_in_place(|| {
        WEBHOOK.run(&[
            Path::new("explain"),
            Path::new("--config"),
            &config,
            Path::new("--token-file"),
            &empty,
        ])
    });
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token in it"));
}

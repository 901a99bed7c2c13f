//! What a platform engineer deploys with: `certs` output, the `kubeconfig`
//! the kube-apiserver reads (checked against OpenShift's rules), and that same
//! kubeconfig, parsed, used by a client to get a TokenReview from the running
//! server over mTLS. The subcommands run as the real binary; the server runs
//! in-process from a config file pointing at the files `certs` wrote.
//!
//! Self-contained on purpose: nothing here depends on the other test modules.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::Algorithm;
use kube_authn_common::clock::{Clock, unix_now};
use kube_authn_testkit::bin::Binary;
use kube_authn_testkit::config::DexIssuer;
use kube_authn_testkit::{dex_claims, issuer::TestIssuer};
use kube_authn_webhook::cmd::demo::apiserver_request;
use kube_authn_webhook::http as server;
use kube_authn_webhook::pki::Ca;
use kube_authn_webhook::prepare::Prepared;
use kube_authn_webhook::wire::ApiVersion;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Deserialize;
use serde_json::{Value, json};
use serde_norway::Value as Yaml;

const WEBHOOK: Binary = Binary::new(env!("CARGO_BIN_EXE_kube-authn-webhook"));
const SANS: &str = "127.0.0.1,localhost,authn-webhook.kube-system.svc";
const API_AUDIENCE: &str = "https://kubernetes.default.svc";
const KEY_FILES: [&str; 3] = ["ca.key", "tls.key", "apiserver-client.key"];
const CERT_FILES: [&str; 3] = ["ca.crt", "tls.crt", "apiserver-client.crt"];

fn run(args: &[&str]) -> Output {
    WEBHOOK.run(args)
}

fn stdout_of(args: &[&str]) -> String {
    WEBHOOK.stdout_of(args)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// Runs `certs` into `dir/pki` and returns that directory.
fn certs(dir: &Path) -> PathBuf {
    let out = dir.join("pki");
    stdout_of(&[
        "certs",
        "--out",
        path_str(&out),
        "--server-san",
        SANS,
        "--days",
        "90",
    ]);
    out
}

fn kubeconfig_args<'a>(pki: &'a Path, server: &'a str) -> Vec<String> {
    vec![
        "kubeconfig".into(),
        "--server".into(),
        server.into(),
        "--ca".into(),
        path_str(&pki.join("ca.crt")).into(),
        "--client-cert".into(),
        path_str(&pki.join("apiserver-client.crt")).into(),
        "--client-key".into(),
        path_str(&pki.join("apiserver-client.key")).into(),
    ]
}

fn kubeconfig(pki: &Path, server: &str, extra: &[&str]) -> String {
    let mut args = kubeconfig_args(pki, server);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    stdout_of(&args)
}

fn certs_from(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("readable PEM")
        .collect::<Result<Vec<_>, _>>()
        .expect("valid PEM")
}

// --- OpenShift's rules for spec.webhookTokenAuthenticator.kubeConfig ---------

/// Every way `text` breaks the rules cluster-kube-apiserver-operator applies
/// to a webhook kubeconfig (empty when it passes).
fn openshift_kubeconfig_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let doc: Yaml = match serde_norway::from_str(text) {
        Ok(d) => d,
        Err(e) => return vec![format!("not YAML: {e}")],
    };
    let list = |key: &str| {
        doc.get(key)
            .and_then(Yaml::as_sequence)
            .cloned()
            .unwrap_or_default()
    };
    let (clusters, users, contexts) = (list("clusters"), list("users"), list("contexts"));
    for (what, items) in [
        ("clusters", &clusters),
        ("users", &users),
        ("contexts", &contexts),
    ] {
        if items.len() != 1 {
            problems.push(format!(
                "needs exactly one entry in {what}, has {}",
                items.len()
            ));
        }
    }
    let name = |v: Option<&Yaml>| {
        v.and_then(|v| v.get("name"))
            .and_then(Yaml::as_str)
            .map(str::to_owned)
    };
    let current = doc
        .get("current-context")
        .and_then(Yaml::as_str)
        .unwrap_or("");
    if current.is_empty() {
        problems.push("current-context is not set".into());
    } else if name(contexts.first()).as_deref() != Some(current) {
        problems.push(format!("current-context {current:?} names no context"));
    }
    if let Some(ctx) = contexts.first().and_then(|c| c.get("context")) {
        let field = |k: &str| ctx.get(k).and_then(Yaml::as_str).map(str::to_owned);
        if field("cluster") != name(clusters.first()) {
            problems.push("the context's cluster is not the cluster".into());
        }
        if field("user") != name(users.first()) {
            problems.push("the context's user is not the user".into());
        }
    }
    let server = clusters
        .first()
        .and_then(|c| c.get("cluster"))
        .and_then(|c| c.get("server"))
        .and_then(Yaml::as_str)
        .unwrap_or("");
    if server.is_empty() {
        problems.push("the cluster has no server".into());
    }
    // No file paths anywhere: the kubeconfig is copied to the kube-apiserver
    // without the files it would name.
    fn walk(v: &Yaml, problems: &mut Vec<String>) {
        match v {
            Yaml::Mapping(m) => {
                for (k, v) in m {
                    let k = k.as_str().unwrap_or("");
                    if matches!(
                        k,
                        "certificate-authority" | "client-certificate" | "client-key" | "tokenFile"
                    ) {
                        problems.push(format!("{k} names a file; only inline *-data is allowed"));
                    }
                    if k.ends_with("-data") {
                        let decoded = v.as_str().and_then(|s| STANDARD.decode(s).ok());
                        if !decoded.is_some_and(|d| d.starts_with(b"-----BEGIN ")) {
                            problems.push(format!("{k} is not base64 of PEM"));
                        }
                    }
                    walk(v, problems);
                }
            }
            Yaml::Sequence(s) => s.iter().for_each(|v| walk(v, problems)),
            Yaml::Tagged(t) => walk(&t.value, problems),
            _ => {}
        }
    }
    walk(&doc, &mut problems);
    let user = users.first().and_then(|u| u.get("user"));
    let has = |k: &str| {
        user.and_then(|u| u.get(k))
            .and_then(Yaml::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let credential = (has("client-certificate-data") && has("client-key-data"))
        || has("token")
        || (has("username") && has("password"));
    if !credential {
        problems.push("the user carries no credential (client certificate + key, token, or username + password)".into());
    }
    problems
}

// --- a client that reads a kubeconfig, as the kube-apiserver does ------------

#[derive(Deserialize)]
struct Kubeconfig {
    clusters: Vec<NamedCluster>,
    users: Vec<NamedUser>,
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context")]
    current_context: String,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: ClusterEntry,
}

#[derive(Deserialize)]
struct ClusterEntry {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: String,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    user: UserEntry,
}

#[derive(Deserialize)]
struct UserEntry {
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: String,
    #[serde(rename = "client-key-data")]
    client_key_data: String,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: ContextEntry,
}

#[derive(Deserialize)]
struct ContextEntry {
    cluster: String,
    user: String,
}

/// The URL and an HTTPS client with the kubeconfig's CA and client
/// certificate, resolved through current-context the way client-go does.
fn client_from_kubeconfig(text: &str) -> (String, reqwest::Client) {
    let kc: Kubeconfig = serde_norway::from_str(text).expect("kubeconfig parses");
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == kc.current_context)
        .expect("current-context resolves");
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.context.cluster)
        .expect("context's cluster exists");
    let user = kc
        .users
        .iter()
        .find(|u| u.name == ctx.context.user)
        .expect("context's user exists");
    let decode = |s: &str| STANDARD.decode(s).expect("base64 data");
    let ca = decode(&cluster.cluster.certificate_authority_data);
    let mut identity = decode(&user.user.client_certificate_data);
    identity.extend(decode(&user.user.client_key_data));
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).expect("CA PEM"))
        .identity(reqwest::Identity::from_pem(&identity).expect("client identity"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    (cluster.cluster.server.clone(), client)
}

fn review_body(token: &str) -> String {
    apiserver_request(ApiVersion::V1, token, &[API_AUDIENCE]).to_string()
}

/// The TokenReview answer, or why there was none (TLS refusal, HTTP error).
async fn post_review(client: &reqwest::Client, url: &str, token: &str) -> Result<Value, String> {
    let resp = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(review_body(token))
        .send()
        .await
        .map_err(|e| format!("request failed: {e:?}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading the answer: {e:?}"))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON: {e}"))
}

// --- tests ---------------------------------------------------------------------

#[test]
fn certs_writes_pem_files_with_keys_0600_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = certs(dir.path());
    let mode = |name: &str| {
        std::fs::metadata(pki.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    for key in KEY_FILES {
        assert_eq!(mode(key), 0o600, "{key} must be private");
        let text = std::fs::read_to_string(pki.join(key)).expect("key");
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    }
    for cert in CERT_FILES {
        assert_eq!(
            certs_from(&pki.join(cert)).len(),
            1,
            "{cert} holds one certificate"
        );
    }
    let client = certs_from(&pki.join("apiserver-client.crt"));
    let (_, parsed) = x509_parser::parse_x509_certificate(client[0].as_ref()).expect("x509");
    assert_eq!(
        parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok()),
        Some("kube-apiserver-authn-client")
    );

    let before = std::fs::read(pki.join("ca.key")).expect("read");
    let again = run(&[
        "certs",
        "--out",
        path_str(&pki),
        "--server-san",
        "127.0.0.1",
    ]);
    assert!(!again.status.success(), "a second run must refuse");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("refusing to overwrite")
            && stderr.contains("pass --renew")
            && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(pki.join("ca.key")).expect("read"),
        before,
        "nothing replaced"
    );

    stdout_of(&[
        "certs",
        "--out",
        path_str(&pki),
        "--server-san",
        "127.0.0.1",
        "--force",
    ]);
    assert_ne!(
        std::fs::read(pki.join("ca.key")).expect("read"),
        before,
        "--force replaces"
    );
    for key in KEY_FILES {
        assert_eq!(mode(key), 0o600, "{key} after --force");
    }

    let bad = run(&[
        "certs",
        "--out",
        path_str(&dir.path().join("x")),
        "--server-san",
        "https://a.example.com",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--server-san"));
    assert!(
        !dir.path().join("x").exists(),
        "nothing written for a bad request"
    );
}

#[test]
fn server_certificate_verifies_against_the_ca_for_every_requested_san() {
    kube_authn_webhook::install_crypto_providers();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = certs(dir.path());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_from(&pki.join("ca.crt")) {
        roots.add(c).expect("CA usable as a root");
    }
    let roots = Arc::new(roots);
    let provider = kube_authn_webhook::tls::provider();
    let server_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .expect("server verifier");
    let server_cert = certs_from(&pki.join("tls.crt")).remove(0);
    let now = UnixTime::now();
    for san in SANS.split(',') {
        let name = ServerName::try_from(san.to_owned()).expect("server name");
        server_verifier
            .verify_server_cert(&server_cert, &[], &name, &[], now)
            .unwrap_or_else(|e| panic!("tls.crt should verify for {san}: {e}"));
    }
    for other in [
        "authn-webhook.kube-system.svc.cluster.local",
        "127.0.0.2",
        "example.com",
    ] {
        let name = ServerName::try_from(other.to_owned()).expect("server name");
        assert!(
            server_verifier
                .verify_server_cert(&server_cert, &[], &name, &[], now)
                .is_err(),
            "tls.crt must not verify for {other}"
        );
    }

    let client_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .expect("client verifier");
    let client_cert = certs_from(&pki.join("apiserver-client.crt")).remove(0);
    client_verifier
        .verify_client_cert(&client_cert, &[], now)
        .expect("the client certificate is a valid client certificate of the CA");
    assert!(
        client_verifier
            .verify_client_cert(&server_cert, &[], now)
            .is_err(),
        "the serving certificate is not a client certificate"
    );
}

#[test]
fn the_openshift_rule_check_rejects_what_openshift_rejects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = certs(dir.path());
    let good = kubeconfig(&pki, "https://127.0.0.1:8443/authenticate", &[]);
    assert_eq!(openshift_kubeconfig_problems(&good), Vec::<String>::new());
    let doc: Yaml = serde_norway::from_str(&good).expect("yaml");
    let mutate = |f: &dyn Fn(&mut Yaml)| {
        let mut d = doc.clone();
        f(&mut d);
        serde_norway::to_string(&d).expect("yaml")
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "two clusters",
            mutate(&|d| {
                let c = d["clusters"][0].clone();
                d["clusters"].as_sequence_mut().expect("seq").push(c);
            }),
        ),
        (
            "no current-context",
            mutate(&|d| {
                d.as_mapping_mut().expect("map").remove("current-context");
            }),
        ),
        (
            "current-context naming nothing",
            mutate(&|d| d["current-context"] = Yaml::from("other")),
        ),
        (
            "a file path",
            mutate(&|d| {
                let user = d["users"][0]["user"].as_mapping_mut().expect("map");
                user.remove("client-key-data");
                user.insert(
                    Yaml::from("client-key"),
                    Yaml::from("/etc/kubernetes/key.pem"),
                );
            }),
        ),
        (
            "no credential",
            mutate(&|d| {
                d["users"][0]["user"] = Yaml::Mapping(Default::default());
            }),
        ),
        (
            "empty server",
            mutate(&|d| d["clusters"][0]["cluster"]["server"] = Yaml::from("")),
        ),
        (
            "data that is not PEM",
            mutate(&|d| {
                d["clusters"][0]["cluster"]["certificate-authority-data"] =
                    Yaml::from("bm90IHBlbQ==")
            }),
        ),
    ];
    for (what, text) in cases {
        assert!(
            !openshift_kubeconfig_problems(&text).is_empty(),
            "{what} must be rejected"
        );
    }
}

#[test]
fn kubeconfig_refuses_a_url_the_webhook_does_not_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = certs(dir.path());
    let mut args = kubeconfig_args(&pki, "https://127.0.0.1:8443/");
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/authenticate"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no half-written kubeconfig on stdout"
    );

    // The client certificate is not optional.
    args.truncate(5);
    args[2] = "https://127.0.0.1:8443/authenticate".into();
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--client-cert"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_kubeconfig_gets_a_tokenreview_over_mtls() {
    kube_authn_webhook::install_crypto_providers();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = certs(dir.path());
    let issuer_ca = Ca::new("dev issuer CA", 2).expect("issuer CA");
    let issuer = TestIssuer::start(&issuer_ca, Algorithm::RS256)
        .await
        .expect("dev issuer");
    std::fs::write(pki.join("issuer-ca.crt"), &issuer_ca.cert_pem).expect("write");
    let config_text = format!(
        r#"server:
  listen: 127.0.0.1:0
  workers: 1
  tls: {{cert_file: tls.crt, key_file: tls.key, client_ca_file: ca.crt}}
telemetry: {{listen: 127.0.0.1:0, log_format: text}}
issuers:{issuer}"#,
        issuer = DexIssuer {
            ca_file: "issuer-ca.crt",
            min_refetch: None,
            ..DexIssuer::new("pcd-dex", issuer.url())
        }
        .yaml()
    );
    let config_path = pki.join("config.yaml");
    std::fs::write(&config_path, config_text).expect("write config");
    let config = Prepared::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    let running = server::start(&config, Clock::System)
        .await
        .expect("server starts");
    assert!(
        running.wait_ready(Duration::from_secs(10)).await,
        "issuer keys fetched"
    );
    let server_url = format!("https://{}/authenticate", running.addr);

    let text = kubeconfig(&pki, &server_url, &[]);
    assert_eq!(
        openshift_kubeconfig_problems(&text),
        Vec::<String>::new(),
        "{text}"
    );
    let (url, client) = client_from_kubeconfig(&text);
    assert_eq!(url, server_url);

    let token = issuer.mint(&dex_claims(
        issuer.url(),
        unix_now(),
        Some("jane@example.com"),
        "jane",
        &["pcd-default-service-admin"],
    ));
    let answer = post_review(&client, &url, &token)
        .await
        .expect("a TokenReview answer");
    assert_eq!(answer["kind"], "TokenReview");
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(answer["status"]["user"]["username"], "jane@example.com");
    assert_eq!(
        answer["status"]["user"]["groups"],
        json!(["pcd-default-service-admin"])
    );

    // The OpenShift Secret carries the very same kubeconfig.
    let secret_text = kubeconfig(
        &pki,
        &server_url,
        &[
            "--format",
            "openshift-secret",
            "--secret-name",
            "authn-webhook",
        ],
    );
    let secret: Yaml = serde_norway::from_str(&secret_text).expect("secret yaml");
    assert_eq!(secret["apiVersion"].as_str(), Some("v1"));
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
    assert_eq!(secret["metadata"]["name"].as_str(), Some("authn-webhook"));
    assert_eq!(
        secret["metadata"]["namespace"].as_str(),
        Some("openshift-config")
    );
    let inner = STANDARD
        .decode(
            secret["data"]["kubeConfig"]
                .as_str()
                .expect("data.kubeConfig"),
        )
        .expect("base64");
    let inner = String::from_utf8(inner).expect("UTF-8");
    assert_eq!(openshift_kubeconfig_problems(&inner), Vec::<String>::new());
    let plain: Yaml = serde_norway::from_str(&text).expect("yaml");
    let wrapped: Yaml = serde_norway::from_str(&inner).expect("yaml");
    assert_eq!(plain, wrapped, "the Secret wraps the same kubeconfig");
    let (url2, client2) = client_from_kubeconfig(&inner);
    let answer = post_review(&client2, &url2, &token)
        .await
        .expect("answer via the Secret's kubeconfig");
    assert_eq!(answer["status"]["authenticated"], true);

    // mTLS: a client certificate from another CA, or none, gets no review.
    let stranger_ca = Ca::new("someone else's CA", 2).expect("CA");
    let stranger = stranger_ca
        .client("kube-apiserver-authn-client", 2)
        .expect("client cert");
    let ca_pem = std::fs::read(pki.join("ca.crt")).expect("ca");
    let refused = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca_pem).expect("pem"))
        .identity(
            reqwest::Identity::from_pem(
                format!("{}{}", stranger.cert_pem, stranger.key_pem).as_bytes(),
            )
            .expect("identity"),
        )
        .build()
        .expect("client");
    assert!(
        post_review(&refused, &url, &token).await.is_err(),
        "an unknown client certificate must be refused"
    );
    let anonymous = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca_pem).expect("pem"))
        .build()
        .expect("client");
    assert!(
        post_review(&anonymous, &url, &token).await.is_err(),
        "a client without a certificate must be refused"
    );

    // The expiry gauge shows tls.crt's notAfter.
    let metrics = reqwest::get(format!("http://{}/metrics", running.telemetry_addr))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let exported: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("authn_webhook_tls_certificate_expiry_timestamp_seconds "))
        .unwrap_or_else(|| panic!("expiry gauge missing from:\n{metrics}"))
        .trim()
        .parse()
        .expect("a number");
    let tls = certs_from(&pki.join("tls.crt"));
    let (_, cert) = x509_parser::parse_x509_certificate(tls[0].as_ref()).expect("x509");
    assert_eq!(exported, cert.validity().not_after.timestamp() as f64);
    assert!(
        exported > (unix_now() + 89 * 86_400) as f64,
        "about 90 days ahead"
    );

    running.shutdown().await;
    issuer.stop().await;
}

/// The gauge the certificate-expiry alert reads, from a telemetry address.
async fn expiry_gauge(telemetry: std::net::SocketAddr) -> f64 {
    let metrics = reqwest::get(format!("http://{telemetry}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("authn_webhook_tls_certificate_expiry_timestamp_seconds "))
        .unwrap_or_else(|| panic!("expiry gauge missing from:\n{metrics}"))
        .trim()
        .parse()
        .expect("a number")
}

fn not_after(path: &Path) -> f64 {
    let der = certs_from(path).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("x509");
    cert.validity().not_after.timestamp() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certs_are_served_and_the_expiry_gauge_follows() {
    kube_authn_webhook::install_crypto_providers();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = certs(dir.path());
    let efa = kube_authn_testkit::DevKey::generate(Algorithm::ES256).expect("key");
    std::fs::write(pki.join("efa.pem"), &efa.public_pem).expect("write");
    let config_path = pki.join("config.yaml");
    std::fs::write(
        &config_path,
        "server:\n  listen: 127.0.0.1:0\n  workers: 1\n  tls: {cert_file: tls.crt, key_file: tls.key, client_ca_file: ca.crt, reload_interval: 100ms}\ntelemetry: {listen: 127.0.0.1:0, log_format: text}\nissuers:\n  - {name: efa, kind: efa, keys: {public_key_files: [efa.pem]}, allow_any_audience: true, claims: {username: {prefix: \"\"}, groups: {prefix: \"\"}}}\n",
    )
    .expect("write config");
    let config = Prepared::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    let running = server::start(&config, Clock::System)
        .await
        .expect("server starts");
    let first = not_after(&pki.join("tls.crt"));
    assert_eq!(expiry_gauge(running.telemetry_addr).await, first);
    let server_url = format!("https://{}/authenticate", running.addr);
    let before = kubeconfig(&pki, &server_url, &[]);
    let ca_before = std::fs::read(pki.join("ca.crt")).expect("read");

    // Renewal as deploy/README.md says: new serving and client certificates
    // from the same CA, picked up by the running webhook.
    let out = stdout_of(&[
        "certs",
        "--out",
        path_str(&pki),
        "--server-san",
        "127.0.0.1",
        "--days",
        "20",
        "--renew",
    ]);
    assert!(out.contains("kept the CA"), "{out}");
    assert_eq!(
        std::fs::read(pki.join("ca.crt")).expect("read"),
        ca_before,
        "the CA stays"
    );
    let renewed = not_after(&pki.join("tls.crt"));
    assert!(renewed < first - 60.0 * 86_400.0, "20 days instead of 90");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while expiry_gauge(running.telemetry_addr).await != renewed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gauge never showed the renewed certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let now = unix_now();
    let token = efa.sign(
        &json!({"username": "admin", "roles": ["FabricAdmin"], "iat": now, "exp": now + 600}),
    );
    // The kube-apiserver's old kubeconfig keeps working (same CA, its client
    // certificate still valid): no outage between the two sides' updates.
    for (what, text) in [("old", before), ("new", kubeconfig(&pki, &server_url, &[]))] {
        let (url, client) = client_from_kubeconfig(&text);
        let answer = post_review(&client, &url, &token)
            .await
            .unwrap_or_else(|e| panic!("review with the {what} kubeconfig: {e}"));
        assert_eq!(answer["status"]["authenticated"], true, "{what}: {answer}");
        assert_eq!(answer["status"]["user"]["username"], "admin");
    }
    running.shutdown().await;
}

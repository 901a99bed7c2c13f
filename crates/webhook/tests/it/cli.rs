//! The binary itself: `check-config` and `demo --once`.

use std::path::Path;
use std::process::Command;

use jsonwebtoken::Algorithm;
use kube_authn_testkit::bin::Binary;
use kube_authn_testkit::harness::write;
use kube_authn_testkit::issuer::TestIssuer;

const WEBHOOK: Binary = Binary::new(env!("CARGO_BIN_EXE_kube-authn-webhook"));

fn check_config(config: &Path) -> std::process::Output {
    WEBHOOK.run(&[Path::new("check-config"), Path::new("--config"), config])
}

/// A temporary directory holding tls.crt and tls.key.
fn dir_with_serving_cert() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ca = kube_authn_webhook::pki::Ca::new("t", 1).unwrap();
    let tls = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
    write(dir.path(), "tls.crt", &tls.cert_pem);
    write(dir.path(), "tls.key", &tls.key_pem);
    dir
}

#[test]
fn check_config_lists_every_problem_with_its_field() {
    let dir = dir_with_serving_cert();
    let config = write(
        dir.path(),
        "config.yaml",
        r#"
server:
  tls: {cert_file: tls.crt, key_file: tls.key}
issuers:
  - name: dex
    kind: oidc
    url: https://dex.example.com/dex
    algorithms: [RS256, HS256]
  - name: dex-again
    kind: oidc
    url: https://dex.example.com/dex
    audiences: [kubernetes]
    claims:
      username: {claim: email, prefix: "system:"}
  - name: efa
    kind: efa
    keys: {public_key_files: [missing.pem]}
    allow_any_audience: true
    claims:
      username: {claims: [username, sub], prefix: "efa:"}
      groups: {claims: [roles, role], prefix: "efa:"}
"#,
    );
    let out = check_config(&config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "issuers[0] (dex).audiences",
        "HS256 is refused for oidc",
        "issuers[1] (dex-again).claims.username.prefix",
        "issuers[2] (efa).keys.public_key_files[0]",
        "missing.pem",
        "two issuers match tokens with iss",
    ] {
        assert!(
            err.contains(expected),
            "stderr should contain {expected:?}:\n{err}"
        );
    }
}

#[test]
fn check_config_refuses_unknown_fields_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.yaml",
        "server:\n  tls: {cert_file: a, key_file: b}\n  colour: blue\nissuers: []\n",
    );
    let out = check_config(&config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));

    let out = WEBHOOK.run(&["check-config", "--config", "/nonexistent/config.yaml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/config.yaml"));
}

#[test]
fn check_config_accepts_a_good_config() {
    let dir = dir_with_serving_cert();
    write(dir.path(), "secret", "0123456789abcdef0123456789abcdef\n");
    let config = write(
        dir.path(),
        "config.yaml",
        r#"
server:
  listen: 0.0.0.0:8443
  tls: {cert_file: tls.crt, key_file: tls.key}
issuers:
  - name: pcd-dex
    kind: oidc
    url: https://pcd.example.com/dex
    audiences: [kubernetes]
    claims:
      username: {claims: [email, name], prefix: "pcd:"}
      groups: {claim: groups, prefix: "pcd:"}
  - name: efa
    kind: efa
    keys: {hmac_secret_file: secret}
    algorithms: [HS256]
    audiences: [efa-kubernetes]
    claims:
      username: {claims: [username, sub], prefix: "efa:"}
      groups: {claims: [roles, role], prefix: "efa:"}
"#,
    );
    let out = check_config(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "no warnings: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two issuers as PCD-K and EFA are often set up, names taken as they are:
/// an EFA user could be the same Kubernetes user as a Dex user. Refused
/// until both say so; an EFA issuer must also say which aud it takes.
const SHARED: &str = r#"
server:
  tls: {cert_file: tls.crt, key_file: tls.key}
issuers:
  - name: pcd-dex
    kind: oidc
    url: https://pcd.example.com/dex
    audiences: [kubernetes]
    claims:
      username: {claims: [email, name], prefix: ""}
      groups: {claim: groups, prefix: ""}
  - name: efa
    kind: efa
    keys: {hmac_secret_file: secret}
    algorithms: [HS256]
    claims:
      username: {claims: [username, sub], prefix: ""}
      groups: {claims: [roles, role], prefix: ""}
"#;

#[test]
fn check_config_refuses_issuers_that_share_identities_or_take_any_audience() {
    let dir = dir_with_serving_cert();
    write(dir.path(), "secret", "0123456789abcdef0123456789abcdef\n");
    let out = check_config(&write(dir.path(), "config.yaml", SHARED));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "issuers[1] (efa).claims.username.prefix: \"\" can produce the same usernames as issuers[0] (pcd-dex)",
        "issuers[1] (efa).claims.groups.prefix: \"\" can produce the same group names as issuers[0] (pcd-dex)",
        "issuers[1] (efa).audiences: an efa issuer needs at least one audience",
    ] {
        assert!(
            err.contains(expected),
            "stderr should contain {expected:?}:\n{err}"
        );
    }

    // Said explicitly: accepted, with a warning about the aud on stderr.
    let explicit = SHARED
        .replace(
            "      groups: {claim: groups, prefix: \"\"}\n",
            "      groups: {claim: groups, prefix: \"\"}\n    allow_shared_identities: true\n",
        )
        .replace(
            "    algorithms: [HS256]\n",
            "    algorithms: [HS256]\n    allow_any_audience: true\n    allow_shared_identities: true\n",
        );
    let path = write(dir.path(), "config.yaml", &explicit);
    let out = check_config(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "warning: {}: issuers[1] (efa).allow_any_audience: the token's aud is not checked: a token this issuer signed for any other service is accepted here too; list audiences once the issuer's tokens carry an aud",
            path.display()
        )
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 issuers)"));
}

#[test]
fn serve_exits_with_a_clear_message_on_bad_config() {
    let out = WEBHOOK.run(&["serve", "--config", "/nonexistent/config.yaml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn demo_once_shows_an_authenticated_round_trip() {
    let out = WEBHOOK.run(&["demo", "--once"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"authenticated\": true"), "{stdout}");
    assert!(stdout.contains("curl --cacert"), "{stdout}");
    // stdout is a pipe here: no colour codes in the log lines.
    assert!(
        !stdout.contains('\x1b'),
        "ANSI escapes on a pipe:\n{stdout}"
    );
}

/// `serve --config` on a config with `issuers` (a YAML list body); returns
/// once it logs "serving TokenReviews" and /readyz is 200, with its stdout
/// and what it logged so far.
async fn serve(
    dir: &Path,
    issuers: &str,
) -> (
    tokio::process::Child,
    tokio::io::BufReader<tokio::process::ChildStdout>,
    String,
) {
    use tokio::io::AsyncBufReadExt;
    let ca = kube_authn_testkit::harness::new_ca();
    let tls = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
    write(dir, "tls.crt", &tls.cert_pem);
    write(dir, "tls.key", &tls.key_pem);
    // Port 0: the server picks free ports and logs them, so no other test
    // can take them between our choosing and its binding.
    let config = write(
        dir,
        "config.yaml",
        format!(
            "server:\n  listen: 127.0.0.1:0\n  tls: {{cert_file: tls.crt, key_file: tls.key}}\ntelemetry: {{listen: 127.0.0.1:0}}\nissuers:{issuers}"
        ),
    );
    let mut child = WEBHOOK
        .command()
        .args(["serve", "--config"])
        .arg(&config)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut log = String::new();
    let telemetry = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).await.unwrap() == 0 {
                panic!("the server exited before serving:\n{log}");
            }
            log.push_str(&line);
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "serving TokenReviews" {
                return v["telemetry_addr"].as_str().unwrap().to_owned();
            }
        }
    })
    .await
    .expect("the server starts serving");
    let ready =
        kube_authn_testkit::harness::eventually(std::time::Duration::from_secs(20), || async {
            reqwest::get(format!("http://{telemetry}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    assert!(ready, "the server becomes ready");
    (child, stdout, log)
}

/// SIGTERM, then the exit status once stdout is read to the end (into `log`).
async fn terminate(
    mut child: tokio::process::Child,
    mut stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
    log: &mut String,
) -> std::process::ExitStatus {
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, log)
            .await
            .unwrap();
        child.wait().await.unwrap()
    })
    .await
    .expect("exits within the grace period")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_drains_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ca = kube_authn_testkit::harness::new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    write(dir.path(), "ca.crt", &ca.cert_pem);
    let dex = kube_authn_testkit::harness::dex_issuer_yaml("dex", issuer.url());
    let (child, stdout, mut log) = serve(dir.path(), &dex).await;
    let status = terminate(child, stdout, &mut log).await;
    assert_eq!(status.code(), Some(0));
    assert!(log.contains("draining"), "{log}");
    assert!(
        log.contains("\"message\":\"stopped\""),
        "JSON logs by default: {log}"
    );
    assert!(!log.contains("\"WARN\""), "no config warnings: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_the_config_warnings_as_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = kube_authn_testkit::harness::new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    write(dir.path(), "ca.crt", &ca.cert_pem);
    write(dir.path(), "secret", "0123456789abcdef0123456789abcdef\n");
    let dex = kube_authn_testkit::config::DexIssuer {
        prefix: "dex:",
        ..kube_authn_testkit::config::DexIssuer::new("dex", issuer.url())
    };
    let efa = r#"
  - name: efa
    kind: efa
    keys: {hmac_secret_file: secret}
    algorithms: [HS256]
    allow_any_audience: true
    claims:
      username: {claims: [username, sub], prefix: "efa:"}
      groups: {claims: [roles, role], prefix: "efa:"}
"#;
    let (child, stdout, mut log) = serve(dir.path(), &format!("{}{efa}", dex.yaml())).await;
    let warning = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "WARN")
        .unwrap_or_else(|| panic!("a WARN line before serving:\n{log}"));
    assert_eq!(
        warning["field"], "issuers[1] (efa).allow_any_audience",
        "{warning}"
    );
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("the token's aud is not checked"),
        "{warning}"
    );
    assert_eq!(terminate(child, stdout, &mut log).await.code(), Some(0));
}

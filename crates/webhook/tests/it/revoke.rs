//! Revocation (the watched list, every entry kind, cache hits included),
//! max_token_lifetime, the audit trail, and the `revoke` command.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use kube_authn_common::clock::{Clock, unix_now};
use kube_authn_testkit::bin::Binary;
use kube_authn_testkit::harness::*;
use kube_authn_testkit::issuer::{Behaviour, TestIssuer};
use serde_json::{Value, json};

const WEBHOOK: Binary = Binary::new(env!("CARGO_BIN_EXE_kube-authn-webhook"));
const DEX_SUB: &str = "CiQ2YmE3YjgxMC05ZGFkLTExZDEtODBiNC0wMGMwNGZkNDMwYzgSB2RlZmF1bHQ";

fn sha256_hex(token: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// A server watching `revoked.yaml` every 100 ms (`extra`: more top-level
/// config), the list not written yet.
fn watching(extra: &str) -> Options {
    Options {
        tls_extra: ", reload_interval: 100ms",
        config_extra: format!("revocation: {{file: revoked.yaml}}\n{extra}"),
        ..Options::default()
    }
}

async fn reloads(h: &Harness, result: &str) -> f64 {
    h.metric(
        "authn_webhook_revocation_reloads_total",
        &[("result", result)],
    )
    .await
}

async fn hits(h: &Harness) -> f64 {
    h.metric("authn_webhook_cache_lookups_total", &[("result", "hit")])
        .await
}

/// Writes the list as `kubectl apply` of a ConfigMap would (a whole new
/// file renamed into place) and waits until the server has loaded it.
async fn publish(h: &Harness, entries: &str) {
    let before = reloads(h, "success").await;
    replace_file(
        h.dir(),
        "revoked.yaml",
        format!("version: 1\nentries:\n{entries}"),
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(h, "success").await > before
        })
        .await,
        "the new list is loaded:\n{entries}"
    );
}

/// jane's claims, told apart by `tag` in sub, jti, e-mail and one group.
fn person(issuer: &TestIssuer, tag: &str) -> Value {
    let mut c = jane(issuer.url());
    c["sub"] = json!(format!("sub-{tag}"));
    c["jti"] = json!(format!("jti-{tag}"));
    c["email"] = json!(format!("{tag}@example.com"));
    c["groups"] = json!(["developers", format!("group-{tag}")]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_entry_refuses_the_very_next_review_of_a_cached_token() {
    let (h, issuer) = Harness::with_dex(watching("")).await;
    let now = unix_now();
    let mut earlier: Vec<String> = Vec::new();
    for kind in ["token", "jti", "subject", "user", "group", "not_before"] {
        let token = issuer.mint(&person(&issuer, kind));
        let fields = match kind {
            "token" => format!("token_sha256: {}", sha256_hex(&token)),
            "jti" => "issuer: dex, jti: jti-jti".to_owned(),
            "subject" => "issuer: dex, sub: sub-subject".to_owned(),
            "user" => "user: user@example.com".to_owned(),
            "group" => "group: group-group".to_owned(),
            // One subject's tokens issued (iat = now) before a minute from now.
            _ => format!(
                "issuer: dex, sub: sub-not_before, not_before: \"{}\"",
                rfc3339(now + 60)
            ),
        };
        // Verified once, then answered from the cache.
        assert_eq!(h.review(&token).await["status"]["authenticated"], true);
        assert_eq!(h.review(&token).await["status"]["authenticated"], true);
        publish(&h, &format!("  - {{{fields}, reason: test {kind}}}\n")).await;
        let hits_before = hits(&h).await;
        assert_rejected(&h.review(&token).await);
        assert_eq!(
            hits(&h).await,
            hits_before + 1.0,
            "{kind}: refused on a cache hit"
        );
        assert_eq!(
            h.metric(
                "authn_webhook_revoked_total",
                &[("issuer", "dex"), ("kind", kind)]
            )
            .await,
            1.0,
            "{kind}"
        );
        // The entry of the round before is gone with the list it was in.
        for t in &earlier {
            assert_eq!(h.review(t).await["status"]["authenticated"], true, "{kind}");
        }
        earlier.push(token);
    }
    assert_eq!(
        h.reviews(&[("issuer", "dex"), ("reason", "revoked")]).await,
        6.0
    );
    assert_eq!(h.metric("authn_webhook_revocation_entries", &[]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_before_logs_an_issuer_out_for_tokens_issued_before_it() {
    let (h, issuer) = Harness::with_dex(watching("")).await;
    let now = unix_now();
    let mut old = jane(issuer.url());
    old["iat"] = json!(now - 600);
    let old = issuer.mint(&old);
    let fresh = issuer.mint(&jane(issuer.url()));
    let mut no_iat = jane(issuer.url());
    no_iat.as_object_mut().unwrap().remove("iat");
    let no_iat = issuer.mint(&no_iat);
    for t in [&old, &fresh, &no_iat] {
        assert_eq!(h.review(t).await["status"]["authenticated"], true);
    }
    publish(
        &h,
        &format!(
            "  - {{issuer: dex, not_before: \"{}\", reason: log out everywhere}}\n",
            rfc3339(now - 60)
        ),
    )
    .await;
    assert_rejected(&h.review(&old).await);
    // Without iat a token cannot show it is newer: refused too.
    assert_rejected(&h.review(&no_iat).await);
    assert_eq!(h.review(&fresh).await["status"]["authenticated"], true);
    // Another issuer's name does not touch dex's tokens.
    publish(
        &h,
        &format!(
            "  - {{issuer: other, not_before: \"{}\"}}\n  - {{issuer: dex, sub: someone-else}}\n",
            rfc3339(now + 60)
        ),
    )
    .await;
    assert_eq!(h.review(&old).await["status"]["authenticated"], true);
    // A subject's own not-before leaves its newer tokens alone.
    publish(
        &h,
        &format!(
            "  - {{issuer: dex, sub: {DEX_SUB}, not_before: \"{}\"}}\n",
            rfc3339(now - 60)
        ),
    )
    .await;
    assert_rejected(&h.review(&old).await);
    assert_eq!(h.review(&fresh).await["status"]["authenticated"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_entry_stops_applying() {
    let now = unix_now();
    let clock = Clock::manual(now);
    let (h, issuer) = Harness::with_dex(Options {
        clock: clock.clone(),
        ..watching("")
    })
    .await;
    let token = issuer.mint(&jane(issuer.url()));
    publish(
        &h,
        &format!(
            "  - {{user: jane@example.com, expires: \"{}\"}}\n",
            rfc3339(now + 100)
        ),
    )
    .await;
    assert_rejected(&h.review(&token).await);
    clock.set(now + 100);
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_list_keeps_the_last_good_one_and_is_counted() {
    let (h, issuer) = Harness::with_dex(watching("")).await;
    let token = issuer.mint(&jane(issuer.url()));
    let before = reloads(&h, "error").await;
    publish(&h, "  - {user: jane@example.com}\n").await;
    assert_rejected(&h.review(&token).await);
    // An entry naming two things, and a field no version has.
    replace_file(
        h.dir(),
        "revoked.yaml",
        "version: 1\nentries:\n  - {user: someone, group: admins}\n",
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&h, "error").await > before
        })
        .await
    );
    assert_rejected(&h.review(&token).await);
    assert!(
        logs().contains("entries[0]: an entry revokes exactly one thing"),
        "the log says where the list is wrong"
    );
    replace_file(
        h.dir(),
        "revoked.yaml",
        "version: 1\nentries: [{colour: red}]\n",
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            reloads(&h, "error").await > before + 1.0
        })
        .await
    );
    assert_rejected(&h.review(&token).await);
    // Fixed: the new list applies.
    publish(&h, "  - {user: somebody-else@example.com}\n").await;
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
    assert_eq!(
        reloads(&h, "error").await,
        before + 2.0,
        "each bad version counted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_10000_entries_loads_at_start_and_applies() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut list = String::from("version: 1\nentries:\n");
    for i in 0..2_500 {
        list.push_str(&format!(
            "  - {{token_sha256: {}}}\n  - {{user: user-{i}@example.com, reason: offboarded}}\n  - {{group: group-{i}}}\n  - {{issuer: dex, sub: sub-{i}}}\n",
            sha256_hex(&format!("token-{i}"))
        ));
    }
    write(dir.path(), "revoked.yaml", &list);
    let h = Harness::start_in(dir, ca, &dex_issuer_yaml("dex", issuer.url()), watching("")).await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    assert_eq!(
        h.metric("authn_webhook_revocation_entries", &[]).await,
        10_000.0
    );
    assert_eq!(
        h.review(&issuer.mint(&jane(issuer.url()))).await["status"]["authenticated"],
        true
    );
    let mut c = person(&issuer, "x");
    c["groups"] = json!(["developers", "group-1234"]);
    assert_rejected(&h.review(&issuer.mint(&c)).await);
    let mut c = person(&issuer, "y");
    c["sub"] = json!("sub-2499");
    assert_rejected(&h.review(&issuer.mint(&c)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_token_lifetime_refuses_longer_tokens_and_tokens_without_iat() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let yaml = dex_issuer_yaml("dex", issuer.url()).replace(
        "    kind: oidc\n",
        "    kind: oidc\n    max_token_lifetime: 1h\n",
    );
    let h = Harness::start(ca, &yaml, Options::default()).await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    let now = unix_now();
    // Dex's own: 24 hours.
    assert_rejected(&h.review(&issuer.mint(&jane(issuer.url()))).await);
    let mut hour = jane(issuer.url());
    hour["exp"] = json!(now + 3600);
    assert_eq!(
        h.review(&issuer.mint(&hour)).await["status"]["authenticated"],
        true
    );
    hour["exp"] = json!(now + 3601);
    assert_rejected(&h.review(&issuer.mint(&hour)).await);
    let mut no_iat = jane(issuer.url());
    no_iat["exp"] = json!(now + 600);
    no_iat.as_object_mut().unwrap().remove("iat");
    assert_rejected(&h.review(&issuer.mint(&no_iat)).await);
    assert_eq!(
        h.reviews(&[("reason", "token_lifetime_too_long")]).await,
        2.0
    );
    assert_eq!(h.reviews(&[("reason", "missing_claim")]).await, 1.0);
}

/// Every line of an audit file, parsed; each must be one JSON object.
fn audit_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_holds_every_decision_and_no_token() {
    let (h, issuer) = Harness::with_dex(Options {
        mtls: true,
        ..watching("audit: {output: file, file: audit.log}\n")
    })
    .await;
    let now = unix_now();
    let good = issuer.mint(&jane(issuer.url()));
    let mut expired = jane(issuer.url());
    expired["exp"] = json!(now - 10);
    expired["jti"] = json!("expired-one");
    let expired = issuer.mint(&expired);
    let garbage = "not-a-jwt-at-all-but-long-enough-to-check";
    let mut sent = vec![
        good.clone(),
        good.clone(),
        expired.clone(),
        garbage.to_owned(),
    ];
    for t in &sent {
        h.review(t).await;
    }
    publish(&h, "  - {user: jane@example.com, reason: laptop stolen}\n").await;
    h.review(&good).await;
    sent.push(good.clone());
    // A key nobody has seen, while the issuer is down: could not check.
    issuer.rotate(Algorithm::RS256).unwrap();
    issuer.set_behaviour(Behaviour::Unavailable);
    let unknown = issuer.mint(&jane(issuer.url()));
    assert_unchecked(&h.review(&unknown).await);
    sent.push(unknown);
    h.running.shutdown().await;

    let lines = audit_lines(&h.dir().join("audit.log"));
    assert_eq!(lines.len(), sent.len(), "one line per review: {lines:#?}");
    let text = std::fs::read_to_string(h.dir().join("audit.log")).unwrap();
    for t in &sent {
        assert!(
            !text.contains(t.as_str()),
            "a token reached the audit trail"
        );
        if let Some(sig) = t
            .rsplit('.')
            .next()
            .filter(|s| s.len() >= 16 && t.contains('.'))
        {
            assert!(
                !text.contains(sig),
                "a token signature reached the audit trail"
            );
        }
    }
    for (line, token) in lines.iter().zip(&sent) {
        assert_eq!(line["log_type"], "audit");
        assert_eq!(line["caller"], "kube-apiserver", "{line}");
        assert_eq!(line["token_sha256"], sha256_hex(token));
        assert_eq!(line["token"], sha256_hex(token)[..8]);
        assert!(humantime::parse_rfc3339(line["time"].as_str().unwrap()).is_ok());
    }
    let decisions: Vec<&str> = lines
        .iter()
        .map(|l| l["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        decisions,
        [
            "authenticated",
            "authenticated",
            "refused",
            "refused",
            "revoked",
            "could_not_check"
        ]
    );
    let first = &lines[0];
    assert_eq!(first["verified"], true);
    assert_eq!(first["issuer"], "dex");
    assert_eq!(first["username"], "jane@example.com");
    assert_eq!(
        first["groups"],
        json!(["pcd-default-service-admin", "developers"])
    );
    assert_eq!(first["sub"], DEX_SUB);
    assert_eq!(first["alg"], "RS256");
    assert_eq!(first["kid"], issuer.keys()[0].kid);
    assert_eq!(first["cache"], "miss");
    assert_eq!(lines[1]["cache"], "hit");
    // Refusals say why, and what the token claims (unverified).
    assert_eq!(lines[2]["reason"], "expired");
    assert_eq!(lines[2]["verified"], false);
    assert_eq!(lines[2]["jti"], "expired-one");
    assert!(lines[2].get("username").is_none());
    assert_eq!(lines[3]["reason"], "malformed_token");
    assert!(lines[3].get("issuer").is_none());
    assert_eq!(lines[4]["reason"], "revoked");
    assert_eq!(
        lines[4]["revocation"],
        json!({"kind": "user", "reason": "laptop stolen"})
    );
    assert_eq!(lines[4]["username"], "jane@example.com");
    assert_eq!(lines[5]["reason"], "keys_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_identities_leave_no_username_or_group_in_clear() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "salt", "a secret salt of more than 16 bytes\n");
    let h = Harness::start_in(
        dir,
        ca,
        &dex_issuer_yaml("dex", issuer.url()),
        Options {
            config_extra:
                "audit: {output: file, file: audit.log, identities: hashed, salt_file: salt}\n"
                    .to_owned(),
            ..Options::default()
        },
    )
    .await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    let jane_token = issuer.mint(&jane(issuer.url()));
    h.review(&jane_token).await;
    h.review(&issuer.mint(&jane(issuer.url()))).await;
    h.review(&issuer.mint(&person(&issuer, "bob"))).await;
    h.running.shutdown().await;
    let text = std::fs::read_to_string(h.dir().join("audit.log")).unwrap();
    for clear in [
        "jane@example.com",
        "bob@example.com",
        "pcd-default-service-admin",
        "developers",
        "group-bob",
    ] {
        assert!(!text.contains(clear), "{clear} in clear:\n{text}");
    }
    let lines = audit_lines(&h.dir().join("audit.log"));
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert!(
            l.get("username").is_none() && l.get("groups").is_none(),
            "{l}"
        );
        assert_eq!(l["username_hmac"].as_str().unwrap().len(), 32, "{l}");
    }
    // One person, one hash (two tokens); another person, another.
    assert_eq!(lines[0]["username_hmac"], lines[1]["username_hmac"]);
    assert_ne!(lines[0]["username_hmac"], lines[2]["username_hmac"]);
    assert_eq!(lines[0]["groups_hmac"].as_array().unwrap().len(), 2);
    // "developers" is a group of both: the same hash in both lines.
    assert_eq!(lines[0]["groups_hmac"][1], lines[2]["groups_hmac"][0]);
}

/// The config a spawned `serve` runs with: the dev issuer, an audit trail.
fn spawned_config(dir: &Path, issuer: &TestIssuer, ca: &kube_authn_webhook::pki::Ca, audit: &str) {
    let tls = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
    write(dir, "tls.crt", &tls.cert_pem);
    write(dir, "tls.key", &tls.key_pem);
    write(dir, "ca.crt", &ca.cert_pem);
    write(
        dir,
        "config.yaml",
        format!(
            "server:\n  listen: 127.0.0.1:0\n  tls: {{cert_file: tls.crt, key_file: tls.key}}\ntelemetry: {{listen: 127.0.0.1:0}}\n{audit}revocation: {{file: revoked.yaml}}\nissuers:{}",
            dex_issuer_yaml("dex", issuer.url())
        ),
    );
}

/// SIGTERM right after the last answer: every review's line is written out
/// before the process exits, to a file, or to stdout apart from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_audit_line_is_lost_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    for output in ["file", "stdout"] {
        let dir = tempfile::tempdir().unwrap();
        let audit = match output {
            "file" => "audit: {output: file, file: audit.log}\n",
            _ => "audit: {output: stdout}\n",
        };
        spawned_config(dir.path(), &issuer, &ca, audit);
        let mut child = WEBHOOK
            .command()
            .args(["serve", "--config"])
            .arg(dir.path().join("config.yaml"))
            .spawn()
            .unwrap();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut log = String::new();
        let (addr, telemetry) = tokio::time::timeout(Duration::from_secs(20), async {
            let mut line = String::new();
            loop {
                line.clear();
                assert!(
                    stdout.read_line(&mut line).await.unwrap() > 0,
                    "exited:\n{log}"
                );
                log.push_str(&line);
                let v: Value = serde_json::from_str(&line).unwrap_or_default();
                if v["message"] == "serving TokenReviews" {
                    return (
                        v["addr"].as_str().unwrap().to_owned(),
                        v["telemetry_addr"].as_str().unwrap().to_owned(),
                    );
                }
            }
        })
        .await
        .expect("serving");
        assert!(log.contains("no revocation list yet"), "{log}");
        let ready = eventually(Duration::from_secs(20), || async {
            reqwest::get(format!("http://{telemetry}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(ready, "the issuer's keys are fetched");
        let client = https_client(&ca.cert_pem, None);
        let token = issuer.mint(&jane(issuer.url()));
        let reviews = 200;
        for i in 0..reviews {
            let t = if i % 2 == 0 {
                token.as_str()
            } else {
                "garbage-token"
            };
            let body = kube_authn_webhook::cmd::demo::apiserver_request(
                kube_authn_webhook::wire::ApiVersion::V1,
                t,
                &[],
            );
            let r = client
                .post(format!("https://{addr}/authenticate"))
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let pid = child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut log)
                .await
                .unwrap();
            child.wait().await.unwrap()
        })
        .await
        .expect("exits");
        assert_eq!(status.code(), Some(0), "{log}");
        let lines: Vec<Value> = match output {
            "file" => audit_lines(&dir.path().join("audit.log")),
            _ => log
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["log_type"] == "audit")
                .collect(),
        };
        assert_eq!(lines.len(), reviews, "{output}: every decision written");
        let authenticated = lines
            .iter()
            .filter(|l| l["decision"] == "authenticated")
            .count();
        assert_eq!(authenticated, reviews / 2, "{output}");
        let everything = format!(
            "{log}{}",
            std::fs::read_to_string(dir.path().join("audit.log")).unwrap_or_default()
        );
        assert!(
            !everything.contains(&token),
            "{output}: the token was written"
        );
        if output == "file" {
            assert!(
                !log.contains("\"log_type\":\"audit\""),
                "the file output keeps audit lines off stdout"
            );
        }
    }
}

#[test]
fn the_revoke_command_round_trips_the_list_file() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("revoked.yaml");
    let l = list.to_str().unwrap();
    let token_file = write(
        dir.path(),
        "token",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQ\n",
    );
    let out = WEBHOOK.stdout_of(&[
        "revoke",
        "--list",
        l,
        "--user",
        "jane@example.com",
        "--reason",
        "left",
        "--expires",
        "7d",
    ]);
    assert!(out.contains("added user \"jane@example.com\""), "{out}");
    assert!(out.contains("now has 1 entry"), "{out}");
    WEBHOOK.stdout_of(&["revoke", "--list", l, "--group", "contractors"]);
    WEBHOOK.stdout_of(&["revoke", "--list", l, "--sub", "CiQ", "--issuer", "dex"]);
    WEBHOOK.stdout_of(&["revoke", "--list", l, "--jti", "abc", "--issuer", "dex"]);
    WEBHOOK.stdout_of(&[
        "revoke",
        "--list",
        l,
        "--not-before",
        "2026-12-02T10:00:00+01:00",
        "--issuer",
        "dex",
    ]);
    let out = WEBHOOK.stdout_of(&[
        "revoke",
        "--list",
        l,
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    // The fingerprint, never the token.
    let hash = sha256_hex("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQ");
    assert!(out.contains(&hash[..8]), "{out}");
    let text = std::fs::read_to_string(&list).unwrap();
    assert!(text.contains(&hash), "{text}");
    assert!(!text.contains("c2lnbmF0dXJlLXBhcnQ"), "{text}");
    assert!(text.contains("not_before: 2026-12-02T09:00:00Z"), "{text}");
    // The same target again updates the entry in place.
    let out = WEBHOOK.stdout_of(&[
        "revoke",
        "--list",
        l,
        "--group",
        "contractors",
        "--reason",
        "ended",
    ]);
    assert!(
        out.contains("updated group") && out.contains("6 entries"),
        "{out}"
    );
    let shown = WEBHOOK.stdout_of(&["revoke", "--list", l, "--show"]);
    assert!(shown.contains("6 entries"), "{shown}");
    assert!(
        shown.contains("[0] user \"jane@example.com\": in force until"),
        "{shown}"
    );
    assert!(
        shown.contains("reason: left") && shown.contains("reason: ended"),
        "{shown}"
    );
    let out = WEBHOOK.stdout_of(&[
        "revoke",
        "--list",
        l,
        "--remove",
        "--user",
        "jane@example.com",
    ]);
    assert!(
        out.contains("removed") && out.contains("5 entries"),
        "{out}"
    );
    // What the command writes is what the webhook reads.
    let config = write(
        dir.path(),
        "config.yaml",
        "server:\n  tls: {cert_file: tls.crt, key_file: tls.key}\nrevocation: {file: revoked.yaml}\nissuers: []\n",
    );
    let check = WEBHOOK.run(&[Path::new("check-config"), Path::new("--config"), &config]);
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(!err.contains("revocation"), "{err}");
}

#[test]
fn the_revoke_command_refuses_what_it_cannot_write_safely() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("revoked.yaml");
    let l = list.to_str().unwrap();
    let fails = |args: &[&str], expected: &str| {
        let mut all = vec!["revoke", "--list", l];
        all.extend_from_slice(args);
        let out = WEBHOOK.run(&all);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    };
    fails(&["--jti", "abc"], "jti needs issuer");
    fails(&["--user", "u", "--issuer", "dex"], "user takes no issuer");
    fails(&["--token-sha256", "abcd1234"], "too short to revoke by");
    fails(&["--user", "u", "--expires", "soon"], "--expires \"soon\"");
    fails(&["--remove", "--user", "nobody"], "lists no such entry");
    let config = write(
        dir.path(),
        "config.yaml",
        "server:\n  tls: {cert_file: a, key_file: b}\nissuers:\n  - name: dex\n    kind: oidc\n    url: https://dex.example.com\n    audiences: [k]\n    claims: {username: {claim: email, prefix: \"\"}, groups: {claim: groups, prefix: \"\"}}\n",
    );
    fails(
        &[
            "--sub",
            "x",
            "--issuer",
            "pcd",
            "--config",
            config.to_str().unwrap(),
        ],
        "--issuer \"pcd\" is not an issuer of",
    );
    assert!(!list.exists(), "nothing was written");
    // A list that does not validate is not edited.
    write(
        dir.path(),
        "revoked.yaml",
        "version: 1\nentries: [{user: a, group: b}]\n",
    );
    fails(
        &["--user", "c"],
        "entries[0]: an entry revokes exactly one thing",
    );
    // check-config finds it too, by file and entry.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap() + "revocation: {file: revoked.yaml}\n",
    )
    .unwrap();
    let out = WEBHOOK.run(&[Path::new("check-config"), Path::new("--config"), &config]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("revocation.file: ")
            && err.contains("entries[0]: an entry revokes exactly one thing"),
        "{err}"
    );
}

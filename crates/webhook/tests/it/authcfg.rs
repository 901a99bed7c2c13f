//! AuthenticationConfiguration files through the real server: a config
//! with only `authentication_config_files`, check-config's messages by file
//! and field, the upstream documentation's example end to end, and the
//! differential test against the kube-apiserver's own authenticator
//! (`k8s-oidc-webhook -authentication-config`): every config of
//! `testkit::authcfg::CONFIGS` times every token of the corpus must get the
//! same answer from both, except the rows of `DIFFERENCES`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use kube_authn_common::clock::unix_now;
use kube_authn_testkit::authcfg;
use kube_authn_testkit::harness::*;
use kube_authn_testkit::issuer::TestIssuer;
use kube_authn_webhook::prepare::Prepared;
use serde_json::{Value, json};

use crate::upstream::{Oracle, verdict};

/// The deliberate differences: (config, token or `*` for every token,
/// what differs). The README's AuthenticationConfiguration section lists
/// them with the reasons.
const DIFFERENCES: &[(&str, &str, Difference)] = &[("cel", "*", Difference::SplitGroups)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Difference {
    /// `groups: {expression: 'claims.roles.split(",")'}`, the upstream
    /// documentation's example: k8s.io/apiserver v0.33 refuses every token
    /// at run time ("error evaluating group claim expression: expression
    /// must return a string or a list of strings": its conversion does not
    /// know the list `split` returns). We give the groups the documentation
    /// shows. Where upstream refuses for another reason, so must we.
    SplitGroups,
}

/// A server whose only issuers come from `auth.yaml`.
async fn start(ca: kube_authn_webhook::pki::Ca, auth: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "auth.yaml", auth);
    Harness::start_in(
        dir,
        ca,
        " []\nauthentication_config_files: [auth.yaml]\n",
        Options {
            cache: "{max_entries: 0, max_ttl: 5m, negative_ttl: 10s}",
            ..Options::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_documentation_example_end_to_end() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let (_, cel) = authcfg::CONFIGS.iter().find(|(n, _)| *n == "cel").unwrap();
    let h = start(ca, &authcfg::file("v1", issuer.url(), &issuer.ca_pem, cel)).await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    let now = unix_now();
    let claims = authcfg::base_claims(issuer.url(), now);
    let answer = h.review_as("v1", &issuer.mint(&claims), &[]).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(
        answer["status"]["user"],
        json!({
            "username": "foo:external-user",
            "uid": "CiQ2YmE3YjgxMC05ZGFkLTExZDEtODBiNC0wMGMwNGZkNDMwYzgSB2RlZmF1bHQ",
            "groups": ["user", "admin"],
            "extra": {"example.com/tenant": ["72f988bf-86f1-41af-91ab-2d7cd011db4a"]},
        })
    );
    // "system:" + a username: the user validation rule refuses, with its
    // message in the log and the reason in the metric.
    let mut c = claims.clone();
    c["username"] = json!("system");
    let answer = h.review_as("v1", &issuer.mint(&c), &[]).await;
    assert_eq!(answer["status"]["authenticated"], false, "{answer}");
    assert!(
        answer["status"].get("error").is_none(),
        "a refusal, not an error"
    );
    assert!(
        logs()
            .contains("user validation rule failed: username cannot used reserved system: prefix"),
        "{}",
        logs()
    );
    // A claim the expression needs is missing: refused (a CEL error), and
    // the server keeps serving.
    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove("roles");
    let answer = h.review_as("v1", &issuer.mint(&c), &[]).await;
    assert_eq!(answer["status"]["authenticated"], false, "{answer}");
    let answer = h.review_as("v1", &issuer.mint(&claims), &[]).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    for reason in ["user_validation_failed", "cel_error"] {
        assert_eq!(h.reviews(&[("reason", reason)]).await, 1.0, "{reason}");
    }
}

#[test]
fn check_config_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca();
    let tls = ca.server(&["127.0.0.1".to_owned()], 2).unwrap();
    write(dir.path(), "tls.crt", &tls.cert_pem);
    write(dir.path(), "tls.key", &tls.key_pem);
    let config = "server: {tls: {cert_file: tls.crt, key_file: tls.key}}\nauthentication_config_files: [auth.yaml]\n";
    let path = write(dir.path(), "config.yaml", config);
    // Only authentication_config_files, no issuers: valid.
    write(
        dir.path(),
        "auth.yaml",
        authcfg::file(
            "v1",
            "https://dex.example.com/dex",
            &ca.cert_pem,
            authcfg::CONFIGS[0].1,
        ),
    );
    let p = Prepared::load(&path).unwrap();
    assert_eq!(p.issuers.len(), 1);
    assert_eq!(
        p.issuers[0].spec.url.as_deref(),
        Some("https://dex.example.com/dex")
    );
    // Mistakes are named by file and field; fields a webhook cannot use
    // are warnings naming them.
    write(
        dir.path(),
        "auth.yaml",
        authcfg::file(
            "v1beta1",
            "https://dex.example.com/dex",
            &ca.cert_pem,
            "    claimMappings:\n      username:\n        expression: 'claims.groups.map(g, g)'\n",
        )
        .replace(
            "      audiences:",
            "      egressSelectorType: controlplane\n      audiences:",
        ) + "anonymous: {enabled: true}\n",
    );
    let err = Prepared::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("auth.yaml: jwt[0].claimMappings.username.expression: compilation failed: ERROR: <input>:1:7: expression of type 'any' cannot be range of a comprehension"),
        "{err}"
    );
    write(
        dir.path(),
        "auth.yaml",
        authcfg::file(
            "v1",
            "https://dex.example.com/dex",
            &ca.cert_pem,
            authcfg::CONFIGS[0].1,
        )
        .replace(
            "      audiences:",
            "      egressSelectorType: controlplane\n      audiences:",
        ) + "anonymous: {enabled: true}\n",
    );
    let p = Prepared::load(&path).unwrap();
    let warnings: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("auth.yaml: anonymous: is ignored")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "auth.yaml: jwt[0].issuer.egressSelectorType: \"controlplane\" is ignored"
        )),
        "{warnings:?}"
    );
    // A file that cannot be read is a problem of the webhook config.
    std::fs::remove_file(dir.path().join("auth.yaml")).unwrap();
    let err = Prepared::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("authentication_config_files[0]: cannot read"),
        "{err}"
    );
    // The same iss natively and in a file: refused.
    write(
        dir.path(),
        "auth.yaml",
        authcfg::file(
            "v1",
            "https://dex.example.com/dex",
            &ca.cert_pem,
            authcfg::CONFIGS[0].1,
        ),
    );
    write(dir.path(), "ca.crt", &ca.cert_pem);
    let both = format!(
        "{config}issuers:{}",
        kube_authn_testkit::config::DexIssuer::new("dex", "https://dex.example.com/dex").yaml()
    );
    let err = Prepared::from_yaml(&both, &path).unwrap_err().to_string();
    assert!(
        err.contains("auth.yaml: jwt[0].issuer.url: issuer issuers[0] (dex) already matches tokens with this iss"),
        "{err}"
    );
}

fn corpus(issuer: &TestIssuer, now: u64) -> Vec<(String, String)> {
    let key = issuer.current_key();
    let mut out = Vec::new();
    for (name, edits) in authcfg::claim_edits(now) {
        let mut c = authcfg::base_claims(issuer.url(), now);
        for (k, v) in edits {
            match v {
                Some(v) => c[k] = v,
                None => {
                    c.as_object_mut().unwrap().remove(k);
                }
            }
        }
        out.push((name.to_owned(), key.sign(&c)));
    }
    let claims = authcfg::base_claims(issuer.url(), now);
    let signed = key.sign(&claims);
    let (input, sig) = signed.rsplit_once('.').unwrap();
    let mut bad = sig.to_owned().into_bytes();
    bad[5] = if bad[5] == b'A' { b'B' } else { b'A' };
    out.push((
        "bad signature".to_owned(),
        format!("{input}.{}", String::from_utf8(bad).unwrap()),
    ));
    let mut other_kid = Header::new(key.alg);
    other_kid.kid = Some("not-a-published-kid".to_owned());
    out.push((
        "unknown kid".to_owned(),
        key.sign_with_header(&other_kid, &claims),
    ));
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(key.kid.clone());
    let hs_token = jsonwebtoken::encode(
        &hs,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"kubernetes"),
    )
    .unwrap();
    out.push(("HS256 under our kid".to_owned(), hs_token));
    out.push(("not a JWT".to_owned(), "garbage".to_owned()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_agree_with_the_kube_apiservers_authentication_config() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let now = unix_now();
    let tokens = corpus(&issuer, now);
    let short = |v: &Value| v.to_string().chars().take(120).collect::<String>();
    let mut wrong = Vec::new();
    let mut table = String::new();
    for (config, rest) in authcfg::CONFIGS {
        // v1 for us, v1beta1 (the same fields) for the oracle.
        let h = start(
            new_ca(),
            &authcfg::file("v1", issuer.url(), &issuer.ca_pem, rest),
        )
        .await;
        assert!(h.running.wait_ready(Duration::from_secs(10)).await);
        let oracle_file = write(
            h.dir(),
            "auth-v1beta1.yaml",
            authcfg::file("v1beta1", issuer.url(), &issuer.ca_pem, rest),
        );
        let oracle = Oracle::start_with(
            &h,
            &[
                "-authentication-config".into(),
                oracle_file.into_os_string(),
            ],
        )
        .await;
        for (name, token) in &tokens {
            let raw = oracle.review(token).await;
            let theirs = verdict(&raw);
            let mine = verdict(&h.review_as("v1", token, &[]).await);
            let difference = DIFFERENCES
                .iter()
                .find(|(c, t, _)| c == config && (*t == "*" || t == name))
                .map(|(_, _, d)| *d);
            let held = match difference {
                None => mine == theirs,
                Some(Difference::SplitGroups) => {
                    mine == theirs
                        || (raw["status"]["error"]
                            .as_str()
                            .is_some_and(|e| e.contains("error evaluating group claim expression"))
                            && mine != json!("refused"))
                }
            };
            table.push_str(&format!(
                "{config:<9} {name:<28} {:<9} ours {:<60} upstream {}\n",
                if held { "ok" } else { "MISMATCH" },
                short(&mine),
                short(&theirs)
            ));
            if !held {
                wrong.push(format!(
                    "{config} / {name}: ours {}, upstream {} ({})",
                    short(&mine),
                    short(&theirs),
                    raw["status"]["error"]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}\n\n{table}", wrong.join("\n"));
}

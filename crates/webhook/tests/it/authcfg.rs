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
const DIFFERENCES: &[(&str, &str, Difference)] = &[
    ("cel", "*", Difference::SplitGroups),
    ("claims", "email empty", Difference::WeRefuse),
    (
        "claims",
        "groups with system:masters",
        Difference::WeDropGroups,
    ),
    (
        "claims",
        "groups with an empty name",
        Difference::WeDropGroups,
    ),
    ("prefixes", "groups with system:masters", Difference::Same),
    (
        "prefixes",
        "groups with an empty name",
        Difference::WeDropGroups,
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Difference {
    /// `groups: {expression: 'claims.roles.split(",")'}`, the upstream
    /// documentation's example: k8s.io/apiserver v0.33 refuses every token
    /// at run time ("error evaluating group claim expression: expression
    /// must return a string or a list of strings": its conversion does not
    /// know the list `split` returns). We give the groups the documentation
    /// shows. Where upstream refuses for another reason, so must we.
    SplitGroups,
    /// We refuse what upstream accepts: an empty username (as for native
    /// issuers: an empty name is never a person).
    WeRefuse,
    /// Both authenticate; we leave out `system:` groups and empty group
    /// names (`""`, or with a groups prefix the bare prefix) upstream
    /// passes through (as for native issuers).
    WeDropGroups,
    /// Listed to say it is the same: `oidc:system:masters` is no `system:`
    /// group.
    Same,
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

fn corpus(
    issuer: &TestIssuer,
    key: &kube_authn_testkit::DevKey,
    now: u64,
) -> Vec<(String, String)> {
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
    let stranger = kube_authn_testkit::DevKey::generate(Algorithm::RS256).unwrap();
    let mut stolen = Header::new(Algorithm::RS256);
    stolen.kid = Some(key.kid.clone());
    out.push((
        "a stranger's key under our kid".to_owned(),
        stranger.sign_with_header(&stolen, &claims),
    ));
    // The issuer's second key (ES256), published beside the first.
    let es = issuer
        .keys()
        .into_iter()
        .find(|k| k.alg == Algorithm::ES256)
        .unwrap();
    out.push(("ES256".to_owned(), es.sign(&claims)));
    let mut no_kid = Header::new(Algorithm::ES256);
    no_kid.kid = None;
    out.push((
        "ES256 without kid".to_owned(),
        es.sign_with_header(&no_kid, &claims),
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_agree_with_the_kube_apiservers_authentication_config() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let rs = issuer.current_key();
    issuer.rotate(Algorithm::ES256).unwrap();
    let now = unix_now();
    let tokens = corpus(&issuer, &rs, now);
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
                Some(Difference::WeRefuse) => {
                    mine == json!("refused") && theirs != json!("refused")
                }
                Some(Difference::Same) => mine == theirs,
                Some(Difference::WeDropGroups) => {
                    let mut dropped = theirs.clone();
                    if let Some(g) = dropped["groups"].as_array_mut() {
                        g.retain(|g| {
                            g.as_str().is_some_and(|g| {
                                !g.is_empty() && !g.starts_with("system:") && g != "oidc:"
                            })
                        });
                    }
                    theirs != json!("refused") && mine == dropped && mine != theirs
                }
                Some(Difference::SplitGroups) => {
                    mine == theirs
                        || (raw["status"]["error"]
                            .as_str()
                            .is_some_and(|e| e.contains("error evaluating group claim expression"))
                            && mine != json!("refused"))
                }
            };
            // The corpus must reach the mappings: its valid tokens are
            // authenticated (the ES256 one by the second published key).
            if ["valid", "ES256", "ES256 without kid"].contains(&name.as_str()) {
                assert_ne!(mine, json!("refused"), "{config} / {name}");
            }
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

/// Whether the oracle takes `file`: it exits 2 on a file the kube-apiserver
/// would refuse, and says `ready` once it has the issuer's keys.
async fn oracle_accepts(h: &Harness, file: &std::path::Path) -> Result<(), String> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(crate::upstream::oracle_binary())
        .args(["-listen", "127.0.0.1:0", "-cache-ttl", "0"])
        .arg("-cert")
        .arg(h.dir().join("tls.crt"))
        .arg("-key")
        .arg(h.dir().join("tls.key"))
        .arg("-authentication-config")
        .arg(file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line == "ready" {
                return true;
            }
            said.push_str(&line);
            said.push('\n');
        }
        false
    })
    .await
    .unwrap_or(false);
    if ready {
        return Ok(());
    }
    let status = child.wait().await.unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "the oracle failed otherwise: {said}"
    );
    Err(said)
}

/// The apiserver's validation decides which files are valid (CEL type
/// rules included): each of these is valid for both or invalid for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_validity_agrees_with_the_kube_apiserver() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let user = "    claimMappings:\n      username: {claim: sub, prefix: \"\"}\n";
    let groups = |e: &str| format!("{user}      groups:\n        expression: {e:?}\n");
    let rule = |e: &str| format!("    claimValidationRules:\n    - expression: {e:?}\n{user}");
    let user_rule = |e: &str| format!("{user}    userValidationRules:\n    - expression: {e:?}\n");
    let cases: Vec<(String, bool)> = vec![
        (groups("claims.groups.map(g, 'x:' + g)"), false),
        (groups("dyn(claims.groups).map(g, 'x:' + g)"), true),
        (groups("claims['groups'].map(g, g)"), false),
        (groups("claims.a.b.map(g, g)"), true),
        (groups("claims.groups.filter(g, g != '')"), false),
        (groups("[claims.sub].map(s, 'x:' + s)"), true),
        (groups("claims.roles.split(',')"), true),
        (groups("claims.sub.lowerAscii()"), true),
        (groups("nosuchfunction(claims.sub)"), false),
        (groups("claims.sub +"), false),
        (groups("claims"), true),
        (rule("claims.email_verified"), false),
        (rule("claims.?email_verified.orValue(true)"), false),
        (rule("claims.?email_verified.orValue(true) == true"), true),
        (rule("has(claims.x) ? claims.x : false"), false),
        (rule("has(claims.x) && claims.x == 'y'"), true),
        (rule("claims.exp - claims.nbf <= 86400"), true),
        (rule("claims.groups.exists(g, g == 'a')"), false),
        (rule("dyn(claims.groups).exists(g, g == 'a')"), true),
        (rule("size(claims.groups) > 0"), true),
        (rule("'a' in claims.groups"), true),
        (user_rule("user.username"), false),
        (user_rule("user.foo == 'x'"), false),
        (user_rule("user.groups.all(g, !g.startsWith('system:'))"), true),
        (user_rule("user.extra.size() < 10"), true),
        (
            "    claimMappings:\n      username: {expression: 'claims.email'}\n".to_owned(),
            false,
        ),
        (
            "    claimValidationRules:\n    - expression: 'claims.?email_verified.orValue(true) == true'\n    claimMappings:\n      username: {expression: 'claims.email'}\n".to_owned(),
            true,
        ),
        ("    claimMappings:\n      username: {claim: sub}\n".to_owned(), false),
        (
            format!("{user}      extra:\n      - {{key: Example.com/a, valueExpression: 'claims.sub'}}\n"),
            false,
        ),
        (
            format!("{user}      extra:\n      - {{key: kubernetes.io/a, valueExpression: 'claims.sub'}}\n"),
            false,
        ),
        (
            format!("{user}      extra:\n      - {{key: example.com/a, valueExpression: 'claims.sub'}}\n"),
            true,
        ),
    ];
    let h = start(
        new_ca(),
        &authcfg::file("v1", issuer.url(), &issuer.ca_pem, authcfg::CONFIGS[0].1),
    )
    .await;
    let mut wrong = Vec::new();
    for (i, (rest, valid)) in cases.iter().enumerate() {
        let name = format!("auth-{i}.yaml");
        write(
            h.dir(),
            &name,
            authcfg::file("v1", issuer.url(), &issuer.ca_pem, rest),
        );
        let oracle_file = write(
            h.dir(),
            &format!("oracle-{i}.yaml"),
            authcfg::file("v1beta1", issuer.url(), &issuer.ca_pem, rest),
        );
        let config = write(
            h.dir(),
            &format!("config-{i}.yaml"),
            format!(
                "server: {{tls: {{cert_file: tls.crt, key_file: tls.key}}}}\nauthentication_config_files: [{name}]\n"
            ),
        );
        let ours = Prepared::load(&config)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let theirs = oracle_accepts(&h, &oracle_file).await;
        if ours.is_ok() != theirs.is_ok() || ours.is_ok() != *valid {
            wrong.push(format!(
                "{rest}\n  expected valid={valid}; ours: {ours:?}\n  upstream: {theirs:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Native issuers take the same expressions (one mapping engine): a
/// username and groups from CEL, a compile error named by its field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_issuers_take_cel_expressions() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let native = |username: &str| {
        format!(
            r#"
  - name: dex
    kind: oidc
    url: {}
    certificate_authority_file: ca.crt
    audiences: [kubernetes]
    claims:
      username: {{expression: {username:?}}}
      groups: {{expression: 'dyn(claims.groups).map(g, "dex:" + g)'}}
"#,
            issuer.url()
        )
    };
    let h = Harness::start(
        ca,
        &native("claims.?email_verified.orValue(true) == true ? claims.email.lowerAscii() : ''"),
        Options::default(),
    )
    .await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    let mut claims = authcfg::base_claims(issuer.url(), unix_now());
    claims["email"] = json!("Jane@Example.com");
    let answer = h.review(&issuer.mint(&claims)).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(answer["status"]["user"]["username"], "jane@example.com");
    assert_eq!(
        answer["status"]["user"]["groups"],
        json!(["dex:developers", "dex:admins"])
    );
    let text = format!(
        "server: {{tls: {{cert_file: tls.crt, key_file: tls.key}}}}\nissuers:{}",
        native("claims.email +")
    );
    let err = Prepared::from_yaml(&text, &h.dir().join("config.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "issuers[0] (dex).claims.username.expression: compilation failed: ERROR: <input>:1:"
        ),
        "{err}"
    );
    let text = format!(
        "server: {{tls: {{cert_file: tls.crt, key_file: tls.key}}}}\nissuers:{}",
        native("claims.email")
    );
    let err = Prepared::from_yaml(&text, &h.dir().join("config.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("issuers[0] (dex).claims.username.expression: reads claims.email but not claims.email_verified"),
        "{err}"
    );
    // An unverified e-mail makes the empty username, which is refused.
    claims["email_verified"] = json!(false);
    let answer = h.review(&issuer.mint(&claims)).await;
    assert_eq!(answer["status"]["authenticated"], false, "{answer}");
}

/// `discoveryURL`: the discovery document is read from there (and must
/// still name the issuer's url).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_url_is_where_the_keys_are_found() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let text = authcfg::file("v1", issuer.url(), &issuer.ca_pem, authcfg::CONFIGS[0].1).replace(
        "      audiences:",
        &format!(
            "      discoveryURL: {}/.well-known/openid-configuration?x=1\n      audiences:",
            issuer.url()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "auth.yaml", &text);
    let config = write(
        dir.path(),
        "config.yaml",
        "server: {tls: {cert_file: tls.crt, key_file: tls.key}}\nauthentication_config_files: [auth.yaml]\n",
    );
    let err = Prepared::load(&config).unwrap_err().to_string();
    assert!(
        err.contains(
            "auth.yaml: jwt[0].issuer.discoveryURL: discoveryURL must not contain a query"
        ),
        "{err}"
    );
    let h = start(ca, &text.replace("?x=1", "")).await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    assert!(issuer.discovery_fetches() >= 1);
    let claims = authcfg::base_claims(issuer.url(), unix_now());
    let answer = h.review_as("v1", &issuer.mint(&claims), &[]).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
}

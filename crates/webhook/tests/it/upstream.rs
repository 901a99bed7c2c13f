//! The same tokens, the same issuer, the same claim mapping, caches off:
//! this webhook and the kube-apiserver's own OIDC JWT authenticator
//! (k8s.io/apiserver, served as a TokenReview webhook by
//! `../shared/tools/k8s-oidc-webhook`) must come to the same verdict, except
//! for the short list of deliberate differences the README's security
//! section names. A corpus row says which it is.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use kube_authn_common::clock::unix_now;
use kube_authn_testkit::DevKey;
use kube_authn_testkit::harness::*;
use kube_authn_testkit::issuer::TestIssuer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Where the oracle is: `K8S_OIDC_WEBHOOK`, else `shared/tools/` beside the
/// checkout (as CI lays it out). Missing is a failure, not a skip.
pub(crate) fn oracle_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("K8S_OIDC_WEBHOOK") {
        return PathBuf::from(p);
    }
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/k8s-oidc-webhook");
    assert!(
        p.exists(),
        "the kube-apiserver's authenticator is not at {} (set K8S_OIDC_WEBHOOK)",
        p.display()
    );
    p
}

/// The oracle, serving on a port it chose, for `issuer`.
pub(crate) struct Oracle {
    _child: tokio::process::Child,
    url: String,
    client: reqwest::Client,
}

impl Oracle {
    async fn start(h: &Harness, issuer: &TestIssuer) -> Oracle {
        let dir = h.dir();
        let issuer_ca = write(dir, "issuer-ca.pem", &issuer.ca_pem);
        let mut args: Vec<std::ffi::OsString> =
            ["-issuer", issuer.url(), "-audience", "kubernetes"]
                .iter()
                .map(Into::into)
                .collect();
        args.push("-issuer-ca".into());
        args.push(issuer_ca.into());
        for a in [
            "-username-claim",
            "email",
            "-groups-claim",
            "groups",
            "-uid-claim",
            "sub",
        ] {
            args.push(a.into());
        }
        Oracle::start_with(h, &args).await
    }

    /// The oracle with `args` besides its listener, TLS pair (the
    /// harness's) and cache (off).
    pub(crate) async fn start_with(h: &Harness, args: &[std::ffi::OsString]) -> Oracle {
        let dir = h.dir();
        let mut child = tokio::process::Command::new(oracle_binary())
            .args(["-listen", "127.0.0.1:0", "-cache-ttl", "0"])
            .arg("-cert")
            .arg(dir.join("tls.crt"))
            .arg("-key")
            .arg(dir.join("tls.key"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the oracle starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = String::new();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            let mut url = None;
            while let Some(line) = lines.next_line().await.unwrap() {
                said.push_str(&line);
                said.push('\n');
                if let Some(rest) = line.split("serving ").nth(1) {
                    url = rest.split_whitespace().next().map(str::to_owned);
                }
                if line == "ready" {
                    return url;
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the oracle did not get ready:\n{said}"));
        // Keep reading so the oracle never blocks on a full stderr pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Oracle {
            _child: child,
            url,
            client: https_client(&h.ca.cert_pem, None),
        }
    }

    pub(crate) async fn review(&self, token: &str) -> Value {
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token}
        });
        let answer = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("the oracle answers")
            .bytes()
            .await
            .expect("a body");
        serde_json::from_slice(&answer).expect("JSON")
    }
}

/// What a verdict comes to for the comparison: upstream sets
/// `status.error` on every refusal, so only authenticated-or-not and the
/// user count.
pub(crate) fn verdict(answer: &Value) -> Value {
    let s = &answer["status"];
    if s["authenticated"] != true {
        return json!("refused");
    }
    let u = &s["user"];
    json!({
        "username": u["username"],
        "uid": u.get("uid").cloned().unwrap_or(Value::Null),
        "groups": u.get("groups").cloned().unwrap_or(json!([])),
        "extra": u.get("extra").cloned().unwrap_or(json!({})),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The same verdict and the same user.
    Same,
    /// A deliberate difference (README, security section): we refuse what
    /// upstream accepts.
    WeRefuse(&'static str),
    /// A deliberate difference: both authenticate, we leave out groups
    /// upstream passes through: `system:` ones and empty names.
    WeDropGroups(&'static str),
}

struct Case {
    name: &'static str,
    token: String,
    expect: Expect,
}

fn base(url: &str, now: u64) -> Value {
    json!({
        "iss": url,
        "sub": "CiQ2YmE3YjgxMC05ZGFkLTExZDEtODBiNC0wMGMwNGZkNDMwYzgSB2RlZmF1bHQ",
        "aud": "kubernetes",
        "exp": now + 3600,
        "iat": now,
        "email": "jane@example.com",
        "email_verified": true,
        "groups": ["developers", "pcd-default-service-admin"],
        "name": "jane",
    })
}

fn corpus(url: &str, key: &DevKey, now: u64) -> Vec<Case> {
    use Expect::*;
    let with = |name: &'static str, edit: &dyn Fn(&mut Value), expect: Expect| {
        let mut c = base(url, now);
        edit(&mut c);
        Case {
            name,
            token: key.sign(&c),
            expect,
        }
    };
    let set = |k: &'static str, v: Value| move |c: &mut Value| c[k] = v.clone();
    let drop = |k: &'static str| {
        move |c: &mut Value| {
            c.as_object_mut().unwrap().remove(k);
        }
    };
    let now_i = now as i64;
    let mut cases = vec![
        with("valid", &|_| {}, Same),
        // Audiences.
        with("aud array", &set("aud", json!(["kubernetes"])), Same),
        with(
            "aud among others",
            &set("aud", json!(["other", "kubernetes"])),
            Same,
        ),
        with("aud other", &set("aud", json!("other")), Same),
        with("aud empty array", &set("aud", json!([])), Same),
        with("aud missing", &drop("aud"), Same),
        // Time claims at and around their limits.
        with("exp 10s ago", &set("exp", json!(now_i - 10)), Same),
        with("exp 1s ago", &set("exp", json!(now_i - 1)), Same),
        with("exp in 60s", &set("exp", json!(now_i + 60)), Same),
        with("exp missing", &drop("exp"), Same),
        with("exp a float", &set("exp", json!(now as f64 + 3600.5)), Same),
        with(
            "exp a quoted number",
            &set("exp", json!((now + 3600).to_string())),
            WeRefuse("dates are JSON numbers (RFC 7519); Go also reads a quoted number"),
        ),
        with("nbf in 30s", &set("nbf", json!(now_i + 30)), Same),
        with("nbf in 10m", &set("nbf", json!(now_i + 600)), Same),
        with("nbf 1m ago", &set("nbf", json!(now_i - 60)), Same),
        with("iat missing", &drop("iat"), Same),
        with("iat a day ago", &set("iat", json!(now_i - 86_400)), Same),
        with("iat in 10m", &set("iat", json!(now_i + 600)), Same),
        // Issuer.
        with(
            "iss other",
            &set("iss", json!("https://elsewhere.example.com/dex")),
            Same,
        ),
        with(
            "iss with a trailing slash",
            &set("iss", json!(format!("{url}/"))),
            Same,
        ),
        with("iss missing", &drop("iss"), Same),
        // email_verified, when the username is the e-mail.
        with(
            "email_verified false",
            &set("email_verified", json!(false)),
            Same,
        ),
        with(
            "email_verified \"true\"",
            &set("email_verified", json!("true")),
            Same,
        ),
        with(
            "email_verified null",
            &set("email_verified", Value::Null),
            Same,
        ),
        with("email_verified 0", &set("email_verified", json!(0)), Same),
        with("email_verified missing", &drop("email_verified"), Same),
        with("email missing", &drop("email"), Same),
        with(
            "email empty",
            &set("email", json!("")),
            WeRefuse("an empty username is refused"),
        ),
        // Groups.
        with("groups a string", &set("groups", json!("developers")), Same),
        with("groups empty", &set("groups", json!([])), Same),
        with("groups null", &set("groups", Value::Null), Same),
        with("groups missing", &drop("groups"), Same),
        with("groups an object", &set("groups", json!({"a": "b"})), Same),
        with(
            "groups with a number",
            &set("groups", json!(["a", 2])),
            Same,
        ),
        with("groups nested", &set("groups", json!([["a"]])), Same),
        with(
            "groups with system:masters",
            &set("groups", json!(["developers", "system:masters"])),
            WeDropGroups("groups starting with system: are left out"),
        ),
        with(
            "groups with an empty name",
            &set("groups", json!(["developers", ""])),
            WeDropGroups("empty group names are left out"),
        ),
        with(
            "groups with a null inside",
            &set("groups", json!(["developers", null])),
            WeRefuse("a groups array holds strings only; Go turns null into \"\""),
        ),
        with(
            "nbf null",
            &set("nbf", Value::Null),
            WeRefuse("a date claim that is present must be a number"),
        ),
        with(
            "sub empty",
            &set("sub", json!("")),
            WeRefuse("a mapped uid must not be empty"),
        ),
        // The uid claim.
        with("sub missing", &drop("sub"), Same),
        with("sub a number", &set("sub", json!(42)), Same),
        with(
            "username system:",
            &set("email", json!("system:admin")),
            WeRefuse("usernames starting with system: are refused"),
        ),
        with(
            "claim names in upper case",
            &|c| {
                let exp = c["exp"].clone();
                c.as_object_mut().unwrap().remove("exp");
                c["EXP"] = exp;
            },
            WeRefuse(
                "claim names are case-sensitive (RFC 7519); Go matches them case-insensitively",
            ),
        ),
    ];
    // Headers and signatures.
    let claims = base(url, now);
    let signed = key.sign(&claims);
    let (input, sig) = signed.rsplit_once('.').unwrap();
    let mut bad_sig = sig.to_owned().into_bytes();
    bad_sig[5] = if bad_sig[5] == b'A' { b'B' } else { b'A' };
    cases.push(Case {
        name: "bad signature",
        token: format!("{input}.{}", String::from_utf8(bad_sig).unwrap()),
        expect: Same,
    });
    let mut no_kid = Header::new(key.alg);
    no_kid.kid = None;
    cases.push(Case {
        name: "no kid",
        token: key.sign_with_header(&no_kid, &claims),
        expect: Same,
    });
    let mut other_kid = Header::new(key.alg);
    other_kid.kid = Some("not-a-published-kid".to_owned());
    cases.push(Case {
        name: "unknown kid",
        token: key.sign_with_header(&other_kid, &claims),
        expect: Same,
    });
    let stranger = DevKey::generate(Algorithm::RS256).unwrap();
    let mut stolen_kid = Header::new(Algorithm::RS256);
    stolen_kid.kid = Some(key.kid.clone());
    cases.push(Case {
        name: "a stranger's key under our kid",
        token: stranger.sign_with_header(&stolen_kid, &claims),
        expect: Same,
    });
    let b64 = |v: &Value| {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            v.to_string(),
        )
    };
    cases.push(Case {
        name: "alg none",
        token: format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims)),
        expect: Same,
    });
    let big = json!(
        (0..20_000)
            .map(|i| format!("group-{i:05}"))
            .collect::<Vec<_>>()
    );
    cases.push(with(
        "a 300 KiB token",
        &|c| c["groups"] = big.clone(),
        WeRefuse("tokens over 256 KiB are refused unread"),
    ));
    cases.push(Case {
        name: "not a JWT",
        token: "garbage".to_owned(),
        expect: Same,
    });
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_agree_with_the_kube_apiservers_jwt_authenticator() {
    let ca = new_ca();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let ours = format!(
        r#"
  - name: dex
    kind: oidc
    url: {}
    certificate_authority_file: ca.crt
    audiences: [kubernetes]
    algorithms: [RS256]
    claims:
      username: {{claim: email, prefix: ""}}
      groups: {{claim: groups, prefix: ""}}
      uid: {{claim: sub}}
"#,
        issuer.url()
    );
    let h = Harness::start(
        ca,
        &ours,
        Options {
            cache: "{max_entries: 0, max_ttl: 5m, negative_ttl: 10s}",
            max_body_bytes: 4 * 1024 * 1024,
            ..Options::default()
        },
    )
    .await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    let oracle = Oracle::start(&h, &issuer).await;

    let now = unix_now();
    let short = |v: &Value| v.to_string().chars().take(100).collect::<String>();
    let mut wrong = Vec::new();
    let mut table = String::new();
    for case in corpus(issuer.url(), &issuer.current_key(), now) {
        let theirs = verdict(&oracle.review(&case.token).await);
        let mine = verdict(&h.review_as("v1", &case.token, &[]).await);
        let held = match case.expect {
            Expect::Same => mine == theirs,
            Expect::WeRefuse(_) => mine == json!("refused") && theirs != json!("refused"),
            Expect::WeDropGroups(_) => {
                let mut dropped = theirs.clone();
                if let Some(g) = dropped["groups"].as_array_mut() {
                    g.retain(|g| {
                        g.as_str()
                            .is_some_and(|g| !g.is_empty() && !g.starts_with("system:"))
                    });
                }
                theirs != json!("refused") && mine == dropped && mine != theirs
            }
        };
        table.push_str(&format!(
            "{:<36} {:<10} ours {:<10} upstream {}\n",
            case.name,
            if held { "ok" } else { "MISMATCH" },
            if mine == json!("refused") {
                "refused"
            } else {
                "authn"
            },
            short(&theirs)
        ));
        if !held {
            wrong.push(format!(
                "{} (expected {:?}): ours {}, upstream {}",
                case.name,
                case.expect,
                short(&mine),
                short(&theirs)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}\n{table}", wrong.join("\n"));
}

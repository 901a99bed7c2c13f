//! `kube-authn-login pcd|efa`, the exec credential plugin, against
//! the loopback stand-ins (`standins.rs`): the binary itself as kubectl runs
//! it (a clean environment, a temporary HOME and cache), and the library
//! with a manual clock for expiry.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use kube_authn_common::clock::{Clock, unix_now};
use kube_authn_login::exec::{jwt_exp, rfc3339, unverified_claims};
use kube_authn_login::{
    Endpoint, Login, LoginError, Outcome, PasswordSource, Secret, Target, obtain,
};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use kube_authn_testkit::bin::Binary;
use kube_authn_testkit::harness::*;
use kube_authn_testkit::standins::*;

const PLUGIN: Binary = Binary::new(env!("CARGO_BIN_EXE_kube-authn-login"));

const INTERACTIVE_NO: &str = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#;

/// A place for one test's plugin runs: HOME, the cache and the CA file all
/// in a temporary directory, so nothing touches the real home.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new(ca_pem: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        write(dir.path(), "ca.crt", ca_pem);
        Sandbox { dir }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The plugin with a clean environment: HOME in the sandbox, the
    /// password in PW, and what kubectl sets for a non-interactive run.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = PLUGIN.command();
        c.env_clear()
            .env("HOME", self.home())
            .env("KUBERNETES_EXEC_INFO", INTERACTIVE_NO)
            .args(args);
        c
    }

    fn pcd_args(&self, endpoint: &str) -> Vec<String> {
        [
            "pcd",
            "--endpoint",
            endpoint,
            "--username",
            PCD_USER,
            "--password-env",
            "PW",
            "--ca-file",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            self.ca().display().to_string(),
            "--cache-dir".into(),
            self.cache().display().to_string(),
        ])
        .collect()
    }

    fn efa_args(&self, endpoint: &str) -> Vec<String> {
        let mut a = self.pcd_args(endpoint);
        a[0] = "efa".into();
        a[4] = EFA_USER.into();
        a
    }

    async fn run(&self, args: &[String], password: &str) -> Output {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.command(&args)
            .env("PW", password)
            .output()
            .await
            .unwrap()
    }

    /// Every file in the cache directory, with its contents.
    fn cache_files(&self) -> Vec<(PathBuf, String)> {
        let Ok(rd) = std::fs::read_dir(self.cache()) else {
            return Vec::new();
        };
        let mut v: Vec<_> = rd
            .map(|d| {
                let p = d.unwrap().path();
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                (p, text)
            })
            .collect();
        v.sort();
        v
    }

    /// The one cached entry (`*.json`).
    fn entry(&self) -> Value {
        let entries: Vec<_> = self
            .cache_files()
            .into_iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "json"))
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        serde_json::from_str(&entries[0].1).unwrap()
    }
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "plugin failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn token_of(cred: &Value) -> String {
    cred["status"]["token"].as_str().unwrap().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failed run: exit code 1 and the message, which must not echo a secret.
fn failure(out: &Output, secrets: &[&str]) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(out.stdout.is_empty(), "nothing on stdout when failing");
    let e = stderr(out);
    for s in secrets {
        assert!(!e.contains(s), "a secret reached stderr: {e}");
    }
    e
}

fn assert_exec_credential(cred: &Value, api_version: &str) {
    let obj = cred.as_object().unwrap();
    let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["apiVersion", "kind", "status"], "{cred}");
    assert_eq!(cred["apiVersion"], api_version);
    assert_eq!(cred["kind"], "ExecCredential");
    let status = cred["status"].as_object().unwrap();
    let mut keys: Vec<_> = status.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expirationTimestamp", "token"], "{cred}");
    let token = token_of(cred);
    let exp = jwt_exp(&token).expect("the token is a JWT with exp");
    assert_eq!(cred["status"]["expirationTimestamp"], rfc3339(exp));
    let ts = cred["status"]["expirationTimestamp"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(ts).is_ok() && ts.ends_with('Z'),
        "{ts}"
    );
}

fn pcd_target(url: &str) -> Target {
    Target::Pcd {
        endpoint: Endpoint::parse(url).unwrap(),
        username: PCD_USER.to_owned(),
        domain: None,
        project: None,
    }
}

fn efa_target(url: &str, client_id: Option<&str>) -> Target {
    Target::Efa {
        endpoint: Endpoint::parse(url).unwrap(),
        username: EFA_USER.to_owned(),
        client_id: client_id.map(str::to_owned),
    }
}

fn in_process(sb: &Sandbox, target: Target, password: PasswordSource, clock: &Clock) -> Login {
    Login {
        target,
        ca_file: Some(sb.ca()),
        timeout: Duration::from_secs(10),
        cache_dir: sb.cache(),
        password,
        clock: clock.clone(),
        lock_timeout: Duration::from_secs(10),
    }
}

fn given(p: &str) -> PasswordSource {
    PasswordSource::Given(Secret::new(p))
}

// --- PCD-K --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcd_first_login_prints_an_exec_credential_and_caches_it_0600() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let out = sb.run(&sb.pcd_args(&du.url()), PCD_PASSWORD).await;
    let cred = stdout_json(&out);
    assert_exec_credential(&cred, "client.authentication.k8s.io/v1");
    let claims = unverified_claims(&token_of(&cred)).unwrap();
    assert_eq!(claims["iss"], du.issuer());
    assert_eq!(claims["email"], PCD_EMAIL);
    assert_eq!(
        du.counts(),
        PcdCounts {
            keystone: 1,
            dexclients: 1,
            dex_password: 1,
            dex_refresh: 0
        }
    );
    assert_eq!(
        du.keystone_scopes(),
        vec![Value::Null],
        "unscoped by default"
    );
    assert!(du.problems().is_empty(), "{:?}", du.problems());

    // The cache: a 0700 directory, one 0600 entry and its lock file.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sb.cache()), 0o700);
    let files = sb.cache_files();
    assert_eq!(files.len(), 2, "{files:?}");
    for (p, _) in &files {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    let entry = sb.entry();
    assert_eq!(entry["kind"], "pcd");
    assert_eq!(entry["endpoint"], du.url());
    assert_eq!(entry["username"], PCD_USER);
    assert_eq!(entry["token"], token_of(&cred));
    assert_eq!(entry["dex_client_secret"], DEX_CLIENT_SECRET);
    assert!(du.refresh_token_is_valid(entry["refresh_token"].as_str().unwrap()));
    // Nothing was written to the (sandboxed) home.
    assert!(std::fs::read_dir(sb.home()).unwrap().next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcd_cached_token_is_reused_without_any_network() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let args = sb.pcd_args(&du.url());
    let first = token_of(&stdout_json(&sb.run(&args, PCD_PASSWORD).await));
    let counts = du.counts();
    // Several kubectl commands later, with the management plane gone and no
    // password available: the same token, straight from the cache.
    du.stop().await;
    for _ in 0..3 {
        let out = sb.run(&args, "").await;
        assert_eq!(token_of(&stdout_json(&out)), first);
        assert!(stderr(&out).is_empty(), "quiet on reuse: {}", stderr(&out));
    }
    assert_eq!(counts.keystone, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcd_refreshes_shortly_before_exp_and_stores_the_rotated_refresh_token() {
    let ca = new_ca();
    let t0 = unix_now();
    let clock = Clock::manual(t0);
    let du = Pcd::start(&ca, clock.clone()).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let target = pcd_target(&du.url());

    let first = obtain(&in_process(
        &sb,
        target.clone(),
        given(PCD_PASSWORD),
        &clock,
    ))
    .await
    .unwrap();
    assert_eq!(first.outcome, Outcome::LoggedIn);
    assert_eq!(first.expiry, t0 + 86_399);
    let first_refresh = sb.entry()["refresh_token"].as_str().unwrap().to_owned();

    // From now on no password is available: renewal must not need one.
    let no_password = in_process(&sb, target.clone(), PasswordSource::Unavailable, &clock);
    clock.set(first.expiry - 301);
    let again = obtain(&no_password).await.unwrap();
    assert_eq!(again.outcome, Outcome::Cached);
    assert_eq!(again.token.expose(), first.token.expose());
    assert_eq!(du.counts().dex_refresh, 0);

    clock.set(first.expiry - 299);
    let renewed = obtain(&no_password).await.unwrap();
    assert_eq!(renewed.outcome, Outcome::Refreshed);
    assert_ne!(renewed.token.expose(), first.token.expose());
    assert_eq!(renewed.expiry, first.expiry - 299 + 86_399);
    let c = du.counts();
    assert_eq!((c.keystone, c.dex_password, c.dex_refresh), (1, 1, 1));
    // Dex rotated the refresh token: the cache holds the new one.
    let second_refresh = sb.entry()["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first_refresh);
    assert!(!du.refresh_token_is_valid(&first_refresh));
    assert!(du.refresh_token_is_valid(&second_refresh));
    // The refresh grant carried the client secret and no password.
    let refresh_req = du
        .requests()
        .into_iter()
        .find(|r| r.starts_with("dex-refresh"))
        .unwrap();
    assert!(!refresh_req.contains(PCD_PASSWORD));
    assert!(refresh_req.contains("client_secret="));

    // And the renewed token is reused in turn.
    let again = obtain(&no_password).await.unwrap();
    assert_eq!(again.outcome, Outcome::Cached);
    assert_eq!(again.token.expose(), renewed.token.expose());
    assert!(du.problems().is_empty(), "{:?}", du.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcd_refused_refresh_falls_back_to_a_full_login() {
    let ca = new_ca();
    let clock = Clock::manual(unix_now());
    let du = Pcd::start(&ca, clock.clone()).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let login = in_process(&sb, pcd_target(&du.url()), given(PCD_PASSWORD), &clock);
    let first = obtain(&login).await.unwrap();
    du.revoke_refresh_tokens();
    clock.set(first.expiry + 10);
    let second = obtain(&login).await.unwrap();
    assert_eq!(second.outcome, Outcome::LoggedIn);
    assert_ne!(second.token.expose(), first.token.expose());
    assert_eq!(
        du.counts(),
        PcdCounts {
            keystone: 2,
            dexclients: 2,
            dex_password: 2,
            dex_refresh: 1
        }
    );
    assert!(du.refresh_token_is_valid(sb.entry()["refresh_token"].as_str().unwrap()));

    // Refused again, and this time no password. While the token has not
    // expired it is still handed out, with a notice saying why...
    du.revoke_refresh_tokens();
    let no_password = in_process(
        &sb,
        pcd_target(&du.url()),
        PasswordSource::Unavailable,
        &clock,
    );
    clock.set(second.expiry - 30);
    let c = obtain(&no_password).await.unwrap();
    assert_eq!(c.outcome, Outcome::CachedRenewalFailed);
    assert_eq!(c.token.expose(), second.token.expose());
    assert!(c.notices[0].contains("expires in 30 s"), "{:?}", c.notices);
    assert!(
        c.notices[0].contains("a password is needed"),
        "{:?}",
        c.notices
    );
    // ...and once it has, the error says how to give a password.
    clock.set(second.expiry + 10);
    let e = obtain(&no_password).await.unwrap_err();
    assert!(matches!(e, LoginError::NoPassword { .. }), "{e}");
    assert!(du.problems().is_empty(), "{:?}", du.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcd_unreachable_renewal_hands_out_the_still_valid_token() {
    let ca = new_ca();
    let clock = Clock::manual(unix_now());
    let du = Pcd::start(&ca, clock.clone()).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let login = in_process(&sb, pcd_target(&du.url()), given(PCD_PASSWORD), &clock);
    let first = obtain(&login).await.unwrap();
    du.stop().await;
    clock.set(first.expiry - 60);
    let c = obtain(&login).await.unwrap();
    assert_eq!(c.outcome, Outcome::CachedRenewalFailed);
    assert_eq!(c.token.expose(), first.token.expose());
    assert!(
        c.notices[0].contains("valid for 60 s more"),
        "{:?}",
        c.notices
    );
    // Once expired, the same failure is an error, not a dead token.
    clock.set(first.expiry + 1);
    let e = obtain(&login).await.unwrap_err();
    assert!(matches!(e, LoginError::Unreachable { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_kubectl_calls_do_one_login() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    // Long enough that every process starts while the first is logging in.
    du.set_dex_delay(Duration::from_millis(700));
    let sb = Sandbox::new(&ca.cert_pem);
    let args = sb.pcd_args(&du.url());
    let runs: Vec<_> = (0..8).map(|_| sb.run(&args, PCD_PASSWORD)).collect();
    let outs = futures_util::future::join_all(runs).await;
    let tokens: Vec<String> = outs.iter().map(|o| token_of(&stdout_json(o))).collect();
    assert!(tokens.iter().all(|t| t == &tokens[0]), "one token for all");
    assert_eq!(
        du.counts(),
        PcdCounts {
            keystone: 1,
            dexclients: 1,
            dex_password: 1,
            dex_refresh: 0
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_never_reaches_logs_cache_or_stderr() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let out = sb
        .command(
            &sb.pcd_args(&du.url())
                .iter()
                .map(String::as_str)
                .chain(["--verbose"])
                .collect::<Vec<_>>(),
        )
        .env("PW", PCD_PASSWORD)
        // Everything every crate logs.
        .env("RUST_LOG", "trace")
        .output()
        .await
        .unwrap();
    let cred = stdout_json(&out);
    let err = stderr(&out);
    assert!(err.contains("request"), "verbose logs the steps: {err}");
    let entry = sb.entry();
    let secrets = [
        PCD_PASSWORD,
        &token_of(&cred),
        entry["refresh_token"].as_str().unwrap(),
        DEX_CLIENT_SECRET,
    ];
    for s in secrets {
        assert!(!err.contains(s), "a secret reached stderr");
    }
    for (path, text) in sb.cache_files() {
        assert!(
            !text.contains(PCD_PASSWORD),
            "the password is in {}",
            path.display()
        );
    }
    // In-process, through the test binary's log capture (debug level).
    let before = logs().len();
    let clock = Clock::System;
    let sb2 = Sandbox::new(&ca.cert_pem);
    obtain(&in_process(
        &sb2,
        pcd_target(&du.url()),
        given(PCD_PASSWORD),
        &clock,
    ))
    .await
    .unwrap();
    let captured = logs();
    assert!(captured.len() > before, "the login logged its steps");
    assert!(!captured.contains(PCD_PASSWORD));
    assert!(!captured.contains(DEX_CLIENT_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_logs_the_plugins_own_steps_without_rust_log() {
    // Nothing listens on port 1: the login stops at its first request.
    let sb = Sandbox::new("");
    let mut args: Vec<String> = [
        "pcd",
        "--endpoint",
        "https://127.0.0.1:1",
        "--username",
        PCD_USER,
        "--password-env",
        "PW",
    ]
    .map(String::from)
    .into();
    let quiet = failure(&sb.run(&args, PCD_PASSWORD).await, &[PCD_PASSWORD]);
    assert!(quiet.starts_with("error: cannot reach Keystone"), "{quiet}");
    assert!(
        !quiet.contains("request"),
        "quiet without --verbose: {quiet}"
    );
    args.push("--verbose".into());
    let verbose = failure(&sb.run(&args, PCD_PASSWORD).await, &[PCD_PASSWORD]);
    assert!(
        verbose.contains("request") && verbose.contains("/keystone/v3/auth/tokens"),
        "--verbose logs the steps: {verbose}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_says_so_and_caches_nothing() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let wrong = "not-the-Pa55word";
    let e = failure(&sb.run(&sb.pcd_args(&du.url()), wrong).await, &[wrong]);
    assert!(
        e.contains(&format!(
            "Keystone at {}/keystone/v3/auth/tokens refused the user name or password for jane",
            du.url()
        )),
        "{e}"
    );
    assert!(e.contains("the default domain"), "{e}");
    assert_eq!(du.counts().keystone, 1);
    assert_eq!(du.counts().dex_password, 0);
    assert!(
        sb.cache_files()
            .iter()
            .all(|(p, _)| p.extension().is_some_and(|x| x == "lock")),
        "no token cached"
    );
    // A user outside the default domain is pointed at --domain.
    let mut args = sb.pcd_args(&du.url());
    args.extend(["--domain".into(), "engineering".into()]);
    let e = failure(&sb.run(&args, PCD_PASSWORD).await, &[PCD_PASSWORD]);
    assert!(e.contains("domain engineering"), "{e}");
    assert!(du.problems().is_empty(), "{:?}", du.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_scope_is_sent_to_keystone() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let mut args = sb.pcd_args(&du.url());
    args.extend(["--project".into(), "service".into()]);
    args.extend(["--domain".into(), "Default".into()]);
    stdout_json(&sb.run(&args, PCD_PASSWORD).await);
    assert_eq!(
        du.keystone_scopes(),
        vec![json!({"project": {"name": "service", "domain": {"name": "Default"}}})]
    );
    assert!(du.problems().is_empty(), "{:?}", du.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_unreachable_is_reported() {
    let ca = new_ca();
    let sb = Sandbox::new(&ca.cert_pem);
    // Held while the test runs: refused, and no other test's server can
    // take the port meanwhile.
    let (_held, addr) = held_port();
    let url = format!("https://{addr}");
    let e = failure(&sb.run(&sb.pcd_args(&url), PCD_PASSWORD).await, &[]);
    assert!(
        e.contains(&format!(
            "cannot reach Keystone at {url}/keystone/v3/auth/tokens"
        )),
        "{e}"
    );
    assert!(e.contains("check --endpoint"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_kubernetes_client_in_dexclients_is_reported() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    du.set_dexclients(json!({"grafana": "g", "argo": "a"}));
    let sb = Sandbox::new(&ca.cert_pem);
    let e = failure(&sb.run(&sb.pcd_args(&du.url()), PCD_PASSWORD).await, &[]);
    assert!(
        e.contains("lists no Dex client `kubernetes` (it lists: argo, grafana)"),
        "{e}"
    );
    assert!(e.contains("PCD administrator"), "{e}");
    assert_eq!(du.counts().dex_password, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dex_refusing_the_grant_is_reported() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    du.refuse_password_grant(Some(DexRefusal {
        status: 401,
        error: "access_denied",
        description: "Invalid username or password",
    }));
    let sb = Sandbox::new(&ca.cert_pem);
    let e = failure(
        &sb.run(&sb.pcd_args(&du.url()), PCD_PASSWORD).await,
        &[PCD_PASSWORD, DEX_CLIENT_SECRET],
    );
    assert!(
        e.contains("refused the password grant: access_denied: Invalid username or password"),
        "{e}"
    );
    assert!(e.contains("Keystone accepted"), "{e}");

    du.refuse_password_grant(Some(DexRefusal {
        status: 400,
        error: "unsupported_grant_type",
        description: "",
    }));
    let e = failure(&sb.run(&sb.pcd_args(&du.url()), PCD_PASSWORD).await, &[]);
    assert!(e.contains("does not allow the password grant"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_service_times_out_with_a_clear_message() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    du.set_dex_delay(Duration::from_secs(3));
    let sb = Sandbox::new(&ca.cert_pem);
    let mut args = sb.pcd_args(&du.url());
    args.extend(["--timeout".into(), "500ms".into()]);
    let e = failure(&sb.run(&args, PCD_PASSWORD).await, &[PCD_PASSWORD]);
    assert!(
        e.contains(&format!(
            "Dex at {}/dex/token did not answer within 500ms",
            du.url()
        )),
        "{e}"
    );
    assert!(e.contains("--timeout"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failure_points_at_ca_file() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let args: Vec<String> = sb
        .pcd_args(&du.url())
        .into_iter()
        .filter(|a| a != "--ca-file" && !a.ends_with("ca.crt"))
        .collect();
    let e = failure(&sb.run(&args, PCD_PASSWORD).await, &[]);
    assert!(e.contains("TLS failure talking to Keystone"), "{e}");
    assert!(e.contains("pass --ca-file"), "{e}");

    // The wrong CA.
    let other = new_ca();
    let wrong_ca = write(sb.dir.path(), "other-ca.crt", &other.cert_pem);
    let mut args = sb.pcd_args(&du.url());
    let i = args.iter().position(|a| a == "--ca-file").unwrap();
    args[i + 1] = wrong_ca.display().to_string();
    let e = failure(&sb.run(&args, PCD_PASSWORD).await, &[]);
    assert!(e.contains("TLS failure"), "{e}");
    assert!(
        e.contains("is it the CA that signed 127.0.0.1's certificate"),
        "{e}"
    );
    assert_eq!(du.counts().keystone, 0, "no request got through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_terminal_or_password_flag_the_error_says_what_to_do() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let args: Vec<String> = sb
        .pcd_args(&du.url())
        .into_iter()
        .filter(|a| a != "--password-env" && a != "PW")
        .collect();
    let e = failure(&sb.run(&args, PCD_PASSWORD).await, &[]);
    assert!(e.contains("a password is needed"), "{e}");
    assert!(
        e.contains("kubectl ran this plugin without a terminal"),
        "{e}"
    );
    assert!(e.contains("--password-env"), "{e}");
    assert_eq!(du.counts().keystone, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_on_the_command_line_is_refused() {
    let ca = new_ca();
    let sb = Sandbox::new(&ca.cert_pem);
    let out = sb
        .command(&[
            "pcd",
            "--endpoint",
            "https://127.0.0.1:1",
            "--username",
            "jane",
            "--password",
            "hunter2-secret",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let e = stderr(&out);
    assert!(e.contains("--password is refused"), "{e}");
    assert!(!e.contains("hunter2-secret"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_stdin_is_read_once_and_trimmed() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let args: Vec<String> = sb
        .pcd_args(&du.url())
        .into_iter()
        .map(|a| {
            if a == "--password-env" {
                "--password-stdin".into()
            } else {
                a
            }
        })
        .filter(|a| a != "PW")
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = sb.command(&args).stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{PCD_PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert_exec_credential(&stdout_json(&out), "client.authentication.k8s.io/v1");
}

/// kubectl with `interactiveMode: IfAvailable` on a terminal: the plugin
/// asks on the terminal, without echo. `script` (util-linux) provides the
/// pseudo-terminal; `.ci/run` installs it and runs the ignored tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a terminal: `script` from util-linux"]
async fn interactive_login_asks_on_the_terminal_without_echo() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let args: Vec<String> = sb
        .pcd_args(&du.url())
        .into_iter()
        .filter(|a| a != "--password-env" && a != "PW")
        .collect();
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_kube-authn-login").to_owned())
        .chain(args)
        .map(|a| format!("'{a}'"))
        .collect();
    let mut child = tokio::process::Command::new("script")
        .args(["-q", "-e", "-c", &quoted.join(" "), "/dev/null"])
        .env_clear()
        .env("HOME", sb.home())
        .env(
            "KUBERNETES_EXEC_INFO",
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":true}}"#,
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let prompt = format!("Password for {PCD_USER} at 127.0.0.1 (PCD-K): ");
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(&prompt) {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "no prompt: {}",
        String::from_utf8_lossy(&seen)
    );
    // rpassword turns echo off right after printing the prompt.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{PCD_PASSWORD}\r").as_bytes())
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        use tokio::io::AsyncReadExt;
        stdout.read_to_end(&mut rest).await.unwrap();
    })
    .await
    .unwrap();
    drop(stdin);
    seen.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        !text.contains(PCD_PASSWORD),
        "the password was echoed: {text}"
    );
    let json_line = text
        .lines()
        .find(|l| l.starts_with("{\"apiVersion\""))
        .unwrap_or_else(|| panic!("no ExecCredential: {text}"));
    let cred: Value = serde_json::from_str(json_line.trim()).unwrap();
    assert_exec_credential(&cred, "client.authentication.k8s.io/v1");
    assert!(text.contains("logged in to 127.0.0.1 as jane"), "{text}");
    assert_eq!(du.counts().keystone, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_info_v1beta1_gets_a_v1beta1_answer() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let args = sb.pcd_args(&du.url());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sb
        .command(&args)
        .env("PW", PCD_PASSWORD)
        .env(
            "KUBERNETES_EXEC_INFO",
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{"interactive":false}}"#,
        )
        .output()
        .await
        .unwrap();
    assert_exec_credential(&stdout_json(&out), "client.authentication.k8s.io/v1beta1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_defaults_to_xdg_cache_home_then_home_kube_cache() {
    let ca = new_ca();
    let efa = Efa::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    // The efa args without --cache-dir.
    let args: Vec<String> = sb.efa_args(&efa.url())[..8]
        .iter()
        .cloned()
        .chain([sb.ca().display().to_string()])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let xdg = sb.dir.path().join("xdg");
    let out = sb
        .command(&args)
        .env("PW", EFA_PASSWORD)
        .env("XDG_CACHE_HOME", &xdg)
        .output()
        .await
        .unwrap();
    stdout_json(&out);
    assert_eq!(
        std::fs::read_dir(xdg.join("kube-authn-webhook"))
            .unwrap()
            .count(),
        2
    );
    let out = sb
        .command(&args)
        .env("PW", EFA_PASSWORD)
        .output()
        .await
        .unwrap();
    stdout_json(&out);
    assert_eq!(
        std::fs::read_dir(sb.home().join(".kube/cache/kube-authn-webhook"))
            .unwrap()
            .count(),
        2
    );
    assert_eq!(efa.counts().access_token, 2, "two caches, two logins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_removes_cached_tokens() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let efa = Efa::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    stdout_json(&sb.run(&sb.pcd_args(&du.url()), PCD_PASSWORD).await);
    stdout_json(&sb.run(&sb.efa_args(&efa.url()), EFA_PASSWORD).await);
    let json_files = || {
        sb.cache_files()
            .into_iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "json"))
            .count()
    };
    assert_eq!(json_files(), 2);
    let cache = sb.cache().display().to_string();
    let logout = |extra: Vec<String>| {
        let mut a: Vec<String> = vec!["logout".into(), "--cache-dir".into(), cache.clone()];
        a.extend(extra);
        a
    };
    let out = sb.run(&logout(vec![]), "").await;
    assert_eq!(
        out.status.code(),
        Some(64),
        "logout needs a filter or --all"
    );
    let out = sb
        .run(
            &logout(vec!["--endpoint".into(), format!("{}/", du.url())]),
            "",
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("removed 1 cached token from {cache}")
    );
    assert_eq!(json_files(), 1);
    // The next PCD-K call logs in again.
    stdout_json(&sb.run(&sb.pcd_args(&du.url()), PCD_PASSWORD).await);
    assert_eq!(du.counts().keystone, 2);
    let out = sb.run(&logout(vec!["--all".into()]), "").await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("removed 2 cached tokens from {cache}")
    );
    assert_eq!(json_files(), 0);
}

// --- EFA ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efa_login_uses_the_hyphenated_api_and_shows_its_message() {
    let ca = new_ca();
    let efa = Efa::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let out = sb.run(&sb.efa_args(&efa.url()), EFA_PASSWORD).await;
    let cred = stdout_json(&out);
    assert_exec_credential(&cred, "client.authentication.k8s.io/v1");
    let claims = unverified_claims(&token_of(&cred)).unwrap();
    assert_eq!(claims["username"], EFA_USER);
    assert!(stderr(&out).contains(EFA_MESSAGE), "{}", stderr(&out));
    let entry = sb.entry();
    assert_eq!(entry["kind"], "efa");
    assert!(efa.refresh_token_is_valid(entry["refresh_token"].as_str().unwrap()));
    assert!(entry.get("dex_client_secret").is_none());
    let text = sb
        .cache_files()
        .into_iter()
        .map(|(_, t)| t)
        .collect::<String>();
    assert!(!text.contains(EFA_PASSWORD));
    assert_eq!(
        efa.counts(),
        EfaCounts {
            access_token: 1,
            client_access_token: 0,
            refresh: 0
        }
    );
    assert!(efa.problems().is_empty(), "{:?}", efa.problems());
    // Reused with EFA gone.
    let url = efa.url();
    efa.stop().await;
    let again = sb.run(&sb.efa_args(&url), "").await;
    assert_eq!(token_of(&stdout_json(&again)), token_of(&cred));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efa_refresh_rotates_and_a_refused_refresh_logs_in_again() {
    let ca = new_ca();
    let clock = Clock::manual(unix_now());
    let efa = Efa::start(&ca, clock.clone()).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let target = efa_target(&efa.url(), None);
    let first = obtain(&in_process(
        &sb,
        target.clone(),
        given(EFA_PASSWORD),
        &clock,
    ))
    .await
    .unwrap();
    assert_eq!(first.outcome, Outcome::LoggedIn);
    assert_eq!(
        first.notices,
        vec![format!(
            "EFA at {}/v1/auth/token/access-token says: {EFA_MESSAGE}",
            efa.url()
        )]
    );
    let r1 = sb.entry()["refresh_token"].as_str().unwrap().to_owned();

    clock.set(first.expiry - 200);
    let no_password = in_process(&sb, target.clone(), PasswordSource::Unavailable, &clock);
    let second = obtain(&no_password).await.unwrap();
    assert_eq!(second.outcome, Outcome::Refreshed);
    assert_ne!(second.token.expose(), first.token.expose());
    let r2 = sb.entry()["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert!(!efa.refresh_token_is_valid(&r1) && efa.refresh_token_is_valid(&r2));
    let req = efa
        .requests()
        .into_iter()
        .find(|r| r.starts_with("refresh"))
        .unwrap();
    assert!(req.contains(r#""grant-type":"refresh_token""#), "{req}");
    assert!(req.contains(&format!(r#""refresh-token":"{r1}""#)), "{req}");
    assert!(!req.contains(EFA_PASSWORD));

    efa.revoke_refresh_tokens();
    clock.set(second.expiry + 1);
    let third = obtain(&in_process(&sb, target, given(EFA_PASSWORD), &clock))
        .await
        .unwrap();
    assert_eq!(third.outcome, Outcome::LoggedIn);
    assert_eq!(
        efa.counts(),
        EfaCounts {
            access_token: 2,
            client_access_token: 0,
            refresh: 2
        }
    );
    assert!(efa.problems().is_empty(), "{:?}", efa.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efa_client_token_has_no_refresh_so_expiry_means_login() {
    let ca = new_ca();
    let clock = Clock::manual(unix_now());
    let efa = Efa::start(&ca, clock.clone()).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let login = in_process(
        &sb,
        efa_target(&efa.url(), Some(EFA_CLIENT_ID)),
        given(EFA_PASSWORD),
        &clock,
    );
    let first = obtain(&login).await.unwrap();
    assert!(sb.entry().get("refresh_token").is_none());
    clock.set(first.expiry - 10);
    let second = obtain(&login).await.unwrap();
    assert_eq!(second.outcome, Outcome::LoggedIn);
    assert_eq!(
        efa.counts(),
        EfaCounts {
            access_token: 0,
            client_access_token: 2,
            refresh: 0
        }
    );
    assert!(efa.problems().is_empty(), "{:?}", efa.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efa_wrong_password_says_so() {
    let ca = new_ca();
    let efa = Efa::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let e = failure(
        &sb.run(&sb.efa_args(&efa.url()), "wrong-efa-pw").await,
        &["wrong-efa-pw"],
    );
    assert!(
        e.contains(&format!(
            "the EFA auth service at {}/v1/auth/token/access-token refused the user name or password for netadmin",
            efa.url()
        )),
        "{e}"
    );
    assert!(e.contains("EFA says: Invalid username or password"), "{e}");
}

// --- End to end: the plugin's token through the webhook ---------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcd_token_from_the_plugin_is_accepted_by_the_webhook() {
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let h = Harness::start(
        ca,
        &dex_issuer_yaml("pcd", &du.issuer()),
        Options::default(),
    )
    .await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    assert!(
        du.discovery_and_jwks_fetches() >= 2,
        "the webhook read Dex's keys"
    );
    let cred = stdout_json(&sb.run(&sb.pcd_args(&du.url()), PCD_PASSWORD).await);
    let answer = h.review(&token_of(&cred)).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(answer["status"]["user"]["username"], PCD_EMAIL);
    assert_eq!(answer["status"]["user"]["groups"], json!(PCD_GROUPS));
    assert!(du.problems().is_empty(), "{:?}", du.problems());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efa_token_from_the_plugin_is_accepted_by_the_webhook() {
    let ca = new_ca();
    let efa = Efa::start(&ca, Clock::System).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "secret", EFA_HMAC_SECRET);
    let h = Harness::start_in(
        dir,
        ca,
        r#"
  - name: efa
    kind: efa
    keys: {hmac_secret_file: secret}
    algorithms: [HS256]
    allow_any_audience: true
    claims:
      username: {claims: [username, sub], prefix: "efa:"}
      groups: {claims: [roles, role], prefix: "efa:"}
"#,
        Options::default(),
    )
    .await;
    let cred = stdout_json(&sb.run(&sb.efa_args(&efa.url()), EFA_PASSWORD).await);
    assert_efa_netadmin(&h.review(&token_of(&cred)).await);
}

/// The whole chain with a real kubectl: the printed kubeconfig makes kubectl
/// run the plugin, which logs in through the stand-ins; kubectl sends the
/// token to an API server that asks our webhook. `.ci/run` installs
/// kubectl (scripts/install-deploy-tools.sh) and runs the ignored tests;
/// `KUBECTL` names another binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl"]
async fn kubectl_runs_the_plugin_from_the_printed_kubeconfig() {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let ca = new_ca();
    let du = Pcd::start(&ca, Clock::System).await;
    let api = ApiServer::start(&ca).await;
    let sb = Sandbox::new(&ca.cert_pem);
    let h = Harness::start(
        ca,
        &dex_issuer_yaml("pcd", &du.issuer()),
        Options::default(),
    )
    .await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);
    api.set_webhook(h.url("/authenticate"));

    let ca_file = sb.ca().display().to_string();
    let cache = sb.cache().display().to_string();
    let out = sb
        .command(&[
            "pcd",
            "--endpoint",
            &du.url(),
            "--username",
            PCD_USER,
            "--ca-file",
            &ca_file,
            "--cache-dir",
            &cache,
            "--password-env",
            "PW",
            "--print-kubeconfig",
            "--cluster-server",
            &api.url(),
            "--cluster-ca",
            &ca_file,
            "--plugin-command",
            env!("CARGO_BIN_EXE_kube-authn-login"),
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let kubeconfig = write(sb.dir.path(), "kubeconfig", &out.stdout);

    for _ in 0..2 {
        let out = tokio::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "--raw", "/version"])
            .env_clear()
            .env("HOME", sb.home())
            .env("PW", PCD_PASSWORD)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl failed: {}{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
        let version: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(version["gitVersion"], "v1.32.0");
    }
    // Every request kubectl made carried the plugin's token.
    let users = api.users();
    assert!(users.len() >= 2, "{users:?}");
    assert!(users.iter().all(|u| u == PCD_EMAIL), "{users:?}");
    assert_eq!(api.requests(), users.len());
    // Two kubectl processes, one login: the second used the cache.
    assert_eq!(du.counts().keystone, 1);
    assert_eq!(du.counts().dex_password, 1);
}

// --- The kubeconfig ---------------------------------------------------------------------

/// `--print-kubeconfig` output equals the template in kubeconfig-templates/
/// with its placeholders filled, so the shipped file stays true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_kubeconfig_runs_the_plugin_and_matches_the_templates() {
    let ca = new_ca();
    let sb = Sandbox::new(&ca.cert_pem);
    let ca_data = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        ca.cert_pem.as_bytes(),
    );
    let cases = [
        (
            "user-exec-plugin-pcd.kubeconfig.yaml",
            vec![
                "pcd",
                "--endpoint",
                "https://du.example.com",
                "--username",
                "jane@example.com",
            ],
            vec![
                ("PCD_DU_FQDN", "du.example.com"),
                ("PCD_USERNAME", "jane@example.com"),
            ],
        ),
        (
            "user-exec-plugin-efa.kubeconfig.yaml",
            vec![
                "efa",
                "--endpoint",
                "https://efa.example.com",
                "--username",
                "netadmin",
            ],
            vec![("EFA_HOST", "efa.example.com"), ("EFA_USER", "netadmin")],
        ),
    ];
    for (template, login_args, values) in cases {
        let ca_file = sb.ca().display().to_string();
        let mut args: Vec<&str> = Vec::new();
        args.extend(login_args);
        args.extend([
            "--print-kubeconfig",
            "--cluster-server",
            "https://api.prod.example.com:6443",
            "--cluster-ca",
            &ca_file,
            "--cluster-name",
            "prod",
        ]);
        let out = sb.command(&args).output().await.unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let printed: Value = serde_norway::from_slice(&out.stdout).unwrap();
        let exec = &printed["users"][0]["user"]["exec"];
        assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1");
        assert_eq!(exec["interactiveMode"], "IfAvailable");
        assert_eq!(exec["command"], "kube-authn-login");
        assert!(exec["installHint"].as_str().unwrap().contains("PATH"));
        assert_eq!(printed["current-context"], printed["contexts"][0]["name"]);

        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../kubeconfig-templates")
            .join(template);
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (k, v) in values.iter().chain(&[
            ("CLUSTER_NAME", "prod"),
            ("API_SERVER_URL", "https://api.prod.example.com:6443"),
            ("CLUSTER_CA_DATA", ca_data.as_str()),
        ]) {
            text = text.replace(&format!("${{{k}}}"), v);
        }
        assert!(!text.contains("${"), "{template}: unfilled placeholder");
        let filled: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(
            filled, printed,
            "{template} differs from --print-kubeconfig"
        );
    }
}

//! The openshift-oauth issuer (issue 15): `sha256~` OAuth access tokens
//! looked up on a loopback stand-in of the OpenShift API server, through the
//! real server over real TLS.

use std::time::Duration;

use futures_util::StreamExt;
use jsonwebtoken::Algorithm;
use kube_authn_common::clock::{Clock, unix_now};
use kube_authn_testkit::apiserver::WebhookClient;
use kube_authn_testkit::config::DexIssuer;
use kube_authn_testkit::harness::*;
use kube_authn_testkit::issuer::TestIssuer;
use kube_authn_testkit::openshift::{
    OAuthToken, OpenShiftApi, User, kubeconfig_for, new_token, object_name,
};
use serde_json::json;

const TOKENS_PATH: &str = "/apis/oauth.openshift.io/v1/oauthaccesstokens/";

fn oauth_yaml(settings: &str) -> String {
    format!(
        "\n  - name: openshift\n    kind: openshift-oauth\n    kubeconfig: kubeconfig\n{settings}"
    )
}

/// The webhook with an openshift-oauth issuer (`settings`: its extra keys,
/// indented four spaces) reading `api`, plus `other_issuers`.
async fn start(
    ca: kube_authn_webhook::pki::Ca,
    kubeconfig: String,
    settings: &str,
    other_issuers: &str,
    opts: Options,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "kubeconfig", kubeconfig);
    let issuers = format!("{}{other_issuers}", oauth_yaml(settings));
    Harness::start_in(dir, ca, &issuers, opts).await
}

/// The stand-in with jane (in `developers`, not in `admins`), and the
/// webhook reading it.
async fn cluster(settings: &str, opts: Options) -> (Harness, OpenShiftApi, User) {
    let ca = new_ca();
    let api = OpenShiftApi::start(&ca).await;
    let jane = User::new("jane");
    api.add_user(&jane);
    api.add_group("developers", &["bob", "jane"]);
    api.add_group("admins", &["bob"]);
    api.add_group("empty", &[]);
    let kubeconfig = api.kubeconfig(&ca);
    let h = start(ca, kubeconfig, settings, "", opts).await;
    (h, api, jane)
}

fn token_requests(api: &OpenShiftApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {TOKENS_PATH}")))
        .count()
}

async fn reason_count(h: &Harness, reason: &str) -> f64 {
    h.reviews(&[("issuer", "openshift"), ("reason", reason)])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_is_its_user_with_groups_and_scopes() {
    let (h, api, jane) = cluster("", Options::default()).await;
    // No keys to wait for: ready at once, without asking the API server.
    assert_eq!(h.telemetry("/readyz").await.0, 200);
    let token = new_token();
    let mut t = OAuthToken::new(&jane, unix_now() - 60);
    t.scopes = vec!["user:info".into(), "user:check-access".into()];
    api.add_token(&token, &t);

    let answer = h.review(&token).await;
    let status = &answer["status"];
    assert_eq!(status["authenticated"], true, "{answer}");
    assert_eq!(status["user"]["username"], "jane");
    assert_eq!(status["user"]["uid"], jane.uid.as_str());
    assert_eq!(
        status["user"]["groups"],
        json!(["developers", "system:authenticated:oauth"])
    );
    assert_eq!(
        status["user"]["extra"],
        json!({"scopes.authorization.openshift.io": ["user:info", "user:check-access"]})
    );
    // Not audience-aware, as OpenShift's own: the apiserver's audiences apply.
    assert!(status.get("audiences").is_none(), "{answer}");
    assert!(status.get("error").is_none(), "{answer}");

    // Three reads, as the ClusterRole allows: the token by its hash, the
    // user, the groups. The token's text is in none of them.
    let requests = api.requests();
    let rest = token.strip_prefix("sha256~").unwrap();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    let line = |i: usize| requests[i].lines().next().unwrap().to_owned();
    assert_eq!(line(0), format!("GET {TOKENS_PATH}{}", object_name(&token)));
    assert_eq!(line(1), "GET /apis/user.openshift.io/v1/users/jane");
    assert!(requests[2].starts_with("GET /apis/user.openshift.io/v1/groups?"));
    for r in &requests {
        assert!(!r.contains(rest), "the token went out: {r}");
    }
    assert!(api.problems().is_empty(), "{:?}", api.problems());
    let logs = logs();
    assert!(!logs.contains(rest), "the token reached the log");
    assert!(
        !logs.contains(kube_authn_testkit::openshift::SA_TOKEN),
        "the ServiceAccount token reached the log"
    );

    // Cached: no new lookup.
    let again = h.review(&token).await;
    assert_eq!(again["status"]["user"]["username"], "jane");
    assert_eq!(api.request_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_listed_page_by_page() {
    let (h, api, mut jane) = cluster("", Options::default()).await;
    // The User's own (deprecated) groups count too, as in OpenShift.
    jane.groups = vec!["legacy-team".into()];
    api.add_user(&jane);
    // More groups than one page (500) holds; jane is in the first and last.
    for i in 0..620 {
        let members: &[&str] = if i == 0 || i == 619 {
            &["jane"]
        } else {
            &["bob"]
        };
        api.add_group(&format!("team-{i:04}"), members);
    }
    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&jane, unix_now() - 60));
    let answer = h.review(&token).await;
    assert_eq!(
        answer["status"]["user"]["groups"],
        json!([
            "developers",
            "legacy-team",
            "team-0000",
            "team-0619",
            "system:authenticated:oauth"
        ]),
        "{answer}"
    );
    let group_requests = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /apis/user.openshift.io/v1/groups?"))
        .count();
    assert_eq!(group_requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused_and_zero_expires_in_never_expires() {
    let (h, api, jane) = cluster("", Options::default()).await;
    let now = unix_now();
    let expired = new_token();
    api.add_token(&expired, &OAuthToken::new(&jane, now - 86_400 - 10));
    assert_rejected(&h.review(&expired).await);
    assert_eq!(reason_count(&h, "expired").await, 1.0);

    let forever = new_token();
    let mut t = OAuthToken::new(&jane, now - 400 * 86_400);
    t.expires_in = 0;
    api.add_token(&forever, &t);
    assert_eq!(h.review(&forever).await["status"]["authenticated"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_past_its_inactivity_timeout_is_refused() {
    let (h, api, jane) = cluster("", Options::default()).await;
    let now = unix_now();
    let idle = new_token();
    let mut t = OAuthToken::new(&jane, now - 600);
    t.inactivity_timeout_seconds = Some(300);
    api.add_token(&idle, &t);
    assert_rejected(&h.review(&idle).await);
    assert_eq!(reason_count(&h, "token_inactive").await, 1.0);

    let active = new_token();
    t.inactivity_timeout_seconds = Some(3_600);
    api.add_token(&active, &t);
    assert_eq!(h.review(&active).await["status"]["authenticated"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_being_deleted_is_refused() {
    let (h, api, jane) = cluster("", Options::default()).await;
    let token = new_token();
    let mut t = OAuthToken::new(&jane, unix_now() - 60);
    t.being_deleted = true;
    api.add_token(&token, &t);
    assert_rejected(&h.review(&token).await);
    assert_eq!(reason_count(&h, "token_being_deleted").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_recreated_under_the_same_name_does_not_inherit_the_token() {
    let (h, api, jane) = cluster("", Options::default()).await;
    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&jane, unix_now() - 60));
    api.delete_user("jane");
    let new_jane = User::new("jane");
    assert_ne!(new_jane.uid, jane.uid);
    api.add_user(&new_jane);
    assert_rejected(&h.review(&token).await);
    assert_eq!(reason_count(&h, "user_uid_mismatch").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_a_deleted_user_is_refused() {
    let (h, api, jane) = cluster("", Options::default()).await;
    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&jane, unix_now() - 60));
    api.delete_user("jane");
    assert_rejected(&h.review(&token).await);
    assert_eq!(reason_count(&h, "user_not_found").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_is_refused_and_the_refusal_cached() {
    let (h, api, _) = cluster("", Options::default()).await;
    let token = new_token();
    assert_rejected(&h.review(&token).await);
    assert_rejected(&h.review(&token).await);
    assert_eq!(token_requests(&api), 1);
    assert_eq!(reason_count(&h, "token_not_found").await, 2.0);
}

/// `oc delete oauthaccesstoken` takes effect once the positive cache entry
/// ends (positive_ttl, on the reviewer's clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_token_stops_working_within_positive_ttl() {
    let now = unix_now();
    let clock = Clock::manual(now);
    let opts = Options {
        clock: clock.clone(),
        ..Options::default()
    };
    let (h, api, jane) = cluster("    positive_ttl: 30s\n", opts).await;
    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&jane, now - 60));
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
    api.delete_token(&token);
    clock.set(now + 29);
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
    assert_eq!(token_requests(&api), 1);
    clock.set(now + 30);
    assert_rejected(&h.review(&token).await);
    assert_eq!(token_requests(&api), 2);
}

/// A cached identity ends with the token, even inside positive_ttl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_ends_at_its_expiry() {
    let now = unix_now();
    let clock = Clock::manual(now);
    let opts = Options {
        clock: clock.clone(),
        ..Options::default()
    };
    let (h, api, jane) = cluster("    positive_ttl: 5m\n", opts).await;
    let token = new_token();
    let mut t = OAuthToken::new(&jane, now - 60);
    t.expires_in = 70;
    api.add_token(&token, &t);
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
    clock.set(now + 10);
    assert_rejected(&h.review(&token).await);
    assert_eq!(reason_count(&h, "expired").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_is_down_is_could_not_check_and_not_cached() {
    let (h, api, jane) = cluster("", Options::default()).await;
    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&jane, unix_now() - 60));
    api.set_down(true);
    let answer = h.review(&token).await;
    assert_unchecked(&answer);
    let error = answer["status"]["error"].as_str().unwrap();
    assert!(error.contains("503"), "{error}");
    assert_eq!(reason_count(&h, "api_unavailable").await, 1.0);
    api.set_down(false);
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
}

/// A 404 that is not "no such object" (the OpenShift API not served) says
/// nothing about the token: "could not check", never a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_is_not_served_is_could_not_check() {
    let (h, api, jane) = cluster("", Options::default()).await;
    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&jane, unix_now() - 60));
    api.set_unserved(true);
    let answer = h.review(&token).await;
    assert_unchecked(&answer);
    let error = answer["status"]["error"].as_str().unwrap();
    assert!(error.contains("404"), "{error}");
    api.set_unserved(false);
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_could_not_check() {
    let ca = new_ca();
    let (_held, addr) = held_port();
    let kubeconfig = kubeconfig_for(&format!("https://{addr}"), &ca);
    let h = start(
        ca,
        kubeconfig,
        "    api_timeout: 1s\n",
        "",
        Options::default(),
    )
    .await;
    let answer = h.review(&new_token()).await;
    assert_unchecked(&answer);
    let error = answer["status"]["error"].as_str().unwrap();
    assert!(error.contains("could not look the token up"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_api_server_is_cut_off_at_api_timeout() {
    let (h, api, jane) = cluster("    api_timeout: 2s\n", Options::default()).await;
    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&jane, unix_now() - 60));
    api.set_delay(Duration::from_secs(60));
    let answer = h.review(&token).await;
    assert_unchecked(&answer);
    let error = answer["status"]["error"].as_str().unwrap();
    assert!(error.contains("api_timeout (2s)"), "{error}");
    api.set_delay(Duration::ZERO);
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
}

/// 10,000 made-up tokens: lookups stop at max_lookups_per_second (the clock
/// stands still, so the bucket never refills); the rest are "could not
/// check", which neither side caches; a known token is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_tokens_makes_a_bounded_number_of_requests() {
    let opts = Options {
        clock: Clock::manual(unix_now()),
        ..Options::default()
    };
    let (h, api, jane) = cluster("    max_lookups_per_second: 5\n", opts).await;
    let known = new_token();
    api.add_token(&known, &OAuthToken::new(&jane, unix_now() - 60));
    assert_eq!(h.review(&known).await["status"]["authenticated"], true);
    assert_eq!(token_requests(&api), 1);

    let flood: Vec<String> = (0..10_000).map(|_| new_token()).collect();
    let h = &h;
    let answers: Vec<serde_json::Value> = futures_util::stream::iter(flood.iter())
        .map(|t| async move {
            let body = kube_authn_webhook::cmd::demo::apiserver_request(
                kube_authn_webhook::wire::ApiVersion::V1,
                t,
                &[API_AUDIENCE],
            );
            let (code, answer) = h.post("/authenticate", body.to_string()).await;
            assert_eq!(code, 200);
            answer
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let refused = answers
        .iter()
        .filter(|a| a["status"].get("error").is_none())
        .count();
    let unchecked = answers
        .iter()
        .filter(|a| a["status"]["error"].as_str().is_some())
        .count();
    assert!(
        answers
            .iter()
            .all(|a| a["status"]["authenticated"] == false)
    );
    assert_eq!(refused, 4, "the bucket's other four lookups");
    assert_eq!(unchecked, 10_000 - 4);
    assert_eq!(
        token_requests(&api),
        5,
        "one for the known token, four for the flood"
    );
    assert_eq!(api.request_count(), 3 + 4);
    assert_eq!(reason_count(h, "rate_limited").await, 9_996.0);

    // The known token is cached: still answered, with no request.
    assert_eq!(h.review(&known).await["status"]["user"]["username"], "jane");
    assert_eq!(api.request_count(), 7);
    // None of them reached the log or a request (a sample: the log is long).
    let logs = logs();
    let requests = api.requests().join("\n");
    for t in flood.iter().step_by(97) {
        let rest = t.strip_prefix("sha256~").unwrap();
        assert!(!logs.contains(rest), "a token reached the log");
        assert!(!requests.contains(rest), "a token went out");
    }
}

/// Tokens that are not sha256~ never reach the API server; sha256~ text
/// that cannot be an OAuth token is refused without a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dex_tokens_work_beside_it_and_never_reach_the_api_server() {
    let ca = new_ca();
    let api = OpenShiftApi::start(&ca).await;
    let user = User::new("jane");
    api.add_user(&user);
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let mut dex = DexIssuer::new("dex", issuer.url());
    dex.prefix = "dex:";
    // OpenShift's names are unprefixed, so they could be anyone's: running
    // another issuer beside it is a stated decision on both.
    let shared = "    allow_shared_identities: true\n";
    let kubeconfig = api.kubeconfig(&ca);
    let dex_yaml = format!("{}{shared}", dex.yaml());
    let h = start(ca, kubeconfig, shared, &dex_yaml, Options::default()).await;
    assert!(h.running.wait_ready(Duration::from_secs(10)).await);

    let answer = h.review(&issuer.mint(&jane(issuer.url()))).await;
    assert_eq!(
        answer["status"]["user"]["username"], "dex:jane@example.com",
        "{answer}"
    );
    for garbage in [
        "sha256~",
        "sha256~not/base64url",
        "sha256~a.b.c",
        "garbage-token-of-some-length",
    ] {
        assert_rejected(&h.review(garbage).await);
    }
    assert_eq!(api.request_count(), 0, "{:#?}", api.requests());

    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&user, unix_now() - 60));
    let answer = h.review(&token).await;
    assert_eq!(answer["status"]["user"]["username"], "jane", "{answer}");
    assert_eq!(
        answer["status"]["user"]["groups"],
        json!(["system:authenticated:oauth"])
    );
}

/// Without an openshift-oauth issuer a sha256~ token is refused as
/// malformed, as before, and nothing is asked of any API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_issuer_a_sha256_token_is_refused_unlooked_at() {
    let (h, _issuer) = Harness::with_dex(Options::default()).await;
    let answer = h.review(&new_token()).await;
    assert_rejected(&answer);
    assert_eq!(
        h.reviews(&[("issuer", "unmatched"), ("reason", "malformed_token")])
            .await,
        1.0
    );
}

/// The sidecar case: a kubeconfig file naming its CA and token files
/// relative to itself, as kubectl reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_naming_files_beside_it_is_read_as_kubectl_reads_it() {
    let ca = new_ca();
    let api = OpenShiftApi::start(&ca).await;
    let user = User::new("jane");
    api.add_user(&user);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cluster")).unwrap();
    write(&dir.path().join("cluster"), "api-ca.crt", &ca.cert_pem);
    write(
        &dir.path().join("cluster"),
        "token",
        kube_authn_testkit::openshift::SA_TOKEN,
    );
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{}\", certificate-authority: api-ca.crt}}\nusers:\n- name: u\n  user: {{tokenFile: token}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        api.url()
    );
    write(&dir.path().join("cluster"), "kubeconfig", kubeconfig);
    let issuers =
        "\n  - name: openshift\n    kind: openshift-oauth\n    kubeconfig: cluster/kubeconfig\n";
    let h = Harness::start_in(dir, ca, issuers, Options::default()).await;
    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&user, unix_now() - 60));
    assert_eq!(h.review(&token).await["status"]["user"]["username"], "jane");
    assert!(api.problems().is_empty(), "{:?}", api.problems());
}

/// check-config and serve find a kubeconfig they cannot use before any
/// token arrives, by file and field.
#[test]
fn an_unusable_kubeconfig_is_a_config_problem_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "garbage", "clusters: 7\n");
    write(
        dir.path(),
        "proxied",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:6443\", proxy-url: \"http://proxy:3128\"}\ncontexts:\n- name: x\n  context: {cluster: c}\ncurrent-context: x\n",
    );
    write(
        dir.path(),
        "no-context",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:6443\"}\n",
    );
    for (kubeconfig, says) in [
        ("nowhere", "cannot read it"),
        ("garbage", "not a kubeconfig"),
        ("proxied", "proxy-url is not supported"),
        ("no-context", "cannot use it"),
    ] {
        let text = format!(
            "server: {{tls: {{cert_file: a, key_file: b}}}}\nissuers:\n  - {{name: o, kind: openshift-oauth, kubeconfig: {kubeconfig}}}\n"
        );
        let path = dir.path().join("config.yaml");
        let err = kube_authn_webhook::prepare::Prepared::from_yaml(&text, &path).unwrap_err();
        let p = err
            .problems
            .iter()
            .find(|p| p.field.to_string() == "issuers[0] (o).kubeconfig")
            .unwrap_or_else(|| panic!("{err}"));
        assert!(
            p.message
                .contains(&*dir.path().join(kubeconfig).to_string_lossy()),
            "{p:?}"
        );
        assert!(p.message.contains(says), "{p:?}");
    }
}

/// deploy/openshift/clusterrole.yaml grants exactly what a lookup uses:
/// every request the webhook made is allowed by a rule, and every rule was
/// needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_role_grants_exactly_the_requests_a_lookup_makes() {
    let (h, api, jane) = cluster("", Options::default()).await;
    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&jane, unix_now() - 60));
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);

    let used: std::collections::BTreeSet<(String, String, String)> = api
        .requests()
        .iter()
        .map(|r| {
            let line = r.lines().next().unwrap();
            let path = line.strip_prefix("GET ").expect("only GETs");
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            // /apis/<group>/v1/<resource>[/<name>]
            assert_eq!((parts[0], parts[2]), ("apis", "v1"), "{line}");
            let verb = match parts.len() {
                5 => "get",
                4 if !query.contains("watch") => "list",
                _ => panic!("unexpected request {line}"),
            };
            (parts[1].to_owned(), parts[3].to_owned(), verb.to_owned())
        })
        .collect();

    let role: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/openshift/clusterrole.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut granted = std::collections::BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let strings = |k: &str| -> Vec<String> {
            rule[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        for g in strings("apiGroups") {
            for r in strings("resources") {
                for v in strings("verbs") {
                    granted.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    assert_eq!(used, granted);
}

/// The kube-apiserver's own webhook client (`../shared/tools/
/// kube-webhook-client`, with its answer cache on, as the apiserver runs
/// it) takes the answers as meant: the OpenShift user with the scopes in
/// extra, and "too many lookups" as an error it does not cache, so the same
/// real token works once the rate allows a lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_apiservers_webhook_client_does_not_cache_a_rate_limited_answer() {
    let t0 = unix_now();
    let clock = Clock::manual(t0);
    let opts = Options {
        clock: clock.clone(),
        ..Options::default()
    };
    let (h, api, jane) = cluster("    max_lookups_per_second: 1\n", opts).await;
    let first = new_token();
    let second = new_token();
    for t in [&first, &second] {
        let mut o = OAuthToken::new(&jane, t0 - 60);
        o.scopes = vec!["user:info".into()];
        api.add_token(t, &o);
    }

    let mut client = WebhookClient::start(&h, API_AUDIENCE, "2m");

    let a = client.ask(&first).await;
    assert_eq!(a["authenticated"], true, "{a}");
    assert_eq!(a["username"], "jane");
    assert_eq!(a["uid"], jane.uid.as_str());
    assert_eq!(
        a["groups"],
        json!(["developers", "system:authenticated:oauth"])
    );
    assert_eq!(
        a["extra"],
        json!({"scopes.authorization.openshift.io": ["user:info"]})
    );
    // The bucket is empty: "could not check", which the client logs...
    let b = client.ask(&second).await;
    assert_eq!(b["authenticated"], false, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("max_lookups_per_second"),
        "{b}"
    );
    // ...and does not cache: a second later the same token is asked again.
    clock.set(t0 + 1);
    let c = client.ask(&second).await;
    assert_eq!(c["authenticated"], true, "{c}");
    assert_eq!(token_requests(&api), 2);
}

/// `system:authenticated:oauth` is the one `system:` name this issuer hands
/// out: a Group named `system:...` is left out, a `system:` user refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_other_system_names_come_from_the_cluster() {
    let (h, api, jane) = cluster("", Options::default()).await;
    api.add_group("system:cluster-admins", &["jane"]);
    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&jane, unix_now() - 60));
    assert_eq!(
        h.review(&token).await["status"]["user"]["groups"],
        json!(["developers", "system:authenticated:oauth"])
    );

    let admin = User::new("system:admin");
    api.add_user(&admin);
    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&admin, unix_now() - 60));
    assert_rejected(&h.review(&token).await);
    assert_eq!(reason_count(&h, "system_username").await, 1.0);
}

/// Waits until `n` reloads have succeeded.
async fn reloaded(h: &Harness, n: f64) -> bool {
    eventually(Duration::from_secs(20), || async {
        h.metric(
            "authn_webhook_config_reloads_total",
            &[("result", "success")],
        )
        .await
            >= n
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_oauth_issuer_unless_its_settings_change() {
    let ca = new_ca();
    let api = OpenShiftApi::start(&ca).await;
    let jane = User::new("jane");
    api.add_user(&jane);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "kubeconfig", api.kubeconfig(&ca));
    let opts = Options {
        tls_extra: ", reload_interval: 200ms",
        ..Options::default()
    };
    let h = Harness::start_watching_in(dir, ca, &oauth_yaml(""), opts).await;
    let token = new_token();
    api.add_token(&token, &OAuthToken::new(&jane, unix_now() - 60));
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
    let looked_up = token_requests(&api);
    assert_eq!(looked_up, 1);

    // Another issuer's change: the OAuth issuer and its cached verdict stay.
    let issuer = TestIssuer::start(&new_ca(), Algorithm::RS256)
        .await
        .unwrap();
    let mut dex = DexIssuer::new("dex", issuer.url());
    dex.prefix = "dex:";
    let shared = "    allow_shared_identities: true\n";
    h.rewrite_config(&format!("{}{}{shared}", oauth_yaml(shared), dex.yaml()));
    assert!(reloaded(&h, 1.0).await, "the new config is loaded");
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
    assert_eq!(token_requests(&api), looked_up, "answered from the cache");

    // Its own settings changed: a new verifier, the token looked up again.
    h.rewrite_config(&oauth_yaml("    positive_ttl: 20s\n"));
    assert!(reloaded(&h, 2.0).await, "the new config is loaded");
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
    assert_eq!(token_requests(&api), looked_up + 1, "looked up again");
}

//! Living through change: certificate rotation, caller checks, slow and
//! greedy clients, and draining on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use kube_authn_common::clock::unix_now;
use kube_authn_testkit::{dex_claims, issuer::Behaviour};
use kube_authn_webhook::cmd::demo::apiserver_request;
use kube_authn_webhook::wire::ApiVersion;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use kube_authn_testkit::certs::OddCa;
use kube_authn_testkit::harness::*;

type Conn = TlsStream<TcpStream>;

async fn connect(
    h: &Harness,
    ca_pem: &str,
    client: Option<&kube_authn_webhook::pki::Issued>,
) -> std::io::Result<Conn> {
    let config = client_config(ca_pem, client, rustls::DEFAULT_VERSIONS);
    connect_with(h, &config).await
}

/// A TLS client config trusting `ca_pem`, presenting `client` when given,
/// speaking only `versions`. Connections made with one config share its
/// session cache, so a second one offers to resume the first one's session.
pub(crate) fn client_config(
    ca_pem: &str,
    client: Option<&kube_authn_webhook::pki::Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(kube_authn_webhook::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(id) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

async fn connect_with(h: &Harness, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Conn> {
    let tcp = TcpStream::connect(h.running.addr).await?;
    TlsConnector::from(config.clone())
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

/// One HTTP/1.1 keep-alive request on an open connection; returns the status
/// code and body.
async fn exchange(conn: &mut Conn, body: &str) -> (u16, String) {
    try_exchange(conn, body).await.unwrap()
}

/// `exchange`, with a refused or closed connection as an error (TLS 1.3
/// reports a refused client certificate on the first read, not in the
/// handshake).
async fn try_exchange(conn: &mut Conn, body: &str) -> std::io::Result<(u16, String)> {
    let req = format!(
        "POST /authenticate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed mid-answer"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if rest.len() >= len {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return Ok((status, rest[..len].to_owned()));
            }
        }
    }
}

fn review_body(token: &str) -> String {
    apiserver_request(ApiVersion::V1, token, &[]).to_string()
}

fn peer_cert(conn: &Conn) -> Vec<u8> {
    conn.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

const FAST_RELOAD: &str = ", reload_interval: 200ms";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_served_without_dropping_open_connections() {
    let (h, issuer) = Harness::with_dex(Options {
        secret_layout: true,
        tls_extra: FAST_RELOAD,
        ..Options::default()
    })
    .await;
    let token = issuer.mint(&jane(issuer.url()));
    let mut open = connect(&h, &h.ca.cert_pem, None).await.unwrap();
    let before = peer_cert(&open);
    assert_eq!(exchange(&mut open, &review_body(&token)).await.0, 200);

    let next = h.ca.server(&["127.0.0.1".to_owned()], 2).unwrap();
    secret_swap(h.dir(), &next, 1);
    assert!(
        eventually(Duration::from_secs(10), || async {
            h.reloads("success").await == 1.0
        })
        .await,
        "the swapped Secret is loaded"
    );
    let fresh = connect(&h, &h.ca.cert_pem, None).await.unwrap();
    assert_ne!(
        peer_cert(&fresh),
        before,
        "new handshakes get the new certificate"
    );
    // The connection opened before the swap keeps working.
    let (code, answer) = exchange(&mut open, &review_body(&token)).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(h.reloads("error").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_new_certificate_files_leave_the_old_ones_serving() {
    let (h, _issuer) = Harness::with_dex(Options {
        tls_extra: FAST_RELOAD,
        ..Options::default()
    })
    .await;
    let before = peer_cert(&connect(&h, &h.ca.cert_pem, None).await.unwrap());
    // A certificate whose key is not the one beside it.
    let a = h.ca.server(&["127.0.0.1".to_owned()], 2).unwrap();
    let b = h.ca.server(&["127.0.0.1".to_owned()], 2).unwrap();
    replace_file(h.dir(), "tls.key", &b.key_pem);
    replace_file(h.dir(), "tls.crt", &a.cert_pem);
    assert!(
        eventually(Duration::from_secs(10), || async {
            h.reloads("error").await >= 1.0
        })
        .await
    );
    assert_eq!(
        peer_cert(&connect(&h, &h.ca.cert_pem, None).await.unwrap()),
        before
    );
    assert!(logs().contains("new TLS files are not usable"));
    // Reported once, not on every check.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(h.reloads("error").await, 1.0);
    // Fixing the files is picked up.
    replace_file(h.dir(), "tls.key", &a.key_pem);
    assert!(
        eventually(Duration::from_secs(10), || async {
            h.reloads("success").await == 1.0
        })
        .await
    );
    assert_ne!(
        peer_cert(&connect(&h, &h.ca.cert_pem, None).await.unwrap()),
        before
    );
}

/// A key file that disappears (a botched rotation, a volume gone) is logged
/// and counted once; the loaded certificate keeps serving, and the same
/// files coming back change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_file_is_reported_once_and_the_old_certificate_serves() {
    let (h, issuer) = Harness::with_dex(Options {
        tls_extra: FAST_RELOAD,
        ..Options::default()
    })
    .await;
    let token = issuer.mint(&jane(issuer.url()));
    let before = peer_cert(&connect(&h, &h.ca.cert_pem, None).await.unwrap());
    let key = std::fs::read(h.dir().join("tls.key")).unwrap();
    std::fs::remove_file(h.dir().join("tls.key")).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            h.reloads("error").await >= 1.0
        })
        .await
    );
    assert!(logs().contains("TLS files cannot be read"));
    let mut conn = connect(&h, &h.ca.cert_pem, None).await.unwrap();
    assert_eq!(peer_cert(&conn), before);
    let (code, answer) = exchange(&mut conn, &review_body(&token)).await;
    assert_eq!(code, 200, "{answer}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(h.reloads("error").await, 1.0, "reported once");
    replace_file(h.dir(), "tls.key", &key);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        h.reloads("success").await,
        0.0,
        "the same files: nothing to load"
    );
    assert_eq!(h.reloads("error").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_ca_applies_to_new_handshakes() {
    let (h, issuer) = Harness::with_dex(Options {
        mtls: true,
        tls_extra: FAST_RELOAD,
        ..Options::default()
    })
    .await;
    let token = issuer.mint(&jane(issuer.url()));
    let old_client = h.ca.client("kube-apiserver", 1).unwrap();
    assert_eq!(
        exchange(
            &mut connect(&h, &h.ca.cert_pem, Some(&old_client))
                .await
                .unwrap(),
            &review_body(&token)
        )
        .await
        .0,
        200
    );

    // The client CA file (also the issuer's CA here) now holds both CAs'
    // certificates... then only the new one.
    let new_ca = new_ca();
    let new_client = new_ca.client("kube-apiserver", 1).unwrap();
    replace_file(h.dir(), "ca.crt", &new_ca.cert_pem);
    assert!(
        eventually(Duration::from_secs(10), || async {
            h.reloads("success").await == 1.0
        })
        .await
    );
    let mut conn = connect(&h, &h.ca.cert_pem, Some(&new_client))
        .await
        .unwrap();
    assert_eq!(exchange(&mut conn, &review_body(&token)).await.0, 200);
    let refused = async {
        let mut c = connect(&h, &h.ca.cert_pem, Some(&old_client)).await?;
        // TLS 1.3 reports a refused client certificate on the first read.
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        let mut b = [0u8; 16];
        match c.read(&mut b).await? {
            0 => Err(std::io::Error::other("closed")),
            _ => Ok(()),
        }
    }
    .await;
    assert!(
        refused.is_err(),
        "the old CA's clients are refused after the reload"
    );
}

/// A client CA reload is a change of trust: a client of the old CA must not
/// get past it by resuming a session from before (TLS 1.2 session ids,
/// TLS 1.3 tickets), which would skip the certificate check. The same
/// client config is used throughout, so it holds the sessions and offers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_before_a_client_ca_change_is_not_resumed() {
    let (h, issuer) = Harness::with_dex(Options {
        mtls: true,
        tls_extra: FAST_RELOAD,
        ..Options::default()
    })
    .await;
    let token = issuer.mint(&jane(issuer.url()));
    let body = review_body(&token);
    let old_client = h.ca.client("kube-apiserver", 1).unwrap();
    let versions: [(&str, &'static rustls::SupportedProtocolVersion); 2] = [
        ("TLS 1.2", &rustls::version::TLS12),
        ("TLS 1.3", &rustls::version::TLS13),
    ];
    let old_configs: Vec<_> = versions
        .iter()
        .map(|(name, v)| {
            (
                *name,
                client_config(&h.ca.cert_pem, Some(&old_client), &[*v]),
            )
        })
        .collect();
    for (version, config) in &old_configs {
        let mut conn = connect_with(&h, config).await.unwrap();
        let (code, answer) = exchange(&mut conn, &body).await;
        assert_eq!(code, 200, "{version}: {answer}");
        // The answer was read, so TLS 1.3 tickets sent after the handshake
        // are in the client's session cache too.
    }

    let new_ca = new_ca();
    replace_file(h.dir(), "ca.crt", &new_ca.cert_pem);
    assert!(
        eventually(Duration::from_secs(10), || async {
            h.reloads("success").await == 1.0
        })
        .await
    );
    let mut answered_old = Vec::new();
    for (version, config) in &old_configs {
        let answered = async {
            let mut conn = connect_with(&h, config).await?;
            try_exchange(&mut conn, &body).await
        }
        .await;
        if let Ok((200, _)) = answered {
            answered_old.push(*version);
        }
    }
    assert!(
        answered_old.is_empty(),
        "a client of the old CA got answers after the reload over {answered_old:?}"
    );

    let new_client = new_ca.client("kube-apiserver", 1).unwrap();
    for (version, v) in versions {
        let config = client_config(&h.ca.cert_pem, Some(&new_client), &[v]);
        for attempt in ["first", "second"] {
            let mut conn = connect_with(&h, &config).await.unwrap();
            assert_eq!(
                conn.get_ref().1.handshake_kind(),
                Some(rustls::HandshakeKind::Full),
                "{version}, {attempt} connection: with mTLS every handshake checks the certificate"
            );
            let (code, answer) = exchange(&mut conn, &body).await;
            assert_eq!(code, 200, "{version}, {attempt} connection: {answer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_client_names_get_answers() {
    let (h, issuer) = Harness::with_dex(Options {
        mtls: true,
        tls_extra: ", allowed_client_names: [kube-apiserver, openshift-kube-apiserver]",
        ..Options::default()
    })
    .await;
    let token = issuer.mint(&jane(issuer.url()));
    assert_eq!(h.review(&token).await["status"]["authenticated"], true);
    let intruder = h.ca.client("some-workload", 1).unwrap();
    let mut conn = connect(&h, &h.ca.cert_pem, Some(&intruder)).await.unwrap();
    let (code, body) = exchange(&mut conn, &review_body(&token)).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        !body.contains("authenticated"),
        "no TokenReview for a refused caller: {body}"
    );
    assert_eq!(
        h.metric("authn_webhook_bad_requests_total", &[("code", "403")])
            .await,
        1.0
    );
    // The log names who was turned away.
    assert!(
        logs()
            .lines()
            .any(|l| l.contains("refused a request") && l.contains("\"client\":\"some-workload\"")),
        "no 403 log line naming the caller"
    );
}

/// A certificate with two subject CNs names two callers at once: no name
/// from it is trusted, whichever of them is listed and in whatever order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_with_two_common_names_is_refused() {
    let (h, issuer) = Harness::with_dex(Options {
        mtls: true,
        tls_extra: ", allowed_client_names: [kube-apiserver], reload_interval: 200ms",
        ..Options::default()
    })
    .await;
    let token = issuer.mint(&jane(issuer.url()));
    // A second CA in the client CA bundle, for certificates pki::Ca does not make.
    let odd = OddCa::new("odd test CA");
    replace_file(
        h.dir(),
        "ca.crt",
        format!("{}{}", h.ca.cert_pem, odd.cert_pem),
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            h.reloads("success").await == 1.0
        })
        .await
    );
    // The bundle is trusted: a one-CN certificate of that CA gets answers.
    let single = odd.client("kube-apiserver");
    let mut conn = connect(&h, &h.ca.cert_pem, Some(&single)).await.unwrap();
    let (code, answer) = exchange(&mut conn, &review_body(&token)).await;
    assert_eq!(code, 200, "{answer}");

    for (first, second) in [
        ("some-workload", "kube-apiserver"),
        ("kube-apiserver", "some-workload"),
        ("kube-apiserver", "kube-apiserver"),
    ] {
        let two = odd.client_with_two_common_names(first, second);
        let mut conn = connect(&h, &h.ca.cert_pem, Some(&two)).await.unwrap();
        let (code, body) = exchange(&mut conn, &review_body(&token)).await;
        assert_eq!(code, 403, "CN={first}, CN={second}: {body}");
        assert!(!body.contains("authenticated"), "{body}");
        assert!(
            body.contains("more than one subject CN"),
            "the refusal says why: {body}"
        );
    }
    assert_eq!(
        h.metric("authn_webhook_bad_requests_total", &[("code", "403")])
            .await,
        3.0
    );
    assert!(
        logs().contains("more than one subject CN"),
        "refusals are logged"
    );
}

const SLOW_CLIENTS: &str = "  read_timeout: 500ms\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_trickling_headers_are_cut_off() {
    let (h, _issuer) = Harness::with_dex(Options {
        server_extra: SLOW_CLIENTS,
        ..Options::default()
    })
    .await;
    let mut conn = connect(&h, &h.ca.cert_pem, None).await.unwrap();
    conn.write_all(b"POST /authenticate HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the server closes a connection whose headers never finish"
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_trickling_a_body_get_408() {
    let (h, _issuer) = Harness::with_dex(Options {
        server_extra: SLOW_CLIENTS,
        ..Options::default()
    })
    .await;
    let mut conn = connect(&h, &h.ca.cert_pem, None).await.unwrap();
    conn.write_all(
        b"POST /authenticate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{\"apiVe",
    )
    .await
    .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a stalled body does not hold the connection");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(
        h.metric("authn_webhook_bad_requests_total", &[("code", "408")])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_new_connections_back() {
    let (h, issuer) = Harness::with_dex(Options {
        server_extra: "  max_connections: 1\n",
        ..Options::default()
    })
    .await;
    let token = issuer.mint(&jane(issuer.url()));
    let mut first = connect(&h, &h.ca.cert_pem, None).await.unwrap();
    assert_eq!(exchange(&mut first, &review_body(&token)).await.0, 200);
    let second = tokio::time::timeout(
        Duration::from_millis(1500),
        connect(&h, &h.ca.cert_pem, None),
    )
    .await;
    assert!(
        second.is_err(),
        "a second connection waits while the first holds the only slot"
    );
    drop(first);
    let mut third =
        tokio::time::timeout(Duration::from_secs(10), connect(&h, &h.ca.cert_pem, None))
            .await
            .expect("the slot frees up")
            .unwrap();
    assert_eq!(exchange(&mut third, &review_body(&token)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_reviews_and_turns_readyz_red() {
    let (h, issuer) = Harness::with_dex(Options {
        server_extra: "  shutdown_grace: 10s\n",
        ..Options::default()
    })
    .await;
    // Long enough that /readyz is asked while the review is still in
    // flight, even on a loaded machine.
    issuer.set_behaviour(Behaviour::Slow(Duration::from_secs(3)));
    issuer.rotate(Algorithm::RS256).unwrap();
    let token = issuer.mint(&jane(issuer.url()));
    let fetches = issuer.jwks_fetches();
    let in_flight = h.review(&token);
    tokio::pin!(in_flight);
    // Wait until the review is inside the server, stuck on the slow fetch.
    let mut answer = None;
    tokio::select! {
        a = &mut in_flight => answer = Some(a),
        _ = eventually(Duration::from_secs(10), || async { issuer.jwks_fetches() > fetches }) => {}
    }
    assert!(answer.is_none(), "the review waits on the slow issuer");
    // Both run to the end: shutdown marks the server draining on its first
    // poll, before /readyz is asked, and lets that request finish.
    let (_, saw_red) = tokio::join!(h.running.shutdown(), async {
        let (code, body) = h.telemetry("/readyz").await;
        code == 503 && body.contains("\"draining\":true")
    });
    let answer = in_flight.await;
    assert_eq!(
        answer["status"]["authenticated"], true,
        "the in-flight review finished: {answer}"
    );
    assert!(saw_red, "/readyz is red while draining");
    assert!(
        connect(&h, &h.ca.cert_pem, None).await.is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_stay_right_while_keys_and_certificates_rotate() {
    let (h, issuer) = Harness::with_dex(Options {
        secret_layout: true,
        tls_extra: FAST_RELOAD,
        ..Options::default()
    })
    .await;
    let h = Arc::new(h);
    let issuer = Arc::new(issuer);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let wrong = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (h, issuer, stop, answered, wrong) = (
            h.clone(),
            issuer.clone(),
            stop.clone(),
            answered.clone(),
            wrong.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let email = format!("user{c}-{i}@example.com");
                let mut claims = dex_claims(issuer.url(), unix_now(), Some(&email), "u", &["devs"]);
                if i % 5 == 0 {
                    claims["exp"] = json!(unix_now() - 3600);
                }
                let answer = h.review(&issuer.mint(&claims)).await;
                let ok = if i % 5 == 0 {
                    answer["status"]["authenticated"] == false
                        && answer["status"].get("error").is_none()
                } else {
                    answer["status"]["user"]["username"] == email.as_str()
                };
                if !ok {
                    eprintln!("wrong answer: {answer}");
                    wrong.fetch_add(1, Ordering::SeqCst);
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for generation in 1..=3 {
        // Key rotations further apart than the refetch interval (1s): a
        // second new key within it is "could not check" until the next
        // allowed fetch, which would count as a wrong answer here.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        issuer.rotate(Algorithm::RS256).unwrap();
        secret_swap(
            h.dir(),
            &h.ca.server(&["127.0.0.1".to_owned()], 2).unwrap(),
            generation,
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        // A failed request panics inside review() and fails the join.
        c.await.expect("no request failed");
    }
    assert_eq!(wrong.load(Ordering::SeqCst), 0, "no wrong answers");
    assert!(answered.load(Ordering::SeqCst) > 20);
    assert_eq!(h.reloads("success").await, 3.0);
    assert_eq!(h.reloads("error").await, 0.0);
}

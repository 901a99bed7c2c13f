//! HTTP/2: offered over ALPN beside HTTP/1.1, spoken by the kube-apiserver's
//! own client, many reviews multiplexed over one connection, and the same
//! limits per stream as per HTTP/1.1 request (body size, read timeout), plus
//! `max_concurrent_reviews` for what HTTP/2 adds: any number of streams.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use kube_authn_common::clock::unix_now;
use kube_authn_testkit::apiserver::WebhookClient;
use kube_authn_testkit::dex_claims;
use kube_authn_testkit::harness::*;
use kube_authn_webhook::cmd::demo::apiserver_request;
use kube_authn_webhook::wire::ApiVersion;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One HTTP/2 connection to `h`, negotiated over ALPN as Go's client does.
async fn h2(h: &Harness) -> SendRequest<Body> {
    let mut config =
        (*crate::lifecycle::client_config(&h.ca.cert_pem, None, rustls::DEFAULT_VERSIONS)).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(h.running.addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the server chose h2"
    );
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

fn post(body: Body) -> hyper::Request<Body> {
    hyper::Request::post("https://127.0.0.1/authenticate")
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

fn whole(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A body whose bytes are sent when the test says so.
fn held() -> (mpsc::UnboundedSender<Bytes>, Body) {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    (tx, StreamBody::new(stream).boxed_unsync())
}

async fn send(conn: &mut SendRequest<Body>, body: Body) -> (u16, Option<String>, Value) {
    conn.ready().await.unwrap();
    let resp = conn.send_request(post(body)).await.unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, retry_after, serde_json::from_slice(&bytes).unwrap())
}

fn review_body(token: &str) -> String {
    apiserver_request(ApiVersion::V1, token, &[API_AUDIENCE]).to_string()
}

fn user_token(issuer: &kube_authn_testkit::issuer::TestIssuer, i: usize) -> String {
    issuer.mint(&dex_claims(
        issuer.url(),
        unix_now(),
        Some(&format!("user{i}@example.com")),
        &format!("user {i}"),
        &["developers"],
    ))
}

async fn connections(h: &Harness, protocol: &str) -> f64 {
    h.metric("authn_webhook_connections_total", &[("protocol", protocol)])
        .await
}

/// The kube-apiserver's webhook client (Go's net/http under client-go)
/// takes the h2 offered and sends every review over one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_apiservers_client_reviews_over_one_http2_connection() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let mut apiserver = WebhookClient::start(&h, API_AUDIENCE, "0");
    for i in 0..20 {
        let a = apiserver.ask(&user_token(&issuer, i)).await;
        assert_eq!(a["authenticated"], true, "{a}");
        assert_eq!(a["username"], format!("user{i}@example.com"));
        assert_eq!(a["error"], "");
    }
    assert_eq!(connections(&h, "h2").await, 1.0);
    assert_eq!(connections(&h, "http/1.1").await, 0.0);
}

/// A client that offers only http/1.1 (curl --http1.1, older clients) is
/// served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_are_served_as_before() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let answer = h.review(&issuer.mint(&jane(issuer.url()))).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(connections(&h, "http/1.1").await, 1.0);
    assert_eq!(connections(&h, "h2").await, 0.0);
}

/// Hundreds of reviews in flight at once on one connection, each answered
/// for its own token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_reviews_share_one_http2_connection() {
    let (h, issuer) = Harness::with_dex(Options::default()).await;
    let conn = h2(&h).await;
    let tokens: Vec<String> = (0..50).map(|i| user_token(&issuer, i)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..300 {
        let mut conn = conn.clone();
        let i = n % tokens.len();
        let body = review_body(&tokens[i]);
        tasks.spawn(async move { (i, send(&mut conn, whole(body)).await) });
    }
    let mut answered = 0;
    while let Some(done) = tasks.join_next().await {
        let (i, (status, _, answer)) = done.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["status"]["user"]["username"],
            format!("user{i}@example.com")
        );
        answered += 1;
    }
    assert_eq!(answered, 300);
    assert_eq!(connections(&h, "h2").await, 1.0);
}

/// HTTP/2 lets one connection open any number of streams: reviews past
/// `max_concurrent_reviews` get 429 with Retry-After (which the
/// kube-apiserver's client retries), and the slots free up as reviews end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_past_max_concurrent_reviews_get_429_until_a_slot_frees() {
    let opts = Options {
        server_extra: "  max_concurrent_reviews: 2\n",
        ..Options::default()
    };
    let (h, issuer) = Harness::with_dex(opts).await;
    let token = issuer.mint(&jane(issuer.url()));
    let mut conn = h2(&h).await;
    // Two reviews whose bodies have not arrived hold both slots.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let (tx, body) = held();
        let mut c = conn.clone();
        holders.push((tx, tokio::spawn(async move { send(&mut c, body).await })));
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            h.metric("authn_webhook_reviews_in_progress", &[]).await == 2.0
        })
        .await,
        "the two held reviews are in progress"
    );
    let refused = send(&mut conn, whole(review_body(&token))).await;
    assert_eq!(refused.0, 429, "{}", refused.2);
    let (_, retry_after, answer) = refused;
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(answer["kind"], "Status");
    assert_eq!(answer["reason"], "TooManyRequests");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("max_concurrent_reviews"),
        "{answer}"
    );
    assert!(
        h.metric("authn_webhook_bad_requests_total", &[("code", "429")])
            .await
            >= 1.0
    );
    // The held reviews complete and free their slots.
    let body = review_body(&token);
    for (tx, task) in holders {
        tx.send(Bytes::from(body.clone())).unwrap();
        drop(tx);
        let (status, _, answer) = task.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"]["authenticated"], true);
    }
    let (status, _, answer) = send(&mut conn, whole(body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// A stream whose body stalls gets 408 after `read_timeout`, one over
/// `max_body_bytes` 413, and neither costs the connection: the next review
/// on it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_oversized_streams_are_cut_and_the_connection_serves_on() {
    let opts = Options {
        server_extra: "  read_timeout: 300ms\n",
        max_body_bytes: 2048,
        ..Options::default()
    };
    let (h, issuer) = Harness::with_dex(opts).await;
    let mut conn = h2(&h).await;
    let (tx, body) = held();
    tx.send(Bytes::from_static(b"{\"apiVersion\":")).unwrap();
    let (status, _, answer) = send(&mut conn, body).await;
    assert_eq!(status, 408, "{answer}");
    drop(tx);
    let (status, _, answer) = send(&mut conn, whole(vec![b' '; 4096])).await;
    assert_eq!(status, 413, "{answer}");
    let (status, _, answer) = send(
        &mut conn,
        whole(review_body(&issuer.mint(&jane(issuer.url())))),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"]["authenticated"], true);
    assert_eq!(connections(&h, "h2").await, 1.0);
    assert_eq!(
        h.metric("authn_webhook_bad_requests_total", &[("code", "408")])
            .await,
        1.0
    );
}

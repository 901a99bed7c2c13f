//! What a forged token costs (issue 11, item 11): tokens anyone can make, a
//! fresh `iat` and a `kid` the issuer never had, sent to the real server over
//! TLS on loopback with `jwks_min_refetch_interval: 30s`. Prints the
//! per-review latency (p50, p99, max, as the client sees it), what the
//! answers were, and how many key fetches the issuer saw. Not part of the
//! tests (they assert no times); see BENCHMARKS.md.
//!
//!     cargo run --release --example forged_flood [-- TOKENS CONCURRENCY]
//!
//! Three rounds, on keep-alive connections opened beforehand (so TLS
//! handshakes are not counted): the 160 at once, then TOKENS
//! (default 5000) one after another (what one forged review costs), then
//! TOKENS over CONCURRENCY (32) connections (latency includes queueing
//! behind the others: about CONCURRENCY / throughput).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, Header};
use kube_authn_common::clock::Clock;
use kube_authn_testkit::config::DexIssuer;
use kube_authn_testkit::harness::{https_client, jane};
use kube_authn_testkit::{DevKey, issuer::TestIssuer};
use kube_authn_webhook::cmd::demo::apiserver_request;
use kube_authn_webhook::http as server;
use kube_authn_webhook::pki::Ca;
use kube_authn_webhook::prepare::Prepared;
use kube_authn_webhook::wire::ApiVersion;
use serde_json::Value;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("TOKENS CONCURRENCY"))
        .collect();
    let tokens = args.first().copied().unwrap_or(5000);
    let concurrency = args.get(1).copied().unwrap_or(32);
    kube_authn_webhook::install_crypto_providers();
    // One info line per review, as in production (JSON), written nowhere.
    let _ = tracing_subscriber::fmt()
        .event_format(kube_authn_webhook::logging::JsonLine)
        .with_env_filter("info")
        .with_writer(std::io::sink)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(tokens, concurrency));
}

async fn run(tokens: usize, concurrency: usize) {
    let ca = Ca::new("flood CA", 1).unwrap();
    let issuer = TestIssuer::start(&ca, Algorithm::RS256).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("ca.crt", &ca.cert_pem);
    write("tls.crt", &tls.cert_pem);
    write("tls.key", &tls.key_pem);
    let issuer_yaml = DexIssuer {
        min_refetch: Some("30s"),
        ..DexIssuer::new("dex", issuer.url())
    }
    .yaml();
    write(
        "config.yaml",
        &format!(
            "server:\n  listen: 127.0.0.1:0\n  workers: 2\n  tls: {{cert_file: tls.crt, key_file: tls.key}}\ntelemetry: {{listen: 127.0.0.1:0}}\nissuers:{issuer_yaml}"
        ),
    );
    let config = Prepared::load(&dir.path().join("config.yaml")).unwrap();
    let running = server::start(&config, Clock::System).await.unwrap();
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    let url = format!("https://{}/authenticate", running.addr);
    let client = https_client(&ca.cert_pem, None);
    let stranger = DevKey::generate(Algorithm::RS256).unwrap();
    let forged = |i: usize| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(format!("forged-{i}"));
        let token = stranger.sign_with_header(&header, &jane(issuer.url()));
        apiserver_request(ApiVersion::V1, &token, &["https://kubernetes.default.svc"]).to_string()
    };

    // Opens 160 keep-alive connections (refused tokens, not a JWT).
    let warm: Vec<String> = (0..160)
        .map(|i| apiserver_request(ApiVersion::V1, &format!("warm-up-{i}"), &[]).to_string())
        .collect();
    flood(&client, &url, warm, 160).await;

    println!("forged tokens: fresh iat, unknown kid; jwks_min_refetch_interval 30s");
    let mut next = 0;
    for (name, n, at_once) in [
        ("160 at once (the issue's flood)".to_owned(), 160, 160),
        (format!("{tokens} one after another"), tokens, 1),
        (
            format!("{tokens} over {concurrency} connections"),
            tokens,
            concurrency,
        ),
    ] {
        let before = issuer.jwks_fetches();
        let bodies: Vec<String> = (next..next + n).map(forged).collect();
        next += n;
        let round = flood(&client, &url, bodies, at_once).await;
        report(&name, &round, issuer.jwks_fetches() - before);
    }
    running.shutdown().await;
}

struct Round {
    latencies: Vec<Duration>,
    refused: usize,
    unchecked: usize,
    other: usize,
    wall: Duration,
}

async fn flood(
    client: &reqwest::Client,
    url: &str,
    bodies: Vec<String>,
    concurrency: usize,
) -> Round {
    let started = Instant::now();
    let results: Vec<(Duration, Value)> = futures_util::stream::iter(bodies)
        .map(|body| async move {
            let t = Instant::now();
            let bytes = client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let latency = t.elapsed();
            (latency, serde_json::from_slice(&bytes).unwrap())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = started.elapsed();
    let mut round = Round {
        latencies: Vec::new(),
        refused: 0,
        unchecked: 0,
        other: 0,
        wall,
    };
    for (latency, answer) in results {
        round.latencies.push(latency);
        let status = &answer["status"];
        match (status["authenticated"].as_bool(), status.get("error")) {
            (Some(false), None) => round.refused += 1,
            (Some(false), Some(_)) => round.unchecked += 1,
            _ => round.other += 1,
        }
    }
    round.latencies.sort();
    round
}

fn report(name: &str, r: &Round, fetches: usize) {
    let q = |p: f64| {
        let i = ((r.latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        r.latencies[i.min(r.latencies.len() - 1)]
    };
    println!(
        "{name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} refused, {} could not check, {} other; {} JWKS fetches; {:.0} ms wall",
        q(0.50).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        r.latencies
            .last()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3,
        r.refused,
        r.unchecked,
        r.other,
        fetches,
        r.wall.as_secs_f64() * 1e3,
    );
}

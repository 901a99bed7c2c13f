//! What TLS session resumption is worth per new connection with mTLS (issue
//! 11, item 9: with a client CA the webhook resumes no session, so a session
//! cannot outlive a client CA reload). Not part of the service; see
//! BENCHMARKS.md, "Issue 11".
//!
//!     cargo run --release --example handshakes [-- SECONDS]
//!
//! `in memory`: rustls client and server connected by buffers (no sockets),
//! the server set up as `tls::server_tls` sets it up with a client CA
//! (aws-lc-rs, TLS 1.3 and 1.2, the client certificate checked by webpki
//! against the CA, P-256 certificates from `pki::Ca` as `certs` issues them),
//! once with rustls's default session store and tickets ("resumed": every
//! handshake after the first resumes) and once with neither ("full", what the
//! webhook does now). For each: handshakes per second on one thread, and the
//! CPU time of the server's side alone per handshake.
//!
//! `loopback`: the real server in-process over TLS on 127.0.0.1 with mTLS,
//! one client reconnecting with the same client config (so it offers its
//! sessions): new connections per second with one TokenReview (a cache hit)
//! each, and how the handshakes went.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_authn_testkit::harness::{Harness, Options, jane};
use kube_authn_webhook::cmd::demo::apiserver_request;
use kube_authn_webhook::pki::{Ca, Issued};
use kube_authn_webhook::tls::provider;
use kube_authn_webhook::wire::ApiVersion;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConfig};
use rustls::{ServerConnection, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn roots(ca: &Ca) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in chain(&ca.cert_pem) {
        roots.add(c).unwrap();
    }
    Arc::new(roots)
}

fn server_config(ca: &Ca, serving: &Issued, resumption: bool) -> Arc<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .unwrap();
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(&serving.cert_pem), key(&serving.key_pem))
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resumption {
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Arc::new(config)
}

fn client_config(
    ca: &Ca,
    client: &Issued,
    version: &'static SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in chain(&ca.cert_pem) {
        roots.add(c).unwrap();
    }
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain(&client.cert_pem), key(&client.key_pem))
            .unwrap(),
    )
}

/// On-CPU time of this thread so far (the scheduler's own count, so time
/// spent waiting for one of the two shared cores is not in it).
fn thread_cpu() -> Duration {
    let mut s = String::new();
    std::fs::File::open("/proc/thread-self/schedstat")
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap();
    Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
}

/// One handshake in memory, run to the end (TLS 1.3 tickets included);
/// returns how it went and the wall time spent in the server's calls.
fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> (HandshakeKind, Duration) {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    let mut in_server = Duration::ZERO;
    loop {
        to_server.clear();
        while c.wants_write() {
            c.write_tls(&mut to_server).unwrap();
        }
        let t = Instant::now();
        let mut rd = &to_server[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().unwrap();
        }
        to_client.clear();
        while s.wants_write() {
            s.write_tls(&mut to_client).unwrap();
        }
        in_server += t.elapsed();
        let mut rd = &to_client[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
        if to_server.is_empty()
            && to_client.is_empty()
            && !c.is_handshaking()
            && !s.is_handshaking()
        {
            break;
        }
    }
    (c.handshake_kind().unwrap(), in_server)
}

fn in_memory(seconds: f64) {
    let ca = Ca::new("handshakes CA", 1).unwrap();
    let serving = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
    let client = ca.client("kube-apiserver", 1).unwrap();
    println!("in memory, one thread, {seconds} s each (P-256 certificates, mTLS):");
    println!(
        "{:<8} {:<8} {:>13} {:>22} {:>22}",
        "version", "server", "handshakes/s", "CPU per handshake", "server side, per hs"
    );
    for (vname, version) in [
        ("TLS 1.3", &rustls::version::TLS13),
        ("TLS 1.2", &rustls::version::TLS12),
    ] {
        for resumption in [true, false] {
            let server = server_config(&ca, &serving, resumption);
            let client = client_config(&ca, &client, version);
            handshake(&client, &server); // the first is full either way
            let (mut n, mut full, mut server_time) = (0u64, 0u64, Duration::ZERO);
            let (wall, cpu) = (Instant::now(), thread_cpu());
            while wall.elapsed().as_secs_f64() < seconds {
                let (kind, s) = handshake(&client, &server);
                n += 1;
                full += u64::from(kind == HandshakeKind::Full);
                server_time += s;
            }
            let cpu = thread_cpu() - cpu;
            let label = if resumption { "resumed" } else { "full" };
            assert!(
                if resumption { full == 0 } else { full == n },
                "{vname} {label}: {full} of {n} handshakes were full"
            );
            println!(
                "{:<8} {:<8} {:>13.0} {:>19.1} us {:>19.1} us",
                vname,
                label,
                n as f64 / cpu.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / n as f64,
                server_time.as_secs_f64() * 1e6 / n as f64,
            );
        }
    }
}

/// One HTTP/1.1 answer, read up to the end of its body (the connection is
/// then dropped, not waited on).
async fn read_answer(conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-answer");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
    }
}

async fn loopback(seconds: f64) {
    let (h, issuer) = Harness::with_dex(Options {
        mtls: true,
        ..Options::default()
    })
    .await;
    let client = h.ca.client("kube-apiserver", 1).unwrap();
    let token = issuer.mint(&jane(issuer.url()));
    let body = apiserver_request(ApiVersion::V1, &token, &[]).to_string();
    let request = format!(
        "POST /authenticate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    println!(
        "\nloopback, the real server (1 worker) and one client in this process, {seconds} s each:"
    );
    for (vname, version) in [
        ("TLS 1.3", &rustls::version::TLS13),
        ("TLS 1.2", &rustls::version::TLS12),
    ] {
        let config = client_config(&h.ca, &client, version);
        let connector = tokio_rustls::TlsConnector::from(config);
        let (mut n, mut resumed) = (0u64, 0u64);
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < seconds {
            let tcp = tokio::net::TcpStream::connect(h.running.addr)
                .await
                .unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut conn = connector
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap();
            resumed += u64::from(conn.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed));
            conn.write_all(request.as_bytes()).await.unwrap();
            let answer = read_answer(&mut conn).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.contains("\"authenticated\":true"), "{answer}");
            n += 1;
        }
        println!(
            "{vname}: {:.0} connections/s (handshake + one review each), {resumed} of {n} resumed",
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    kube_authn_webhook::install_crypto_providers();
    let seconds: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SECONDS"))
        .unwrap_or(3.0);
    in_memory(seconds);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(loopback(seconds));
}

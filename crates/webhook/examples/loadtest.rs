//! Fixtures for `scripts/load.sh` (see BENCHMARKS.md); not part of the service.
//!
//! `loadtest setup --dir DIR`: starts a Dex-like issuer on loopback (HTTPS,
//! one RS256, one ES256 and one EdDSA key), writes certificates, webhook
//! configs and TokenReview bodies (one JSON body per line, the format of
//! `oha -Z`) into DIR, prints `ready`, then keeps the issuer up until its
//! standard input closes. A line `fetches` on standard input is answered with
//! the number of requests the issuer has served (discovery + JWKS).
//!
//! `loadtest sigrate`: jsonwebtoken signature checks per second on one and on
//! two threads, the floor a review cannot go below.
//!
//! `loadtest drive`: a small HTTP/1.1 keep-alive load client (hyper + rustls)
//! for what oha cannot do: oha's `-Z` picks a random line per request, with
//! replacement, so "every miss a token never seen before" needs a client
//! that walks the lines in order and uses each once. `--hot FILE --every K`
//! sends the hot body except every K-th request, which takes the next line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use jsonwebtoken::Algorithm;
use kube_authn_common::clock::unix_now;
use kube_authn_testkit::config::DexIssuer;
use kube_authn_testkit::{DevKey, dex_claims, issuer::TestIssuer, tokens::refused_token};
use kube_authn_webhook::cmd::demo::apiserver_request;
use kube_authn_webhook::pki::Ca;
use kube_authn_webhook::wire::ApiVersion;
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Issuer, certificates, configs and request bodies for a load run.
    Setup {
        #[arg(long)]
        dir: PathBuf,
        /// Distinct RS256 tokens for the miss scenario.
        #[arg(long, default_value_t = 2000)]
        rs256: usize,
        /// Distinct ES256 tokens for the miss scenario.
        #[arg(long, default_value_t = 2000)]
        es256: usize,
        /// Distinct refused tokens (garbage, unknown issuer, expired).
        #[arg(long, default_value_t = 30000)]
        refused: usize,
        /// Distinct RS256 tokens for the mixed scenario's misses (one in ten
        /// requests; the run stops early if they run out).
        #[arg(long, default_value_t = 80000)]
        mixed_misses: usize,
        /// Distinct EdDSA tokens to fill the cache with.
        #[arg(long, default_value_t = 130000)]
        fill: usize,
        /// Distinct EdDSA tokens for cache hits spread over many identities.
        #[arg(long, default_value_t = 30000)]
        many: usize,
        /// `server.workers` in the configs (default: number of CPUs).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Signature checks per second, one and two threads.
    Sigrate {
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
    },
    /// Load over HTTPS keep-alive; prints one JSON summary line.
    Drive(DriveOpts),
}

#[derive(clap::Args)]
struct DriveOpts {
    /// e.g. https://127.0.0.1:8443/authenticate
    #[arg(long)]
    url: String,
    #[arg(long)]
    cacert: PathBuf,
    /// Client certificate and key (mTLS).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// One body sent repeatedly.
    #[arg(long)]
    hot: Option<PathBuf>,
    /// Bodies, one per line, each sent once, in order; the run ends early
    /// when they run out.
    #[arg(long)]
    lines: Option<PathBuf>,
    /// With both --hot and --lines: every K-th request takes the next line.
    #[arg(long, default_value_t = 10)]
    every: u64,
    #[arg(long, default_value_t = 32)]
    conns: usize,
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// Client runtime threads (oha's default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    kube_authn_webhook::install_crypto_providers();
    let result = match Cli::parse().command {
        Command::Setup {
            dir,
            rs256,
            es256,
            refused,
            mixed_misses,
            fill,
            many,
            workers,
        } => setup(
            &dir,
            Counts {
                rs256,
                es256,
                refused,
                mixed_misses,
                fill,
                many,
            },
            workers,
        ),
        Command::Sigrate { secs } => {
            sigrate(Duration::from_secs_f64(secs));
            Ok(())
        }
        Command::Drive(opts) => drive(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Counts {
    rs256: usize,
    es256: usize,
    refused: usize,
    mixed_misses: usize,
    fill: usize,
    many: usize,
}

fn setup(dir: &Path, n: Counts, workers: Option<usize>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let ca = Ca::new("loadtest CA", 2).map_err(|e| e.to_string())?;
    let rs = DevKey::generate(Algorithm::RS256).map_err(|e| e.to_string())?;
    let es = DevKey::generate(Algorithm::ES256).map_err(|e| e.to_string())?;
    let ed = DevKey::generate(Algorithm::EdDSA).map_err(|e| e.to_string())?;
    let issuer = rt.block_on(TestIssuer::start_on(
        &ca,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        vec![es.clone(), ed.clone(), rs.clone()],
    ))?;
    let url = issuer.url().to_owned();

    let tls = ca
        .server(&["127.0.0.1".to_owned(), "localhost".to_owned()], 2)
        .map_err(|e| e.to_string())?;
    let client = ca.client("kube-apiserver", 2).map_err(|e| e.to_string())?;
    write(dir, "ca.crt", &ca.cert_pem)?;
    write(dir, "tls.crt", &tls.cert_pem)?;
    write(dir, "tls.key", &tls.key_pem)?;
    write(dir, "client.crt", &client.cert_pem)?;
    write(dir, "client.key", &client.key_pem)?;

    let port = free_port()?;
    let tport = free_port()?;
    let cache_on = "{max_entries: 100000, max_ttl: 5m, negative_ttl: 10s}";
    let cache_off = "{max_entries: 0, max_ttl: 5m, negative_ttl: 10s}";
    for (name, cache, mtls) in [
        ("config-cache.yaml", cache_on, false),
        ("config-nocache.yaml", cache_off, false),
        ("config-mtls.yaml", cache_on, true),
    ] {
        write(
            dir,
            name,
            &config_yaml(port, tport, &url, cache, mtls, workers),
        )?;
    }

    let now = unix_now();
    let user = |i: usize| {
        let email = format!("user{i}@example.com");
        dex_claims(
            &url,
            now,
            Some(&email),
            &format!("user {i}"),
            &["pcd-default-service-admin", "developers"],
        )
    };
    let hot = body(&rs.sign(&dex_claims(
        &url,
        now,
        Some("jane@example.com"),
        "jane",
        &["pcd-default-service-admin", "developers"],
    )));
    write(dir, "hit.json", &hot)?;
    // Index ranges keep every token of the run distinct.
    let rs_lines = mint(n.rs256, |i| body(&rs.sign(&user(i))));
    write_lines(dir, "rs256.lines", &rs_lines)?;
    let es_lines = mint(n.es256, |i| body(&es.sign(&user(1_000_000 + i))));
    write_lines(dir, "es256.lines", &es_lines)?;
    let refused = mint(n.refused, |i| body(&refused_token(i, &url, now, &es)));
    write_lines(dir, "refused.lines", &refused)?;
    // The misses of the mixed run: `drive --hot hit.json --lines
    // mixed-misses.lines --every 10` sends each once, as every tenth request.
    let misses = mint(n.mixed_misses, |i| body(&rs.sign(&user(2_000_000 + i))));
    write_lines(dir, "mixed-misses.lines", &misses)?;
    let fill = mint(n.fill, |i| body(&ed.sign(&user(3_000_000 + i))));
    write_lines(dir, "fill.lines", &fill)?;
    let many = mint(n.many, |i| body(&ed.sign(&user(4_000_000 + i))));
    write_lines(dir, "many.lines", &many)?;
    write(
        dir,
        "loadtest.env",
        &format!("PORT={port}\nTPORT={tport}\nISSUER_URL={url}\n"),
    )?;

    println!("ready");
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "fetches" {
            println!("{}", issuer.fetches());
            let _ = std::io::stdout().flush();
        }
    }
    rt.block_on(issuer.stop());
    Ok(())
}

fn config_yaml(
    port: u16,
    tport: u16,
    url: &str,
    cache: &str,
    mtls: bool,
    workers: Option<usize>,
) -> String {
    let client_ca = if mtls { ", client_ca_file: ca.crt" } else { "" };
    let workers = workers.map_or(String::new(), |w| format!("  workers: {w}\n"));
    format!(
        r#"# Written by `loadtest setup` for scripts/load.sh.
server:
  listen: 127.0.0.1:{port}
  tls: {{cert_file: tls.crt, key_file: tls.key{client_ca}}}
{workers}telemetry: {{listen: 127.0.0.1:{tport}, log_format: json}}
cache: {cache}
issuers:{issuer}"#,
        issuer = DexIssuer {
            min_refetch: None,
            ..DexIssuer::new("dex", url)
        }
        .yaml()
    )
}

/// A TokenReview as the kube-apiserver sends it, on one line.
fn body(token: &str) -> String {
    apiserver_request(ApiVersion::V1, token, &["https://kubernetes.default.svc"]).to_string()
}

/// `f(0..n)` on every CPU (RSA signing is the slow part of a setup).
fn mint(n: usize, f: impl Fn(usize) -> String + Sync) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let chunk = n.div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                s.spawn(move || (start..(start + chunk).min(n)).map(f).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<(), String> {
    let p = dir.join(name);
    std::fs::write(&p, contents).map_err(|e| format!("{}: {e}", p.display()))
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> Result<(), String> {
    let mut text = lines.join("\n");
    text.push('\n');
    write(dir, name, &text)
}

/// Checks per second of one valid token's signature with its issuer's key,
/// exactly the call `VerifyKey::verify` makes.
fn sigrate(secs: Duration) {
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let key = match DevKey::generate(alg) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("loadtest: {e}");
                continue;
            }
        };
        let token = key.sign(&dex_claims(
            "https://dex.example.com",
            unix_now(),
            Some("jane@example.com"),
            "jane",
            &["developers"],
        ));
        let Some((input, sig)) = token.rsplit_once('.') else {
            continue;
        };
        let doc = serde_json::json!({"keys": [key.jwk.clone()]}).to_string();
        let loaded = match kube_authn_webhook::keys::from_jwks(doc.as_bytes()) {
            Ok((mut keys, _)) if !keys.is_empty() => keys.remove(0),
            Ok(_) => {
                eprintln!("loadtest: the dev issuer's {alg:?} key did not load");
                continue;
            }
            Err(e) => {
                eprintln!("loadtest: {e}");
                continue;
            }
        };
        let jwt_check = || loaded.verify_with_jsonwebtoken(input, sig, alg);
        let parsed_check = || loaded.verify(input, sig, alg);
        let checks: [(&str, &(dyn Fn() -> bool + Sync)); 2] =
            [("jsonwebtoken", &jwt_check), ("parsed", &parsed_check)];
        for (verifier, check) in checks {
            for threads in [1usize, 2] {
                let total: u64 = std::thread::scope(|s| {
                    let hs: Vec<_> = (0..threads)
                        .map(|_| {
                            s.spawn(|| {
                                let start = Instant::now();
                                let mut n = 0u64;
                                while start.elapsed() < secs {
                                    for _ in 0..64 {
                                        assert!(check(), "signature verifies");
                                    }
                                    n += 64;
                                }
                                n as f64 / start.elapsed().as_secs_f64()
                            })
                        })
                        .collect();
                    hs.into_iter().map(|h| h.join().unwrap_or(0.0) as u64).sum()
                });
                println!(
                    "sigrate alg={alg:?} verifier={verifier} threads={threads} verifies_per_s={total}"
                );
            }
        }
    }
}

/// What one connection saw.
#[derive(Default)]
struct ConnResult {
    latencies_us: Vec<u32>,
    ok: u64,
    errors: u64,
}

fn drive(o: DriveOpts) -> Result<(), String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    let read_lines = |p: &Path| -> Result<Vec<bytes::Bytes>, String> {
        let text = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(bytes::Bytes::copy_from_slice)
            .collect())
    };
    let hot = match &o.hot {
        Some(p) => Some(bytes::Bytes::from(
            std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => None,
    };
    let lines = match &o.lines {
        Some(p) => read_lines(p)?,
        None => Vec::new(),
    };
    if hot.is_none() && lines.is_empty() {
        return Err("drive: give --hot, --lines or both".to_owned());
    }
    let uri: hyper::Uri = o.url.parse().map_err(|e| format!("--url: {e}"))?;
    let host = uri.host().ok_or("--url has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let path = uri.path().to_owned();
    let tls = Arc::new(client_tls(&o)?);
    let server_name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("--url host: {e}"))?;

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = o.threads {
        rt.worker_threads(t);
    }
    let rt = rt.enable_all().build().map_err(|e| e.to_string())?;
    let shared = Arc::new((hot, lines));
    let sent = Arc::new(AtomicU64::new(0));
    let next_line = Arc::new(AtomicUsize::new(0));
    let exhausted = Arc::new(AtomicBool::new(false));
    let duration: Duration = o.duration.into();
    let every = o.every.max(1);

    let (results, elapsed) = rt.block_on(async {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + duration;
        let mut tasks = Vec::new();
        for _ in 0..o.conns {
            let (shared, sent, next_line, exhausted) = (
                shared.clone(),
                sent.clone(),
                next_line.clone(),
                exhausted.clone(),
            );
            let (tls, server_name, host, path) =
                (tls.clone(), server_name.clone(), host.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                let mut r = ConnResult::default();
                let tcp = match tokio::net::TcpStream::connect((host.as_str(), port)).await {
                    Ok(t) => t,
                    Err(_) => {
                        r.errors += 1;
                        return r;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let Ok(stream) = tokio_rustls::TlsConnector::from(tls)
                    .connect(server_name, tcp)
                    .await
                else {
                    r.errors += 1;
                    return r;
                };
                let Ok((mut sender, conn)) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                else {
                    r.errors += 1;
                    return r;
                };
                tokio::spawn(conn);
                let (hot, lines) = &*shared;
                while tokio::time::Instant::now() < deadline {
                    let i = sent.fetch_add(1, Ordering::Relaxed);
                    let body = match hot {
                        Some(h) if lines.is_empty() || i % every != every - 1 => h.clone(),
                        _ => {
                            let n = next_line.fetch_add(1, Ordering::Relaxed);
                            match lines.get(n) {
                                Some(b) => b.clone(),
                                None => {
                                    exhausted.store(true, Ordering::Relaxed);
                                    break;
                                }
                            }
                        }
                    };
                    let req = hyper::Request::post(path.as_str())
                        .header(hyper::header::HOST, host.as_str())
                        .header(hyper::header::CONTENT_TYPE, "application/json")
                        .body(http_body_util::Full::new(body));
                    let Ok(req) = req else {
                        r.errors += 1;
                        continue;
                    };
                    let t = Instant::now();
                    if sender.ready().await.is_err() {
                        r.errors += 1;
                        break;
                    }
                    match sender.send_request(req).await {
                        Ok(resp) => {
                            let ok = resp.status() == hyper::StatusCode::OK;
                            let body = http_body_util::BodyExt::collect(resp.into_body()).await;
                            if ok && body.is_ok() {
                                r.ok += 1;
                                r.latencies_us
                                    .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            } else {
                                r.errors += 1;
                            }
                        }
                        Err(_) => {
                            r.errors += 1;
                            break;
                        }
                    }
                }
                r
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap_or_default());
        }
        (all, start.elapsed())
    });

    let mut lat: Vec<u32> = results
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * lat.len() as f64) as usize;
        f64::from(lat[i.min(lat.len() - 1)]) / 1000.0
    };
    let ok: u64 = results.iter().map(|r| r.ok).sum();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let secs = elapsed.as_secs_f64();
    println!(
        "{}",
        json!({
            "ok": ok,
            "errors": errors,
            "secs": secs,
            "rps": ok as f64 / secs,
            "p50_ms": pct(50.0),
            "p99_ms": pct(99.0),
            "p999_ms": pct(99.9),
            "lines_used": next_line.load(Ordering::Relaxed).min(shared.1.len()),
            "lines_exhausted": exhausted.load(Ordering::Relaxed),
        })
    );
    Ok(())
}

fn client_tls(o: &DriveOpts) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&o.cacert).map_err(|e| format!("--cacert: {e}"))? {
        roots
            .add(c.map_err(|e| format!("--cacert: {e}"))?)
            .map_err(|e| format!("--cacert: {e}"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(kube_authn_webhook::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&o.cert, &o.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("--cert: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--cert: {e}"))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

//! Soak test (not part of CI): runs the release binary under a mixed load for
//! a while, rotating the issuer's signing key and the serving certificate,
//! and reports answered reviews, wrong answers, failed requests and memory.
//!
//! Run through `scripts/soak.sh [seconds]`, which builds the release binary.
//! Everything stays on 127.0.0.1 and stops by itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Header};
use kube_authn_common::clock::unix_now;
use kube_authn_testkit::config::DexIssuer;
use kube_authn_testkit::{DevKey, dex_claims, issuer::TestIssuer};
use kube_authn_webhook::cmd::demo::apiserver_request;
use kube_authn_webhook::pki::{Ca, Issued};
use kube_authn_webhook::wire::ApiVersion;
use serde_json::{Value, json};

struct Args {
    bin: PathBuf,
    seconds: u64,
    clients: usize,
    key_rotation: Duration,
    cert_rotation: Duration,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        bin: PathBuf::from("target/release/kube-authn-webhook"),
        seconds: 600,
        clients: 8,
        key_rotation: Duration::from_secs(45),
        cert_rotation: Duration::from_secs(70),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let secs = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--bin" => a.bin = PathBuf::from(&value),
            "--seconds" => a.seconds = secs()?,
            "--clients" => a.clients = secs()? as usize,
            "--key-rotation" => a.key_rotation = Duration::from_secs(secs()?),
            "--cert-rotation" => a.cert_rotation = Duration::from_secs(secs()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    wrong: AtomicU64,
    failed: AtomicU64,
    authenticated: AtomicU64,
}

/// What a request sends and what the answer must be.
enum Kind {
    Valid(String),
    Expired,
    Garbage,
    UnknownKid,
}

fn secret_swap(dir: &Path, tls: &Issued, generation: u32) -> std::io::Result<()> {
    let ts = dir.join(format!("..soak_{generation:04}"));
    std::fs::create_dir(&ts)?;
    std::fs::write(ts.join("tls.crt"), &tls.cert_pem)?;
    std::fs::write(ts.join("tls.key"), &tls.key_pem)?;
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(ts.file_name().unwrap_or_default(), &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = args()?;
    kube_authn_webhook::install_crypto_providers();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    let ca = Ca::new("soak CA", 2).map_err(|e| e.to_string())?;
    let issuer = Arc::new(TestIssuer::start(&ca, Algorithm::RS256).await?);
    let sans = ["127.0.0.1".to_owned()];
    let io = |e: std::io::Error| e.to_string();
    std::fs::write(d.join("ca.crt"), &ca.cert_pem).map_err(io)?;
    secret_swap(d, &ca.server(&sans, 2).map_err(|e| e.to_string())?, 0).map_err(io)?;
    std::os::unix::fs::symlink("..data/tls.crt", d.join("tls.crt")).map_err(io)?;
    std::os::unix::fs::symlink("..data/tls.key", d.join("tls.key")).map_err(io)?;
    let (port, tport) = (free_port().map_err(io)?, free_port().map_err(io)?);
    let config = format!(
        r#"server:
  listen: 127.0.0.1:{port}
  tls: {{cert_file: tls.crt, key_file: tls.key, reload_interval: 1s}}
telemetry: {{listen: 127.0.0.1:{tport}, log_format: json}}
cache: {{max_entries: 20000, max_ttl: 5m, negative_ttl: 10s}}
issuers:{issuer}"#,
        issuer = DexIssuer::new("dex", issuer.url()).yaml()
    );
    std::fs::write(d.join("config.yaml"), config).map_err(io)?;
    let log_path = d.join("server.log");
    let log = std::fs::File::create(&log_path).map_err(io)?;
    let mut server = tokio::process::Command::new(&args.bin)
        .args(["serve", "--config"])
        .arg(d.join("config.yaml"))
        .stdout(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.bin.display()))?;
    let pid = server.id().ok_or("server exited at once")?;
    let ready_url = format!("http://127.0.0.1:{tport}/readyz");
    let started = Instant::now();
    loop {
        if reqwest::get(&ready_url)
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err("server not ready within 20s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (rss_start, _) = rss_kib(pid);
    println!(
        "soak: {}s, {} clients, issuer key rotation every {:?}, certificate rotation every {:?}",
        args.seconds, args.clients, args.key_rotation, args.cert_rotation
    );
    println!("server pid {pid}, RSS at start {rss_start} KiB");

    let url = format!("https://127.0.0.1:{port}/authenticate");
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let stranger = Arc::new(DevKey::generate(Algorithm::RS256).map_err(|e| e.to_string())?);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (issuer, counts, stop, stranger, url) = (
            issuer.clone(),
            counts.clone(),
            stop.clone(),
            stranger.clone(),
            url.clone(),
        );
        let ca_pem = ca.cert_pem.clone();
        tasks.push(tokio::spawn(async move {
            let client = |pem: &str| {
                reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .and_then(|certs| reqwest::Client::builder().tls_certs_only(certs).build())
            };
            let Ok(mut http) = client(&ca_pem) else {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            // A small pool of users per client, so some reviews hit the cache.
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // Every 500 requests a fresh connection: new handshakes see
                // the rotated certificate.
                if i.is_multiple_of(500)
                    && let Ok(h) = client(&ca_pem)
                {
                    http = h;
                }
                let kind = match i % 10 {
                    0 => Kind::Expired,
                    1 => Kind::Garbage,
                    2 if i % 100 == 2 => Kind::UnknownKid,
                    _ => Kind::Valid(format!("user{c}-{}@example.com", i % 50)),
                };
                let now = unix_now();
                let token = match &kind {
                    Kind::Valid(email) => {
                        issuer.mint(&dex_claims(issuer.url(), now, Some(email), "u", &["devs"]))
                    }
                    Kind::Expired => {
                        let mut cl =
                            dex_claims(issuer.url(), now, Some("old@example.com"), "u", &[]);
                        cl["exp"] = json!(now - 3600);
                        cl["iat"] = json!(now - 90_000);
                        issuer.mint(&cl)
                    }
                    Kind::Garbage => format!("garbage-{c}-{i}"),
                    Kind::UnknownKid => {
                        let mut h = Header::new(Algorithm::RS256);
                        h.kid = Some(format!("unknown-{c}-{i}"));
                        stranger.sign_with_header(
                            &h,
                            &dex_claims(issuer.url(), now, Some("x@example.com"), "x", &[]),
                        )
                    }
                };
                let version = if i.is_multiple_of(2) {
                    ApiVersion::V1
                } else {
                    ApiVersion::V1beta1
                };
                let body = apiserver_request(version, &token, &["https://kubernetes.default.svc"]);
                let answer: Option<Value> =
                    match http.post(&url).body(body.to_string()).send().await {
                        Ok(r) if r.status() == 200 => r
                            .bytes()
                            .await
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok()),
                        _ => None,
                    };
                let Some(a) = answer else {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                counts.answered.fetch_add(1, Ordering::Relaxed);
                let s = &a["status"];
                let right = a["apiVersion"] == version.as_str()
                    && match &kind {
                        Kind::Valid(email) => {
                            s["authenticated"] == true && s["user"]["username"] == email.as_str()
                        }
                        _ => s["authenticated"] == false && s.get("error").is_none(),
                    };
                if matches!(kind, Kind::Valid(_)) && s["authenticated"] == true {
                    counts.authenticated.fetch_add(1, Ordering::Relaxed);
                }
                if !right {
                    counts.wrong.fetch_add(1, Ordering::Relaxed);
                    eprintln!("wrong answer: {a}");
                }
            }
        }));
    }

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut next_key = Instant::now() + args.key_rotation;
    let mut next_cert = Instant::now() + args.cert_rotation;
    let (mut key_rotations, mut cert_rotations) = (0u32, 0u32);
    let mut last_report = Instant::now();
    let mut peak = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() >= next_key {
            issuer.rotate(Algorithm::RS256)?;
            key_rotations += 1;
            next_key += args.key_rotation;
        }
        if Instant::now() >= next_cert {
            cert_rotations += 1;
            let tls = ca.server(&sans, 2).map_err(|e| e.to_string())?;
            secret_swap(d, &tls, cert_rotations).map_err(io)?;
            next_cert += args.cert_rotation;
        }
        let (rss, hwm) = rss_kib(pid);
        peak = peak.max(hwm);
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            println!(
                "  t={:>4}s answered={} wrong={} failed={} rss={} KiB",
                started.elapsed().as_secs(),
                counts.answered.load(Ordering::Relaxed),
                counts.wrong.load(Ordering::Relaxed),
                counts.failed.load(Ordering::Relaxed),
                rss
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let (rss_end, hwm) = rss_kib(pid);
    peak = peak.max(hwm);
    let metrics = reqwest::get(format!("http://127.0.0.1:{tport}/metrics"))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let _ = server.start_kill();
    let _ = server.wait().await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let reloads: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("authn_webhook_tls_reloads_total")
                || l.starts_with("authn_webhook_jwks_fetches_total")
                || l.starts_with("authn_webhook_cache_entries ")
        })
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let answered = counts.answered.load(Ordering::Relaxed);
    println!("\n== soak report");
    println!("duration               {elapsed:.0} s");
    println!(
        "reviews answered       {answered} ({:.0}/s)",
        answered as f64 / elapsed
    );
    println!(
        "  valid, authenticated {}",
        counts.authenticated.load(Ordering::Relaxed)
    );
    println!(
        "wrong answers          {}",
        counts.wrong.load(Ordering::Relaxed)
    );
    println!(
        "failed requests        {}",
        counts.failed.load(Ordering::Relaxed)
    );
    println!("issuer key rotations   {key_rotations}");
    println!("certificate rotations  {cert_rotations}");
    println!("server RSS start / end {rss_start} KiB / {rss_end} KiB");
    println!("server peak RSS        {peak} KiB");
    println!(
        "server log             {} lines, {} at ERROR",
        log.lines().count(),
        log.matches("\"level\":\"ERROR\"").count()
    );
    for l in reloads {
        println!("  {l}");
    }
    if counts.wrong.load(Ordering::Relaxed) > 0 || counts.failed.load(Ordering::Relaxed) > 0 {
        return Err("wrong answers or failed requests".to_owned());
    }
    Ok(())
}

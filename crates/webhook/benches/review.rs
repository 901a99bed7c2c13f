//! One TokenReview end to end, in process (decode the body, route by `iss`,
//! verify, map claims, encode the answer, count it in the metrics, log it),
//! against the bare signature check with the same key, for RS256, ES256 and
//! EdDSA. Every run ends with the ratio review cost / signature cost.
//!
//!     cargo bench --bench review            # all of it (~2 min)
//!     cargo bench --bench review -- rs256   # one algorithm
//!
//! Not part of the tests: under `cargo test --all-targets` it only says so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::Criterion;
use jsonwebtoken::Algorithm;
use kube_authn_common::clock::{Clock, unix_now};
use kube_authn_testkit::config::DexIssuer;
use kube_authn_testkit::{dex_claims, issuer::TestIssuer, tokens::refused_token};
use kube_authn_webhook::cmd::demo::apiserver_request;
use kube_authn_webhook::keys::VerifyKey;
use kube_authn_webhook::pki::Ca;
use kube_authn_webhook::prepare::Prepared;
use kube_authn_webhook::review::Reviewer;
use kube_authn_webhook::review::cache::TokenCache;
use kube_authn_webhook::wire::ApiVersion;
use serde_json::{Value, json};

/// Distinct tokens per algorithm. A miss sample longer than this starts over
/// with an empty cache (outside the timed part), so every timed review misses.
const POOL: usize = 1000;
const CACHE: &str = "{max_entries: 100000, max_ttl: 5m, negative_ttl: 10s}";

/// Medians (ns) of the benchmarks that ran in this process, for the ratios.
static RAN: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`:
    // nothing to measure there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("review bench: not run under `cargo test` (use `cargo bench --bench review`)");
        return;
    }
    kube_authn_webhook::install_crypto_providers();
    // One info line per review, formatted as in production (JSON), written
    // nowhere: the formatting is part of a review's cost, a terminal is not.
    let _ = tracing_subscriber::fmt()
        .event_format(kube_authn_webhook::logging::JsonLine)
        .with_env_filter("info")
        .with_writer(std::io::sink)
        .try_init();
    let out_dir = criterion_home();
    let mut c = Criterion::default()
        .output_directory(&out_dir)
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        bench_algorithm(&mut c, &rt, alg);
    }
    bench_refused(&mut c, &rt);
    bench_revocation_and_audit(&mut c, &rt);
    bench_mappings(&mut c, &rt);
    c.final_summary();
    print_ratios(&out_dir);
}

fn criterion_home() -> PathBuf {
    if let Some(p) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("criterion")
}

struct Fixture {
    _dir: tempfile::TempDir,
    _issuer: TestIssuer,
    config: Prepared,
    /// TokenReview bodies, one distinct token each.
    bodies: Vec<Vec<u8>>,
    /// The first token, split for the bare signature check.
    signing_input: String,
    signature: String,
    /// The issuer's key as the service loads it from the JWKS.
    key: VerifyKey,
}

fn fixture(rt: &tokio::runtime::Runtime, alg: Algorithm, cache: &str) -> Fixture {
    fixture_with(rt, alg, cache, "", &[], None)
}

/// A fixture whose config has `extra` top-level keys and whose directory
/// holds `files` (name, contents) before the config is loaded. With `auth`,
/// the issuer is an AuthenticationConfiguration `jwt[]` entry with these
/// keys (`testkit::authcfg::file`) instead of a native one.
fn fixture_with(
    rt: &tokio::runtime::Runtime,
    alg: Algorithm,
    cache: &str,
    extra: &str,
    files: &[(&str, String)],
    auth: Option<&str>,
) -> Fixture {
    let ca = Ca::new("bench CA", 1).expect("CA");
    let issuer = rt
        .block_on(TestIssuer::start(&ca, alg))
        .expect("dev issuer");
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = ca
        .server(&["127.0.0.1".to_owned()], 1)
        .expect("server certificate");
    write(dir.path(), "ca.crt", &ca.cert_pem);
    write(dir.path(), "tls.crt", &tls.cert_pem);
    write(dir.path(), "tls.key", &tls.key_pem);
    for (name, contents) in files {
        write(dir.path(), name, contents);
    }
    let text = match auth {
        None => format!("{extra}{}", config_yaml(issuer.url(), alg, cache)),
        Some(rest) => {
            write(
                dir.path(),
                "auth.yaml",
                &kube_authn_testkit::authcfg::file("v1", issuer.url(), &issuer.ca_pem, rest),
            );
            format!(
                "{extra}server:\n  listen: 127.0.0.1:0\n  tls: {{cert_file: tls.crt, key_file: tls.key}}\ntelemetry: {{listen: 127.0.0.1:0, log_format: json}}\ncache: {cache}\nauthentication_config_files: [auth.yaml]\n"
            )
        }
    };
    let config_path = write(dir.path(), "config.yaml", &text);
    let config = Prepared::load(&config_path).expect("bench config");

    let now = unix_now();
    let bodies: Vec<Vec<u8>> = (0..POOL)
        .map(|i| {
            let email = format!("user{i}@example.com");
            let claims = dex_claims(
                issuer.url(),
                now,
                Some(&email),
                &format!("user {i}"),
                &["pcd-default-service-admin", "developers"],
            );
            review_body(&issuer.mint(&claims))
        })
        .collect();
    let first: Value = serde_json::from_slice(&bodies[0]).expect("body");
    let token = first["spec"]["token"].as_str().expect("token").to_owned();
    let (signing_input, signature) = token.rsplit_once('.').expect("a JWS");
    let doc = json!({"keys": [issuer.current_key().jwk]}).to_string();
    let (mut keys, skipped) = kube_authn_webhook::keys::from_jwks(doc.as_bytes()).expect("JWKS");
    assert!(skipped.is_empty(), "{skipped:?}");
    Fixture {
        _dir: dir,
        _issuer: issuer,
        config,
        bodies,
        signing_input: signing_input.to_owned(),
        signature: signature.to_owned(),
        key: keys.remove(0),
    }
}

fn config_yaml(url: &str, alg: Algorithm, cache: &str) -> String {
    format!(
        r#"server:
  listen: 127.0.0.1:0
  tls: {{cert_file: tls.crt, key_file: tls.key}}
telemetry: {{listen: 127.0.0.1:0, log_format: json}}
cache: {cache}
issuers:{issuer}"#,
        issuer = DexIssuer {
            algorithms: &format!("[{alg:?}]"),
            min_refetch: None,
            ..DexIssuer::new("dex", url)
        }
        .yaml()
    )
}

fn review_body(token: &str) -> Vec<u8> {
    apiserver_request(ApiVersion::V1, token, &["https://kubernetes.default.svc"])
        .to_string()
        .into_bytes()
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write bench file");
    p
}

/// A reviewer whose issuer keys are already fetched, as after start-up.
fn reviewer(rt: &tokio::runtime::Runtime, config: &Prepared) -> Reviewer {
    let r = Reviewer::from_config(config, Clock::System, rt.handle()).expect("reviewer");
    for issuer in r.verifier.issuers() {
        if let Some(remote) = &issuer.remote {
            rt.block_on(remote.refresh()).expect("dev issuer keys");
        }
    }
    r
}

fn authenticated(rt: &tokio::runtime::Runtime, r: &Reviewer, body: &[u8]) -> bool {
    let answer = rt.block_on(r.review_body(body)).expect("an answer");
    let v: Value = serde_json::from_slice(&answer).expect("JSON answer");
    v["status"]["authenticated"] == json!(true)
}

fn bench_algorithm(c: &mut Criterion, rt: &tokio::runtime::Runtime, alg: Algorithm) {
    let name = format!("{alg:?}").to_lowercase();
    let f = fixture(rt, alg, CACHE);
    let mut group = c.benchmark_group(&name);

    // jsonwebtoken's check of one signature with the issuer's key: it parses
    // the key again on every check.
    group.bench_function("signature", |b| {
        mark(&name, "signature");
        b.iter(|| {
            assert!(f.key.verify_with_jsonwebtoken(
                black_box(&f.signing_input),
                black_box(&f.signature),
                alg
            ))
        })
    });

    // The service's check: the same key parsed by aws-lc-rs once, at load.
    group.bench_function("signature_parsed_key", |b| {
        mark(&name, "signature_parsed_key");
        b.iter(|| {
            assert!(
                f.key
                    .verify(black_box(&f.signing_input), black_box(&f.signature), alg)
            )
        })
    });

    // Miss: a token the cache has not seen. Every review verifies the
    // signature and inserts the identity.
    let mut miss = reviewer(rt, &f.config);
    assert!(
        authenticated(rt, &miss, &f.bodies[0]),
        "{name}: the bench token must authenticate"
    );
    group.bench_function("review_miss", |b| {
        mark(&name, "review_miss");
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(f.bodies.len());
                miss.cache = TokenCache::new(&f.config.cache);
                let start = Instant::now();
                rt.block_on(async {
                    for body in &f.bodies[..n] {
                        black_box(miss.review_body(black_box(body)).await.expect("answer"));
                    }
                });
                timed += start.elapsed();
                left -= n;
            }
            timed
        })
    });
    let lookups = &miss.metrics.cache_lookups;
    assert_eq!(
        lookups.with_label_values(&["hit"]).get(),
        0,
        "{name}: a miss sample hit the cache"
    );

    // Miss with the cache off (`cache.max_entries: 0`), as `scripts/load.sh`
    // runs its miss scenarios: the difference is the cache's own cost.
    let off_config = {
        let mut c = f.config.cache.clone();
        c.max_entries = 0;
        c
    };
    let mut off = reviewer(rt, &f.config);
    off.cache = TokenCache::new(&off_config);
    group.bench_function("review_miss_cache_off", |b| {
        mark(&name, "review_miss_cache_off");
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                for i in 0..iters as usize {
                    let body = &f.bodies[i % f.bodies.len()];
                    black_box(off.review_body(black_box(body)).await.expect("answer"));
                }
            });
            start.elapsed()
        })
    });

    // Hit: the same token again, answered from the cache.
    let hit = reviewer(rt, &f.config);
    let hot = &f.bodies[0];
    assert!(authenticated(rt, &hit, hot));
    group.bench_function("review_hit", |b| {
        mark(&name, "review_hit");
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    black_box(hit.review_body(black_box(hot)).await.expect("answer"));
                }
            });
            start.elapsed()
        })
    });
    group.finish();
    drop(miss);
}

/// Refusals decided from scratch (cache off, as a flood of distinct bad
/// tokens would be): a third not a JWT, a third from an unknown issuer, a
/// third expired. Compare with `review_hit`: the flood target is "at least as
/// fast as cache hits".
fn bench_refused(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let f = fixture(rt, Algorithm::ES256, CACHE);
    let mut cfg = f.config.cache.clone();
    cfg.max_entries = 0;
    let mut r = reviewer(rt, &f.config);
    r.cache = TokenCache::new(&cfg);
    let key = kube_authn_testkit::DevKey::generate(Algorithm::ES256).expect("key");
    let url = f.config.issuers[0].spec.url.clone().expect("issuer url");
    let now = unix_now();
    let bodies: Vec<Vec<u8>> = (0..999)
        .map(|i| {
            let token = refused_token(i, &url, now, &key);
            review_body(&token)
        })
        .collect();
    for b in &bodies[..3] {
        assert!(!authenticated(rt, &r, b), "refused tokens must be refused");
    }
    let mut group = c.benchmark_group("refused");
    group.bench_function("review_refused_cache_off", |b| {
        mark("refused", "review_refused_cache_off");
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                for i in 0..iters as usize {
                    let body = &bodies[i % bodies.len()];
                    black_box(r.review_body(black_box(body)).await.expect("answer"));
                }
            });
            start.elapsed()
        })
    });

    // Refused before routing (not a JWT, unknown issuer), each seen for the
    // first time, with the production cache and with the cache off: what
    // the cache adds to a flood of distinct junk (issue 11, item 12).
    let unrouted: Vec<&Vec<u8>> = bodies
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 2)
        .map(|(_, b)| b)
        .collect();
    let mut on = reviewer(rt, &f.config);
    for (id, cache) in [
        ("review_unrouted_cache_off", &cfg),
        ("review_unrouted_cache_on", &f.config.cache),
    ] {
        group.bench_function(id, |b| {
            mark("refused", id);
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(unrouted.len());
                    on.cache = TokenCache::new(cache);
                    let start = Instant::now();
                    rt.block_on(async {
                        for body in &unrouted[..n] {
                            black_box(on.review_body(black_box(body)).await.expect("answer"));
                        }
                    });
                    timed += start.elapsed();
                    left -= n;
                }
                timed
            })
        });
    }
    group.finish();
}

/// A cache hit with no list, with a 10,000-entry revocation list (none of
/// whose entries matches: every lookup is made), and with the audit trail on
/// (to a file): what each adds to the cheapest review there is.
fn bench_revocation_and_audit(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut list = String::from("version: 1\nentries:\n");
    for i in 0..2_500 {
        list.push_str(&format!(
            "  - {{token_sha256: {:064x}}}\n  - {{user: user-{i}@example.org}}\n  - {{group: group-{i}}}\n  - {{issuer: dex, sub: sub-{i}}}\n",
            i
        ));
    }
    let mut group = c.benchmark_group("revocation");
    let mut setups = Vec::new();
    for (id, extra) in [
        ("hit_no_list", ""),
        ("hit_10k_list", "revocation: {file: revoked.yaml}\n"),
        (
            "hit_10k_list_audit_file",
            "revocation: {file: revoked.yaml}\naudit: {output: file, file: audit.log}\n",
        ),
    ] {
        let f = fixture_with(
            rt,
            Algorithm::ES256,
            CACHE,
            extra,
            &[("revoked.yaml", list.clone())],
            None,
        );
        let r = reviewer(rt, &f.config);
        assert!(
            authenticated(rt, &r, &f.bodies[0]),
            "{id}: the token is not revoked"
        );
        setups.push((id, f, r));
    }
    let hits = |f: &Fixture, r: &Reviewer, n: u64| {
        let hot = &f.bodies[0];
        let start = Instant::now();
        rt.block_on(async {
            for _ in 0..n {
                black_box(r.review_body(black_box(hot)).await.expect("answer"));
            }
        });
        start.elapsed()
    };
    for (id, f, r) in &setups {
        group.bench_function(*id, |b| {
            mark("revocation", id);
            b.iter_custom(|iters| hits(f, r, iters))
        });
    }
    group.finish();
    const BATCH: u64 = 20_000;
    let mut variants: Vec<Variant<'_>> = setups
        .iter()
        .map(|(id, f, r)| {
            let run: Batch<'_> =
                Box::new(move || hits(f, r, BATCH).as_secs_f64() * 1e6 / BATCH as f64);
            (*id, run)
        })
        .collect();
    interleaved("revocation: cache hits", &mut variants);
}

/// Misses (RS256) mapped three ways: today's native claim mapping, the same
/// claims from an AuthenticationConfiguration, and two CEL mappings plus a
/// CEL claim validation rule (issue 10's target: at most +20 % on a miss).
fn bench_mappings(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    const CLAIMS: &str = "    claimMappings:\n      username: {claim: email, prefix: \"\"}\n      groups: {claim: groups, prefix: \"\"}\n      uid: {claim: sub}\n";
    const CEL: &str = r#"    claimValidationRules:
    - expression: 'claims.?email_verified.orValue(true) == true'
      message: the email must be verified
    claimMappings:
      username:
        expression: 'claims.email'
      groups:
        expression: 'dyn(claims.groups).map(g, "oidc:" + g)'
      uid: {claim: sub}
"#;
    let mut group = c.benchmark_group("mapping");
    let mut setups = Vec::new();
    for (id, auth) in [
        ("miss_native_claims", None),
        ("miss_authcfg_claims", Some(CLAIMS)),
        ("miss_authcfg_cel", Some(CEL)),
    ] {
        let f = fixture_with(rt, Algorithm::RS256, CACHE, "", &[], auth);
        let r = reviewer(rt, &f.config);
        assert!(
            authenticated(rt, &r, &f.bodies[0]),
            "{id}: must authenticate"
        );
        setups.push((id, f, r));
    }
    // Every review a miss: the cache starts empty for each pass over the pool.
    let misses = |f: &Fixture, r: &mut Reviewer, n: usize| {
        r.cache = TokenCache::new(&f.config.cache);
        let start = Instant::now();
        rt.block_on(async {
            for body in &f.bodies[..n] {
                black_box(r.review_body(black_box(body)).await.expect("answer"));
            }
        });
        start.elapsed()
    };
    for (id, f, r) in &mut setups {
        group.bench_function(*id, |b| {
            mark("mapping", id);
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(f.bodies.len());
                    timed += misses(f, r, n);
                    left -= n;
                }
                timed
            })
        });
    }
    group.finish();
    let mut variants: Vec<Variant<'_>> = setups
        .iter_mut()
        .map(|(id, f, r)| {
            let run: Batch<'_> =
                Box::new(move || misses(f, r, POOL).as_secs_f64() * 1e6 / POOL as f64);
            (*id, run)
        })
        .collect();
    interleaved("mapping: misses", &mut variants);
}

/// One batch of reviews; gives microseconds per review.
type Batch<'a> = Box<dyn FnMut() -> f64 + 'a>;
type Variant<'a> = (&'static str, Batch<'a>);

/// Runs each variant (one batch, giving microseconds per review) in turn,
/// `ROUNDS` times with the order rotating, and prints each one's median and
/// its median ratio to the first, round by round. The machine is shared and
/// its speed drifts by tens of percent within a minute: that hits every
/// variant of a round alike, which criterion's runs one after the other
/// (seconds apart) do not, so these ratios are the ones to quote.
fn interleaved(title: &str, variants: &mut [Variant<'_>]) {
    const ROUNDS: usize = 21;
    let n = variants.len();
    let mut per: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); n];
    for round in 0..ROUNDS {
        for k in 0..n {
            let i = (round + k) % n;
            let us = (variants[i].1)();
            per[i].push(us);
        }
    }
    let median = |xs: &[f64]| {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("\n== {title}: {ROUNDS} interleaved rounds ==");
    for i in 0..n {
        let ratios: Vec<f64> = per[i]
            .iter()
            .zip(&per[0])
            .map(|(a, b)| a / b - 1.0)
            .collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        println!(
            "{}: {:.2} us per review (median); vs {}: median {:+.1} % (rounds {:+.1} % .. {:+.1} %)",
            variants[i].0,
            median(&per[i]),
            variants[0].0,
            median(&ratios) * 100.0,
            lo * 100.0,
            hi * 100.0
        );
    }
}

fn mark(group: &str, id: &str) {
    let mut ran = RAN.lock().unwrap_or_else(|e| e.into_inner());
    let entry = (group.to_owned(), id.to_owned());
    if !ran.contains(&entry) {
        ran.push(entry);
    }
}

/// The median of one benchmark of this run, from criterion's estimates.
fn median_ns(out_dir: &Path, group: &str, id: &str) -> Option<f64> {
    let text =
        std::fs::read_to_string(out_dir.join(group).join(id).join("new/estimates.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn print_ratios(out_dir: &Path) {
    let ran = RAN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut by_group: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (g, id) in ran {
        if let Some(ns) = median_ns(out_dir, &g, &id) {
            by_group.entry(g).or_default().insert(id, ns);
        }
    }
    println!("\n== review cost / signature cost (criterion medians) ==");
    println!(
        "signature: jsonwebtoken::crypto::verify; parsed: the service's check (VerifyKey::verify: the key parsed by aws-lc-rs once)"
    );
    println!(
        "{:<7} {:>12} {:>10} {:>12} {:>7} {:>14} {:>7} {:>12}",
        "alg",
        "signature",
        "parsed",
        "review miss",
        "ratio",
        "miss cache-off",
        "ratio",
        "review hit"
    );
    for (g, m) in &by_group {
        let sig = m.get("signature").copied();
        let us = |id: &str| {
            m.get(id)
                .map_or("-".to_owned(), |ns| format!("{:.2} us", ns / 1000.0))
        };
        let ratio = |id: &str| match (m.get(id), sig) {
            (Some(r), Some(s)) if s > 0.0 => format!("{:.2}", r / s),
            _ => "-".to_owned(),
        };
        if g == "revocation" {
            for (id, what) in [
                ("hit_no_list", "cache hit, no revocation list"),
                ("hit_10k_list", "cache hit, 10,000-entry revocation list"),
                (
                    "hit_10k_list_audit_file",
                    "cache hit, 10,000-entry list, audit trail to a file",
                ),
            ] {
                if let Some(ns) = m.get(id) {
                    println!("{what}: {:.2} us per review", ns / 1000.0);
                }
            }
            continue;
        }
        if g == "refused" {
            for (id, what) in [
                (
                    "review_refused_cache_off",
                    "refused (cache off, garbage/unknown iss/expired)",
                ),
                (
                    "review_unrouted_cache_off",
                    "refused before routing, first sight, cache off",
                ),
                (
                    "review_unrouted_cache_on",
                    "refused before routing, first sight, production cache",
                ),
            ] {
                if let Some(ns) = m.get(id) {
                    println!("{what}: {:.2} us per review", ns / 1000.0);
                }
            }
            continue;
        }
        if g == "mapping" {
            let base = m.get("miss_native_claims").copied();
            for id in [
                "miss_native_claims",
                "miss_authcfg_claims",
                "miss_authcfg_cel",
            ] {
                if let Some(ns) = m.get(id) {
                    let vs = base.map_or("-".to_owned(), |b| {
                        format!("{:+.1} %", (ns / b - 1.0) * 100.0)
                    });
                    println!(
                        "{id}: {:.2} us per review ({vs} vs native claims)",
                        ns / 1000.0
                    );
                }
            }
            continue;
        }
        println!(
            "{:<7} {:>12} {:>10} {:>12} {:>7} {:>14} {:>7} {:>12}",
            g,
            us("signature"),
            us("signature_parsed_key"),
            us("review_miss"),
            ratio("review_miss"),
            us("review_miss_cache_off"),
            ratio("review_miss_cache_off"),
            us("review_hit"),
        );
    }
}

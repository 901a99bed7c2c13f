//! The webhook harness: a private CA, the real server started in-process over
//! TLS on 127.0.0.1, a loopback Dex-like issuer, and a real HTTPS client.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use kube_authn_common::clock::{Clock, unix_now};
use kube_authn_webhook::cmd::demo::apiserver_request;
use kube_authn_webhook::cmd::demo::issuer::dex_claims;
use kube_authn_webhook::http::{self as server, Running};
use kube_authn_webhook::pki::{Ca, Issued};
use kube_authn_webhook::prepare::Prepared;
use kube_authn_webhook::wire::ApiVersion;
use serde_json::{Value, json};

use crate::issuer::TestIssuer;

pub const API_AUDIENCE: &str = "https://kubernetes.default.svc";

pub struct Options {
    /// Require client certificates signed by the test CA.
    pub mtls: bool,
    /// Extra `server:` keys, each line indented by two spaces.
    pub server_extra: &'static str,
    /// Extra keys for `server.tls`, e.g. `, allowed_client_names: [x]`.
    pub tls_extra: &'static str,
    /// The client certificate's common name, with mtls.
    pub client_name: &'static str,
    /// Lay out tls.crt/tls.key as a mounted Secret does: symlinks into
    /// `..data`, itself a symlink to a timestamped directory.
    pub secret_layout: bool,
    pub cache: &'static str,
    pub clock: Clock,
    pub max_body_bytes: usize,
    /// Top-level config keys (`revocation:`, `audit:`...), each line ending
    /// in a newline, written before `issuers:`.
    pub config_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mtls: false,
            server_extra: "",
            tls_extra: "",
            client_name: "kube-apiserver",
            secret_layout: false,
            cache: "{max_entries: 1000, max_ttl: 5m, negative_ttl: 10s}",
            clock: Clock::System,
            max_body_bytes: 1024 * 1024,
            config_extra: String::new(),
        }
    }
}

pub struct Harness {
    /// Holds the config and certificates for the server's lifetime.
    _dir: tempfile::TempDir,
    pub ca: Ca,
    pub running: Running,
    /// A client that trusts the test CA (and presents a client cert with mTLS).
    pub client: reqwest::Client,
    /// Every token sent, to prove none reaches the logs.
    sent: Mutex<Vec<String>>,
    /// The config file the server was started from.
    config_path: PathBuf,
    /// Its text before the `issuers:` list body.
    config_head: String,
}

/// Everything any test's server logged, at debug level and below.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || Capture(writer.clone()))
            .try_init();
        buf
    });
}

/// The captured log of the whole test run so far.
pub fn logs() -> String {
    capture_logs();
    let buf = LOGS
        .get()
        .expect("initialised")
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&buf).into_owned()
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let logs = logs();
        for token in self.sent.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            // The whole token, and its signature alone (a token's secret part).
            // Strings this short ("garbage", "a.b.c") also occur in ordinary
            // log text; every real token is far longer.
            if token.len() < 16 {
                continue;
            }
            let signature = token.rsplit('.').next().unwrap_or_default();
            assert!(!logs.contains(token.as_str()), "a token reached the log");
            if signature.len() >= 16 {
                assert!(
                    !logs.contains(signature),
                    "a token signature reached the log"
                );
            }
        }
    }
}

pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write test file");
    p
}

/// Issuer YAML for a Dex-like dev issuer, as PCD-K configures it, with the
/// harness's defaults (`DexIssuer::new`).
pub fn dex_issuer_yaml(name: &str, issuer_url: &str) -> String {
    crate::config::DexIssuer::new(name, issuer_url).yaml()
}

/// An HTTPS client trusting `ca_pem`, presenting `identity` when given.
pub fn https_client(ca_pem: &str, identity: Option<&Issued>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).expect("ca pem"));
    if let Some(id) = identity {
        builder = builder.identity(
            reqwest::Identity::from_pem(format!("{}{}", id.cert_pem, id.key_pem).as_bytes())
                .expect("client identity"),
        );
    }
    builder.build().expect("client")
}

pub fn new_ca() -> Ca {
    Ca::new("test CA", 2).expect("test CA")
}

/// What the kubelet does to a Secret volume: write a new timestamped
/// directory, then atomically point `..data` at it.
pub fn secret_swap(dir: &Path, tls: &Issued, generation: u32) {
    let ts = dir.join(format!("..2026_11_23_{generation:04}"));
    std::fs::create_dir(&ts).unwrap();
    write(&ts, "tls.crt", &tls.cert_pem);
    write(&ts, "tls.key", &tls.key_pem);
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(ts.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// Replaces a file by renaming a complete new one over it.
pub fn replace_file(dir: &Path, name: &str, contents: impl AsRef<[u8]>) {
    let tmp = write(dir, &format!(".{name}.tmp"), contents);
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

/// A loopback port held but not listening: connections to it are refused,
/// and nothing else can take it before the issuer comes up on it.
pub fn held_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub async fn eventually<F: Future<Output = bool>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Harness {
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Writes a config with `issuers_yaml` (a YAML list body) and starts the
    /// server from it, exactly as `serve` would.
    pub async fn start(ca: Ca, issuers_yaml: &str, opts: Options) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, ca, issuers_yaml, opts).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        ca: Ca,
        issuers_yaml: &str,
        opts: Options,
    ) -> Harness {
        Self::launch(dir, ca, issuers_yaml, opts, false).await
    }

    /// `start`, and the server then watches its config file as `serve`
    /// does (on change, polled every `server.tls.reload_interval`; SIGHUP
    /// is left to the tests that run the binary): rewrite it with
    /// `rewrite_config`/`write_config`.
    pub async fn start_watching(ca: Ca, issuers_yaml: &str, opts: Options) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::launch(dir, ca, issuers_yaml, opts, true).await
    }

    /// `start_watching` in `dir`, for tests that put files there first.
    pub async fn start_watching_in(
        dir: tempfile::TempDir,
        ca: Ca,
        issuers_yaml: &str,
        opts: Options,
    ) -> Harness {
        Self::launch(dir, ca, issuers_yaml, opts, true).await
    }

    async fn launch(
        dir: tempfile::TempDir,
        ca: Ca,
        issuers_yaml: &str,
        opts: Options,
        watch: bool,
    ) -> Harness {
        let tls = ca
            .server(&["127.0.0.1".to_owned(), "localhost".to_owned()], 2)
            .expect("server cert");
        write(dir.path(), "ca.crt", &ca.cert_pem);
        if opts.secret_layout {
            secret_swap(dir.path(), &tls, 0);
            std::os::unix::fs::symlink("..data/tls.crt", dir.path().join("tls.crt")).unwrap();
            std::os::unix::fs::symlink("..data/tls.key", dir.path().join("tls.key")).unwrap();
        } else {
            write(dir.path(), "tls.crt", &tls.cert_pem);
            write(dir.path(), "tls.key", &tls.key_pem);
        }
        capture_logs();
        let client_ca = if opts.mtls {
            ", client_ca_file: ca.crt"
        } else {
            ""
        };
        let head = format!(
            "server:\n  listen: 127.0.0.1:0\n  workers: 1\n  max_body_bytes: {}\n{}  tls: {{cert_file: tls.crt, key_file: tls.key{client_ca}{}}}\ntelemetry: {{listen: 127.0.0.1:0, log_format: text}}\ncache: {}\n{}issuers:",
            opts.max_body_bytes, opts.server_extra, opts.tls_extra, opts.cache, opts.config_extra
        );
        let text = format!("{head}{issuers_yaml}");
        let path = write(dir.path(), "config.yaml", &text);
        let config =
            Prepared::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
        let running = server::start(&config, opts.clock.clone())
            .await
            .expect("server starts");
        if watch {
            running
                .watch_config(path.clone(), false)
                .expect("the config is watched");
        }
        let identity = opts
            .mtls
            .then(|| ca.client(opts.client_name, 2).expect("client cert"));
        let client = https_client(&ca.cert_pem, identity.as_ref());
        Harness {
            _dir: dir,
            ca,
            running,
            client,
            sent: Mutex::new(Vec::new()),
            config_path: path,
            config_head: head,
        }
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Replaces the config file (by rename, as an editor or a ConfigMap
    /// update does) with the same `server:`, `telemetry:` and `cache:` and
    /// these issuers.
    pub fn rewrite_config(&self, issuers_yaml: &str) {
        self.write_config(&format!("{}{issuers_yaml}", self.config_head));
    }

    /// Replaces the config file with `text`, whatever it is.
    pub fn write_config(&self, text: &str) {
        replace_file(self.dir(), "config.yaml", text);
    }

    /// A server for one dev issuer (RS256), ready to review its tokens.
    pub async fn with_dex(opts: Options) -> (Harness, TestIssuer) {
        let ca = new_ca();
        let issuer = TestIssuer::start(&ca, Algorithm::RS256)
            .await
            .expect("dev issuer");
        let h = Harness::start(ca, &dex_issuer_yaml("dex", issuer.url()), opts).await;
        assert!(
            h.running.wait_ready(Duration::from_secs(10)).await,
            "issuer keys fetched"
        );
        (h, issuer)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.running.addr, path)
    }

    /// POSTs a body to a path; returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request reaches the server");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"unparsed": String::from_utf8_lossy(&bytes)}));
        (status, json)
    }

    /// A TokenReview the way the kube-apiserver sends one (`v1` or `v1beta1`).
    pub async fn review_as(&self, version: &str, token: &str, audiences: &[&str]) -> Value {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(token.to_owned());
        let version =
            ApiVersion::parse(&format!("authentication.k8s.io/{version}")).expect("v1 or v1beta1");
        let body = apiserver_request(version, token, audiences);
        let (status, answer) = self.post("/authenticate", body.to_string()).await;
        assert_eq!(status, 200, "a TokenReview always gets 200: {answer}");
        answer
    }

    /// A v1 review with the apiserver's usual API audience.
    pub async fn review(&self, token: &str) -> Value {
        self.review_as("v1", token, &[API_AUDIENCE]).await
    }

    pub async fn telemetry(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("http://{}{}", self.running.telemetry_addr, path))
            .await
            .expect("telemetry answers");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("telemetry body"))
    }

    /// TokenReviews counted with these labels (issuer, outcome, reason).
    pub async fn reviews(&self, labels: &[(&str, &str)]) -> f64 {
        self.metric("authn_webhook_tokenreviews_total", labels)
            .await
    }

    /// Certificate reloads with this result (success, error).
    pub async fn reloads(&self, result: &str) -> f64 {
        self.metric("authn_webhook_tls_reloads_total", &[("result", result)])
            .await
    }

    /// The sum of every series of `name` whose labels include `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (_, text) = self.telemetry("/metrics").await;
        metric_value(&text, name, labels)
    }
}

pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Dex claims for a typical PCD-K user, valid now.
pub fn jane(issuer_url: &str) -> Value {
    dex_claims(
        issuer_url,
        unix_now(),
        Some("jane@example.com"),
        "jane",
        &["pcd-default-service-admin", "developers"],
    )
}

/// EFA's `netadmin` with the roles the stand-in and the tests' tokens carry,
/// mapped with the `efa:` prefixes.
pub fn assert_efa_netadmin(answer: &Value) {
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(answer["status"]["user"]["username"], "efa:netadmin");
    assert_eq!(
        answer["status"]["user"]["groups"],
        json!(["efa:FabricAdmin", "efa:NetworkOperator"])
    );
}

pub fn assert_rejected(answer: &Value) {
    assert_eq!(answer["status"]["authenticated"], json!(false), "{answer}");
    assert!(
        answer["status"].get("error").is_none(),
        "a definite rejection carries no status.error (so the apiserver caches it): {answer}"
    );
    assert!(answer["status"].get("user").is_none(), "{answer}");
}

pub fn assert_unchecked(answer: &Value) {
    assert_eq!(answer["status"]["authenticated"], json!(false), "{answer}");
    assert!(
        answer["status"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "a token that could not be checked carries status.error: {answer}"
    );
}

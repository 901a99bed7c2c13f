//! The two listeners: TokenReviews over TLS, and plain-HTTP telemetry
//! (/metrics, /healthz, /readyz). `start` gives back a handle so tests and the
//! demo run the real server in-process.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use arc_swap::ArcSwap;
use futures_util::StreamExt;
use serde::Serialize;

use crate::keys::remote::KeysSource;
use crate::metrics::Metrics;
use crate::prepare::Prepared;
use crate::reload::{ConfigWatcher, Live, RefreshLoops};
use crate::review::{ApiError, Reviewer};
use crate::tls;
use kube_authn_common::clock::Clock;

/// The TokenReview paths: the kube-apiserver posts to whatever its kubeconfig
/// names, so the API-style paths work too. The body decides the version.
pub(crate) const REVIEW_PATHS: [&str; 3] = [
    "/authenticate",
    "/apis/authentication.k8s.io/v1/tokenreviews",
    "/apis/authentication.k8s.io/v1beta1/tokenreviews",
];

pub(crate) struct AppState {
    /// What the config in use decides: a request loads it once, at its
    /// start, and finishes with it whatever a reload stores meanwhile.
    pub(crate) live: ArcSwap<Live>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Clock,
    /// Set on shutdown: /readyz turns red so load balancers stop sending.
    pub(crate) draining: AtomicBool,
    /// Fixed at start (actix reads it when building the server).
    pub(crate) read_timeout: Duration,
    /// Reviews in progress, over every connection and HTTP/2 stream, and
    /// how many may be (`server.max_concurrent_reviews`, fixed at start).
    in_flight: AtomicUsize,
    max_concurrent_reviews: usize,
    pub(crate) refresh: RefreshLoops,
}

impl AppState {
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Issuer(#[from] crate::review::SetupError),
    #[error("cannot watch the config for changes: {0}")]
    Watch(std::io::Error),
    #[error("state_dir: cannot create {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub struct Running {
    pub addr: SocketAddr,
    pub telemetry_addr: SocketAddr,
    pub(crate) state: Arc<AppState>,
    server: ServerHandle,
    telemetry: ServerHandle,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The settings only a restart changes, as this process started with.
    started: Arc<crate::reload::RestartOnly>,
    /// The files the config in use at start was read from.
    files: crate::prepare::FilesRead,
}

/// Binds both listeners and starts serving; issuer keys are fetched in the
/// background, so an issuer that is down holds up nobody. Must run inside a
/// multi-thread tokio runtime.
pub async fn start(config: &Prepared, clock: Clock) -> Result<Running, StartError> {
    let runtime = tokio::runtime::Handle::current();
    if let Some(dir) = &config.state_dir {
        create_state_dir(dir)?;
    }
    let reviewer = Reviewer::from_config(config, clock.clone(), &runtime)?;
    let server_tls = tls::server_tls(&config.server.tls, reviewer.metrics.clone())?;
    let mut tasks = vec![tokio::spawn(server_tls.reloader.clone().watch())];
    let refresh = RefreshLoops::new(runtime.clone());
    refresh.sync(&reviewer.verifier);
    reviewer
        .metrics
        .config_loaded(&crate::reload::hash_label(&config.files), clock.now());
    if let Some(w) = &reviewer.revocation_watcher {
        tasks.push(tokio::spawn(w.clone().watch()));
    }
    let state = Arc::new(AppState {
        metrics: reviewer.metrics.clone(),
        clock: clock.clone(),
        live: ArcSwap::from_pointee(Live::new(reviewer, config)),
        draining: AtomicBool::new(false),
        read_timeout: config.server.read_timeout,
        in_flight: AtomicUsize::new(0),
        max_concurrent_reviews: config.server.max_concurrent_reviews,
        refresh,
    });

    let listener = bind(config.server.listen)?;
    let addr = local_addr(&listener, config.server.listen)?;
    let workers = config.server.workers;
    let data = web::Data::from(state.clone());
    let review_data = data.clone();
    let server = actix_web::HttpServer::new(move || {
        let mut app = actix_web::App::new().app_data(review_data.clone());
        for path in REVIEW_PATHS {
            app = app.route(path, web::post().to(review));
        }
        app.default_service(web::to(not_found))
    })
    .workers(workers)
    // actix counts connections per worker.
    .max_connections(config.server.max_connections.div_ceil(workers).max(1))
    .on_connect({
        let metrics = state.metrics.clone();
        move |conn, ext| on_connect(&metrics, conn, ext)
    })
    // Slow senders (slowloris) are cut: headers within read_timeout here, the
    // body within read_timeout in `review`, the handshake within 5 s.
    .client_request_timeout(config.server.read_timeout)
    .client_disconnect_timeout(Duration::from_secs(2))
    .tls_handshake_timeout(Duration::from_secs(5))
    .shutdown_timeout(config.server.shutdown_grace.as_secs())
    .disable_signals()
    .listen_rustls_0_23(listener, server_tls.config)
    .map_err(|source| StartError::Bind {
        addr: config.server.listen,
        source,
    })?
    .run();
    let server_handle = server.handle();

    let tlistener = bind(config.telemetry.listen)?;
    let telemetry_addr = local_addr(&tlistener, config.telemetry.listen)?;
    let telemetry_data = data.clone();
    let telemetry = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(telemetry_data.clone())
            .route("/metrics", web::get().to(metrics_endpoint))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .shutdown_timeout(1)
    .disable_signals()
    .listen(tlistener)
    .map_err(|source| StartError::Bind {
        addr: config.telemetry.listen,
        source,
    })?
    .run();
    let telemetry_handle = telemetry.handle();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "TokenReview server stopped with an error");
        }
    }));
    tasks.push(tokio::spawn(async move {
        if let Err(e) = telemetry.await {
            tracing::error!(error = %e, "telemetry server stopped with an error");
        }
    }));
    let issuers: Vec<String> = config
        .issuers
        .iter()
        .map(|i| {
            format!(
                "{} ({}, {})",
                i.spec.name,
                i.spec.kind.as_str(),
                i.spec.url.as_deref().unwrap_or("tokens without iss")
            )
        })
        .collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        %addr,
        %telemetry_addr,
        issuers = state.live.load().reviewer.verifier.issuers().len(),
        issuer_list = issuers.join(", "),
        mtls = config.server.tls.client_ca_file.is_some(),
        allowed_client_names = config.server.tls.allowed_client_names.join(","),
        cache_max_entries = config.cache.max_entries,
        "serving TokenReviews"
    );
    Ok(Running {
        addr,
        telemetry_addr,
        state,
        server: server_handle,
        telemetry: telemetry_handle,
        tasks: std::sync::Mutex::new(tasks),
        started: Arc::new(crate::reload::RestartOnly::of(config)),
        files: config.files.clone(),
    })
}

/// `state_dir` when it does not exist yet (check-config made sure its parent
/// does): readable by the webhook only, as the keys are its trust.
fn create_state_dir(dir: &std::path::Path) -> Result<(), StartError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| StartError::StateDir {
        path: dir.to_owned(),
        source,
    })
}

fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(l: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

impl Running {
    /// True once every issuer has usable keys: more than `/readyz` asks,
    /// which only waits for the `required` ones.
    pub(crate) fn ready(&self) -> bool {
        !self.state.draining.load(Ordering::SeqCst)
            && issuer_states(&self.state).iter().all(|i| i.ready)
    }

    /// Whether every issuer has usable keys within `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.ready() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.ready()
    }

    /// From now on the config at `path` (the one this server was started
    /// from) and every file it names are read again when they change
    /// (checked every `server.tls.reload_interval`) and, with `on_sighup`,
    /// whenever the process gets SIGHUP. A valid new config replaces the one
    /// in use; an invalid one is logged and counted, and the old one keeps
    /// serving. Must run inside the server's runtime.
    pub fn watch_config(
        &self,
        path: std::path::PathBuf,
        on_sighup: bool,
    ) -> Result<(), std::io::Error> {
        let (watcher, interval) = ConfigWatcher::new(
            path,
            self.files.clone(),
            self.state.clone(),
            self.started.clone(),
        )?;
        let task = watcher.spawn(interval, on_sighup)?;
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        Ok(())
    }

    /// Stops accepting, turns /readyz red, lets in-flight reviews finish
    /// (within the shutdown timeout), then stops telemetry, config watching
    /// and key refresh.
    pub async fn shutdown(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
        self.server.stop(true).await;
        // Every review has been answered: its audit line is written out
        // before the process may exit.
        let state = self.state.clone();
        let _ = tokio::task::spawn_blocking(move || state.live.load().reviewer.flush_audit()).await;
        self.telemetry.stop(true).await;
        for t in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            t.abort();
        }
        self.state.refresh.stop_all();
        tracing::info!("stopped");
    }
}

/// Names of the client certificate (subject CN and DNS SANs), or why none of
/// them is trusted, kept per connection so requests can be checked against
/// `allowed_client_names`.
#[derive(Clone, Debug)]
struct ClientNames(Result<Vec<String>, tls::UntrustedNames>, Option<Arc<str>>);

impl ClientNames {
    fn of(names: Result<Vec<String>, tls::UntrustedNames>) -> ClientNames {
        // The caller the audit trail names, shared by the connection's
        // reviews rather than copied into each.
        let caller = names
            .as_ref()
            .ok()
            .and_then(|n| n.first())
            .map(|n| Arc::from(n.as_str()));
        ClientNames(names, caller)
    }
}

/// Counts the connection by the protocol ALPN chose, and keeps the names
/// of its client certificate for `check_caller`.
fn on_connect(metrics: &Metrics, conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let Some(stream) = conn.downcast_ref::<Tls>() else {
        return;
    };
    let tls = stream.get_ref().1;
    // actix serves h2 exactly when ALPN chose it, else HTTP/1.1.
    let protocol = match tls.alpn_protocol() {
        Some(b"h2") => "h2",
        _ => "http/1.1",
    };
    metrics.connections.with_label_values(&[protocol]).inc();
    if let Some(cert) = tls.peer_certificates().and_then(|chain| chain.first()) {
        ext.insert(ClientNames::of(tls::certificate_names(cert)));
    }
}

/// Whether the caller may ask: a client certificate with more than one
/// subject CN never may; otherwise, with `allowed_client_names`, one of its
/// names must be listed.
fn check_caller(req: &HttpRequest, allowed: &[String]) -> Result<(), ApiError> {
    let names = req.conn_data::<ClientNames>().map(|n| &n.0);
    match names {
        Some(Err(tls::UntrustedNames::SeveralCommonNames(n))) => {
            Err(ApiError::SeveralClientCommonNames(*n))
        }
        _ if allowed.is_empty() => Ok(()),
        Some(Ok(names)) if names.iter().any(|n| allowed.contains(n)) => Ok(()),
        _ => Err(ApiError::Forbidden),
    }
}

async fn read_body(
    req: &HttpRequest,
    payload: &mut web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(4096).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn review(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Bounds the reviews in progress whatever the protocol: HTTP/1.1 has one
    // per connection (max_connections), but an HTTP/2 connection may open any
    // number of streams (actix-web sets no SETTINGS_MAX_CONCURRENT_STREAMS).
    let Some(_slot) = Slot::take(&state.in_flight, state.max_concurrent_reviews) else {
        let limit = state.max_concurrent_reviews;
        return Err(refuse(&state, &req, ApiError::Busy { limit }));
    };
    // The config this request is answered with, start to finish.
    let live = state.live.load_full();
    let result = async {
        check_caller(&req, &live.allowed_client_names)?;
        let body = tokio::time::timeout(
            state.read_timeout,
            read_body(&req, &mut payload, live.max_body_bytes),
        )
        .await
        .map_err(|_| ApiError::RequestTimeout)??;
        let caller = req.conn_data::<ClientNames>().and_then(|n| n.1.clone());
        live.reviewer.review_body_from(&body, caller).await
    }
    .await;
    match result {
        Ok(answer) => Ok(HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, "application/json"))
            .body(answer)),
        Err(e) => Err(refuse(&state, &req, e)),
    }
}

/// A review in progress, counted until dropped.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(count: &'a AtomicUsize, limit: usize) -> Option<Slot<'a>> {
        if count.fetch_add(1, Ordering::AcqRel) >= limit {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(count))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn not_found(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Err(refuse(&state, &req, ApiError::NotFound))
}

/// Counts and logs a request that gets no TokenReview answer. Client errors
/// go to `bad_requests_total{code}`; our own faults were counted as reviews
/// (outcome `error`) where they happened.
fn refuse(state: &AppState, req: &HttpRequest, e: ApiError) -> ApiError {
    let code = e.status_code();
    if code.is_client_error() {
        state
            .metrics()
            .bad_requests
            .with_label_values(&[code.as_str()])
            .inc();
    }
    // The path, never the query or the body: a token could sit in either.
    let path = crate::review::printable(req.path());
    if code == StatusCode::FORBIDDEN {
        // Who was turned away: the names allowed_client_names is checked
        // against (from a certificate our client CA signed).
        let client = match req.conn_data::<ClientNames>().map(|n| &n.0) {
            Some(Ok(names)) if !names.is_empty() => names
                .iter()
                .take(8)
                .map(|n| crate::review::printable(n))
                .collect::<Vec<_>>()
                .join(","),
            Some(Ok(_)) => "(a certificate with no CN or DNS name)".to_owned(),
            Some(Err(_)) => "(a certificate with several CNs)".to_owned(),
            None => "(no client certificate)".to_owned(),
        };
        tracing::info!(error = %e, code = code.as_u16(), method = %req.method(), path, client, "refused a request");
    } else {
        tracing::info!(error = %e, code = code.as_u16(), method = %req.method(), path, "refused a request");
    }
    e
}

/// The one place errors become HTTP: a Kubernetes `Status` object, which
/// client-go and kubectl know how to show.
impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Forbidden | ApiError::SeveralClientCommonNames(_) => StatusCode::FORBIDDEN,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = self.status_code();
        let reason = match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::PayloadTooLarge { .. } => "RequestEntityTooLarge",
            ApiError::NotFound => "NotFound",
            ApiError::Forbidden | ApiError::SeveralClientCommonNames(_) => "Forbidden",
            ApiError::RequestTimeout => "Timeout",
            ApiError::Busy { .. } => "TooManyRequests",
            ApiError::Internal(_) => "InternalError",
        };
        let mut response = HttpResponse::build(code);
        if matches!(self, ApiError::Busy { .. }) {
            response.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
        }
        response.json(serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        }))
    }
}

async fn metrics_endpoint(state: web::Data<AppState>) -> HttpResponse {
    let m = state.metrics();
    let live = state.live.load();
    // Read from the counter the reviews keep, not kept in the gauge by each.
    m.reviews_in_progress
        .set(state.in_flight.load(Ordering::Relaxed) as i64);
    m.cache_entries
        .set(live.reviewer.cache.entry_count() as i64);
    for issuer in live.reviewer.verifier.issuers() {
        m.jwks_keys
            .with_label_values(&[&issuer.name])
            .set(issuer.key_count() as i64);
    }
    for i in issuer_states(&state) {
        for s in KeysSource::ALL {
            m.issuer_keys_source
                .with_label_values(&[&i.name, s.as_str()])
                .set(i64::from(s.as_str() == i.source));
        }
        match i.key_age_seconds {
            Some(age) => m
                .issuer_keys_age
                .with_label_values(&[&i.name])
                .set(age as f64),
            None => {
                let _ = m.issuer_keys_age.remove_label_values(&[&i.name]);
            }
        }
    }
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .body(m.encode())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok\n")
}

/// The body of `/readyz`.
#[derive(Serialize)]
pub(crate) struct Readiness {
    /// Serving, not draining, and every `required` issuer has usable keys.
    pub(crate) ready: bool,
    pub(crate) draining: bool,
    pub(crate) issuers: Vec<IssuerState>,
}

#[derive(Serialize)]
pub(crate) struct IssuerState {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    /// Whether readiness waits for this issuer's keys.
    pub(crate) required: bool,
    /// Whether it has usable keys: its tokens can be checked.
    pub(crate) ready: bool,
    /// Usable keys.
    pub(crate) keys: usize,
    /// Where the keys come from: fetched, snapshot (state_dir), static, none.
    pub(crate) source: &'static str,
    /// Seconds since the keys in use were fetched (absent for static keys
    /// or before a first good fetch); for a snapshot, since the run that
    /// saved it fetched them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key_age_seconds: Option<u64>,
    /// The last fetch's failure (also while a snapshot or the last good keys
    /// are in use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_error: Option<String>,
}

/// Every issuer's state at the clock's `now`.
pub(crate) fn issuer_states(state: &AppState) -> Vec<IssuerState> {
    let now = state.clock.now();
    state
        .live
        .load()
        .reviewer
        .verifier
        .issuers()
        .iter()
        .map(|i| {
            let snap = i.remote.as_ref().map(|r| r.snapshot());
            let keys = i.usable_key_count(now);
            let remote_source = snap
                .as_ref()
                .map(|s| s.source)
                .filter(|s| *s != KeysSource::None);
            let source = match remote_source {
                Some(s) => s,
                None if keys > 0 => KeysSource::Static,
                None => KeysSource::None,
            };
            IssuerState {
                name: i.name.to_string(),
                kind: i.kind.as_str(),
                required: i.required,
                ready: keys > 0,
                keys,
                source: source.as_str(),
                key_age_seconds: snap
                    .as_ref()
                    .filter(|_| remote_source.is_some())
                    .and_then(|s| s.last_success)
                    .map(|t| now.saturating_sub(t)),
                last_error: snap
                    .as_ref()
                    .and_then(|s| s.last_error.as_ref())
                    .map(|e| e.to_string()),
            }
        })
        .collect()
}

/// Ready once the config is loaded and the listener serves (this runs on
/// it), unless draining or an issuer marked `required` has no usable keys:
/// an issuer that is down makes only its own tokens "could not check".
pub(crate) fn readiness(state: &AppState) -> Readiness {
    let issuers = issuer_states(state);
    let draining = state.draining.load(Ordering::SeqCst);
    Readiness {
        ready: !draining && issuers.iter().all(|i| i.ready || !i.required),
        draining,
        issuers,
    }
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let r = readiness(&state);
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(code).json(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_faults_are_500s_never_400s() {
        let e = ApiError::Internal("cannot encode the answer".to_owned());
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.status_code().is_client_error());
        assert_eq!(e.error_response().status(), 500);
    }
}

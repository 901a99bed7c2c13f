//! Every metric the service exports, in one registry. Label values come from
//! the config (issuer names) or fixed sets (outcomes, reasons), so series stay
//! bounded whatever the tokens say.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub(crate) tokenreviews: IntCounterVec,
    pub(crate) duration: HistogramVec,
    pub cache_lookups: IntCounterVec,
    pub(crate) cache_entries: IntGauge,
    pub(crate) jwks_fetches: IntCounterVec,
    pub(crate) jwks_keys: IntGaugeVec,
    pub(crate) jwks_last_success: GaugeVec,
    pub(crate) jwks_skipped_keys: IntGaugeVec,
    pub(crate) jwks_max_key_age: GaugeVec,
    pub(crate) efa_cert_expiry: GaugeVec,
    pub(crate) bad_requests: IntCounterVec,
    pub(crate) connections: IntCounterVec,
    pub(crate) reviews_in_progress: IntGauge,
    pub(crate) tls_reloads: IntCounterVec,
    pub(crate) config_reloads: IntCounterVec,
    pub(crate) config_last_reload_success: Gauge,
    pub(crate) config_info: IntGaugeVec,
    pub(crate) build_info: IntGaugeVec,
    pub(crate) start_time: Gauge,
    pub(crate) tls_cert_expiry: Gauge,
    pub(crate) tls_cert_expiry_errors: IntCounter,
    pub(crate) issuer_keys_source: IntGaugeVec,
    pub(crate) issuer_keys_age: GaugeVec,
    pub(crate) issuer_required: IntGaugeVec,
    pub(crate) key_snapshot_loads: IntCounterVec,
    pub(crate) key_snapshot_writes: IntCounterVec,
    pub(crate) revoked: IntCounterVec,
    pub(crate) revocation_reloads: IntCounterVec,
    pub(crate) revocation_entries: IntGauge,
    pub(crate) revocation_last_success: Gauge,
}

impl Metrics {
    // Every name, help text and label set below is a constant; prometheus
    // refuses one only if it is malformed or registered twice, which the
    // first test to start a server would show. No input reaches this.
    #[allow(clippy::expect_used)]
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            tokenreviews: IntCounterVec::new(
                Opts::new(
                    "authn_webhook_tokenreviews_total",
                    "TokenReviews answered, by issuer, outcome (authenticated, rejected, error) and reason.",
                ),
                &["issuer", "outcome", "reason"],
            )
            .expect("static metric definition"),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "authn_webhook_tokenreview_duration_seconds",
                    "Time from a TokenReview body read to its answer encoded.",
                )
                .buckets(vec![
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["outcome"],
            )
            .expect("static metric definition"),
            cache_lookups: IntCounterVec::new(
                Opts::new(
                    "authn_webhook_cache_lookups_total",
                    "Token cache lookups by result (hit, miss).",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            cache_entries: IntGauge::new(
                "authn_webhook_cache_entries",
                "Entries in the token cache (verified identities and definite rejections).",
            )
            .expect("static metric definition"),
            jwks_fetches: IntCounterVec::new(
                Opts::new(
                    "authn_webhook_jwks_fetches_total",
                    "Key set fetches (discovery + JWKS) by issuer and result.",
                ),
                &["issuer", "result"],
            )
            .expect("static metric definition"),
            jwks_keys: IntGaugeVec::new(
                Opts::new(
                    "authn_webhook_jwks_keys",
                    "Signature keys in use per issuer (static and fetched).",
                ),
                &["issuer"],
            )
            .expect("static metric definition"),
            jwks_last_success: GaugeVec::new(
                Opts::new(
                    "authn_webhook_jwks_last_success_timestamp_seconds",
                    "Unix time of the last good key set per issuer (load time for static keys).",
                ),
                &["issuer"],
            )
            .expect("static metric definition"),
            jwks_skipped_keys: IntGaugeVec::new(
                Opts::new(
                    "authn_webhook_jwks_skipped_keys",
                    "Keys of the issuer's last fetched JWKS that were not loaded (unusable or unsupported: weak RSA, small-order or off-curve points, shared secrets...); the log says why.",
                ),
                &["issuer"],
            )
            .expect("static metric definition"),
            jwks_max_key_age: GaugeVec::new(
                Opts::new(
                    "authn_webhook_jwks_max_key_age_seconds",
                    "max_key_age of an issuer whose keys are fetched: once its last good fetch is older, its tokens cannot be checked.",
                ),
                &["issuer"],
            )
            .expect("static metric definition"),
            efa_cert_expiry: GaugeVec::new(
                Opts::new(
                    "authn_webhook_efa_certificate_expiry_timestamp_seconds",
                    "Unix time the earliest certificate in an issuer's keys.public_key_files expires (its notAfter).",
                ),
                &["issuer"],
            )
            .expect("static metric definition"),
            bad_requests: IntCounterVec::new(
                Opts::new(
                    "authn_webhook_bad_requests_total",
                    "Requests refused before any token was looked at, by HTTP status.",
                ),
                &["code"],
            )
            .expect("static metric definition"),
            connections: IntCounterVec::new(
                Opts::new(
                    "authn_webhook_connections_total",
                    "TokenReview connections accepted (TLS handshake done), by the protocol negotiated over ALPN (h2, http/1.1).",
                ),
                &["protocol"],
            )
            .expect("static metric definition"),
            reviews_in_progress: IntGauge::new(
                "authn_webhook_reviews_in_progress",
                "Reviews being answered at the scrape, over every connection and HTTP/2 stream; server.max_concurrent_reviews more are refused with 429.",
            )
            .expect("static metric definition"),
            tls_reloads: IntCounterVec::new(
                Opts::new(
                    "authn_webhook_tls_reloads_total",
                    "Changes to the serving certificate, key or client CA seen on disk, by result (success, error: old files kept).",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            config_reloads: IntCounterVec::new(
                Opts::new(
                    "authn_webhook_config_reloads_total",
                    "Loads of a changed config (or on SIGHUP) by result (success; failure: the last good config keeps serving, the log says why).",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            config_last_reload_success: Gauge::new(
                "authn_webhook_config_last_reload_success_timestamp_seconds",
                "Unix time the config in use was loaded (at start, or by the last successful reload).",
            )
            .expect("static metric definition"),
            config_info: IntGaugeVec::new(
                Opts::new(
                    "authn_webhook_config_info",
                    "Always 1, one series: hash is the SHA-256 (first 16 hex) over the paths and contents of the config file and every file it names.",
                ),
                &["hash"],
            )
            .expect("static metric definition"),
            build_info: IntGaugeVec::new(
                Opts::new("authn_webhook_build_info", "Always 1; the version label says which build runs."),
                &["version"],
            )
            .expect("static metric definition"),
            start_time: Gauge::new(
                "authn_webhook_start_time_seconds",
                "Unix time the process started serving.",
            )
            .expect("static metric definition"),
            tls_cert_expiry: Gauge::new(
                "authn_webhook_tls_certificate_expiry_timestamp_seconds",
                "Unix time the serving certificate expires (its notAfter); NaN if it could not be read (see authn_webhook_tls_certificate_expiry_errors_total).",
            )
            .expect("static metric definition"),
            tls_cert_expiry_errors: IntCounter::new(
                "authn_webhook_tls_certificate_expiry_errors_total",
                "Times the serving certificate's expiry could not be read; the expiry gauge is NaN until it can.",
            )
            .expect("static metric definition"),
            issuer_keys_source: IntGaugeVec::new(
                Opts::new(
                    "authn_webhook_issuer_keys_source",
                    "1 for where an issuer's keys in use come from (source: fetched, snapshot from state_dir, static files, none), 0 for the others.",
                ),
                &["issuer", "source"],
            )
            .expect("static metric definition"),
            issuer_keys_age: GaugeVec::new(
                Opts::new(
                    "authn_webhook_issuer_keys_age_seconds",
                    "Seconds since an issuer's keys in use were fetched (also for keys read from state_dir); absent before a first good fetch and for static keys.",
                ),
                &["issuer"],
            )
            .expect("static metric definition"),
            issuer_required: IntGaugeVec::new(
                Opts::new(
                    "authn_webhook_issuer_required",
                    "1 for an issuer marked required: /readyz is 503 while it has no usable keys.",
                ),
                &["issuer"],
            )
            .expect("static metric definition"),
            key_snapshot_loads: IntCounterVec::new(
                Opts::new(
                    "authn_webhook_key_snapshot_loads_total",
                    "Reads of an issuer's saved keys (state_dir) after its first fetch failed, by result (loaded, missing, checksum_mismatch, corrupt, issuer_mismatch, too_old, ...).",
                ),
                &["issuer", "result"],
            )
            .expect("static metric definition"),
            key_snapshot_writes: IntCounterVec::new(
                Opts::new(
                    "authn_webhook_key_snapshot_writes_total",
                    "Writes of an issuer's last good keys to state_dir, by result (success, error).",
                ),
                &["issuer", "result"],
            )
            .expect("static metric definition"),
            revoked: IntCounterVec::new(
                Opts::new(
                    "authn_webhook_revoked_total",
                    "Verified tokens refused by the revocation list, by issuer and entry kind (token, jti, subject, user, group, not_before).",
                ),
                &["issuer", "kind"],
            )
            .expect("static metric definition"),
            revocation_reloads: IntCounterVec::new(
                Opts::new(
                    "authn_webhook_revocation_reloads_total",
                    "Changes to the revocation list file seen on disk, by result (success, error: the last good list stays in use).",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            revocation_entries: IntGauge::new(
                "authn_webhook_revocation_entries",
                "Entries in the revocation list in use (expired ones included until the file drops them).",
            )
            .expect("static metric definition"),
            revocation_last_success: Gauge::new(
                "authn_webhook_revocation_last_success_timestamp_seconds",
                "Unix time the revocation list in use was loaded (or found missing at start: an empty list).",
            )
            .expect("static metric definition"),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.tokenreviews.clone()),
            Box::new(m.duration.clone()),
            Box::new(m.cache_lookups.clone()),
            Box::new(m.cache_entries.clone()),
            Box::new(m.jwks_fetches.clone()),
            Box::new(m.jwks_keys.clone()),
            Box::new(m.jwks_last_success.clone()),
            Box::new(m.jwks_skipped_keys.clone()),
            Box::new(m.jwks_max_key_age.clone()),
            Box::new(m.efa_cert_expiry.clone()),
            Box::new(m.bad_requests.clone()),
            Box::new(m.connections.clone()),
            Box::new(m.reviews_in_progress.clone()),
            Box::new(m.tls_reloads.clone()),
            Box::new(m.config_reloads.clone()),
            Box::new(m.config_last_reload_success.clone()),
            Box::new(m.config_info.clone()),
            Box::new(m.build_info.clone()),
            Box::new(m.start_time.clone()),
            Box::new(m.tls_cert_expiry.clone()),
            Box::new(m.tls_cert_expiry_errors.clone()),
            Box::new(m.issuer_keys_source.clone()),
            Box::new(m.issuer_keys_age.clone()),
            Box::new(m.issuer_required.clone()),
            Box::new(m.key_snapshot_loads.clone()),
            Box::new(m.key_snapshot_writes.clone()),
            Box::new(m.revoked.clone()),
            Box::new(m.revocation_reloads.clone()),
            Box::new(m.revocation_entries.clone()),
            Box::new(m.revocation_last_success.clone()),
        ];
        for c in collectors {
            m.registry
                .register(c)
                .expect("each metric is registered once");
        }
        // process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds, ...: read from /proc at each scrape.
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("the process collector is registered once");
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m.start_time
            .set(kube_authn_common::clock::unix_now() as f64);
        // Both results exist from the start so rate() works before the first hit.
        for r in ["hit", "miss"] {
            m.cache_lookups.with_label_values(&[r]);
        }
        for r in ["success", "error"] {
            m.tls_reloads.with_label_values(&[r]);
            m.revocation_reloads.with_label_values(&[r]);
        }
        for r in ["success", "failure"] {
            m.config_reloads.with_label_values(&[r]);
        }
        for outcome in ["authenticated", "rejected", "error"] {
            m.duration.with_label_values(&[outcome]);
        }
        for code in ["400", "403", "404", "408", "413", "429"] {
            m.bad_requests.with_label_values(&[code]);
        }
        for protocol in ["h2", "http/1.1"] {
            m.connections.with_label_values(&[protocol]);
        }
        m
    }

    /// Declares an issuer's series up front, so dashboards show zeroes rather
    /// than gaps before its first review.
    pub(crate) fn register_issuer(&self, issuer: &str) {
        self.jwks_keys.with_label_values(&[issuer]).set(0);
        self.tokenreviews
            .with_label_values(&[issuer, "authenticated", "ok"]);
    }

    /// The config now in use: its hash the one `config_info` series.
    pub(crate) fn config_loaded(&self, hash: &str, at: u64) {
        self.config_info.reset();
        self.config_info.with_label_values(&[hash]).set(1);
        self.config_last_reload_success.set(at as f64);
    }

    /// An issuer no longer configured: its per-issuer gauges go (counters
    /// stay, as Prometheus expects of them).
    pub(crate) fn forget_issuer(&self, issuer: &str) {
        for g in [&self.jwks_keys, &self.jwks_skipped_keys] {
            let _ = g.remove_label_values(&[issuer]);
        }
        for g in [
            &self.jwks_last_success,
            &self.jwks_max_key_age,
            &self.efa_cert_expiry,
        ] {
            let _ = g.remove_label_values(&[issuer]);
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Writing to a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

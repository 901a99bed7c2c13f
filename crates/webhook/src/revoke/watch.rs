//! The list in use, and the watcher that replaces it when its file changes:
//! polled every `server.tls.reload_interval` like the TLS files (a mounted
//! ConfigMap changes by an atomic swap of its `..data` symlink), validated
//! first, the last good list kept when the new text does not validate.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{LoadError, RevocationList};
use crate::metrics::Metrics;
use kube_authn_common::clock::Clock;

/// The list every review checks: one atomic load per review.
pub(crate) type Current = Arc<ArcSwap<RevocationList>>;

pub(crate) struct Watcher {
    file: PathBuf,
    current: Current,
    interval: Duration,
    metrics: Arc<Metrics>,
    clock: Clock,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The bytes of the list in use (`None`: no file yet).
    loaded: Option<Vec<u8>>,
    /// Bytes that did not validate, or why the file could not be read:
    /// reported once until they change.
    rejected: Option<Result<Vec<u8>, String>>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reload {
    Unchanged,
    Reloaded(usize),
    Rejected(String),
}

impl Watcher {
    /// The list in `file` as `serve` starts with it: an empty one (said in
    /// the log) when the file does not exist yet. `Err` when it exists but
    /// does not validate: like the config, the service does not start.
    pub(crate) fn start(
        file: PathBuf,
        interval: Duration,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Watcher, LoadError> {
        let (list, loaded) = match read_and_parse(&file) {
            Ok((bytes, list)) => (list, Some(bytes)),
            Err(e) if e.is_missing() => {
                tracing::info!(file = %file.display(), "no revocation list yet: starting with an empty one; it is read once it appears");
                (RevocationList::default(), None)
            }
            Err(e) => return Err(e),
        };
        tracing::info!(file = %file.display(), entries = list.len(), "revocation list loaded");
        let w = Watcher {
            file,
            current: Arc::new(ArcSwap::from_pointee(list)),
            interval,
            metrics,
            clock,
            state: Mutex::new(State {
                loaded,
                rejected: None,
            }),
        };
        w.record_success();
        Ok(w)
    }

    pub(crate) fn current(&self) -> Current {
        self.current.clone()
    }

    fn record_success(&self) {
        self.metrics
            .revocation_entries
            .set(self.current.load().len() as i64);
        self.metrics
            .revocation_last_success
            .set(self.clock.now() as f64);
    }

    /// Checks the file once.
    pub(crate) fn check(&self) -> Reload {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = match kube_authn_common::fs::read_bounded(&self.file) {
            Ok(b) => b,
            Err(e) => {
                // Never read yet: still waiting for it, nothing to report.
                if state.loaded.is_none() && e.kind() == std::io::ErrorKind::NotFound {
                    return Reload::Unchanged;
                }
                let why = format!("cannot read {}: {e}", self.file.display());
                if matches!(&state.rejected, Some(Err(w)) if *w == why) {
                    return Reload::Unchanged;
                }
                self.metrics
                    .revocation_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(error = %why, "revocation list cannot be read; the last good list stays in use");
                state.rejected = Some(Err(why.clone()));
                return Reload::Rejected(why);
            }
        };
        if state.loaded.as_ref() == Some(&bytes)
            || matches!(&state.rejected, Some(Ok(b)) if *b == bytes)
        {
            if matches!(state.rejected, Some(Err(_))) {
                state.rejected = None;
            }
            return Reload::Unchanged;
        }
        match parse_bytes(&bytes, &self.file) {
            Ok(list) => {
                let n = list.len();
                self.current.store(Arc::new(list));
                state.loaded = Some(bytes);
                state.rejected = None;
                self.record_success();
                self.metrics
                    .revocation_reloads
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(file = %self.file.display(), entries = n, "loaded a new revocation list");
                Reload::Reloaded(n)
            }
            Err(e) => {
                let why = e.to_string();
                state.rejected = Some(Ok(bytes));
                self.metrics
                    .revocation_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(error = %why, "new revocation list is not valid; the last good list stays in use");
                Reload::Rejected(why)
            }
        }
    }

    /// Checks every interval until the task is dropped.
    pub(crate) async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let this = self.clone();
            // A file read and a YAML parse: blocking work.
            let _ = tokio::task::spawn_blocking(move || this.check()).await;
        }
    }
}

fn read_and_parse(file: &std::path::Path) -> Result<(Vec<u8>, RevocationList), LoadError> {
    let bytes = kube_authn_common::fs::read_bounded(file).map_err(LoadError::Read)?;
    let list = parse_bytes(&bytes, file)?;
    Ok((bytes, list))
}

fn parse_bytes(bytes: &[u8], file: &std::path::Path) -> Result<RevocationList, LoadError> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        LoadError::Invalid(crate::config::ConfigError {
            file: file.to_owned(),
            problems: vec![crate::config::Problem {
                field: crate::config::FieldPath::root(),
                message: "not UTF-8 text".to_owned(),
            }],
        })
    })?;
    let (_, entries) = super::parse(text, file).map_err(LoadError::Invalid)?;
    Ok(RevocationList::new(entries))
}

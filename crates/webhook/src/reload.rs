//! Config changes without a restart. `serve` reads its config file and every
//! file it names again when one of them changes (polled every
//! `server.tls.reload_interval`, which also catches a ConfigMap's symlink
//! swap) and on SIGHUP, through the same `Prepared::load` that `serve` and
//! `check-config` start with. Only a config that loads without a problem
//! replaces the one in use, in one atomic store: a review loads the config
//! once, at its start, and finishes with it.
//!
//! What a reload keeps: an issuer whose settings and files did not change is
//! the same verifier (keys, refresh loop, cached verdicts; no fetch), the
//! cache unless its settings changed. An issuer changed only in what it does
//! with a verified token (claims, audiences...) keeps its key set too. What it drops at once: verifiers (and
//! their refresh loops) of issuers removed or changed, and with them every
//! verdict they cached (`review::cache` checks each entry's generation).
//! Settings the running server cannot change (`RestartOnly`) keep their old
//! value, and the log says a restart is needed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config;
use crate::http::AppState;
use crate::keys::remote::RemoteKeys;
use crate::prepare::{FilesRead, Prepared};
use crate::review::Reviewer;
use crate::verify::Verifier;

/// The parts of a config a request reads, swapped as one by a reload.
pub(crate) struct Live {
    pub(crate) reviewer: Reviewer,
    pub(crate) max_body_bytes: usize,
    /// Client certificate names allowed to ask (empty: any the CA signed).
    pub(crate) allowed_client_names: Vec<String>,
}

impl Live {
    pub(crate) fn new(reviewer: Reviewer, config: &Prepared) -> Live {
        Live {
            reviewer,
            max_body_bytes: config.server.max_body_bytes,
            allowed_client_names: config.server.tls.allowed_client_names.clone(),
        }
    }
}

/// `config_info{hash}`: the first 16 hex digits of the files' hash.
pub(crate) fn hash_label(files: &FilesRead) -> String {
    hex::encode(&files.hash()[..8])
}

/// Settings fixed when the server starts: listeners and their sockets,
/// worker threads, connection limits, timeouts actix was built with, the TLS
/// files' paths (their contents reload on their own), the log format, and
/// the reload interval itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestartOnly {
    server: config::Server,
    telemetry: config::Telemetry,
    /// The revocation list's watcher and the audit writer live as long as
    /// the process (`Reviewer::reloaded` keeps them).
    revocation: Option<std::path::PathBuf>,
    audit: Option<config::Audit>,
    /// Bytes of the audit salt file: a new salt would make the hashes of
    /// one person differ within one trail.
    audit_salt: Option<[u8; 32]>,
}

impl RestartOnly {
    pub(crate) fn of(config: &Prepared) -> RestartOnly {
        let mut server = config.server.clone();
        // These are read per request or per review: they change live.
        server.tls.allowed_client_names.clear();
        server.max_body_bytes = 0;
        server.request_timeout = Duration::ZERO;
        RestartOnly {
            server,
            telemetry: config.telemetry.clone(),
            revocation: config.revocation.clone(),
            audit: config.audit.clone(),
            audit_salt: config
                .audit_salt
                .as_ref()
                .map(|s| crate::review::sha256(&s.0)),
        }
    }

    /// The fields of `new` that differ from `self`, as written in the file.
    fn changed(&self, new: &RestartOnly) -> Vec<&'static str> {
        let (a, b) = (&self.server, &new.server);
        let mut out = Vec::new();
        let mut check = |differs: bool, field| {
            if differs {
                out.push(field);
            }
        };
        check(a.listen != b.listen, "server.listen");
        check(a.tls.cert_file != b.tls.cert_file, "server.tls.cert_file");
        check(a.tls.key_file != b.tls.key_file, "server.tls.key_file");
        check(
            a.tls.client_ca_file != b.tls.client_ca_file,
            "server.tls.client_ca_file",
        );
        check(
            a.tls.reload_interval != b.tls.reload_interval,
            "server.tls.reload_interval",
        );
        check(a.read_timeout != b.read_timeout, "server.read_timeout");
        check(
            a.shutdown_grace != b.shutdown_grace,
            "server.shutdown_grace",
        );
        check(
            a.max_connections != b.max_connections,
            "server.max_connections",
        );
        check(
            a.max_concurrent_reviews != b.max_concurrent_reviews,
            "server.max_concurrent_reviews",
        );
        check(a.workers != b.workers, "server.workers");
        check(
            self.telemetry.listen != new.telemetry.listen,
            "telemetry.listen",
        );
        check(
            self.telemetry.log_format != new.telemetry.log_format,
            "telemetry.log_format",
        );
        check(self.revocation != new.revocation, "revocation.file");
        check(
            self.audit != new.audit || self.audit_salt != new.audit_salt,
            "audit",
        );
        out
    }
}

/// The key refresh loop of each `RemoteKeys` in use: a reload stops the
/// loops of key sets no verifier uses any more and starts those of new ones;
/// a kept key set's loop runs on undisturbed.
pub(crate) struct RefreshLoops {
    runtime: tokio::runtime::Handle,
    /// By the key set's address; the Arc held here keeps that address from
    /// being reused while the entry exists.
    loops: Mutex<HashMap<usize, RefreshLoop>>,
}

/// A key set and the task that keeps it fresh.
type RefreshLoop = (Arc<RemoteKeys>, tokio::task::JoinHandle<()>);

impl RefreshLoops {
    pub(crate) fn new(runtime: tokio::runtime::Handle) -> RefreshLoops {
        RefreshLoops {
            runtime,
            loops: Mutex::new(HashMap::new()),
        }
    }

    /// Makes the running loops those of `verifier`'s key sets.
    pub(crate) fn sync(&self, verifier: &Verifier) {
        let in_use: HashMap<usize, &Arc<RemoteKeys>> = verifier
            .issuers()
            .iter()
            .filter_map(|i| i.remote.as_ref())
            .map(|r| (Arc::as_ptr(r) as usize, r))
            .collect();
        let mut loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        loops.retain(|at, (_, task)| {
            let keep = in_use.contains_key(at);
            if !keep {
                task.abort();
            }
            keep
        });
        for (at, remote) in in_use {
            loops.entry(at).or_insert_with(|| {
                let task = self.runtime.spawn(remote.clone().refresh_forever());
                (remote.clone(), task)
            });
        }
    }

    pub(crate) fn stop_all(&self) {
        let mut loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        for (_, (_, task)) in loops.drain() {
            task.abort();
        }
    }
}

/// What a reload attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// No file changed since the last attempt: nothing was loaded.
    Unchanged,
    /// Loaded, and it is the config in use already.
    Same,
    Reloaded,
    /// Not loaded: the last good config keeps serving.
    Failed(String),
}

pub(crate) struct ConfigWatcher {
    path: PathBuf,
    state: Arc<AppState>,
    started: Arc<RestartOnly>,
    runtime: tokio::runtime::Handle,
    /// One attempt at a time (the poll and SIGHUP can meet).
    progress: Mutex<Progress>,
}

struct Progress {
    /// The files as the last attempt read them, valid or not: unchanged,
    /// there is nothing to do (a broken config is not loaded, counted and
    /// logged again every interval).
    seen: FilesRead,
    /// The hash of the config in use.
    current: String,
    /// The last failure logged, so each distinct one is logged once.
    last_failure: Option<String>,
    /// The restart-only fields last warned about.
    restart_needed: Vec<&'static str>,
}

impl ConfigWatcher {
    /// A watcher for the config at `path` that `state` was started from,
    /// reading `files`; the interval to poll at.
    pub(crate) fn new(
        path: PathBuf,
        files: FilesRead,
        state: Arc<AppState>,
        started: Arc<RestartOnly>,
    ) -> Result<(Arc<ConfigWatcher>, Duration), std::io::Error> {
        let current = hash_label(&files);
        let seen = files;
        let interval = started.server.tls.reload_interval;
        let watcher = ConfigWatcher {
            path,
            state,
            started,
            runtime: tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?,
            progress: Mutex::new(Progress {
                seen,
                current,
                last_failure: None,
                restart_needed: Vec::new(),
            }),
        };
        Ok((Arc::new(watcher), interval))
    }

    /// Starts polling; with `on_sighup`, SIGHUP forces a load. The signal
    /// handler is in place when this returns.
    pub(crate) fn spawn(
        self: Arc<Self>,
        interval: Duration,
        on_sighup: bool,
    ) -> Result<tokio::task::JoinHandle<()>, std::io::Error> {
        #[cfg(unix)]
        let mut hup = if on_sighup {
            Some(tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            )?)
        } else {
            None
        };
        #[cfg(not(unix))]
        let _ = on_sighup;
        tracing::info!(
            config = %self.path.display(),
            interval_ms = interval.as_millis() as u64,
            sighup = on_sighup,
            "watching the config for changes"
        );
        let runtime = self.runtime.clone();
        Ok(runtime.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate: the config was just loaded.
            tick.tick().await;
            loop {
                #[cfg(unix)]
                let force = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = async {
                        match hup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                #[cfg(not(unix))]
                let force = {
                    tick.tick().await;
                    false
                };
                if force {
                    tracing::info!("SIGHUP: loading the config");
                }
                let this = self.clone();
                // File reads, PEM parsing and building HTTPS clients are
                // blocking work.
                let _ = tokio::task::spawn_blocking(move || this.check(force)).await;
            }
        }))
    }

    /// One attempt: when a file changed (or `force`), load the config and,
    /// if it is valid and new, put it in use.
    pub(crate) fn check(&self, force: bool) -> Outcome {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if !force && !progress.seen.changed() {
            return Outcome::Unchanged;
        }
        let (files, loaded) = Prepared::load_recorded(&self.path);
        progress.seen = files;
        let metrics = &self.state.metrics;
        let prepared = match loaded {
            Ok(p) => p,
            Err(e) => return self.failed(&mut progress, e.to_string()),
        };
        let hash = hash_label(&prepared.files);
        if hash == progress.current {
            if progress.last_failure.take().is_some() {
                tracing::info!(config = %self.path.display(), hash, "config valid again, and the same as the one in use");
            }
            return Outcome::Same;
        }
        let old = self.state.live.load_full();
        let reviewer = match old.reviewer.reloaded(&prepared, &self.runtime) {
            Ok(r) => r,
            Err(e) => return self.failed(&mut progress, e.to_string()),
        };
        let restart_needed = self.started.changed(&RestartOnly::of(&prepared));
        if !restart_needed.is_empty() && restart_needed != progress.restart_needed {
            tracing::warn!(
                config = %self.path.display(),
                fields = %restart_needed.join(", "),
                "these settings changed but take effect only at the next restart; their old values stay in use"
            );
        }
        progress.restart_needed = restart_needed;

        let old_issuers = old.reviewer.verifier.issuers();
        let new_issuers = reviewer.verifier.issuers();
        let kept = new_issuers
            .iter()
            .filter(|i| old.reviewer.verifier.is_live(i.generation))
            .count();
        for gone in old_issuers
            .iter()
            .filter(|o| !new_issuers.iter().any(|n| n.name == o.name))
        {
            metrics.forget_issuer(&gone.name);
        }
        let issuers = new_issuers.len();
        self.state.refresh.sync(&reviewer.verifier);
        let live = Live::new(reviewer, &prepared);
        self.state.live.store(Arc::new(live));
        metrics.config_loaded(&hash, self.state.clock.now());
        metrics.config_reloads.with_label_values(&["success"]).inc();
        tracing::info!(
            config = %self.path.display(),
            hash,
            issuers,
            kept,
            new = issuers - kept,
            removed = old_issuers.len().saturating_sub(kept),
            "config reloaded"
        );
        prepared.log_warnings();
        progress.current = hash;
        progress.last_failure = None;
        Outcome::Reloaded
    }

    fn failed(&self, progress: &mut Progress, why: String) -> Outcome {
        self.state
            .metrics
            .config_reloads
            .with_label_values(&["failure"])
            .inc();
        if progress.last_failure.as_deref() != Some(why.as_str()) {
            tracing::error!(
                config = %self.path.display(),
                error = %why,
                "the changed config is not valid; the last good config keeps serving"
            );
            progress.last_failure = Some(why.clone());
        }
        Outcome::Failed(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_authn_common::clock::Clock;

    fn prepared(dir: &std::path::Path, extra: &str) -> Prepared {
        let ca = crate::pki::Ca::new("test CA", 1).unwrap();
        let tls = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
        std::fs::write(dir.join("tls.crt"), &tls.cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &tls.key_pem).unwrap();
        if !dir.join("secret").exists() {
            std::fs::write(dir.join("secret"), "0123456789abcdef0123456789abcdef").unwrap();
        }
        let text = format!(
            "server:\n  listen: 127.0.0.1:8443\n{extra}  tls: {{cert_file: tls.crt, key_file: tls.key}}\nissuers:\n  - name: efa\n    kind: efa\n    allow_any_audience: true\n    keys: {{hmac_secret_file: secret}}\n    claims: {{username: {{prefix: \"efa:\"}}, groups: {{prefix: \"efa:\"}}}}\n"
        );
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).unwrap();
        Prepared::load(&path).unwrap()
    }

    /// An oidc issuer nobody answers for (a closed loopback port), besides
    /// the efa one.
    const OIDC: &str = "  - name: dex\n    kind: oidc\n    url: https://127.0.0.1:9/dex\n    audiences: [kubernetes]\n    claims: {username: {prefix: \"dex:\"}, groups: {prefix: \"dex:\"}}\n";

    fn with_oidc(dir: &std::path::Path, prefix: &str) -> Prepared {
        // Writes the TLS pair, the secret and the efa-only config.
        let _ = prepared(dir, "");
        let path = dir.join("config.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}{}", OIDC.replace("dex:", prefix))).unwrap();
        let with = Prepared::load(&path).unwrap();
        std::fs::write(&path, text).unwrap();
        with
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refresh_loops_follow_the_key_sets_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Handle::current();
        let first = with_oidc(dir.path(), "dex:");
        let reviewer = Reviewer::from_config(&first, Clock::System, &rt).unwrap();
        let loops = RefreshLoops::new(rt.clone());
        loops.sync(&reviewer.verifier);
        let running = |l: &RefreshLoops| {
            l.loops
                .lock()
                .unwrap()
                .values()
                .map(|(r, t)| (Arc::as_ptr(r) as usize, t.is_finished()))
                .collect::<Vec<_>>()
        };
        let before = running(&loops);
        assert_eq!(before.len(), 1, "one loop for dex, none for efa");

        // A new mapping for dex: the same key set, the same loop.
        let remapped = reviewer
            .reloaded(&with_oidc(dir.path(), "other:"), &rt)
            .unwrap();
        loops.sync(&remapped.verifier);
        assert_eq!(running(&loops), before);

        // dex removed: its loop is stopped.
        let task = {
            let map = loops.loops.lock().unwrap();
            map.values().next().unwrap().1.abort_handle()
        };
        let efa_only = remapped.reloaded(&prepared(dir.path(), ""), &rt).unwrap();
        loops.sync(&efa_only.verifier);
        assert!(running(&loops).is_empty());
        for _ in 0..200 {
            if task.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(task.is_finished(), "the removed issuer's loop ended");
    }

    #[test]
    fn only_settings_fixed_at_start_count_as_needing_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let start = RestartOnly::of(&prepared(dir.path(), ""));
        let live = RestartOnly::of(&prepared(
            dir.path(),
            "  max_body_bytes: 4096\n  request_timeout: 5s\n",
        ));
        assert_eq!(start.changed(&live), Vec::<&str>::new());
        let fixed = RestartOnly::of(&prepared(dir.path(), "  workers: 7\n  read_timeout: 3s\n"));
        assert_eq!(
            start.changed(&fixed),
            vec!["server.read_timeout", "server.workers"]
        );
    }

    #[test]
    fn every_file_read_is_recorded_and_a_change_to_any_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = prepared(dir.path(), "");
        // The config and the secret; the TLS pair is the TLS reloader's.
        assert_eq!(p.files.len(), 2);
        assert!(!p.files.changed());
        let hash = hash_label(&p.files);
        assert_eq!(hash.len(), 16);

        std::fs::write(dir.path().join("tls.crt"), "not watched here").unwrap();
        assert!(!p.files.changed());
        std::fs::write(
            dir.path().join("secret"),
            "another secret of 32 bytes or so",
        )
        .unwrap();
        assert!(p.files.changed());
        std::fs::remove_file(dir.path().join("secret")).unwrap();
        assert!(p.files.changed());

        // A failed load records what it could and could not read.
        let (files, loaded) = Prepared::load_recorded(&dir.path().join("config.yaml"));
        assert!(loaded.is_err());
        assert!(!files.changed(), "the same missing file is no change");
        assert_ne!(hash_label(&files), hash);
    }

    #[test]
    fn an_issuers_identity_is_its_settings_and_files_not_the_servers() {
        let dir = tempfile::tempdir().unwrap();
        let a = prepared(dir.path(), "").issuers.remove(0).identity;
        let same = prepared(dir.path(), "  workers: 3\n")
            .issuers
            .remove(0)
            .identity;
        assert_eq!(a, same, "server settings are not the issuer's");
        std::fs::write(
            dir.path().join("secret"),
            "another secret of 32 bytes or so",
        )
        .unwrap();
        let rekeyed = prepared(dir.path(), "").issuers.remove(0).identity;
        assert_ne!(a, rekeyed, "a key file's contents are part of it");
    }
}

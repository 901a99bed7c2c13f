//! The audit trail: one JSON line per TokenReview decision, apart from the
//! operational log (stdout with `"log_type": "audit"`, or a file of its own
//! rotated by size). Never the token: its fingerprint and SHA-256 only.
//!
//! A review hands the writer thread what it decided through a bounded
//! channel (the identity is an `Arc` the cache already holds), so a cache
//! hit pays a clock read and a channel send; the line is built, hashed and
//! written on the writer thread, in batches every `DRAIN_EVERY`. A full
//! channel makes reviews wait rather than lose lines. `flush` (on drain) writes out everything
//! sent before it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use zeroize::Zeroizing;

use crate::config::{self, AuditOutput};
use crate::review::cache::TokenHash;
use crate::verify::{Identity, jwt};

/// How often the writer thread writes out what reviews have queued.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// Unverified strings from a refused token are cut to this many characters.
const MAX_CLAIMED_CHARS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Decision {
    Authenticated,
    Refused,
    CouldNotCheck,
    Revoked,
}

/// One decision, as the review hands it over.
pub(crate) struct Event {
    pub(crate) time: SystemTime,
    pub(crate) caller: Option<Arc<str>>,
    pub(crate) issuer: Option<Arc<str>>,
    /// The verified identity (authenticated, revoked, or refused after
    /// verification for its audiences).
    pub(crate) identity: Option<Arc<Identity>>,
    /// For a refused token: what it claims, unverified.
    pub(crate) claimed: Option<Box<Claimed>>,
    pub(crate) decision: Decision,
    pub(crate) reason: &'static str,
    /// The revocation entry's kind and reason.
    pub(crate) revocation: Option<(&'static str, Option<Arc<str>>)>,
    pub(crate) cache: &'static str,
    pub(crate) api_version: &'static str,
    pub(crate) token: TokenHash,
}

/// A refused token's header and claims as it states them.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    kid: Option<String>,
    alg: Option<jsonwebtoken::Algorithm>,
    sub: Option<String>,
    jti: Option<String>,
}

impl Claimed {
    /// What a token that was not verified says about itself, bounded; nothing
    /// for one that is not a JWT.
    pub(crate) fn of(token: &str) -> Option<Box<Claimed>> {
        let j = jwt::split(token).ok()?;
        let cut = |s: &str| s.chars().take(MAX_CLAIMED_CHARS).collect::<String>();
        let mut c = Claimed {
            kid: j.kid.as_deref().map(cut),
            alg: Some(j.alg),
            ..Claimed::default()
        };
        if let Ok(claims) = jwt::Claims::parse(&j.payload) {
            let string = |name| match claims.get(name) {
                Some(serde_json::Value::String(s)) => Some(cut(&s)),
                _ => None,
            };
            c.sub = string("sub");
            c.jti = string("jti");
        }
        Some(Box::new(c))
    }
}

/// Events travel inline: a `Box` per event would be allocated by a review
/// and freed by the writer, and glibc's cross-thread frees contend on the
/// allocating thread's arena lock (what made the audit trail cost a cache hit
/// over a microsecond). A cache hit's event owns no heap memory of its own.
enum Msg {
    Event(Event),
    Flush(std::sync::mpsc::Sender<()>),
}

pub(crate) struct Audit {
    tx: SyncSender<Msg>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit.file {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot start the audit writer thread: {0}")]
    Thread(io::Error),
}

impl Audit {
    /// Opens the output and starts the writer thread. `salt`: usernames and
    /// groups are written as HMAC-SHA256 with it.
    pub(crate) fn start(
        cfg: &config::Audit,
        salt: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<Audit, AuditError> {
        let sink = match &cfg.output {
            AuditOutput::Stdout => Sink::Stdout(Vec::with_capacity(64 * 1024)),
            AuditOutput::File {
                path,
                max_bytes,
                max_files,
            } => {
                let file = open(path).map_err(|source| AuditError::Open {
                    path: path.clone(),
                    source,
                })?;
                let written = file.metadata().map(|m| m.len()).unwrap_or(0);
                Sink::File {
                    out: BufWriter::with_capacity(64 * 1024, file),
                    path: path.clone(),
                    written,
                    max_bytes: *max_bytes,
                    max_files: *max_files,
                }
            }
        };
        let key = salt.map(|s| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &s));
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue);
        std::thread::Builder::new()
            .name("audit-writer".to_owned())
            .spawn(move || {
                Writer {
                    sink,
                    key,
                    line: Vec::with_capacity(1024),
                    failing: false,
                }
                .run(rx)
            })
            .map_err(AuditError::Thread)?;
        Ok(Audit { tx })
    }

    /// Hands a decision to the writer; waits only while the queue is full.
    pub(crate) fn record(&self, event: Event) {
        // The writer only stops when the process does.
        let _ = self.tx.send(Msg::Event(event));
    }

    /// Writes out every decision recorded before; waits up to `limit`.
    pub(crate) fn flush(&self, limit: Duration) -> bool {
        let (ack, done) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(ack)).is_err() {
            return false;
        }
        done.recv_timeout(limit).is_ok()
    }
}

fn open(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

enum Sink {
    /// Lines batched and written to stdout whole, under its lock, so they
    /// never interleave with log lines.
    Stdout(Vec<u8>),
    File {
        out: BufWriter<File>,
        path: PathBuf,
        written: u64,
        max_bytes: u64,
        max_files: u32,
    },
}

impl Sink {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(buf) => {
                buf.extend_from_slice(line);
                if buf.len() >= 256 * 1024 {
                    self.flush()?;
                }
                Ok(())
            }
            Sink::File {
                out,
                path,
                written,
                max_bytes,
                max_files,
            } => {
                if *written > 0 && *written + line.len() as u64 > *max_bytes {
                    out.flush()?;
                    rotate(path, *max_files)?;
                    *out = BufWriter::with_capacity(64 * 1024, open(path)?);
                    *written = 0;
                }
                out.write_all(line)?;
                *written += line.len() as u64;
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(buf) => {
                if buf.is_empty() {
                    return Ok(());
                }
                let mut stdout = io::stdout().lock();
                let r = stdout.write_all(buf).and_then(|()| stdout.flush());
                buf.clear();
                r
            }
            Sink::File { out, .. } => out.flush(),
        }
    }
}

/// `path` becomes `path.1`, `path.1` becomes `path.2`..., the oldest past
/// `max_files` is dropped.
fn rotate(path: &Path, max_files: u32) -> io::Result<()> {
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    for n in (1..max_files).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1))?;
        }
    }
    std::fs::rename(path, numbered(1))
}

struct Writer {
    sink: Sink,
    key: Option<aws_lc_rs::hmac::Key>,
    /// The line being built, kept for the next one: the writer allocates
    /// nothing per line but the HMAC tags of hashed mode.
    line: Vec<u8>,
    /// Reported once until a write succeeds again.
    failing: bool,
}

impl Writer {
    /// Wakes every `DRAIN_EVERY`, writes out what the queue holds, sleeps
    /// again. It never waits on the channel itself: a review's send then
    /// never has a sleeping thread to wake (a system call each), which
    /// would cost a cache hit more than the rest of its audit line.
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            std::thread::sleep(DRAIN_EVERY);
            loop {
                match rx.try_recv() {
                    Ok(Msg::Event(e)) => {
                        let mut line = std::mem::take(&mut self.line);
                        line.clear();
                        self.write_json(&e, &mut line);
                        line.push(b'\n');
                        let r = self.sink.write_line(&line);
                        self.line = line;
                        self.report(r);
                    }
                    Ok(Msg::Flush(ack)) => {
                        let r = self.sink.flush();
                        self.report(r);
                        let _ = ack.send(());
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        let r = self.sink.flush();
                        self.report(r);
                        return;
                    }
                }
            }
            let r = self.sink.flush();
            self.report(r);
        }
    }

    fn report(&mut self, r: io::Result<()>) {
        match r {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::error!(error = %e, "cannot write the audit trail");
            }
            Err(_) => {}
        }
    }

    fn hmac(&self, value: &str) -> Option<String> {
        let key = self.key.as_ref()?;
        let tag = aws_lc_rs::hmac::sign(key, value.as_bytes());
        Some(hex::encode(&tag.as_ref()[..16]))
    }

    /// Appends `e` as one JSON object to `out`.
    fn write_json(&self, e: &Event, out: &mut Vec<u8>) {
        let id = e.identity.as_deref();
        let facts = id.map(|i| &i.facts);
        let claimed = e.claimed.as_ref();
        let hashed = self.key.is_some();
        let username = facts.map(|f| f.username());
        let groups = facts.map(Groups);
        let line = Line {
            log_type: "audit",
            time: Shown(humantime::format_rfc3339_millis(e.time)),
            caller: e.caller.as_deref(),
            decision: e.decision,
            reason: e.reason,
            revocation: e.revocation.as_ref().map(|(kind, reason)| Revocation {
                kind,
                reason: reason.as_deref(),
            }),
            issuer: e.issuer.as_deref(),
            verified: id.is_some(),
            kid: id
                .and_then(|i| i.key.as_ref())
                .and_then(|k| k.kid.as_deref())
                .or_else(|| claimed.and_then(|c| c.kid.as_deref())),
            alg: facts
                .and_then(|f| f.alg)
                .map(|a| Shown(Alg(a)))
                .or_else(|| claimed.and_then(|c| c.alg).map(|a| Shown(Alg(a)))),
            sub: facts
                .and_then(|f| f.sub())
                .or_else(|| claimed.and_then(|c| c.sub.as_deref())),
            jti: facts
                .and_then(|f| f.jti())
                .or_else(|| claimed.and_then(|c| c.jti.as_deref())),
            username: username.filter(|_| !hashed),
            groups: groups.filter(|_| !hashed),
            username_hmac: username.and_then(|u| self.hmac(u)),
            groups_hmac: groups.map(|gs| gs.0.groups().filter_map(|g| self.hmac(g)).collect()),
            cache: e.cache,
            api_version: e.api_version,
            token: Shown(Hex(&e.token[..4])),
            token_sha256: Shown(Hex(&e.token)),
        };
        // Strings, numbers and Display values that cannot fail: on a
        // failure anyway, whatever was appended is dropped, never half a line.
        let start = out.len();
        if serde_json::to_writer(&mut *out, &line).is_err() {
            out.truncate(start);
        }
    }
}

/// A verified identity's groups, as a JSON array.
#[derive(Clone, Copy)]
struct Groups<'a>(&'a crate::verify::TokenFacts);

impl Serialize for Groups<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.groups())
    }
}

/// A `Display` value written into the JSON string as it is formatted, with
/// no `String` in between.
struct Shown<T>(T);

impl<T: std::fmt::Display> Serialize for Shown<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Lower-case hex of at most 32 bytes (a SHA-256), encoded on the stack.
struct Hex<'a>(&'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 64];
        let bytes = self.0.get(..32).unwrap_or(self.0);
        let out = buf.get_mut(..bytes.len() * 2).ok_or(std::fmt::Error)?;
        hex::encode_to_slice(bytes, out).map_err(|_| std::fmt::Error)?;
        f.write_str(std::str::from_utf8(out).map_err(|_| std::fmt::Error)?)
    }
}

/// An algorithm by its JOSE name (`RS256`): jsonwebtoken's `Debug`.
struct Alg(jsonwebtoken::Algorithm);

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[derive(Serialize)]
struct Line<'a> {
    log_type: &'static str,
    time: Shown<humantime::Rfc3339Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caller: Option<&'a str>,
    decision: Decision,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    revocation: Option<Revocation<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
    /// Whether kid, alg, sub and jti come from a verified token; for a
    /// refused one they are what it claims.
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alg: Option<Shown<Alg>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<Groups<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username_hmac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups_hmac: Option<Vec<String>>,
    cache: &'static str,
    api_version: &'static str,
    token: Shown<Hex<'a>>,
    token_sha256: Shown<Hex<'a>>,
}

#[derive(Serialize)]
struct Revocation<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queued decisions are held inline (see `Msg`), so the default queue's
    /// memory, which the README states (about 3 MiB for 16,384), follows
    /// their size.
    #[test]
    fn a_queued_decision_stays_small() {
        let size = std::mem::size_of::<Msg>();
        assert!(size <= 192, "{size} bytes");
    }

    #[test]
    fn rotation_shifts_the_numbered_files_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        for (name, text) in [
            ("audit.log", "0"),
            ("audit.log.1", "1"),
            ("audit.log.2", "2"),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        rotate(&p, 2).unwrap();
        assert!(!p.exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("audit.log.1")).unwrap(),
            "0"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("audit.log.2")).unwrap(),
            "1"
        );
        assert!(!dir.path().join("audit.log.3").exists());
    }

    #[test]
    fn a_file_is_rotated_before_it_grows_past_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut sink = Sink::File {
            out: BufWriter::new(open(&path).unwrap()),
            path: path.clone(),
            written: 0,
            max_bytes: 10,
            max_files: 3,
        };
        for line in ["12345\n", "67890\n", "abcde\n"] {
            sink.write_line(line.as_bytes()).unwrap();
        }
        sink.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abcde\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.log.1")).unwrap(),
            "67890\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.log.2")).unwrap(),
            "12345\n"
        );
    }
}

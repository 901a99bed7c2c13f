//! `kube-authn-webhook explain`: why a token is (or is not) authenticated,
//! check by check, and what the kube-apiserver would be told. It runs the
//! review `serve` runs (`Reviewer::review_token_traced`: the same routing,
//! checks, refusal messages and answer encoding), after one bounded fetch of
//! the chosen issuer's keys. The token is never printed, logged or written:
//! only its fingerprint (the one the logs carry) is shown.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kube_authn_common::clock::Clock;
use zeroize::Zeroizing;

use crate::config::ConfigError;
use crate::prepare::Prepared;
use crate::review::{Reviewer, fingerprint, sha256};
use crate::verify::jwt::{self, MAX_TOKEN_BYTES};
use crate::verify::trace::{Outcome, Trace};
use crate::wire::ApiVersion;

/// The token would be authenticated.
pub const EXIT_AUTHENTICATED: u8 = 0;
/// The token would be refused (a definite "no" the kube-apiserver caches).
pub const EXIT_REFUSED: u8 = 1;
/// The token could not be checked (keys unavailable, the config, the token
/// file): `serve` would answer with `status.error`.
pub const EXIT_UNCHECKED: u8 = 2;

/// Why `explain` could not check at all (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot read the token from {path}: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{}: no token in it (the file holds the bearer token alone)", .path.display())]
    Empty { path: PathBuf },
    #[error(transparent)]
    Setup(#[from] crate::review::SetupError),
}

/// A token's explanation and the exit code it comes to.
#[derive(Debug)]
pub struct Explanation {
    pub text: String,
    pub code: u8,
}

/// Reads the token from a file, or from stdin for `-`: at most one byte more
/// than a token may have (so an oversized one is refused as such, not read
/// whole), surrounding whitespace (a trailing newline) removed. Wiped when
/// dropped.
pub fn read_token(source: &Path) -> Result<Zeroizing<String>, ExplainError> {
    let mut buf = Zeroizing::new(Vec::new());
    let limit = MAX_TOKEN_BYTES as u64 + 1;
    let result = if is_stdin(source) {
        std::io::stdin().lock().take(limit).read_to_end(&mut buf)
    } else {
        std::fs::File::open(source).and_then(|f| f.take(limit).read_to_end(&mut buf))
    };
    result.map_err(|e| ExplainError::Read {
        path: if is_stdin(source) {
            PathBuf::from("stdin")
        } else {
            source.to_owned()
        },
        source: e,
    })?;
    let token = Zeroizing::new(String::from_utf8_lossy(&buf).trim().to_owned());
    if token.is_empty() {
        return Err(ExplainError::Empty {
            path: source.to_owned(),
        });
    }
    Ok(token)
}

fn is_stdin(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// Explains `token` under `config` at `clock`'s time, as a review with
/// `audiences` in its spec (the kube-apiserver's audiences; empty: none).
/// Fetches the keys of the issuer the token is routed to, once, within the
/// config's `request_timeout`; a token routed nowhere causes no traffic.
pub async fn explain(
    config: &Prepared,
    token: &str,
    audiences: &[String],
    clock: Clock,
) -> Result<Explanation, ExplainError> {
    let reviewer = Reviewer::from_config(config, clock, &tokio::runtime::Handle::current())?;
    let mut lines = vec![format!(
        "token: fingerprint {} (first 8 hex of its SHA-256, as in the logs), {} bytes; the token itself is never shown",
        fingerprint(&sha256(token.as_bytes())),
        token.len()
    )];
    if let Some(fetched) = fetch_keys(&reviewer, token, config).await {
        lines.push(fetched);
    }
    let mut trace = Trace::on();
    let answer = reviewer
        .review_token_traced(ApiVersion::V1, token, audiences, Instant::now(), &mut trace)
        .await;
    for step in trace.steps() {
        let mark = match step.outcome {
            Outcome::Passed => "ok  ",
            Outcome::Failed => "FAIL",
            Outcome::Note => "    ",
        };
        let mut line = format!("  {mark} {}: {}", step.check, step.detail);
        if let Some(e) = &step.error {
            if !step.detail.is_empty() {
                line.push_str(": ");
            }
            line.push_str(e);
        }
        lines.push(line);
    }
    let (code, verdict, body) = match answer {
        Ok(body) => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let status = &v["status"];
            let (code, verdict) = if status["authenticated"] == serde_json::Value::Bool(true) {
                (
                    EXIT_AUTHENTICATED,
                    format!(
                        "authenticated as {} (groups {})",
                        status["user"]["username"], status["user"]["groups"]
                    ),
                )
            } else if let Some(e) = status["error"].as_str() {
                (
                    EXIT_UNCHECKED,
                    format!("could not check: {e} (the kube-apiserver does not cache this)"),
                )
            } else {
                let why = trace
                    .steps()
                    .iter()
                    .rfind(|s| s.outcome == Outcome::Failed)
                    .map_or_else(String::new, |s| {
                        format!(" ({}): {}", s.check, s.error.as_deref().unwrap_or_default())
                    });
                (EXIT_REFUSED, format!("refused{why}"))
            };
            (
                code,
                verdict,
                serde_json::to_string_pretty(&v).unwrap_or_default(),
            )
        }
        Err(e) => (
            EXIT_UNCHECKED,
            format!("could not check: {e}"),
            "(no answer: the request would fail)".to_owned(),
        ),
    };
    lines.push(format!("result: {verdict}"));
    lines.push(
        "the kube-apiserver would be told (TokenReview authentication.k8s.io/v1):".to_owned(),
    );
    lines.push(body);
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(Explanation { text, code })
}

/// One fetch of the keys of the issuer `token` routes to, when they are
/// fetched at all: what `serve` has at start. Routing first (no I/O), so a
/// garbage token or an unknown issuer fetches nothing.
async fn fetch_keys(reviewer: &Reviewer, token: &str, config: &Prepared) -> Option<String> {
    let parts = jwt::split(token).ok()?;
    let claims = jwt::Claims::parse(&parts.payload).ok()?;
    let issuer = reviewer.verifier.route(&claims).ok()?;
    let remote = issuer.remote.as_ref()?;
    let deadline = config.server.request_timeout;
    Some(
        match tokio::time::timeout(deadline, remote.refresh()).await {
            Ok(Ok(_)) => format!(
                "keys: fetched issuer {}'s keys: {} key(s)",
                issuer.name,
                remote.snapshot().keys.len()
            ),
            Ok(Err(e)) => format!("keys: fetching issuer {}'s keys failed: {e}", issuer.name),
            Err(_) => format!(
                "keys: fetching issuer {}'s keys did not finish within {}",
                issuer.name,
                humantime::format_duration(deadline)
            ),
        },
    )
}

/// `explain`'s whole run: config, token, explanation, on a runtime of its
/// own; prints the explanation (or why there is none) and returns the exit
/// code.
pub fn run(config: &Path, token_file: &Path, audiences: &[String]) -> u8 {
    let outcome = (|| {
        let prepared = Prepared::load(config)?;
        let token = read_token(token_file)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(ExplainError::Runtime)?;
        rt.block_on(explain(&prepared, &token, audiences, Clock::System))
    })();
    match outcome {
        Ok(e) => {
            print!("{}", e.text);
            e.code
        }
        Err(e) => {
            let msg = e.to_string();
            eprint!("{msg}");
            if !msg.ends_with('\n') {
                eprintln!();
            }
            EXIT_UNCHECKED
        }
    }
}

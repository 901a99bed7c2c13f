//! `kube-authn-webhook revoke`: adds an entry to the revocation list file,
//! takes one out (`--remove`), or prints the list (`--show`). The file is
//! validated before and after, and replaced atomically, so the webhook
//! watching it never reads half a list. A token is never printed or
//! stored: `--token-file` reads it to compute its SHA-256.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube_authn_common::clock::unix_now;
use kube_authn_common::fs::{Existing, MAX_FILE_BYTES, write_atomic};

use crate::config::{self, Config, Problems};
use crate::revoke::{self, LoadError, RawEntry, RawList, Target};

/// Bounds a token read from a file or stdin, as the webhook bounds tokens.
const MAX_TOKEN_BYTES: u64 = 256 * 1024;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").args(["sub", "user", "group", "token_file", "token_sha256", "jti", "not_before"]).multiple(true)))]
pub struct Args {
    /// The revocation list file (the one `revocation.file` names); created when missing.
    #[arg(long)]
    list: PathBuf,
    /// Print the list and exit.
    #[arg(long, conflicts_with_all = ["what", "remove", "expires", "reason"])]
    show: bool,
    /// Take the entry the other options name out, instead of adding it.
    #[arg(long, requires = "what", conflicts_with_all = ["expires", "reason"])]
    remove: bool,
    /// A subject (the token's `sub`) of --issuer; with --not-before, only its tokens issued before.
    #[arg(long)]
    sub: Option<String>,
    /// A username after mapping, prefix included (as the TokenReview answer names it).
    #[arg(long)]
    user: Option<String>,
    /// A group after mapping, prefix included.
    #[arg(long)]
    group: Option<String>,
    /// A file holding the token (`-`: stdin); only its SHA-256 is kept.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The token's SHA-256 (64 hex characters, the audit trail's `token_sha256`).
    #[arg(long)]
    token_sha256: Option<String>,
    /// A token's `jti` claim, of --issuer.
    #[arg(long)]
    jti: Option<String>,
    /// Tokens of --issuer (or of its --sub) issued before this RFC 3339 time, or `now`.
    #[arg(long)]
    not_before: Option<String>,
    /// The issuer's name in the config, for --sub, --jti and --not-before.
    #[arg(long)]
    issuer: Option<String>,
    /// When the entry stops applying: an RFC 3339 time, or a duration from now (24h, 7d).
    #[arg(long)]
    expires: Option<String>,
    /// Why, for the people reading the list and the audit trail.
    #[arg(long)]
    reason: Option<String>,
    /// The webhook's config: --issuer must then name one of its issuers.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    List(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the command; what it did, for stdout.
pub fn run(args: &Args) -> Result<String, RevokeError> {
    let (mut raw, entries) = match revoke::load(&args.list) {
        Ok(r) => r,
        Err(e) if e.is_missing() => (
            RawList {
                version: revoke::VERSION,
                entries: Vec::new(),
            },
            Vec::new(),
        ),
        Err(e @ LoadError::Invalid(_)) => return Err(RevokeError::List(e.to_string())),
        Err(e) => {
            return Err(RevokeError::List(format!("{}: {e}", args.list.display())));
        }
    };
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    if args.show {
        return Ok(show(&args.list, &raw, &entries, now));
    }
    let entry = requested(args, now)?;
    let target = target_of(&entry)?;
    if let (Some(config), Some(issuer)) = (&args.config, target.issuer()) {
        known_issuer(config, issuer)?;
    }
    let same = |e: &RawEntry| target_of(e).is_ok_and(|t| t == target);
    let summary = if args.remove {
        let before = raw.entries.len();
        raw.entries.retain(|e| !same(e));
        if raw.entries.len() == before {
            return Err(RevokeError::Usage(format!(
                "{} lists no such entry; revoke --list {} --show prints it",
                args.list.display(),
                args.list.display()
            )));
        }
        format!("removed {}", describe(&target))
    } else if let Some(existing) = raw.entries.iter_mut().find(|e| same(e)) {
        *existing = entry;
        format!("updated {}", describe(&target))
    } else {
        raw.entries.push(entry);
        format!("added {}", describe(&target))
    };
    let text = serde_norway::to_string(&raw)
        .map_err(|e| RevokeError::List(format!("cannot encode the list: {e}")))?;
    // What is written must be what the webhook will accept.
    revoke::parse(&text, &args.list).map_err(|e| RevokeError::List(revoke::problems_text(&e)))?;
    write_atomic(&args.list, text.as_bytes(), 0o644, Existing::Replace).map_err(|source| {
        RevokeError::Write {
            path: args.list.clone(),
            source,
        }
    })?;
    Ok(format!(
        "{summary}: {} now has {} entr{}",
        args.list.display(),
        raw.entries.len(),
        if raw.entries.len() == 1 { "y" } else { "ies" }
    ))
}

/// The entry the options describe, as it will be written.
fn requested(args: &Args, now: i64) -> Result<RawEntry, RevokeError> {
    let usage = |m: &str| RevokeError::Usage(m.to_owned());
    let token_sha256 = match (&args.token_file, &args.token_sha256) {
        (Some(f), _) => Some(hex::encode(crate::review::sha256(&read_token(f)?))),
        (None, Some(h)) => Some(h.to_ascii_lowercase()),
        (None, None) => None,
    };
    let not_before = match args.not_before.as_deref() {
        Some("now") => Some(revoke::rfc3339(now)),
        Some(t) => Some(
            revoke::parse_rfc3339(t)
                .map(revoke::rfc3339)
                .ok_or_else(|| {
                    usage(
                        "--not-before takes an RFC 3339 time such as 2026-12-02T09:30:00Z, or now",
                    )
                })?,
        ),
        None => None,
    };
    let expires = match args.expires.as_deref() {
        None => None,
        Some(e) => Some(revoke::rfc3339(expiry(e, now)?)),
    };
    if args.remove {
        // Only what names the entry.
        return Ok(RawEntry {
            token_sha256,
            issuer: args.issuer.clone(),
            jti: args.jti.clone(),
            sub: args.sub.clone(),
            user: args.user.clone(),
            group: args.group.clone(),
            not_before,
            ..RawEntry::default()
        });
    }
    Ok(RawEntry {
        token_sha256,
        issuer: args.issuer.clone(),
        jti: args.jti.clone(),
        sub: args.sub.clone(),
        user: args.user.clone(),
        group: args.group.clone(),
        not_before,
        expires,
        reason: args.reason.clone(),
        added: Some(revoke::rfc3339(now)),
    })
}

/// The entry validated, as its target; problems said as the options.
fn target_of(raw: &RawEntry) -> Result<Target, RevokeError> {
    let mut problems = Problems::default();
    let at = config::FieldPath::at("entry");
    match revoke::validate(raw, &at, &mut problems) {
        Some(e) => Ok(e.target),
        None => {
            let text = problems
                .or_value((), Path::new("-"))
                .err()
                .map(|e| {
                    e.problems
                        .iter()
                        .map(|p| p.message.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            Err(RevokeError::Usage(text))
        }
    }
}

fn expiry(value: &str, now: i64) -> Result<i64, RevokeError> {
    if let Some(t) = revoke::parse_rfc3339(value) {
        return Ok(t);
    }
    match humantime::parse_duration(value.trim()) {
        Ok(d) if d >= Duration::from_secs(1) => {
            Ok(now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
        }
        _ => Err(RevokeError::Usage(format!(
            "--expires {value:?} is neither an RFC 3339 time (2026-12-31T00:00:00Z) nor a duration from now (24h, 7d)"
        ))),
    }
}

/// The token's bytes, without the line end an editor or `echo` adds.
fn read_token(path: &Path) -> Result<Vec<u8>, RevokeError> {
    let fail = |e: std::io::Error| {
        RevokeError::Usage(format!("--token-file {}: cannot read: {e}", path.display()))
    };
    let mut buf = Vec::new();
    let limit = MAX_TOKEN_BYTES.min(MAX_FILE_BYTES) + 1;
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut buf)
            .map_err(fail)?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut buf))
            .map_err(fail)?;
    }
    if buf.len() as u64 >= limit {
        return Err(RevokeError::Usage(format!(
            "--token-file {}: larger than a token can be (256 KiB)",
            path.display()
        )));
    }
    let trimmed = buf.trim_ascii();
    if trimmed.is_empty() {
        return Err(RevokeError::Usage(format!(
            "--token-file {}: holds no token",
            path.display()
        )));
    }
    Ok(trimmed.to_vec())
}

fn known_issuer(config: &Path, issuer: &str) -> Result<(), RevokeError> {
    let text = config::read_text(config).map_err(|e| RevokeError::Usage(e.to_string()))?;
    let c = Config::from_yaml(&text, config).map_err(|e| RevokeError::Usage(e.to_string()))?;
    if c.issuers.iter().any(|i| i.name == issuer) {
        return Ok(());
    }
    let names: Vec<&str> = c.issuers.iter().map(|i| i.name.as_str()).collect();
    Err(RevokeError::Usage(format!(
        "--issuer {issuer:?} is not an issuer of {} (it has: {})",
        config.display(),
        names.join(", ")
    )))
}

fn describe(t: &Target) -> String {
    match t {
        Target::Token(h) => format!("token {}", hex::encode(&h[..4])),
        Target::Jti { issuer, jti } => format!("jti {jti:?} of {issuer}"),
        Target::Subject { issuer, sub } => format!("sub {sub:?} of {issuer}"),
        Target::User(u) => format!("user {u:?}"),
        Target::Group(g) => format!("group {g:?}"),
        Target::NotBefore { issuer, sub, time } => format!(
            "tokens of {}{issuer} issued before {}",
            sub.as_ref()
                .map(|s| format!("sub {s:?} of "))
                .unwrap_or_default(),
            revoke::rfc3339(*time)
        ),
    }
}

fn show(file: &Path, raw: &RawList, entries: &[revoke::Entry], now: i64) -> String {
    let mut out = format!(
        "{}: {} entr{}\n",
        file.display(),
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" }
    );
    for (i, (e, r)) in entries.iter().zip(&raw.entries).enumerate() {
        let state = match e.expires {
            Some(t) if now >= t => format!("expired {}", revoke::rfc3339(t)),
            Some(t) => format!("in force until {}", revoke::rfc3339(t)),
            None => "in force".to_owned(),
        };
        out.push_str(&format!("[{i}] {}: {state}", describe(&e.target)));
        if let Some(added) = &r.added {
            out.push_str(&format!(", added {added}"));
        }
        if let Some(reason) = &e.reason {
            out.push_str(&format!(", reason: {reason}"));
        }
        out.push('\n');
    }
    out.trim_end().to_owned()
}

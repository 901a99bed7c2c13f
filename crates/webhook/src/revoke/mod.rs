//! The revocation list: tokens, subjects, users and groups refused although
//! their tokens verify, and "not before" times that log a subject (or a
//! whole issuer) out everywhere. One YAML file, versioned, unknown fields
//! refused, validated with a field path for every problem before it replaces
//! the list in use (`watch`). Checked on every review, cache hits included:
//! a few hash lookups, so a 10,000-entry list costs a hit next to nothing.
//!
//! Tokens are listed by the full SHA-256 of the token (hex), never the token
//! and never the 8-hex fingerprint of the log alone: 32 bits would refuse
//! other people's tokens by chance, and the full hash is in the audit trail
//! (`token_sha256`) or computed by `revoke --token-file`.

pub(crate) mod watch;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, FieldPath, Problem, Problems, valid_name};
use crate::review::cache::TokenHash;
use crate::verify::Identity;

/// The only format there is so far; a file without it is refused, so a
/// later format is never misread as this one.
pub(crate) const VERSION: u32 = 1;

/// Names, subjects and reasons longer than this are refused: a list is
/// written by people, and every entry is held in memory.
const MAX_FIELD_CHARS: usize = 1024;

/// The file as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawList {
    pub(crate) version: u32,
    #[serde(default)]
    pub(crate) entries: Vec<RawEntry>,
}

/// One entry as written: exactly one of `token_sha256`, `jti`, `sub`,
/// `user`, `group`, `not_before` says what it revokes (`not_before` with
/// `sub`: one subject's tokens issued before the time).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) not_before: Option<String>,
    /// RFC 3339; the entry stops applying then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// RFC 3339, written by `revoke`; for people only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) added: Option<String>,
}

/// What an entry revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Token(TokenHash),
    Jti {
        issuer: String,
        jti: String,
    },
    Subject {
        issuer: String,
        sub: String,
    },
    /// A username after mapping, prefix included, from any issuer.
    User(String),
    /// A group after mapping, prefix included, from any issuer.
    Group(String),
    /// Tokens of `issuer` (or of one of its subjects) issued before `time`,
    /// and tokens of theirs without `iat`, which cannot show they are newer.
    NotBefore {
        issuer: String,
        sub: Option<String>,
        time: i64,
    },
}

impl Target {
    /// The `kind` label of `revoked_total` and the audit trail.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Target::Token(_) => "token",
            Target::Jti { .. } => "jti",
            Target::Subject { .. } => "subject",
            Target::User(_) => "user",
            Target::Group(_) => "group",
            Target::NotBefore { .. } => "not_before",
        }
    }

    /// The issuer name the entry is for, if it is for one.
    pub(crate) fn issuer(&self) -> Option<&str> {
        match self {
            Target::Jti { issuer, .. }
            | Target::Subject { issuer, .. }
            | Target::NotBefore { issuer, .. } => Some(issuer),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) target: Target,
    /// Unix seconds; the entry applies while now is before it.
    pub(crate) expires: Option<i64>,
    pub(crate) reason: Option<Arc<str>>,
}

impl Entry {
    fn applies_at(&self, now: i64) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// Entry indexes by what a review looks up.
type Index<K> = HashMap<K, Vec<u32>>;

#[derive(Debug, Default)]
struct IssuerIndex {
    jtis: Index<Box<str>>,
    subjects: Index<Box<str>>,
    not_before: Vec<u32>,
    subject_not_before: Index<Box<str>>,
}

/// A validated list, indexed for the check every review makes.
#[derive(Debug, Default)]
pub(crate) struct RevocationList {
    entries: Vec<Entry>,
    tokens: Index<TokenHash>,
    users: Index<Box<str>>,
    groups: Index<Box<str>>,
    issuers: HashMap<Box<str>, IssuerIndex>,
}

impl RevocationList {
    pub(crate) fn new(entries: Vec<Entry>) -> RevocationList {
        let mut list = RevocationList::default();
        for (i, e) in entries.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let push = |m: &mut Index<Box<str>>, k: &str| m.entry(k.into()).or_default().push(i);
            match &e.target {
                Target::Token(h) => list.tokens.entry(*h).or_default().push(i),
                Target::User(u) => push(&mut list.users, u),
                Target::Group(g) => push(&mut list.groups, g),
                Target::Jti { issuer, jti } => {
                    push(&mut list.issuer(issuer).jtis, jti);
                }
                Target::Subject { issuer, sub } => {
                    push(&mut list.issuer(issuer).subjects, sub);
                }
                Target::NotBefore {
                    issuer, sub: None, ..
                } => list.issuer(issuer).not_before.push(i),
                Target::NotBefore {
                    issuer,
                    sub: Some(sub),
                    ..
                } => push(&mut list.issuer(issuer).subject_not_before, sub),
            }
        }
        list.entries = entries;
        list
    }

    fn issuer(&mut self, name: &str) -> &mut IssuerIndex {
        self.issuers.entry(name.into()).or_default()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The first entry that refuses this verified token at `now` (Unix
    /// seconds), if any. A handful of hash lookups: the token's hash, the
    /// username, each group, and under the issuer its jti, sub and
    /// not-before entries.
    pub(crate) fn check(&self, hash: &TokenHash, id: &Identity, now: u64) -> Option<&Entry> {
        if self.entries.is_empty() {
            return None;
        }
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let live = |ids: Option<&Vec<u32>>, also: &dyn Fn(&Entry) -> bool| -> Option<&Entry> {
            ids?.iter()
                .filter_map(|&i| self.entries.get(i as usize))
                .find(|e| e.applies_at(now) && also(e))
        };
        let any = |_: &Entry| true;
        let facts = &id.facts;
        if let Some(e) = live(self.tokens.get(hash), &any) {
            return Some(e);
        }
        if !self.users.is_empty()
            && let Some(e) = live(self.users.get(facts.username()), &any)
        {
            return Some(e);
        }
        if !self.groups.is_empty() {
            for g in facts.groups() {
                if let Some(e) = live(self.groups.get(g), &any) {
                    return Some(e);
                }
            }
        }
        let issuer = self.issuers.get(&*id.issuer)?;
        // A token without iat cannot show it was issued after the time.
        let issued_before = |e: &Entry| match (&e.target, facts.iat) {
            (Target::NotBefore { time, .. }, Some(iat)) => iat < *time,
            _ => true,
        };
        if let Some(e) = live(Some(&issuer.not_before), &issued_before) {
            return Some(e);
        }
        if let Some(jti) = facts.jti()
            && let Some(e) = live(issuer.jtis.get(jti), &any)
        {
            return Some(e);
        }
        let sub = facts.sub()?;
        live(issuer.subjects.get(sub), &any)
            .or_else(|| live(issuer.subject_not_before.get(sub), &issued_before))
    }
}

/// Parses and validates a list's text; `file` names it in problems. Empty
/// text (a ConfigMap key not filled in yet) is an empty list.
pub(crate) fn parse(text: &str, file: &Path) -> Result<(RawList, Vec<Entry>), ConfigError> {
    if text.trim().is_empty() {
        return Ok((
            RawList {
                version: VERSION,
                entries: Vec::new(),
            },
            Vec::new(),
        ));
    }
    let raw: RawList = serde_norway::from_str(text).map_err(|e| ConfigError {
        file: file.to_owned(),
        problems: vec![Problem {
            field: FieldPath::root(),
            message: format!(
                "not a revocation list: {e} (write `version: {VERSION}` and `entries: [...]`; `kube-authn-webhook revoke` writes one)"
            ),
        }],
    })?;
    let mut problems = Problems::default();
    if raw.version != VERSION {
        problems.add(
            &FieldPath::at("version"),
            format!(
                "version {} is not one this build reads: it reads version {VERSION}",
                raw.version
            ),
        );
    }
    let entries = raw
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| validate(e, &FieldPath::at("entries").index(i), &mut problems))
        .collect();
    problems.or_value((raw, entries), file)
}

/// Reads and validates a list file (bounded like every file the config names).
pub(crate) fn load(file: &Path) -> Result<(RawList, Vec<Entry>), LoadError> {
    let bytes = kube_authn_common::fs::read_bounded(file).map_err(LoadError::Read)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        LoadError::Invalid(ConfigError {
            file: file.to_owned(),
            problems: vec![Problem {
                field: FieldPath::root(),
                message: "not UTF-8 text".to_owned(),
            }],
        })
    })?;
    parse(&text, file).map_err(LoadError::Invalid)
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error("{}", problems_text(.0))]
    Invalid(ConfigError),
}

/// A list's problems, one a line, under the file's name.
pub(crate) fn problems_text(e: &ConfigError) -> String {
    let n = e.problems.len();
    let mut out = format!(
        "revocation list {}: {n} problem{}",
        e.file.display(),
        if n == 1 { "" } else { "s" }
    );
    for p in &e.problems {
        out.push_str(&format!("\n  - {p}"));
    }
    out
}

impl LoadError {
    pub(crate) fn is_missing(&self) -> bool {
        matches!(self, LoadError::Read(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// One entry, or `None` with its problems added.
pub(crate) fn validate(raw: &RawEntry, at: &FieldPath, problems: &mut Problems) -> Option<Entry> {
    let before = problems.len();
    let text = |problems: &mut Problems, name: &str, v: &Option<String>| -> Option<String> {
        let v = v.as_ref()?;
        if v.is_empty() {
            problems.add(&at.field(name), "must not be empty");
        } else if v.chars().count() > MAX_FIELD_CHARS {
            problems.add(
                &at.field(name),
                format!("longer than {MAX_FIELD_CHARS} characters"),
            );
        }
        Some(v.clone())
    };
    let jti = text(problems, "jti", &raw.jti);
    let sub = text(problems, "sub", &raw.sub);
    let user = text(problems, "user", &raw.user);
    let group = text(problems, "group", &raw.group);
    let reason = text(problems, "reason", &raw.reason);
    let issuer = raw.issuer.as_ref().map(|name| {
        if !valid_name(name) {
            problems.add(
                &at.field("issuer"),
                format!("{name:?} is not an issuer name (the `name` of an issuer in the config)"),
            );
        }
        name.clone()
    });
    let time = |problems: &mut Problems, name: &str, v: &Option<String>| -> Option<i64> {
        let v = v.as_deref()?;
        match parse_rfc3339(v) {
            Some(t) => Some(t),
            None => {
                problems.add(
                    &at.field(name),
                    format!("{v:?} is not an RFC 3339 time such as 2026-12-02T09:30:00Z"),
                );
                None
            }
        }
    };
    let expires = time(problems, "expires", &raw.expires);
    let not_before = time(problems, "not_before", &raw.not_before);
    let _ = time(problems, "added", &raw.added);
    let token = raw.token_sha256.as_deref().map(|h| {
        let hash = parse_sha256(h);
        if hash.is_none() {
            let hint = if h.len() == 8 {
                ": the log's 8-character fingerprint is too short to revoke by (it would refuse other tokens by chance); take token_sha256 from the audit trail, or run revoke --token-file"
            } else {
                ""
            };
            problems.add(
                &at.field("token_sha256"),
                format!("must be the token's SHA-256 as 64 hex characters{hint}"),
            );
        }
        hash
    });

    let given: Vec<&str> = [
        ("token_sha256", raw.token_sha256.is_some()),
        ("jti", raw.jti.is_some()),
        ("user", raw.user.is_some()),
        ("group", raw.group.is_some()),
        ("not_before", raw.not_before.is_some()),
        // sub beside not_before narrows it to one subject.
        ("sub", raw.sub.is_some() && raw.not_before.is_none()),
    ]
    .into_iter()
    .filter_map(|(n, set)| set.then_some(n))
    .collect();
    if given.len() != 1 {
        problems.add(
            at,
            format!(
                "an entry revokes exactly one thing: give one of token_sha256, jti (with issuer), sub (with issuer), user, group or not_before (with issuer, and sub for one subject){}",
                if given.is_empty() {
                    String::new()
                } else {
                    format!("; this one gives {}", given.join(", "))
                }
            ),
        );
        return None;
    }
    let needs_issuer = matches!(given[0], "jti" | "sub" | "not_before");
    match (&issuer, needs_issuer) {
        (None, true) => problems.add(
            &at.field("issuer"),
            format!(
                "{} needs issuer: the name of the issuer in the config whose tokens it is about",
                given[0]
            ),
        ),
        (Some(_), false) => problems.add(
            &at.field("issuer"),
            format!(
                "{} takes no issuer: {}",
                given[0],
                if given[0] == "token_sha256" {
                    "a token's hash is that token's, whoever issued it"
                } else {
                    "names are matched after mapping, prefix included, which tells the issuers apart"
                }
            ),
        ),
        _ => {}
    }
    if problems.len() > before {
        return None;
    }
    let issuer = issuer.unwrap_or_default();
    let target = match given[0] {
        "token_sha256" => Target::Token(token.flatten()?),
        "jti" => Target::Jti { issuer, jti: jti? },
        "sub" => Target::Subject { issuer, sub: sub? },
        "user" => Target::User(user?),
        "group" => Target::Group(group?),
        _ => Target::NotBefore {
            issuer,
            sub,
            time: not_before?,
        },
    };
    Some(Entry {
        target,
        expires,
        reason: reason.map(Arc::from),
    })
}

pub(crate) fn parse_sha256(hex_text: &str) -> Option<TokenHash> {
    if hex_text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text.to_ascii_lowercase(), &mut out).ok()?;
    Some(out)
}

/// RFC 3339 (any offset) to Unix seconds.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Unix seconds as RFC 3339 in UTC (`2026-12-02T09:30:00Z`).
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(text: &str) -> Vec<String> {
        parse(text, Path::new("revoked.yaml"))
            .unwrap_err()
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_kind_parses_and_names_its_kind() {
        let text = format!(
            r#"
version: 1
entries:
  - {{token_sha256: "{}"}}
  - {{issuer: dex, jti: abc}}
  - {{issuer: dex, sub: CiQ}}
  - {{user: jane@example.com, expires: "2026-12-03T00:00:00+01:00", reason: left}}
  - {{group: contractors}}
  - {{issuer: dex, not_before: "2026-12-02T00:00:00Z"}}
  - {{issuer: dex, sub: CiQ, not_before: "2026-12-02T00:00:00Z"}}
"#,
            "ab".repeat(32)
        );
        let (_, entries) = parse(&text, Path::new("r.yaml")).unwrap();
        let kinds: Vec<&str> = entries.iter().map(|e| e.target.kind()).collect();
        assert_eq!(
            kinds,
            [
                "token",
                "jti",
                "subject",
                "user",
                "group",
                "not_before",
                "not_before"
            ]
        );
        // The offset counts: midnight at +01:00 is 23:00 the day before in UTC.
        assert_eq!(entries[3].expires, Some(1_796_252_400));
        assert_eq!(entries[3].reason.as_deref(), Some("left"));
    }

    #[test]
    fn problems_name_the_entry_and_field() {
        let p = problems_of(
            "version: 1\nentries:\n  - {user: a, group: b}\n  - {jti: x}\n  - {token_sha256: abcd1234}\n  - {user: u, issuer: dex}\n  - {group: g, expires: tomorrow}\n",
        );
        assert!(
            p[0].starts_with("entries[0]: an entry revokes exactly one thing"),
            "{p:?}"
        );
        assert!(p[0].contains("this one gives user, group"), "{p:?}");
        assert!(
            p[1].starts_with("entries[1].issuer: jti needs issuer"),
            "{p:?}"
        );
        assert!(p[2].contains("entries[2].token_sha256"), "{p:?}");
        assert!(
            p[2].contains("8-character fingerprint is too short"),
            "{p:?}"
        );
        assert!(
            p[3].starts_with("entries[3].issuer: user takes no issuer"),
            "{p:?}"
        );
        assert!(p[4].starts_with("entries[4].expires"), "{p:?}");
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(problems_of("version: 2\n")[0].starts_with("version: version 2"));
        assert!(
            problems_of("version: 1\nentries: [{user: a, colour: red}]\n")[0]
                .contains("unknown field")
        );
    }

    fn identity(iat: Option<i64>) -> Identity {
        use crate::verify::TokenFacts;
        Identity {
            issuer: Arc::from("dex"),
            user: serde_json::value::to_raw_value(&serde_json::json!({"username": "jane"}))
                .unwrap(),
            token_audiences: crate::verify::no_audiences(),
            expires_at: u64::MAX,
            trust_implicit_audience: true,
            key: Some(Arc::new(crate::keys::VerifyKey::new(
                None,
                crate::keys::KeyKind::Hmac,
                jsonwebtoken::DecodingKey::from_secret(b"k"),
            ))),
            facts: TokenFacts::new(
                Some(jsonwebtoken::Algorithm::RS256),
                iat,
                "jane",
                &["devs", "ops"],
                Some("s1"),
                Some("j1"),
            ),
        }
    }

    fn list(entries: &str) -> RevocationList {
        let (_, e) = parse(&format!("version: 1\nentries:\n{entries}"), Path::new("r")).unwrap();
        RevocationList::new(e)
    }

    #[test]
    fn a_check_finds_the_entry_in_force_and_ignores_expired_ones() {
        let id = identity(Some(1_000));
        let hash = [7u8; 32];
        let kind = |l: &RevocationList, now: u64| l.check(&hash, &id, now).map(|e| e.target.kind());
        let l = list(
            "  - {user: jane, expires: \"1970-01-01T00:10:00Z\"}\n  - {user: jane, reason: second}\n",
        );
        assert_eq!(
            l.check(&hash, &id, 10_000).unwrap().reason.as_deref(),
            Some("second")
        );
        let l = list("  - {group: ops, expires: \"1970-01-01T00:10:00Z\"}\n");
        assert_eq!(kind(&l, 599), Some("group"));
        assert_eq!(kind(&l, 600), None, "expired at its second");
        let l = list(&format!("  - {{token_sha256: {}}}\n", hex::encode(hash)));
        assert_eq!(kind(&l, 0), Some("token"));
        for (entries, hit) in [
            ("  - {issuer: dex, jti: j1}\n", true),
            ("  - {issuer: other, jti: j1}\n", false),
            ("  - {issuer: dex, sub: s1}\n", true),
            ("  - {issuer: dex, sub: s2}\n", false),
            (
                "  - {issuer: dex, not_before: \"1970-01-01T00:16:41Z\"}\n",
                true,
            ),
            (
                "  - {issuer: dex, not_before: \"1970-01-01T00:16:40Z\"}\n",
                false,
            ),
            (
                "  - {issuer: dex, sub: s1, not_before: \"1970-01-01T00:16:41Z\"}\n",
                true,
            ),
            (
                "  - {issuer: dex, sub: s2, not_before: \"1970-01-01T00:16:41Z\"}\n",
                false,
            ),
            ("  - {user: JANE}\n", false),
        ] {
            assert_eq!(kind(&list(entries), 0).is_some(), hit, "{entries}");
        }
        // Without iat a token cannot show it is newer than a not-before.
        let no_iat = identity(None);
        let l = list("  - {issuer: dex, not_before: \"1970-01-01T00:00:01Z\"}\n");
        assert!(l.check(&hash, &no_iat, 0).is_some());
        assert!(RevocationList::default().check(&hash, &id, 0).is_none());
    }

    #[test]
    fn empty_text_is_an_empty_list() {
        let (raw, entries) = parse("  \n", Path::new("r.yaml")).unwrap();
        assert!(entries.is_empty());
        assert_eq!(raw.version, VERSION);
    }

    #[test]
    fn times_round_trip() {
        let t = parse_rfc3339("2026-12-02T09:30:00Z").unwrap();
        assert_eq!(rfc3339(t), "2026-12-02T09:30:00Z");
        assert!(parse_rfc3339("2026-12-02").is_none());
    }
}

//! An issuer's last good keys on disk (`state_dir`), so a restart while the
//! issuer is down does not lose them. One file per issuer,
//! `<state_dir>/<issuer name>.keys.json`, written atomically (mode 0600)
//! after every good fetch and read back only when the first fetch after
//! start fails.
//!
//! The file is `{"sha256": HEX, "content": {...}}`: the checksum is over the
//! content's exact bytes, and the content names the issuer's URL and when
//! the keys were fetched. The checksum catches a damaged or hand-edited
//! file, not an attacker who can write to `state_dir` (they could write a
//! matching checksum): keep the directory the webhook's own. A file that is
//! not a regular file owned by the webhook's user, or that others may write,
//! is not read at all. Only public
//! keys are written: symmetric (`oct`) keys and private members are dropped
//! before the file is, and the keys are checked again as if just fetched
//! when they are read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube_authn_common::fs::{Existing, read_bounded, write_atomic};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

const FORMAT: u32 = 1;
/// A file written this far ahead of our clock is not trusted: its age
/// could not be told.
const MAX_FUTURE: Duration = Duration::from_secs(300);
/// JWK members that carry private or symmetric key material.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Content {
    format: u32,
    /// The issuer URL (or JWKS URL) the keys were fetched for.
    url: String,
    /// Clock time (Unix seconds) of the fetch.
    fetched_at: u64,
    jwks_uri: String,
    /// The discovery document the `jwks_uri` came from, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    discovery: Option<Value>,
    /// The JWKS, public keys only.
    jwks: Value,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    sha256: String,
    #[serde(borrow)]
    content: &'a RawValue,
}

/// A key set read back from `state_dir`.
#[derive(Debug)]
pub(crate) struct Saved {
    pub(crate) fetched_at: u64,
    pub(crate) jwks_uri: String,
    pub(crate) discovery: Option<Value>,
    /// The JWKS document, for `keys::from_jwks`.
    pub(crate) jwks: Vec<u8>,
}

/// Why saved keys were not used. Each is logged with the file's path.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("no saved keys")]
    Missing,
    #[error("cannot read it: {0}")]
    Unreadable(std::io::Error),
    #[error("damaged or edited (the checksum does not match its content)")]
    Checksum,
    #[error("not a saved key set: {0}")]
    Corrupt(String),
    #[error("saved for {got:?}, not for this issuer's {expected:?}")]
    OtherIssuer { expected: String, got: String },
    #[error(
        "fetched {} ago, more than max_key_age ({})",
        humantime::format_duration(*age),
        humantime::format_duration(*max)
    )]
    TooOld { age: Duration, max: Duration },
    #[error("dated {0}s ahead of this machine's clock")]
    FromTheFuture(u64),
    /// Not written by us: we write regular files, mode 0600, as our user.
    #[error("not trusted: {0}")]
    Untrusted(String),
}

impl LoadError {
    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            LoadError::Missing => "missing",
            LoadError::Unreadable(_) => "unreadable",
            LoadError::Checksum => "checksum_mismatch",
            LoadError::Corrupt(_) => "corrupt",
            LoadError::OtherIssuer { .. } => "issuer_mismatch",
            LoadError::TooOld { .. } => "too_old",
            LoadError::FromTheFuture(_) => "from_the_future",
            LoadError::Untrusted(_) => "untrusted_file",
        }
    }
}

/// The file an issuer's keys are saved in. Issuer names are
/// `[a-z0-9-]{1,63}` (config validation), so they are safe file names.
pub(crate) fn path_for(state_dir: &Path, issuer: &str) -> PathBuf {
    state_dir.join(format!("{issuer}.keys.json"))
}

fn checksum(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

/// The JWKS with only what verifies signatures: `oct` keys and every private
/// member left out. What is left is checked again when it is read.
pub(crate) fn public_jwks(body: &[u8]) -> Result<Value, String> {
    let mut doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let keys = doc
        .get_mut("keys")
        .and_then(Value::as_array_mut)
        .ok_or("not a JWKS document: no keys array")?;
    keys.retain(|k| k.get("kty").and_then(Value::as_str) != Some("oct"));
    for k in keys.iter_mut() {
        if let Some(obj) = k.as_object_mut() {
            for m in PRIVATE_MEMBERS {
                obj.remove(m);
            }
        }
    }
    let keys = keys.clone();
    Ok(serde_json::json!({ "keys": keys }))
}

/// Writes the key set just fetched for `url` at `fetched_at`.
pub(crate) fn save(
    path: &Path,
    url: &str,
    fetched_at: u64,
    jwks_uri: &str,
    discovery: Option<&Value>,
    jwks_body: &[u8],
) -> Result<(), String> {
    let content = Content {
        format: FORMAT,
        url: url.to_owned(),
        fetched_at,
        jwks_uri: jwks_uri.to_owned(),
        discovery: discovery.cloned(),
        jwks: public_jwks(jwks_body)?,
    };
    let content = serde_json::to_string(&content).map_err(|e| e.to_string())?;
    let raw = RawValue::from_string(content).map_err(|e| e.to_string())?;
    let envelope = Envelope {
        sha256: checksum(raw.get().as_bytes()),
        content: &raw,
    };
    let mut text = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
    text.push(b'\n');
    write_atomic(path, &text, 0o600, Existing::Replace)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Reads the key set saved for `url`, if it is intact, for this issuer, and
/// younger than `max_age` at `now`.
pub(crate) fn load(
    path: &Path,
    url: &str,
    now: u64,
    max_age: Duration,
) -> Result<Saved, LoadError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => trusted(&m).map_err(LoadError::Untrusted)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => return Err(LoadError::Unreadable(e)),
    }
    let bytes = match read_bounded(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => return Err(LoadError::Unreadable(e)),
    };
    let envelope: Envelope<'_> =
        serde_json::from_slice(&bytes).map_err(|e| LoadError::Corrupt(e.to_string()))?;
    // Compared as fixed-length hex; nothing secret is at stake.
    if checksum(envelope.content.get().as_bytes()) != envelope.sha256.to_ascii_lowercase() {
        return Err(LoadError::Checksum);
    }
    let content: Content = serde_json::from_str(envelope.content.get())
        .map_err(|e| LoadError::Corrupt(e.to_string()))?;
    if content.format != FORMAT {
        return Err(LoadError::Corrupt(format!(
            "format {} (this version reads {FORMAT})",
            content.format
        )));
    }
    if content.url != url {
        return Err(LoadError::OtherIssuer {
            expected: url.to_owned(),
            got: content.url,
        });
    }
    if content.fetched_at > now.saturating_add(MAX_FUTURE.as_secs()) {
        return Err(LoadError::FromTheFuture(content.fetched_at - now));
    }
    let age = Duration::from_secs(now.saturating_sub(content.fetched_at));
    if age >= max_age {
        return Err(LoadError::TooOld { age, max: max_age });
    }
    Ok(Saved {
        fetched_at: content.fetched_at,
        jwks_uri: content.jwks_uri,
        discovery: content.discovery,
        jwks: serde_json::to_vec(&content.jwks).map_err(|e| LoadError::Corrupt(e.to_string()))?,
    })
}

/// Whether a file could be one we wrote: a regular file (not a symlink),
/// owned by our user, that nobody else may write.
fn trusted(m: &std::fs::Metadata) -> Result<(), String> {
    if !m.file_type().is_file() {
        return Err("not a regular file (a symlink?)".to_owned());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let ours = rustix::process::geteuid().as_raw();
        if m.uid() != ours {
            return Err(format!(
                "owned by uid {}, not by the webhook's uid {ours}",
                m.uid()
            ));
        }
        if m.mode() & 0o022 != 0 {
            return Err(format!(
                "mode {:o}: group or others may write it",
                m.mode() & 0o777
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn jwks() -> Vec<u8> {
        serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "a", "n": "AQAB", "e": "AQAB", "d": "secret", "p": "x"},
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
        ]})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn only_public_members_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_for(dir.path(), "dex");
        save(
            &p,
            "https://dex/x",
            1000,
            "https://dex/x/keys",
            None,
            &jwks(),
        )
        .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            !text.contains("secret") && !text.contains("c2VjcmV0"),
            "{text}"
        );
        assert!(!text.contains("\"d\"") && !text.contains("\"p\""), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let saved = load(&p, "https://dex/x", 2000, DAY).unwrap();
        assert_eq!(saved.fetched_at, 1000);
        assert_eq!(saved.jwks_uri, "https://dex/x/keys");
        let doc: Value = serde_json::from_slice(&saved.jwks).unwrap();
        assert_eq!(doc["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn edited_other_issuer_too_old_and_future_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_for(dir.path(), "dex");
        let url = "https://dex/x";
        save(&p, url, 1000, "https://dex/x/keys", None, &jwks()).unwrap();
        let label = |r: Result<Saved, LoadError>| r.unwrap_err().metric_label();
        assert_eq!(
            label(load(&p, "https://other/x", 2000, DAY)),
            "issuer_mismatch"
        );
        assert_eq!(label(load(&p, url, 1000 + DAY.as_secs(), DAY)), "too_old");
        assert_eq!(label(load(&p, url, 100, DAY)), "from_the_future");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("1000", "1999")).unwrap();
        assert_eq!(label(load(&p, url, 2000, DAY)), "checksum_mismatch");
        std::fs::write(&p, "{\"sha256\": ").unwrap();
        assert_eq!(label(load(&p, url, 2000, DAY)), "corrupt");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            save(&p, url, 1000, "https://dex/x/keys", None, &jwks()).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o622)).unwrap();
            assert_eq!(label(load(&p, url, 2000, DAY)), "untrusted_file");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(load(&p, url, 2000, DAY).is_ok());
            let link = dir.path().join("link.keys.json");
            std::os::unix::fs::symlink(&p, &link).unwrap();
            assert_eq!(label(load(&link, url, 2000, DAY)), "untrusted_file");
        }
        assert_eq!(
            label(load(&dir.path().join("none"), url, 2000, DAY)),
            "missing"
        );
    }
}

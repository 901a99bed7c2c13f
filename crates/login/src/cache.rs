//! The token cache: one JSON file per (kind, endpoint, user) in a 0700
//! directory, each file 0600 and replaced atomically (write a temporary file
//! in the same directory, fsync, rename over), so a reader sees the old
//! entry or the new one, never half of one.
//!
//! A lock file beside each entry serialises logins: kubectl often runs
//! several commands at once (shell scripts, `watch`, editors), and each runs
//! the plugin; the first takes the lock and logs in, the others wait and
//! then find its fresh token. Reads of a fresh token take no lock.
//!
//! An entry holds the token, its expiry, the refresh token and, for PCD-K,
//! the Dex client secret the refresh grant needs (resmgr hands it out only
//! for a Keystone token, which would need the password). Never the password.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Target;
use super::error::LoginError;

const FORMAT_VERSION: u32 = 1;
const SUFFIX: &str = ".json";

/// One cached login.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) version: u32,
    pub(crate) kind: String,
    pub(crate) endpoint: String,
    pub(crate) username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_id: Option<String>,
    pub(crate) token: String,
    /// The token's `exp`, seconds since the epoch.
    pub(crate) expiry: u64,
    /// When we got it, to tell a token's lifetime.
    pub(crate) obtained_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dex_client_secret: Option<String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("expiry", &self.expiry)
            .field("obtained_at", &self.obtained_at)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// A cached token stops being handed out this long before it expires
/// (or half its lifetime before, for tokens shorter than twice this), so
/// kubectl never starts a request with a token about to lapse.
pub(crate) const RENEW_BEFORE_SECONDS: u64 = 300;

impl Entry {
    fn renew_margin(&self) -> u64 {
        let lifetime = self.expiry.saturating_sub(self.obtained_at);
        RENEW_BEFORE_SECONDS.min(lifetime / 2)
    }

    /// Good to hand out as is.
    pub(crate) fn is_fresh(&self, now: u64) -> bool {
        now.saturating_add(self.renew_margin()) < self.expiry
    }

    /// Not expired yet (though possibly inside the renewal margin).
    pub(crate) fn is_unexpired(&self, now: u64) -> bool {
        now < self.expiry
    }

    fn belongs_to(&self, target: &Target) -> bool {
        self.version == FORMAT_VERSION
            && self.kind == target.kind()
            && self.endpoint == target.endpoint().as_str()
            && self.username == target.username()
            && self.domain.as_deref() == target.domain()
            && self.client_id.as_deref() == target.client_id()
    }

    /// A new entry for `target`.
    pub(crate) fn new(target: &Target, token: String, expiry: u64, obtained_at: u64) -> Entry {
        Entry {
            version: FORMAT_VERSION,
            kind: target.kind().to_owned(),
            endpoint: target.endpoint().as_str().to_owned(),
            username: target.username().to_owned(),
            domain: target.domain().map(str::to_owned),
            client_id: target.client_id().map(str::to_owned),
            token,
            expiry,
            obtained_at,
            refresh_token: None,
            dex_client_secret: None,
        }
    }
}

/// The cache files of one target.
pub(crate) struct Cache {
    dir: PathBuf,
    stem: String,
}

/// Holds a target's lock until dropped (closing the file releases it).
pub(crate) struct LockGuard {
    _file: File,
}

impl Cache {
    pub(crate) fn for_target(dir: &Path, target: &Target) -> Cache {
        let mut key = format!("v{FORMAT_VERSION}");
        for part in [
            Some(target.kind()),
            Some(target.endpoint().as_str()),
            Some(target.username()),
            target.domain(),
            target.client_id(),
        ] {
            key.push('\0');
            key.push_str(part.unwrap_or("\u{1}"));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
        let stem = format!("{}-{}", target.kind(), hex::encode(&digest.as_ref()[..12]));
        Cache {
            dir: dir.to_owned(),
            stem,
        }
    }

    /// The entry's file.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(format!("{}{SUFFIX}", self.stem))
    }

    pub(crate) fn lock_path(&self) -> PathBuf {
        self.dir.join(format!("{}.lock", self.stem))
    }

    /// The cached entry for `target`, if there is a readable one. A file that
    /// does not parse or belongs to someone else is ignored (and replaced by
    /// the next write); only real I/O trouble is an error.
    pub(crate) fn read(&self, target: &Target) -> Result<Option<Entry>, LoginError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cache_err(&path, format!("cannot read: {e}"))),
        };
        tighten_permissions(&path);
        match serde_json::from_slice::<Entry>(&bytes) {
            Ok(entry) if entry.belongs_to(target) => Ok(Some(entry)),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "cache entry is for another login; ignoring it");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cache entry unreadable; ignoring it");
                Ok(None)
            }
        }
    }

    /// Replaces the entry atomically; the file is 0600 from its creation.
    pub(crate) fn write(&self, entry: &Entry) -> Result<(), LoginError> {
        ensure_dir(&self.dir)?;
        let path = self.path();
        let err = |why: String| cache_err(&path, why);
        let json =
            serde_json::to_vec_pretty(entry).map_err(|e| err(format!("cannot encode: {e}")))?;
        // tempfile creates the file with mode 0600 on Unix.
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", self.stem))
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(|e| err(format!("cannot create a temporary file: {e}")))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| err(format!("cannot set mode 0600: {e}")))?;
        }
        tmp.write_all(&json)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| err(format!("cannot write: {e}")))?;
        tmp.persist(&path)
            .map_err(|e| err(format!("cannot replace: {}", e.error)))?;
        // The rename is durable once the directory is synced; a failure here
        // costs at most one extra login after a crash.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Takes the target's lock, waiting up to `timeout` for another process.
    pub(crate) async fn lock(&self, timeout: Duration) -> Result<LockGuard, LoginError> {
        ensure_dir(&self.dir)?;
        let path = self.lock_path();
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options
            .open(&path)
            .map_err(|e| cache_err(&path, format!("cannot open the lock file: {e}")))?;
        let start = Instant::now();
        let mut announced = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(LockGuard { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(cache_err(&path, format!("cannot lock: {e}")));
                }
            }
            if start.elapsed() >= timeout {
                return Err(LoginError::LockTimeout {
                    path,
                    seconds: timeout.as_secs(),
                });
            }
            if !announced {
                tracing::debug!(path = %path.display(), "another login holds the lock; waiting");
                announced = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Removes the cache entries matching the filters (all of them with no
/// filter); returns the paths removed.
pub(crate) fn remove_matching(
    dir: &Path,
    endpoint: Option<&str>,
    username: Option<&str>,
) -> Result<Vec<PathBuf>, LoginError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(cache_err(dir, format!("cannot list: {e}"))),
    };
    let mut removed = Vec::new();
    for dirent in entries {
        let dirent = dirent.map_err(|e| cache_err(dir, format!("cannot list: {e}")))?;
        let path = dirent.path();
        let name = dirent.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(SUFFIX) {
            continue;
        }
        let matches = match std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
        {
            Some(e) => {
                endpoint.is_none_or(|want| e.endpoint == want)
                    && username.is_none_or(|want| e.username == want)
            }
            // Unreadable entries go only when everything goes.
            None => endpoint.is_none() && username.is_none(),
        };
        if matches && remove_file(&path)? {
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

fn remove_file(path: &Path) -> Result<bool, LoginError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(cache_err(path, format!("cannot remove: {e}"))),
    }
}

fn ensure_dir(dir: &Path) -> Result<(), LoginError> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| cache_err(dir, format!("cannot create the directory: {e}")))
}

/// An entry someone made group- or world-readable goes back to 0600.
#[cfg(unix)]
fn tighten_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "cache entry was readable by others; setting mode 0600");
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

/// Elsewhere the user profile's ACLs keep the cache private.
#[cfg(not(unix))]
fn tighten_permissions(_path: &Path) {}

fn cache_err(path: &Path, why: String) -> LoginError {
    LoginError::Cache {
        path: path.to_owned(),
        why,
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/kube-authn-webhook`, else
/// `~/.kube/cache/kube-authn-webhook` (beside kubectl's own caches).
pub(crate) fn default_dir(xdg_cache_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    if let Some(x) = xdg_cache_home.filter(|x| Path::new(x).is_absolute()) {
        return Some(Path::new(x).join("kube-authn-webhook"));
    }
    home.filter(|h| !h.is_empty())
        .map(|h| Path::new(h).join(".kube/cache/kube-authn-webhook"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Endpoint, Target};
    use std::os::unix::fs::PermissionsExt;

    fn target(user: &str) -> Target {
        Target::Efa {
            endpoint: Endpoint::parse("https://efa.example.com").unwrap(),
            username: user.to_owned(),
            client_id: None,
        }
    }

    #[test]
    fn fresh_until_the_margin_before_exp() {
        let t = target("a");
        let day = Entry::new(&t, "x".into(), 100_000 + 86_400, 100_000);
        assert!(day.is_fresh(100_000 + 86_400 - 301));
        assert!(!day.is_fresh(100_000 + 86_400 - 300));
        assert!(day.is_unexpired(100_000 + 86_399));
        assert!(!day.is_unexpired(100_000 + 86_400));
        // A 5-minute token is renewed after half its life, not at once.
        let short = Entry::new(&t, "x".into(), 1_300, 1_000);
        assert!(short.is_fresh(1_149));
        assert!(!short.is_fresh(1_150));
    }

    #[test]
    fn entries_round_trip_with_mode_0600_and_ignore_other_targets() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cache");
        let (a, b) = (target("a"), target("b"));
        let ca = Cache::for_target(&sub, &a);
        let cb = Cache::for_target(&sub, &b);
        assert_ne!(ca.path(), cb.path());
        assert!(ca.read(&a).unwrap().is_none());
        let mut e = Entry::new(&a, "tok".into(), 2_000, 1_000);
        e.refresh_token = Some("r".into());
        ca.write(&e).unwrap();
        assert_eq!(ca.read(&a).unwrap(), Some(e.clone()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca.path()), 0o600);
        assert_eq!(mode(&sub), 0o700);
        // Copied over another target's file: not used for it.
        std::fs::copy(ca.path(), cb.path()).unwrap();
        assert!(cb.read(&b).unwrap().is_none());
        // Garbage is ignored, not fatal.
        std::fs::write(ca.path(), "{not json").unwrap();
        assert!(ca.read(&a).unwrap().is_none());
        // Loosened permissions are tightened on read.
        ca.write(&e).unwrap();
        std::fs::set_permissions(ca.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        ca.read(&a).unwrap();
        assert_eq!(mode(&ca.path()), 0o600);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn debug_never_shows_tokens() {
        let mut e = Entry::new(&target("a"), "the-token".into(), 2, 1);
        e.refresh_token = Some("the-refresh".into());
        e.dex_client_secret = Some("the-secret".into());
        let s = format!("{e:?}");
        assert!(
            !s.contains("the-token") && !s.contains("the-refresh") && !s.contains("the-secret")
        );
    }

    #[test]
    fn default_dir_prefers_xdg_then_home() {
        assert_eq!(
            default_dir(Some("/x/cache"), Some("/home/j")),
            Some(PathBuf::from("/x/cache/kube-authn-webhook"))
        );
        // The XDG spec says relative values are to be ignored.
        assert_eq!(
            default_dir(Some("rel"), Some("/home/j")),
            Some(PathBuf::from("/home/j/.kube/cache/kube-authn-webhook"))
        );
        assert_eq!(default_dir(None, None), None);
    }

    #[tokio::test]
    async fn a_second_locker_waits_then_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let t = target("a");
        let c = Cache::for_target(dir.path(), &t);
        let held = c.lock(Duration::from_secs(1)).await.unwrap();
        let e = c.lock(Duration::from_millis(200)).await.err().unwrap();
        assert!(matches!(e, LoginError::LockTimeout { .. }), "{e}");
        drop(held);
        c.lock(Duration::from_millis(200)).await.unwrap();
    }
}

//! Verdicts by SHA-256 of the token (the token itself is never stored).
//! Identities live until min(max_ttl, token exp), and no longer than the key
//! that verified them may verify; definite rejections for negative_ttl;
//! "could not check" is never cached.
//!
//! Each entry carries the generation of the issuer verifier that decided it;
//! a lookup names the generations in use (the config snapshot's), and an
//! entry of any other (an issuer removed or changed by a reload) is a miss
//! and dropped, so a reload never serves a verdict the new config would not
//! have come to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use crate::config;
use crate::verify::{Identity, Rejection};

pub(crate) type TokenHash = [u8; 32];

#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    Authenticated(Arc<Identity>),
    Rejected {
        issuer: Option<Arc<str>>,
        rejection: Rejection,
    },
}

/// Whether a verdict came from the cache (or from another request's
/// verification of the same token), or was verified for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    Hit,
    Miss,
}

impl Lookup {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
        }
    }
}

/// Held by value: moka keeps each value in an allocation of its own
/// already, and an `Arc` here was one more per cached identity.
#[derive(Debug, Clone)]
struct Entry {
    verdict: Verdict,
    ttl: Duration,
    /// `IssuerVerifier::generation` of the issuer that decided it.
    generation: u64,
}

impl Entry {
    fn valid_at(&self, now: u64) -> bool {
        match &self.verdict {
            // One atomic load: the key is withdrawn, past max_key_age or its
            // certificate's notAfter, and the token is checked afresh.
            Verdict::Authenticated(id) => {
                id.expires_at > now && id.key.as_ref().is_none_or(|k| k.usable_at(now))
            }
            Verdict::Rejected { .. } => true,
        }
    }
}

struct PerEntryTtl;

impl Expiry<TokenHash, Entry> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        value: &Entry,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// A cache handle; clones share the entries (a reload that keeps the cache
/// settings keeps the cache).
#[derive(Clone)]
pub struct TokenCache {
    inner: Option<Cache<TokenHash, Entry>>,
    max_ttl: Duration,
    negative_ttl: Duration,
}

impl TokenCache {
    pub fn new(cfg: &config::Cache) -> TokenCache {
        let inner = (cfg.max_entries > 0 && !cfg.max_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(cfg.max_entries)
                .expire_after(PerEntryTtl)
                .build()
        });
        TokenCache {
            inner,
            max_ttl: cfg.max_ttl,
            negative_ttl: cfg.negative_ttl,
        }
    }

    /// The cached verdict for `key` at `now` (Unix seconds), if any, from
    /// an issuer generation `live` accepts.
    pub(crate) async fn get(
        &self,
        key: &TokenHash,
        now: u64,
        live: impl Fn(u64) -> bool,
    ) -> Option<Verdict> {
        let cache = self.inner.as_ref()?;
        let entry = cache.get(key).await?;
        if entry.valid_at(now) && live(entry.generation) {
            return Some(entry.verdict);
        }
        // The cache TTL already ends at exp (this guards a clock that
        // moved); the key's end is only known now; the issuer that decided
        // it was removed or changed by a reload.
        cache.invalidate(key).await;
        None
    }

    /// The verdict `verify` comes to for a token `get` did not find, cached.
    /// Concurrent misses of one token share a single `verify` (moka's entry
    /// API), so a burst of the same new token costs one signature check and
    /// at most one key fetch; one that finds the verdict another request has
    /// just stored counts as a hit. A verdict is cached for its own lifetime;
    /// "could not check" (`Err`) never is, and every caller that waited on it
    /// gets the same error.
    ///
    /// The verdict is stored under `generation`; one found that another
    /// request stored under a generation `live` does not accept (a review
    /// that started before a reload and finished after it) is dropped and
    /// `None` returned: the caller verifies again, uncached (`verify` is a
    /// future, not a maker of them, so a review's trace can be borrowed by it).
    pub(crate) async fn verify_once<E, F>(
        &self,
        key: TokenHash,
        now: u64,
        generation: u64,
        live: impl Fn(u64) -> bool,
        verify: F,
    ) -> Option<(Lookup, Result<Verdict, Arc<E>>)>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<Verdict, E>>,
    {
        let Some(cache) = &self.inner else {
            return Some((Lookup::Miss, verify.await.map_err(Arc::new)));
        };
        let entry = cache
            .entry(key)
            .or_try_insert_with(async {
                verify.await.map(|verdict| {
                    let ttl = self.ttl(&verdict, now);
                    Entry {
                        verdict,
                        ttl,
                        generation,
                    }
                })
            })
            .await;
        match entry {
            Ok(e) if e.is_fresh() => Some((Lookup::Miss, Ok(e.into_value().verdict))),
            Ok(e) if live(e.value().generation) => Some((Lookup::Hit, Ok(e.into_value().verdict))),
            Ok(_) => {
                cache.invalidate(&key).await;
                None
            }
            Err(e) => Some((Lookup::Miss, Err(e))),
        }
    }

    /// Identities live until min(max_ttl, exp); refusals for negative_ttl. A
    /// zero TTL makes the entry expire at once: it serves only the callers
    /// already waiting on it.
    fn ttl(&self, verdict: &Verdict, now: u64) -> Duration {
        match verdict {
            Verdict::Authenticated(id) => {
                Duration::from_secs(id.expires_at.saturating_sub(now)).min(self.max_ttl)
            }
            Verdict::Rejected { .. } => self.negative_ttl,
        }
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.entry_count())
    }
}

//! Verdicts by SHA-256 of the token (the token itself is never stored).
//! Identities live until min(max_ttl, token exp); definite rejections for
//! negative_ttl; "could not check" is never cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use crate::config;
use crate::verify::{Identity, Rejection};

pub type TokenHash = [u8; 32];

#[derive(Debug, Clone)]
pub enum Verdict {
    Authenticated(Arc<Identity>),
    Rejected {
        issuer: Option<Arc<str>>,
        rejection: Rejection,
    },
}

#[derive(Debug)]
struct Entry {
    verdict: Verdict,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<TokenHash, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub struct TokenCache {
    inner: Option<Cache<TokenHash, Arc<Entry>>>,
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

    /// A cached verdict still valid at `now` (Unix seconds).
    pub async fn get(&self, key: &TokenHash, now: u64) -> Option<Verdict> {
        let entry = self.inner.as_ref()?.get(key).await?;
        match &entry.verdict {
            // The cache TTL already ends at exp; this guards a clock that moved.
            Verdict::Authenticated(id) if id.expires_at <= now => None,
            v => Some(v.clone()),
        }
    }

    pub async fn insert_identity(&self, key: TokenHash, identity: Arc<Identity>, now: u64) {
        let Some(cache) = &self.inner else { return };
        let left = Duration::from_secs(identity.expires_at.saturating_sub(now));
        let ttl = left.min(self.max_ttl);
        if ttl.is_zero() {
            return;
        }
        let entry = Entry {
            verdict: Verdict::Authenticated(identity),
            ttl,
        };
        cache.insert(key, Arc::new(entry)).await;
    }

    pub async fn insert_rejection(
        &self,
        key: TokenHash,
        issuer: Option<Arc<str>>,
        rejection: Rejection,
    ) {
        let Some(cache) = &self.inner else { return };
        if self.negative_ttl.is_zero() {
            return;
        }
        let entry = Entry {
            verdict: Verdict::Rejected { issuer, rejection },
            ttl: self.negative_ttl,
        };
        cache.insert(key, Arc::new(entry)).await;
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.entry_count())
    }

    /// Applies pending evictions now, so counts are exact (metrics, tests).
    pub async fn sync(&self) {
        if let Some(c) = &self.inner {
            c.run_pending_tasks().await;
        }
    }
}

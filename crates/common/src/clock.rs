//! Time as the verifier sees it. Passed in rather than read, so tests decide
//! what "now" is when they check expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    /// Seconds since the Unix epoch, set by the test.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn manual(now: u64) -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(now)))
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        match self {
            Clock::System => unix_now(),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock; a no-op on the system clock.
    pub fn set(&self, now: u64) {
        if let Clock::Manual(t) = self {
            t.store(now, Ordering::Relaxed);
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

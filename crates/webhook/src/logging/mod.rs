//! Structured logs to stdout; `RUST_LOG` overrides the default `info`.
//!
//! Every review logs a line, so at tens of thousands of reviews a second one
//! `write(2)` per line costs more than the review itself. Lines go to an
//! in-memory batch instead, written out by a background thread every
//! `FLUSH_EVERY`, or by the logging thread itself once the batch passes
//! `HIGH_WATER` (so a slow stdout slows logging down rather than losing lines
//! or growing memory). Nothing is dropped; the `LogGuard` writes out the rest.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

mod json;
pub use json::JsonLine;

const FLUSH_EVERY: Duration = Duration::from_millis(50);
const HIGH_WATER: usize = 256 * 1024;

/// Starts logging. Keep the guard until the process ends: dropping it writes
/// out what is still buffered.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    let batch = Arc::new(Batch::new());
    // Colours only for a person at a terminal: a pipe, a file or a log
    // collector gets no escape codes.
    let builder = tracing_subscriber::fmt()
        .with_ansi(io::stdout().is_terminal())
        .with_env_filter(filter)
        .with_writer(BatchWriter(batch.clone()));
    // A second init (tests, demo) keeps the first subscriber.
    let installed = match format {
        // tracing-subscriber's JSON object (flattened, no span), written
        // for a fraction of the cost: see `json`.
        LogFormat::Json => builder.event_format(json::JsonLine).try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .is_ok();
    if !installed {
        return LogGuard(None);
    }
    let flusher = batch.clone();
    let spawned = std::thread::Builder::new()
        .name("log-flush".to_owned())
        .spawn(move || {
            while !flusher.stopped.load(Ordering::Relaxed) {
                std::thread::sleep(FLUSH_EVERY);
                let _ = flusher.write_out();
            }
        });
    if spawned.is_err() {
        // Without the thread, lines go out only at HIGH_WATER; write through.
        batch.write_through.store(true, Ordering::Relaxed);
    }
    LogGuard(Some(batch))
}

/// Writes out buffered log lines when dropped.
#[must_use = "dropping the guard stops the periodic flush"]
pub struct LogGuard(Option<Arc<Batch>>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.stopped.store(true, Ordering::Relaxed);
            b.write_through.store(true, Ordering::Relaxed);
            let _ = b.write_out();
        }
    }
}

struct Batch {
    pending: Mutex<Vec<u8>>,
    /// Held while a batch is written, so batches leave in the order they filled.
    out: Mutex<Vec<u8>>,
    stopped: AtomicBool,
    /// After the guard is dropped (or without a flush thread) every line is
    /// written at once.
    write_through: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Batch {
    fn new() -> Batch {
        Batch {
            pending: Mutex::new(Vec::with_capacity(64 * 1024)),
            out: Mutex::new(Vec::with_capacity(64 * 1024)),
            stopped: AtomicBool::new(false),
            write_through: AtomicBool::new(false),
        }
    }

    fn write_out(&self) -> io::Result<()> {
        let mut out = lock(&self.out);
        std::mem::swap(&mut *out, &mut *lock(&self.pending));
        if out.is_empty() {
            return Ok(());
        }
        let mut stdout = io::stdout().lock();
        let result = stdout.write_all(&out).and_then(|()| stdout.flush());
        out.clear();
        result
    }
}

struct BatchWriter(Arc<Batch>);

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = &'a Batch;

    fn make_writer(&'a self) -> Self::Writer {
        &self.0
    }
}

impl Write for &Batch {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = {
            let mut pending = lock(&self.pending);
            pending.extend_from_slice(buf);
            pending.len()
        };
        if len >= HIGH_WATER || self.write_through.load(Ordering::Relaxed) {
            self.write_out()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_in_the_batch_and_keep_their_order() {
        let b = Batch::new();
        let mut w = &b;
        w.write_all(b"one\n").expect("write");
        w.write_all(b"two\n").expect("write");
        assert_eq!(&*lock(&b.pending), b"one\ntwo\n");
        // Writing out swaps the batch away and leaves both buffers empty.
        b.write_out().expect("stdout");
        assert!(lock(&b.pending).is_empty());
        assert!(lock(&b.out).is_empty());
    }
}

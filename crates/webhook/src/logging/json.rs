//! The JSON log line, written straight into the line buffer.
//!
//! The same object tracing-subscriber's JSON formatter writes with
//! `flatten_event(true)` and no span (`timestamp`, `level`, the event's
//! fields in order, `target`), which `same_objects_as_tracing_subscribers_json`
//! pins down. That formatter serialises through serde_json into an
//! `io::Write` adaptor that checks every fragment is UTF-8 again: with one
//! line per review, about a tenth of a cache hit's server CPU
//! (BENCHMARKS.md, issue 12). Here every value goes to the buffer once,
//! escaped on the way.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The service's JSON line format, for `tracing_subscriber::fmt().event_format`
/// (benchmarks format as production does).
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events from the `log` crate (actix) carry their own level and target.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        w.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut w)?;
        write!(w, "\",\"level\":\"{}\"", meta.level())?;
        let mut fields = Fields {
            w: &mut w,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        string(&mut w, meta.target())?;
        w.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self
                .w
                .write_char(',')
                .and_then(|()| string(self.w, field.name()))
                .and_then(|()| self.w.write_char(':'))
                .and_then(|()| value(self.w));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| string(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json: a number, or null when it has none (NaN, inf).
        self.entry(field, |w| {
            if value.is_finite() {
                write!(w, "{value:?}")
            } else {
                w.write_str("null")
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.entry(field, |w| quoted(w, format_args!("{value}")));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| quoted(w, format_args!("{value:?}")));
    }
}

fn string(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    quoted(w, format_args!("{s}"))
}

/// `args` as a JSON string, escaped as it is formatted.
fn quoted(w: &mut Writer<'_>, args: fmt::Arguments<'_>) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_fmt(args)?;
    w.write_char('"')
}

struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
            self.0.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or(' ');
            match c {
                '"' => self.0.write_str("\\\"")?,
                '\\' => self.0.write_str("\\\\")?,
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{:04x}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    fn emit_all() {
        #[derive(Debug)]
        struct Odd {
            _s: &'static str,
        }
        let err = std::io::Error::other("disk \"full\"\n");
        tracing::info!(
            issuer = "dex", outcome = "authenticated", latency_us = 151u64, delta = -3i64,
            ok = true, ratio = 0.25, nan = f64::NAN, token = %"dc69c9d4",
            odd = ?Odd { _s: "a\"b\\c\u{1}\t\u{e9}\u{1f600}" }, error = &err as &dyn std::error::Error,
            "tokenreview"
        );
        tracing::warn!("a message with \"quotes\", a \\ and a\nnewline");
        tracing::error!(r#type = "raw identifier", "x");
    }

    /// Objects, not text: key order and escapes may differ, what a log
    /// collector parses may not.
    fn objects(with: impl FnOnce(Lines)) -> Vec<Value> {
        let out = Lines::default();
        with(out.clone());
        let text = String::from_utf8(out.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .expect("UTF-8");
        text.lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                assert!(
                    v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
                    "{l}"
                );
                v["timestamp"] = Value::Null;
                v
            })
            .collect()
    }

    #[test]
    fn same_objects_as_tracing_subscribers_json() {
        let ours = objects(|out| {
            let s = tracing_subscriber::fmt()
                .event_format(JsonLine)
                .with_writer(out)
                .finish();
            tracing::subscriber::with_default(s, emit_all);
        });
        let theirs = objects(|out| {
            let s = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(out)
                .finish();
            tracing::subscriber::with_default(s, emit_all);
        });
        assert_eq!(ours.len(), 3);
        assert_eq!(ours, theirs);
    }
}

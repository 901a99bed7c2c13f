//! Compares the service's batched log writer (`logging::init`) with
//! tracing-appender's lossless non-blocking writer, on the line every review
//! logs. Run with stdout to /dev/null and count syscalls with strace:
//!
//!   cargo build --release --example logwriter
//!   strace -f -c -o /tmp/s.txt target/release/examples/logwriter batch paced >/dev/null
//!
//! `flat`: 2 threads log 500,000 lines each as fast as they can.
//! `paced`: 2 threads log one line every 20 µs each (~100,000 lines/s, a
//! busy webhook) for 2 s. Prints wall time and the process's CPU time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use kube_authn_webhook::config::LogFormat;
use kube_authn_webhook::logging;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (writer, load) = (args[1].as_str(), args[2].as_str());
    let guard: Box<dyn std::any::Any> = match writer {
        "batch" => Box::new(logging::init(LogFormat::Json)),
        "appender" => {
            let (nb, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(false)
                .finish(std::io::stdout());
            // The same line format as `logging::init`: only the writer differs.
            tracing_subscriber::fmt()
                .event_format(logging::JsonLine)
                .with_env_filter("info")
                .with_writer(nb)
                .init();
            Box::new(guard)
        }
        other => panic!("writer {other}: batch or appender"),
    };
    let started = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let load = load.to_owned();
            std::thread::spawn(move || match load.as_str() {
                "flat" => (0..500_000).for_each(|_| line()),
                "paced" => {
                    let end = Instant::now() + Duration::from_secs(2);
                    let mut next = Instant::now();
                    while next < end {
                        line();
                        next += Duration::from_micros(20);
                        while Instant::now() < next {
                            std::hint::spin_loop();
                        }
                    }
                }
                other => panic!("load {other}: flat or paced"),
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    drop(guard);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    eprintln!(
        "{writer} {load}: wall {:?}, cpu {} ms",
        started.elapsed(),
        ticks * 10
    );
}

fn line() {
    tracing::info!(
        issuer = "pcd-dex",
        outcome = "authenticated",
        reason = "ok",
        cache = "hit",
        api_version = "v1",
        latency_us = 12u64,
        token = "1a2b3c4d",
        "tokenreview"
    );
}

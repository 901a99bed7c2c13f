use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube_authn_webhook::config::Config;
use kube_authn_webhook::{clock::Clock, demo, logging, server};

/// Kubernetes TokenReview webhook for Dex id_tokens and Extreme EFA/XCO tokens.
#[derive(Parser)]
#[command(name = "kube-authn-webhook", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve TokenReviews.
    Serve {
        #[arg(long, env = "AUTHN_WEBHOOK_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or list every problem and exit 1.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a local dev issuer and the webhook on 127.0.0.1 and show one review.
    Demo {
        /// Exit after the first round trip.
        #[arg(long)]
        once: bool,
    },
}

/// EX_CONFIG from sysexits.h: the config is wrong, restarting will not help.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    kube_authn_webhook::install_crypto_providers();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} issuer{})",
                    config.display(),
                    c.issuers.len(),
                    if c.issuers.len() == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let _log = logging::init(config.telemetry.log_format);
            run(async move {
                let running = server::start(&config, Clock::System).await?;
                shutdown_signal().await;
                tracing::info!("signal received: draining");
                running.shutdown().await;
                Ok::<(), server::StartError>(())
            })
        }
        Command::Demo { once } => run(demo::run(once)),
    }
}

fn run<E: std::fmt::Display>(f: impl Future<Output = Result<(), E>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

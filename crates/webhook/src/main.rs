use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube_authn_common::clock::Clock;
use kube_authn_webhook::cmd::{certs, demo, explain, kubeconfig, revoke};
use kube_authn_webhook::prepare::Prepared;
use kube_authn_webhook::{http as server, logging};

/// Kubernetes TokenReview webhook for Dex id_tokens and Extreme EFA/XCO tokens.
#[derive(Parser)]
#[command(name = "kube-authn-webhook", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve TokenReviews. The config and every file it names are loaded
    /// again when they change (checked every server.tls.reload_interval) and
    /// on SIGHUP; an invalid change is logged and the old config kept.
    Serve {
        #[arg(long, env = "AUTHN_WEBHOOK_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or list every problem and exit 1.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Explain why a token would be authenticated or refused: the issuer
    /// chosen, each check, the user, and the TokenReview answer. Fetches the
    /// issuer's keys once. The token is never printed (its fingerprint is).
    /// Exit 0: authenticated, 1: refused, 2: could not be checked.
    Explain {
        #[arg(long)]
        config: PathBuf,
        /// File holding the token, or `-` for stdin.
        #[arg(long)]
        token_file: PathBuf,
        /// An audience the kube-apiserver asks for (spec.audiences); repeat
        /// for several. None by default.
        #[arg(long = "audience")]
        audiences: Vec<String>,
    },
    /// Run a local dev issuer and the webhook on 127.0.0.1 and show one review.
    Demo {
        /// Exit after the first round trip.
        #[arg(long)]
        once: bool,
    },
    /// Write a private CA (ca.crt, ca.key), the webhook's serving certificate
    /// (tls.crt, tls.key) and a client certificate for the kube-apiserver
    /// (apiserver-client.crt, apiserver-client.key). Keys are mode 0600.
    Certs {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated DNS names and IP addresses the kube-apiserver
        /// reaches the webhook at, e.g. 127.0.0.1 for a sidecar, or the
        /// Service's ClusterIP.
        #[arg(long = "server-san", value_delimiter = ',', required = true)]
        server_sans: Vec<String>,
        /// Validity of the serving and client certificates, in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Validity of a new CA, in days.
        #[arg(long, default_value_t = 3650)]
        ca_days: u32,
        /// Replace existing files, the CA included (the kube-apiserver's
        /// webhook kubeconfig must then be regenerated).
        #[arg(long, conflicts_with = "renew")]
        force: bool,
        /// Keep ca.crt/ca.key in --out and issue new serving and client
        /// certificates from them: renewal that changes no trust anchor.
        #[arg(long)]
        renew: bool,
    },
    /// Print the kubeconfig the kube-apiserver uses to call the webhook
    /// (--authentication-token-webhook-config-file), or with
    /// --format openshift-secret the Secret for OpenShift's Authentication
    /// resource. Certificates and key are inlined; nothing refers to files.
    Kubeconfig {
        /// The URL TokenReviews are POSTed to, e.g. https://127.0.0.1:8443/authenticate.
        #[arg(long)]
        server: String,
        /// PEM CA certificate that signed the webhook's serving certificate.
        #[arg(long)]
        ca: PathBuf,
        /// PEM client certificate the kube-apiserver presents (mTLS).
        #[arg(long)]
        client_cert: PathBuf,
        /// PEM private key of --client-cert.
        #[arg(long)]
        client_key: PathBuf,
        #[arg(long, value_enum, default_value = "kubeconfig")]
        format: kubeconfig::Format,
        /// Name of the Secret (openshift-secret only) [default: kube-authn-webhook-kubeconfig].
        #[arg(long)]
        secret_name: Option<String>,
    },
    /// Add an entry to the revocation list (a token, jti, subject, user,
    /// group, or a not-before time), take one out (--remove), or print the
    /// list (--show). The file is replaced atomically; a token is never
    /// printed or stored, only its SHA-256.
    Revoke(revoke::Args),
}

/// EX_CONFIG from sysexits.h: the config is wrong, restarting will not help.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    kube_authn_webhook::install_crypto_providers();
    match cli.command {
        Command::CheckConfig { config } => match Prepared::load(&config) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {}: {w}", config.display());
                }
                println!(
                    "{}: ok ({} issuer{})",
                    config.display(),
                    c.issuer_count(),
                    if c.issuer_count() == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config: path } => {
            let config = match Prepared::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let _log = logging::init(config.telemetry.log_format);
            config.log_warnings();
            run(async move {
                let running = server::start(&config, Clock::System).await?;
                // The same file, read again on change or SIGHUP.
                running
                    .watch_config(path, true)
                    .map_err(server::StartError::Watch)?;
                shutdown_signal().await;
                tracing::info!("signal received: draining");
                running.shutdown().await;
                Ok::<(), server::StartError>(())
            })
        }
        Command::Explain {
            config,
            token_file,
            audiences,
        } => ExitCode::from(explain::run(&config, &token_file, &audiences)),
        Command::Demo { once } => run(demo::run(once)),
        Command::Revoke(args) => report(revoke::run(&args)),
        Command::Certs {
            out,
            server_sans,
            days,
            ca_days,
            force,
            renew,
        } => report(certs::write_bundle(&certs::BundleRequest {
            out: &out,
            server_sans: &server_sans,
            days,
            ca_days,
            force,
            renew,
        })),
        Command::Kubeconfig {
            server,
            ca,
            client_cert,
            client_key,
            format,
            secret_name,
        } => match kubeconfig::generate(&kubeconfig::Request {
            server: &server,
            ca_file: &ca,
            client_cert_file: &client_cert,
            client_key_file: &client_key,
            format,
            secret_name: secret_name.as_deref(),
        }) {
            Ok(out) => {
                for w in &out.warnings {
                    eprintln!("warning: {w}");
                }
                print!("{}", out.yaml);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Prints a command's summary to stdout, or its error to stderr.
fn report<T: std::fmt::Display, E: std::fmt::Display>(r: Result<T, E>) -> ExitCode {
    match r {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
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

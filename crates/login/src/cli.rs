//! `kube-authn-login ...`: the command line of the exec credential
//! plugin. stdout carries only the `ExecCredential` (or the kubeconfig, or
//! logout's summary); everything for the person goes to stderr, which
//! kubectl shows as is.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::cache::default_dir;
use super::exec::{ExecInfo, exec_credential, rfc3339};
use super::kubeconfig::{self, PluginOptions};
use super::{Endpoint, Login, LoginError, Outcome, PasswordSource, Target, obtain};
use kube_authn_common::clock::Clock;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(180);
/// sysexits.h EX_USAGE.
const EXIT_USAGE: u8 = 64;

/// kubectl exec credential plugin: logs in to PCD-K (Keystone, Dex) or EFA
/// and prints a token as an ExecCredential on stdout, cached until shortly
/// before it expires. `--print-kubeconfig` prints a kubeconfig that runs it.
#[derive(Parser)]
#[command(name = "kube-authn-login", version)]
struct Cli {
    #[command(subcommand)]
    command: LoginCommand,
}

/// The `kube-authn-login` binary: parses the command line and runs it.
pub fn main() -> ExitCode {
    run(Cli::parse().command)
}

#[derive(Debug, Subcommand)]
enum LoginCommand {
    /// Platform9 PCD-K: Keystone password auth, the `kubernetes` client's
    /// secret from resmgr, Dex's password grant. Prints an ExecCredential
    /// holding Dex's id_token.
    Pcd(PcdArgs),
    /// Extreme EFA/XCO: the auth service's access-token (or, with
    /// --client-id, an XCO client token). Prints an ExecCredential.
    Efa(EfaArgs),
    /// Remove cached tokens (this machine only; nothing is revoked).
    Logout(LogoutArgs),
}

#[derive(Debug, Args)]
struct PcdArgs {
    /// The PCD management plane, https://<du-fqdn> (serves /keystone, /resmgr, /dex).
    #[arg(long, value_name = "URL")]
    endpoint: String,
    /// Keystone user name (often an e-mail address).
    #[arg(long)]
    username: String,
    /// Keystone domain name [default: the domain with id `default`].
    #[arg(long)]
    domain: Option<String>,
    /// Keystone project to scope the Keystone token to, if resmgr needs one.
    #[arg(long)]
    project: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct EfaArgs {
    /// The EFA/XCO host, https://<efa-host> (serves /v1/auth/token/...).
    #[arg(long, value_name = "URL")]
    endpoint: String,
    #[arg(long)]
    username: String,
    /// Registered XCO client id: use client-access-token (no refresh token).
    #[arg(long)]
    client_id: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// PEM CA bundle to trust (only these CAs) for the endpoint's HTTPS.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Read the password from stdin (one line; for scripts).
    #[arg(long, conflicts_with = "password_env")]
    password_stdin: bool,
    /// Read the password from this environment variable.
    #[arg(long, value_name = "NAME")]
    password_env: Option<String>,
    /// Refused: a password on the command line shows in `ps` and shell history.
    #[arg(long, hide = true, value_name = "PASSWORD")]
    password: Option<String>,
    /// Token cache directory [default: $XDG_CACHE_HOME/kube-authn-webhook, else
    /// ~/.kube/cache/kube-authn-webhook].
    #[arg(long, value_name = "DIR", env = "KUBE_AUTHN_WEBHOOK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Limit for each HTTP request [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// How long to wait for a login another process is doing for the same
    /// user [default: 3m].
    #[arg(long, value_parser = humantime::parse_duration)]
    lock_timeout: Option<Duration>,
    /// Log each step to stderr (never passwords or tokens).
    #[arg(long, short)]
    verbose: bool,
    /// Print a kubeconfig whose user runs this login, and exit (no login).
    #[arg(long, requires = "cluster_server")]
    print_kubeconfig: bool,
    /// With --print-kubeconfig: the cluster's API server URL.
    #[arg(long, value_name = "URL", requires = "print_kubeconfig")]
    cluster_server: Option<String>,
    /// With --print-kubeconfig: PEM CA of the API server (inlined).
    #[arg(long, value_name = "FILE", requires = "print_kubeconfig")]
    cluster_ca: Option<PathBuf>,
    /// With --print-kubeconfig: the cluster's name [default: the API server's host].
    #[arg(long, requires = "print_kubeconfig")]
    cluster_name: Option<String>,
    /// With --print-kubeconfig: what kubectl runs.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "kube-authn-login",
        requires = "print_kubeconfig"
    )]
    plugin_command: String,
}

#[derive(Debug, Args)]
struct LogoutArgs {
    /// Only tokens for this endpoint.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// Only tokens of this user.
    #[arg(long)]
    username: Option<String>,
    /// Every cached token.
    #[arg(long, conflicts_with_all = ["endpoint", "username"])]
    all: bool,
    /// Token cache directory (as for login).
    #[arg(long, value_name = "DIR", env = "KUBE_AUTHN_WEBHOOK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

fn run(cmd: LoginCommand) -> ExitCode {
    let (target, common) = match cmd {
        LoginCommand::Logout(args) => return logout(args),
        LoginCommand::Pcd(a) => (
            Endpoint::parse(&a.endpoint).map(|endpoint| Target::Pcd {
                endpoint,
                username: a.username,
                domain: a.domain.filter(|d| !d.is_empty()),
                project: a.project.filter(|p| !p.is_empty()),
            }),
            a.common,
        ),
        LoginCommand::Efa(a) => (
            Endpoint::parse(&a.endpoint).map(|endpoint| Target::Efa {
                endpoint,
                username: a.username,
                client_id: a.client_id.filter(|c| !c.is_empty()),
            }),
            a.common,
        ),
    };
    init_logging(common.verbose);
    if common.password.is_some() {
        return usage(
            "--password is refused: a password on the command line shows in `ps` and shell \
             history. Leave it out to be asked on the terminal, or use --password-stdin or \
             --password-env NAME",
        );
    }
    if common.timeout.is_some_and(|t| t.is_zero())
        || common.lock_timeout.is_some_and(|t| t.is_zero())
    {
        return usage("--timeout and --lock-timeout must be more than 0s");
    }
    let target = match target {
        Ok(t) if t.username().trim().is_empty() => return usage("--username is empty"),
        Ok(t) => t,
        Err(e) => return usage(&e.to_string()),
    };
    let options = PluginOptions {
        ca_file: common.ca_file.clone(),
        password_env: common.password_env.clone(),
        cache_dir: common.cache_dir.clone(),
        timeout: common.timeout,
        lock_timeout: common.lock_timeout,
    };
    if common.print_kubeconfig {
        return print_kubeconfig(&target, &options, &common);
    }
    let cache_dir = match resolve_cache_dir(common.cache_dir) {
        Ok(d) => d,
        Err(e) => return usage(&e.to_string()),
    };
    let exec_info = ExecInfo::parse(std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref());
    let interactive = exec_info
        .interactive
        .unwrap_or_else(|| std::io::stdin().is_terminal());
    let login = Login {
        target,
        ca_file: common.ca_file,
        timeout: common.timeout.unwrap_or(DEFAULT_TIMEOUT),
        cache_dir,
        password: PasswordSource::choose(common.password_stdin, common.password_env, interactive),
        clock: Clock::System,
        lock_timeout: common.lock_timeout.unwrap_or(DEFAULT_LOCK_TIMEOUT),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(obtain(&login)) {
        Ok(cred) => {
            for n in &cred.notices {
                eprintln!("kube-authn-login: {n}");
            }
            if cred.outcome == Outcome::LoggedIn && std::io::stderr().is_terminal() {
                eprintln!(
                    "kube-authn-login: logged in to {} as {}; the token is valid until {}",
                    login.target.endpoint().host(),
                    login.target.username(),
                    rfc3339(cred.expiry)
                );
            }
            let out = exec_credential(exec_info.api_version, cred.token.expose(), cred.expiry);
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::debug!(error = %e, "login failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_kubeconfig(target: &Target, options: &PluginOptions, common: &CommonArgs) -> ExitCode {
    let Some(server) = common.cluster_server.as_deref() else {
        return usage("--print-kubeconfig needs --cluster-server");
    };
    if common.password_stdin {
        eprintln!(
            "warning: --password-stdin is left out of the kubeconfig: kubectl does not feed the \
             plugin's stdin; the plugin asks on the terminal instead"
        );
    }
    match kubeconfig::generate(&kubeconfig::Request {
        target,
        options,
        command: &common.plugin_command,
        cluster_server: server,
        cluster_ca: common.cluster_ca.as_deref(),
        cluster_name: common.cluster_name.as_deref(),
    }) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => usage(&e.to_string()),
    }
}

fn logout(args: LogoutArgs) -> ExitCode {
    init_logging(false);
    if !args.all && args.endpoint.is_none() && args.username.is_none() {
        return usage("logout needs --endpoint and/or --username, or --all");
    }
    let endpoint = match args.endpoint.as_deref().map(Endpoint::parse).transpose() {
        Ok(e) => e,
        Err(e) => return usage(&e.to_string()),
    };
    let dir = match resolve_cache_dir(args.cache_dir) {
        Ok(d) => d,
        Err(e) => return usage(&e.to_string()),
    };
    match super::logout(&dir, endpoint.as_ref(), args.username.as_deref()) {
        Ok(removed) => {
            println!(
                "removed {} cached token{} from {}",
                removed.len(),
                if removed.len() == 1 { "" } else { "s" },
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resolve_cache_dir(flag: Option<PathBuf>) -> Result<PathBuf, LoginError> {
    if let Some(d) = flag {
        return Ok(d);
    }
    let xdg = std::env::var("XDG_CACHE_HOME").ok();
    let home = std::env::var("HOME").ok();
    default_dir(xdg.as_deref(), home.as_deref()).ok_or(LoginError::NoCacheDir)
}

fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// Logs go to stderr (stdout is kubectl's); quiet unless --verbose or RUST_LOG.
fn init_logging(verbose: bool) {
    // Without --verbose only our own warnings: other crates' errors (e.g. the
    // certificate verifier's) repeat what the error message already says.
    let default = if verbose {
        concat!("warn,", env!("CARGO_CRATE_NAME"), "=debug")
    } else {
        concat!("off,", env!("CARGO_CRATE_NAME"), "=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

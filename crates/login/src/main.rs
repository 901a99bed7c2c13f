use std::process::ExitCode;

use clap::Parser;
use kube_authn_login::cli::{self, LoginCommand};

/// kubectl exec credential plugin: logs in to PCD-K (Keystone, Dex) or EFA
/// and prints a token as an ExecCredential on stdout, cached until shortly
/// before it expires. `--print-kubeconfig` prints a kubeconfig that runs it.
#[derive(Parser)]
#[command(name = "kube-authn-login", version)]
struct Cli {
    #[command(subcommand)]
    command: LoginCommand,
}

fn main() -> ExitCode {
    cli::run(Cli::parse().command)
}

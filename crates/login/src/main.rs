use std::process::ExitCode;

fn main() -> ExitCode {
    kube_authn_login::cli::main()
}

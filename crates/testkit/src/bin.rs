//! The workspace's binaries, run as a person or kubectl would: one runner
//! for every test that starts `kube-authn-webhook` or `kube-authn-login`.

use std::ffi::OsStr;
use std::process::{Output, Stdio};

/// A built binary; give it `env!("CARGO_BIN_EXE_<name>")`, which only the
/// binary's own package's tests can name.
#[derive(Debug, Clone, Copy)]
pub struct Binary(&'static str);

impl Binary {
    pub const fn new(path: &'static str) -> Binary {
        Binary(path)
    }

    pub fn path(&self) -> &'static str {
        self.0
    }

    /// Runs it to completion with `args`, stdin closed.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        std::process::Command::new(self.0)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.0))
    }

    /// Runs it and insists on success; its stdout.
    pub fn stdout_of<S: AsRef<OsStr> + std::fmt::Debug>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// A command to start it in the background: stdout and stderr piped,
    /// stdin closed, killed if the test drops it.
    pub fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(self.0);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }
}

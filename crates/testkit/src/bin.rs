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

/// `kube-authn-webhook serve` running in the background, its JSON log read
/// as it comes.
pub struct Served {
    pub child: tokio::process::Child,
    stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
    /// Everything it logged so far.
    pub log: String,
    /// Where it serves TokenReviews and telemetry, as it logged them.
    pub addr: String,
    pub telemetry_addr: String,
}

impl Binary {
    /// Starts `serve --config <config>` and returns once it serves and
    /// watches its config (its SIGHUP handler is in place).
    pub async fn serve(&self, config: &std::path::Path) -> Served {
        let mut child = self
            .command()
            .args(["serve", "--config"])
            .arg(config)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.0));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut served = Served {
            child,
            stdout: tokio::io::BufReader::new(stdout),
            log: String::new(),
            addr: String::new(),
            telemetry_addr: String::new(),
        };
        let serving = served
            .wait_for(std::time::Duration::from_secs(20), |v| {
                v["message"] == "serving TokenReviews"
            })
            .await
            .unwrap_or_else(|| panic!("the server does not serve:\n{}", served.log));
        served.addr = serving["addr"].as_str().unwrap_or_default().to_owned();
        served.telemetry_addr = serving["telemetry_addr"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            served
                .wait_for(std::time::Duration::from_secs(20), |v| {
                    v["message"] == "watching the config for changes"
                })
                .await
                .is_some(),
            "the server does not watch its config:\n{}",
            served.log
        );
        served
    }
}

impl Served {
    /// Reads log lines until one (as JSON) satisfies `matches`, the process
    /// ends, or `limit` passes.
    pub async fn wait_for(
        &mut self,
        limit: std::time::Duration,
        mut matches: impl FnMut(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        use tokio::io::AsyncBufReadExt;
        tokio::time::timeout(limit, async {
            let mut line = String::new();
            loop {
                line.clear();
                match self.stdout.read_line(&mut line).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
                self.log.push_str(&line);
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if matches(&v) {
                    return Some(v);
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Sends the signal `name` (`HUP`, `TERM`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {pid}");
    }
}

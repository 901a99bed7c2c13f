//! The kube-apiserver's own webhook client (`../shared/tools/
//! kube-webhook-client`: k8s.io/apiserver's webhook token authenticator and
//! its token cache), driven one token at a time as the apiserver would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::harness::{Harness, write};

/// Where the tool is: `KUBE_WEBHOOK_CLIENT`, else `shared/tools/` beside
/// the checkout. Missing is a failure, never a skip.
pub fn tool() -> PathBuf {
    let tool = std::env::var_os("KUBE_WEBHOOK_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/kube-webhook-client")
        });
    assert!(
        tool.exists(),
        "the kube-apiserver's webhook client is not at {} (set KUBE_WEBHOOK_CLIENT)",
        tool.display()
    );
    tool
}

/// One running client: the kube-apiserver's authenticator pointed at `h`.
pub struct WebhookClient {
    _child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
}

impl WebhookClient {
    /// Started with the kubeconfig the apiserver would get for `h`, `-version
    /// v1`, these implicit audiences (`--api-audiences`) and answer cache
    /// TTL (`0` = none).
    pub fn start(h: &Harness, want_auds: &str, cache_ttl: &str) -> WebhookClient {
        let kubeconfig = write(
            h.dir(),
            "apiserver-webhook.kubeconfig",
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: webhook\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: apiserver\n  user: {{}}\ncontexts:\n- name: webhook\n  context: {{cluster: webhook, user: apiserver}}\ncurrent-context: webhook\n",
                h.url("/authenticate"),
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &h.ca.cert_pem)
            ),
        );
        let mut child = tokio::process::Command::new(tool())
            .arg("-kubeconfig")
            .arg(&kubeconfig)
            .args([
                "-version",
                "v1",
                "-want-auds",
                want_auds,
                "-cache-ttl",
                cache_ttl,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kube-webhook-client starts");
        let stdin = child.stdin.take().expect("stdin");
        let out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        WebhookClient {
            _child: child,
            stdin,
            out,
        }
    }

    /// What the apiserver concludes about `token`: `authenticated`,
    /// `username`, `uid`, `groups`, `extra`, `audiences`, `error`.
    pub async fn ask(&mut self, token: &str) -> Value {
        self.stdin
            .write_all(format!("{token}\n").as_bytes())
            .await
            .expect("write a token");
        self.stdin.flush().await.expect("flush");
        let line = tokio::time::timeout(Duration::from_secs(30), self.out.next_line())
            .await
            .expect("an answer within 30s")
            .expect("read an answer")
            .expect("an answer, not EOF");
        serde_json::from_str(&line).expect("a JSON answer")
    }
}

//! A loopback HTTP CONNECT proxy, as corporate egress proxies are: it reads
//! `CONNECT host:port`, opens a TCP connection there and relays bytes both
//! ways (TLS stays end to end). It counts the tunnels it opened and records
//! their targets, so a test can tell whether a fetch went through it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The most a CONNECT request head may take.
const MAX_HEAD: usize = 8 * 1024;

pub struct ConnectProxy {
    pub addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectProxy {
    /// Starts on a free loopback port.
    pub async fn start() -> ConnectProxy {
        Self::start_with(false).await
    }

    /// A proxy that accepts connections and never answers: a fetch through
    /// it must give up by its own timeout.
    pub async fn start_silent() -> ConnectProxy {
        Self::start_with(true).await
    }

    async fn start_with(silent: bool) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = targets.clone();
        // The tunnels live in the accept task's set: stopping the proxy cuts
        // them too, so a pooled connection cannot outlive it.
        let task = tokio::spawn(async move {
            let mut tunnels = tokio::task::JoinSet::new();
            while let Ok((conn, _)) = listener.accept().await {
                let seen = seen.clone();
                tunnels.spawn(async move {
                    if silent {
                        // Held open, unread, until the proxy stops.
                        std::future::pending::<()>().await;
                        drop(conn);
                    } else {
                        let _ = tunnel(conn, &seen).await;
                    }
                });
                while tunnels.try_join_next().is_some() {}
            }
        });
        ConnectProxy {
            addr,
            targets,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, for `proxy_url` or `HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tunnels opened so far.
    pub fn tunnels(&self) -> usize {
        self.targets().len()
    }

    /// The `host:port` of every tunnel opened so far.
    pub fn targets(&self) -> Vec<String> {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops listening: connections to its port are refused from now on
    /// (tunnels already open are cut too).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tunnel(mut conn: TcpStream, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or_default().split(' ');
    let (Some("CONNECT"), Some(target)) = (first.next(), first.next()) else {
        conn.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    let target = target.to_owned();
    let Ok(mut upstream) = TcpStream::connect(target.as_str()).await else {
        conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    seen.lock().unwrap_or_else(|e| e.into_inner()).push(target);
    conn.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}

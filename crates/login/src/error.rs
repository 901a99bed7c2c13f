//! Everything that can stop a login, worded for the person at the keyboard:
//! what failed, where, and what to do about it. kubectl shows the plugin's
//! stderr as is, so these messages are the whole user interface.

use std::fmt;
use std::path::PathBuf;

/// The services a login talks to, as their operators name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Keystone,
    Resmgr,
    Dex,
    Efa,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Keystone => "Keystone",
            Service::Resmgr => "resmgr",
            Service::Dex => "Dex",
            Service::Efa => "the EFA auth service",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// A flag or its value is wrong; nothing was sent anywhere.
    #[error("{0}")]
    Usage(String),

    #[error(
        "cannot reach {service} at {url}: {cause}\n  \
         check --endpoint, your network or VPN, and HTTPS_PROXY/NO_PROXY if you use a proxy"
    )]
    Unreachable {
        service: Service,
        url: String,
        cause: String,
    },

    #[error("TLS failure talking to {service} at {url}: {cause}\n  {hint}")]
    Tls {
        service: Service,
        url: String,
        cause: String,
        hint: String,
    },

    #[error(
        "{service} at {url} did not answer within {}\n  \
         is the endpoint right and the service up? (--timeout sets the limit)",
        humantime::format_duration(*.limit)
    )]
    Timeout {
        service: Service,
        url: String,
        limit: std::time::Duration,
    },

    #[error("{service} at {url} refused the user name or password for {user}\n  {hint}")]
    WrongPassword {
        service: Service,
        url: String,
        user: String,
        hint: String,
    },

    #[error("{service} at {url} answered HTTP {status}{detail}\n  {hint}")]
    Http {
        service: Service,
        url: String,
        status: u16,
        /// The service's own explanation, with a leading ": ", or empty.
        detail: String,
        hint: String,
    },

    #[error(
        "resmgr at {url} lists no Dex client `kubernetes` ({listed})\n  \
         PCD-K's Kubernetes login is not set up on this region: ask your PCD administrator \
         to enable it, or check --endpoint"
    )]
    NoKubernetesClient { url: String, listed: String },

    #[error("Dex at {url} refused the {grant} grant: {error}{description}\n  {hint}")]
    DexRefused {
        url: String,
        grant: &'static str,
        error: String,
        /// Dex's `error_description`, with a leading ": ", or empty.
        description: String,
        hint: String,
    },

    #[error("{service} at {url} answered something this plugin cannot use: {why}")]
    BadResponse {
        service: Service,
        url: String,
        why: String,
    },

    #[error("a password is needed to log in to {endpoint} as {user}, but {why}\n  {hint}")]
    NoPassword {
        endpoint: String,
        user: String,
        why: String,
        hint: String,
    },

    #[error("token cache {}: {why}", .path.display())]
    Cache { path: PathBuf, why: String },

    #[error(
        "another `kube-authn-login` has held {} for {seconds} s (is it waiting for a \
         password in another terminal?)\n  finish or stop that login and try again \
         (--lock-timeout sets how long to wait)",
        .path.display()
    )]
    LockTimeout { path: PathBuf, seconds: u64 },

    #[error("--ca-file {}: {error}", .path.display())]
    CaFile { path: PathBuf, error: CaBundleError },

    #[error("no cache directory: HOME and XDG_CACHE_HOME are unset; pass --cache-dir")]
    NoCacheDir,
}

impl LoginError {
    /// The request never got an answer: a retry with other credentials
    /// cannot help, and a still-valid cached token is worth using instead.
    pub(crate) fn is_transport(&self) -> bool {
        matches!(
            self,
            LoginError::Unreachable { .. } | LoginError::Tls { .. } | LoginError::Timeout { .. }
        )
    }
}

/// Why a PEM CA bundle (`--ca-file`, `--cluster-ca`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("cannot read: {0}")]
    Read(#[from] std::io::Error),
    /// The webhook's CA-file parser's verdict (no certificate, bad PEM).
    #[error("{0}")]
    Parse(String),
    #[error("not a PEM certificate bundle: {0}")]
    Certificates(reqwest::Error),
}

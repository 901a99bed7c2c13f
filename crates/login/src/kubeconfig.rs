//! `kube-authn-login pcd|efa ... --print-kubeconfig`: a kubectl user's kubeconfig whose
//! user runs this plugin (client-go exec, `client.authentication.k8s.io/v1`,
//! `interactiveMode: IfAvailable` so kubectl lends it the terminal for the
//! password prompt). The plugin's arguments are the login's own, with paths
//! made absolute: kubectl runs the plugin from wherever it was started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use kube_authn_common::kubeconfig::SingleKubeconfig;

use super::error::LoginError;
use super::exec::API_V1;
use super::http::read_ca_bundle;
use super::{Endpoint, Target};

/// The plugin options that go into the kubeconfig's `args` as given.
#[derive(Debug, Default, Clone)]
pub(crate) struct PluginOptions {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) password_env: Option<String>,
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) lock_timeout: Option<Duration>,
}

pub(crate) struct Request<'a> {
    pub(crate) target: &'a Target,
    pub(crate) options: &'a PluginOptions,
    /// What kubectl runs: a name on PATH or an absolute path.
    pub(crate) command: &'a str,
    /// The cluster's API server URL.
    pub(crate) cluster_server: &'a str,
    /// PEM CA bundle of the API server; without it kubectl uses the system roots.
    pub(crate) cluster_ca: Option<&'a Path>,
    /// Default: the API server's host name.
    pub(crate) cluster_name: Option<&'a str>,
}

#[derive(Serialize)]
struct User {
    exec: Exec,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Exec {
    api_version: &'static str,
    command: String,
    args: Vec<String>,
    interactive_mode: &'static str,
    provide_cluster_info: bool,
    install_hint: String,
}

/// The kubeconfig, as YAML.
pub(crate) fn generate(req: &Request<'_>) -> Result<String, LoginError> {
    let server = Endpoint::parse(req.cluster_server)
        .map_err(|_| {
            LoginError::Usage(format!(
                "--cluster-server {:?}: expected the API server's https:// URL",
                req.cluster_server
            ))
        })?
        .as_str()
        .to_owned();
    let cluster_name = match req.cluster_name {
        Some(n) if !n.trim().is_empty() => n.trim().to_owned(),
        Some(_) => return Err(LoginError::Usage("--cluster-name is empty".to_owned())),
        None => Endpoint(server.clone()).host(),
    };
    let ca_data = match req.cluster_ca {
        None => None,
        Some(path) => {
            let pem = read_ca_bundle(path)
                .map_err(|e| LoginError::Usage(format!("--cluster-ca {}: {e}", path.display())))?;
            Some(STANDARD.encode(&pem))
        }
    };
    let user_name = format!("{}-{}", req.target.kind(), req.target.username());
    let context_name = format!("{cluster_name}-{user_name}");
    let what = match req.target {
        Target::Pcd { .. } => "PCD-K (Keystone and Dex)",
        Target::Efa { .. } => "EFA",
    };
    let doc = SingleKubeconfig::new(
        &cluster_name,
        server,
        ca_data,
        &user_name,
        User {
            exec: Exec {
                api_version: API_V1,
                command: req.command.to_owned(),
                args: plugin_args(req.target, req.options)?,
                interactive_mode: "IfAvailable",
                provide_cluster_info: false,
                install_hint: format!(
                    "kube-authn-login logs you in to this cluster through {what}.\n\
                     It was not found: get it from your cluster administrator,\n\
                     put it on your PATH, and run kubectl again.\n"
                ),
            },
        },
        &context_name,
    );
    serde_norway::to_string(&doc)
        .map_err(|e| LoginError::Usage(format!("cannot write the kubeconfig: {e}")))
}

/// `pcd|efa` and the flags that reproduce this login.
pub(crate) fn plugin_args(target: &Target, o: &PluginOptions) -> Result<Vec<String>, LoginError> {
    let mut args: Vec<String> = vec![target.kind().into()];
    let mut flag = |name: &str, value: String| {
        args.push(format!("--{name}"));
        args.push(value);
    };
    flag("endpoint", target.endpoint().as_str().to_owned());
    flag("username", target.username().to_owned());
    match target {
        Target::Pcd {
            domain, project, ..
        } => {
            if let Some(d) = domain {
                flag("domain", d.clone());
            }
            if let Some(p) = project {
                flag("project", p.clone());
            }
        }
        Target::Efa { client_id, .. } => {
            if let Some(c) = client_id {
                flag("client-id", c.clone());
            }
        }
    }
    let absolute = |p: &Path, name: &str| {
        std::path::absolute(p)
            .map(|a| a.display().to_string())
            .map_err(|e| LoginError::Usage(format!("--{name} {}: {e}", p.display())))
    };
    if let Some(p) = &o.ca_file {
        // Checked now rather than at the first kubectl command.
        read_ca_bundle(p).map_err(|error| LoginError::CaFile {
            path: p.clone(),
            error,
        })?;
        flag("ca-file", absolute(p, "ca-file")?);
    }
    if let Some(p) = &o.cache_dir {
        flag("cache-dir", absolute(p, "cache-dir")?);
    }
    if let Some(v) = &o.password_env {
        flag("password-env", v.clone());
    }
    if let Some(t) = o.timeout {
        flag("timeout", humantime::format_duration(t).to_string());
    }
    if let Some(t) = o.lock_timeout {
        flag("lock-timeout", humantime::format_duration(t).to_string());
    }
    Ok(args)
}

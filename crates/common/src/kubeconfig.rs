//! The kubeconfig shape both binaries print: the webhook's for the
//! kube-apiserver, the login plugin's for kubectl users.

use serde::Serialize;

/// A kubeconfig with exactly one cluster, one user and one context (what
/// OpenShift demands of the webhook's, and all a kubectl user needs). `U` is
/// the user entry: client certificate here, exec plugin in `login`.
#[derive(Serialize)]
pub struct SingleKubeconfig<U: Serialize> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: [NamedCluster; 1],
    users: [NamedUser<U>; 1],
    contexts: [NamedContext; 1],
    #[serde(rename = "current-context")]
    current_context: String,
}

impl<U: Serialize> SingleKubeconfig<U> {
    /// `ca_data` is the base64 PEM bundle, if the server needs one.
    pub fn new(
        cluster: &str,
        server: String,
        ca_data: Option<String>,
        user_name: &str,
        user: U,
        context: &str,
    ) -> Self {
        SingleKubeconfig {
            api_version: "v1",
            kind: "Config",
            clusters: [NamedCluster {
                name: cluster.to_owned(),
                cluster: Cluster {
                    server,
                    certificate_authority_data: ca_data,
                },
            }],
            users: [NamedUser {
                name: user_name.to_owned(),
                user,
            }],
            contexts: [NamedContext {
                name: context.to_owned(),
                context: Context {
                    cluster: cluster.to_owned(),
                    user: user_name.to_owned(),
                },
            }],
            current_context: context.to_owned(),
        }
    }
}

#[derive(Serialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Serialize)]
struct Cluster {
    server: String,
    #[serde(
        rename = "certificate-authority-data",
        skip_serializing_if = "Option::is_none"
    )]
    certificate_authority_data: Option<String>,
}

#[derive(Serialize)]
struct NamedUser<U> {
    name: String,
    user: U,
}

#[derive(Serialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Serialize)]
struct Context {
    cluster: String,
    user: String,
}

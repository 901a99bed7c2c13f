//! The subcommands beside `serve`: what an operator runs to wire the webhook
//! up (`certs`, `kubeconfig`), the revocation list's
//! editor (`revoke`) and the self-contained `demo`.

pub mod certs;
pub mod demo;
pub mod kubeconfig;
pub mod revoke;

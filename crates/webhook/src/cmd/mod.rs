//! The subcommands beside `serve`: what an operator runs to wire the webhook
//! up (`certs`, `kubeconfig`), the revocation list's editor (`revoke`), the
//! self-contained `demo`, and `explain` for "why was my token refused?".

pub mod certs;
pub mod demo;
pub mod explain;
pub mod kubeconfig;
pub mod revoke;

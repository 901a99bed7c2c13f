//! The subcommands beside `serve`: what an operator runs to wire the webhook
//! up (`certs`, `kubeconfig`) and the self-contained `demo`.

pub mod certs;
pub mod demo;
pub mod kubeconfig;

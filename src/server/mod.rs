//! The API server: HTTPS, authentication, authorization, admission and the
//! Kubernetes REST API over the store.

pub mod authn;
pub mod authz;
pub mod catalog;
pub mod config;
pub mod discovery;
pub mod error;
pub mod health;
pub mod kinds;
pub mod kubeconfig;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod table;

pub use config::ServerArgs;

/// Runs `kube server` until a shutdown signal.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("kube server: not implemented yet")
}

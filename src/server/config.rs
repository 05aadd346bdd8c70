//! `kube server` flags (placeholder until the foundations work fills it in).

/// Flags of `kube server`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {}

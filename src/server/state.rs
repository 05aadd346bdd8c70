//! What every request handler shares: the object registry, the catalog of
//! resources and the checked server configuration.

use super::catalog::Catalog;
use super::config::ServerConfig;
use super::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone)]
pub struct ApiState {
    pub registry: Registry,
    pub catalog: Catalog,
    pub config: Arc<ServerConfig>,
    /// Set once bootstrap (default namespaces, RBAC roles) finished.
    pub bootstrapped: Arc<AtomicBool>,
    /// The usage samples `metrics.k8s.io` computes rates from.
    pub resource_metrics: Arc<super::resource_metrics::ResourceMetrics>,
}

impl ApiState {
    pub fn new(registry: Registry, catalog: Catalog, config: ServerConfig) -> ApiState {
        ApiState {
            registry,
            catalog,
            config: Arc::new(config),
            bootstrapped: Arc::new(AtomicBool::new(false)),
            resource_metrics: Arc::default(),
        }
    }

    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped.load(Ordering::Acquire)
    }
}

//! The agent's one error type: what failed (object, image, path, container)
//! and why.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("API request {what} failed: {message}")]
    Api { what: String, message: String, code: u16 },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image reference {reference:?}: {message}")]
    Reference { reference: String, message: String },
    #[error("Container image {image:?} is not present with pull policy of Never")]
    NeverPull { image: String },
    #[error("pull {image}: {message}")]
    Pull { image: String, message: String },
    #[error("layer {digest}: {message}")]
    Layer { digest: String, message: String },
    #[error("container {id}: {message}")]
    Runtime { id: String, message: String },
    #[error("pod sandbox {pod}: {message}")]
    Sandbox { pod: String, message: String },
    /// What the container's environment needs is missing (upstream's
    /// CreateContainerConfigError): the message is upstream's, e.g.
    /// `configmap "settings" not found`.
    #[error("{message}")]
    ContainerConfig { message: String },
    #[error("invalid pod {pod}: {message}")]
    InvalidPod { pod: String, message: String },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
}

impl AgentError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AgentError {
        let path = path.into();
        move |source| AgentError::Io { what, path, source }
    }

    pub fn api(what: impl Into<String>) -> impl FnOnce(crate::server::error::ApiError) -> AgentError {
        let what = what.into();
        move |err| AgentError::Api { what, message: err.message.clone(), code: err.code }
    }

    pub fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> AgentError {
        let what = what.into();
        move |source| AgentError::Sys { what, source }
    }

    pub fn not_found(&self) -> bool {
        matches!(self, AgentError::Api { code: 404, .. })
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

//! The error type of the cluster DNS: what failed (a socket, an API call,
//! an upstream exchange) with its cause.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot {what} {addr}: {source}")]
    Socket {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("API request {uri} failed ({code}): {message}")]
    Api { uri: String, code: u16, message: String },
    #[error("upstream {addr}: {message}")]
    Upstream { addr: SocketAddr, message: String },
    #[error("the DNS server stopped: {0}")]
    Server(String),
    #[error("node {node} has no usable spec.podCIDR ({cidr:?})")]
    PodCidr { node: String, cidr: String },
}

impl DnsError {
    /// A closure for `map_err` on socket calls.
    pub fn socket(what: &'static str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> DnsError {
        move |source| DnsError::Socket { what, addr, source }
    }

    pub fn upstream(addr: SocketAddr, message: impl std::fmt::Display) -> DnsError {
        DnsError::Upstream { addr, message: message.to_string() }
    }
}

impl From<crate::server::error::ApiError> for DnsError {
    fn from(err: crate::server::error::ApiError) -> DnsError {
        DnsError::Api { uri: String::new(), code: err.code, message: err.message }
    }
}

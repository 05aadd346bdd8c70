//! The pod network's one error type: what failed (link, address, file,
//! namespace) and why.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("invalid subnet {text:?}: {message}")]
    Subnet { text: String, message: String },
    #[error("no free address left in {subnet} (every address is allocated)")]
    Exhausted { subnet: String },
    #[error("the node network is not set up yet (no podCIDR)")]
    NotReady,
    #[error("{0}")]
    Host(String),
}

impl CniError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CniError {
        let path = path.into();
        move |source| CniError::Io { what, path, source }
    }

    pub fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> CniError {
        let what = what.into();
        move |source| CniError::Netlink { what, source }
    }

    pub fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> CniError {
        let what = what.into();
        move |source| CniError::Sys { what, source }
    }
}

/// The errno of a netlink error, if it is one (positive, e.g. `libc::EEXIST`).
pub fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

pub type Result<T, E = CniError> = std::result::Result<T, E>;

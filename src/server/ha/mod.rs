//! Highly available servers: the store's Raft group spans every server.
//! `--cluster-init` makes the first server listen for peers; `--join URL
//! --token K10…` makes another one fetch the cluster's keys from it
//! ([`joiner`]), open its store as an empty member and ask to be added
//! ([`handoff`] answers both on the serving side). Peers talk over mutual
//! TLS with certificates of their own CA (`peer-ca`), which only servers hold.
//! Members leave through [`removal`].

pub mod endpoints;
pub mod handoff;
pub mod joiner;
pub mod removal;

use super::config::{ClusterMode, ServerConfig};
use super::pki::{self, Authority, Usage};
use crate::store::{PeerConfig, PeerTls};
use std::path::{Path, PathBuf};

/// The CA of the store's peer links (in the TLS folder).
pub const PEER_CA: &str = "peer-ca";
/// The keys every server of a cluster shares, by file name in the TLS folder.
pub const SHARED_FILES: [&str; 5] = ["ca.crt", "ca.key", "peer-ca.crt", "peer-ca.key", "service-account.key"];
/// The founding server's member id (a store that began alone has it too).
const FOUNDER_ID: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds {text:?}, not a member id", path.display())]
    BadId { path: PathBuf, text: String },
}

/// This server's member id and peer settings for the store; `None` alone.
pub struct Peering {
    pub node_id: u64,
    pub peer: PeerConfig,
}

fn id_path(data_dir: &Path) -> PathBuf {
    data_dir.join("server").join("raft-id")
}

/// Marks the data folder as a member of a replicated group, so later starts
/// keep listening for peers without the flag.
fn peer_marker(data_dir: &Path) -> PathBuf {
    data_dir.join("server").join("raft-peer")
}

/// Forgets this server's place in a replicated group (after `kube snapshot
/// restore`): removes the peer marker and the member id, so the next start
/// is a single server that founds a new group. Returns what it removed.
pub fn reset_membership(data_dir: &Path) -> Result<Vec<PathBuf>, HaError> {
    let mut removed = Vec::new();
    for path in [peer_marker(data_dir), id_path(data_dir)] {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(HaError::Io { action: "remove", path, source }),
        }
    }
    Ok(removed)
}

/// The member id kept in the data folder, or a new one (the founder's is 1,
/// a joiner's random so that concurrent joins never collide).
fn member_id(data_dir: &Path, founder: bool) -> Result<u64, HaError> {
    let path = id_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| HaError::BadId { path, text: text.trim().to_string() }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let id = if founder { FOUNDER_ID } else { rand::random_range(2..u64::MAX / 2) };
            pki::write(&path, &format!("{id}\n"), 0o644)?;
            Ok(id)
        }
        Err(source) => Err(HaError::Io { action: "read", path, source }),
    }
}

/// The store's peer settings for `config`: its id, the peer certificate
/// (issued from the peer CA for the advertised address) and where to listen.
pub fn peering(config: &ServerConfig, tls_dir: &Path) -> Result<Option<Peering>, HaError> {
    let (raft, joining) = match &config.cluster {
        ClusterMode::Single => return Ok(None),
        ClusterMode::Init { raft } => (*raft, false),
        ClusterMode::Join { raft, .. } => (*raft, true),
    };
    let node_id = member_id(&config.data_dir, !joining)?;
    let peer_ca = Authority::load_or_create_named(tls_dir, PEER_CA)?;
    let advertised = std::net::SocketAddr::new(config.advertise_address, raft.port());
    let names = vec![config.advertise_address.to_string(), config.node_name.clone(), "127.0.0.1".to_string()];
    let wanted = names.clone();
    let pair = peer_ca.load_or_issue(tls_dir, "peer", "kube-store-peer", Usage::Peer { names: &names }, |pem| {
        let have = pki::subject_alt_names(pem);
        wanted.iter().all(|n| have.contains(n))
    })?;
    pki::write(&peer_marker(&config.data_dir), "", 0o644)?;
    let tls = PeerTls { ca_pem: peer_ca.cert_pem.clone(), cert_pem: pair.cert_pem, key_pem: pair.key_pem };
    let peer = PeerConfig { listen_addr: raft, advertise_addr: advertised.to_string(), tls, join: joining };
    Ok(Some(Peering { node_id, peer }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_membership_forgets_the_group() {
        let dir = tempfile::tempdir().unwrap();
        assert!(reset_membership(dir.path()).unwrap().is_empty());
        pki::write(&peer_marker(dir.path()), "", 0o644).unwrap();
        assert_eq!(member_id(dir.path(), false).map(|id| id >= 2).ok(), Some(true));
        let removed = reset_membership(dir.path()).unwrap();
        assert_eq!(removed, vec![peer_marker(dir.path()), id_path(dir.path())]);
        assert!(!peer_marker(dir.path()).exists());
        // A later --cluster-init founds the group again as member 1.
        assert_eq!(member_id(dir.path(), true).unwrap(), FOUNDER_ID);
    }
}

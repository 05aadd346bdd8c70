//! The service proxy's one error type: which nft transaction failed and
//! why (nft's own stderr is kept verbatim).

#[derive(Debug, thiserror::Error)]
pub enum NetfilterError {
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nft rejected the {what} transaction ({status}): {stderr}")]
    Nft { what: &'static str, status: String, stderr: String },
    #[error("cannot encode the nft ruleset: {0}")]
    Encode(#[from] serde_json::Error),
}

//! The cluster crate's errors, named for what the caller must do.

#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Error {
    /// There is no leader to take a write or a consistent read (Consul: `No cluster leader`).
    #[error("No cluster leader")]
    NoLeader,
    /// This server is not the leader; forwarding is the caller's job.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<String> },
    /// The state machine rejected the command; nothing changed. The inner error says why, in
    /// terms the caller maps to a status code.
    #[error("{0}")]
    Rejected(cairn_types::Error),
    /// Storage or Raft failed in a way that stops this server.
    #[error("raft: {0}")]
    Fatal(String),
    /// Opening or using the data directory failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The calling agent's own `limits.rpc_rate` refused the call (Consul's message; 429).
    #[error("RPC rate limit exceeded")]
    RateLimited,
}

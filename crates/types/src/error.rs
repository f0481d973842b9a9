//! The error enum shared by the types and store crates: why a request or a command was refused.
//! Variants are named for what the caller decides (Consul's status code is chosen from the variant
//! in one exhaustive match, in the agent's HTTP layer), never from the message text.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// The request is malformed or a field is invalid (Consul: 400). The message is shown to the user.
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist (Consul: 404).
    #[error("{0}")]
    NotFound(String),
    /// A check-and-set, lock or index precondition did not hold (Consul: 409 where it answers with
    /// an error rather than `false`).
    #[error("{0}")]
    CasFailed(String),
    /// The caller may not do this (Consul: 403).
    #[error("{0}")]
    PermissionDenied(String),
    /// The state store refused a well-formed write because of what it holds (an unknown session, a
    /// missing node registration, a name already taken). Consul's RPC layer answers these with 500,
    /// and clients match on that, so the agent does too.
    #[error("{0}")]
    Rejected(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    pub fn rejected(msg: impl Into<String>) -> Self {
        Error::Rejected(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }
}

/// Transaction errors carry only the message (`{"OpIndex": i, "What": "..."}`).
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

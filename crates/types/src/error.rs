//! The error enum of the types crate: input that fails validation.

/// An error in input data. Variants name what the caller decides: every one is a client error (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request is malformed or a field is invalid; the message is shown to the user.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}

//! Who may do what: staff accounts and locations, passwords, second factor, sessions, sign-in
//! throttling and integration tokens.

pub mod accounts;
pub mod password;
pub mod sessions;
pub mod throttle;
pub mod tokens;
pub mod totp;

use crate::store::StoreError;

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A field of a form or request is not acceptable; the message says how to fix it.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Password(#[from] password::PasswordRejected),
    #[error("password hashing failed: {0}")]
    Hashing(#[from] password::PasswordError),
    /// Too many password hashes are running; try again shortly.
    #[error("the server is busy checking other sign-ins; try again in a moment")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

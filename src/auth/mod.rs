//! Who is calling: the token rules of the README's "How tokens are checked" ([`token`], pure, the
//! clock a parameter), the held signing keys ([`keys`]) and the [`Verifier`] that applies the one
//! to the other. Knows nothing of HTTP: the API layer hands it the raw token and maps its errors.

pub mod keys;
pub mod token;
mod verifier;

use self::keys::Unavailable;
pub use self::{
    token::{Claims, Organization, Policy, TokenError},
    verifier::Verifier,
};

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No bearer token at all (no header, no cookie, or another scheme): a bare challenge.
    Missing(&'static str),
    /// A token was presented and failed a check.
    Token(TokenError),
    /// Not the caller's fault: no usable signing keys: a 503, not a 401.
    KeysUnavailable(Unavailable),
}

impl AuthError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing(_) => "token-missing",
            Self::Token(e) => e.code(),
            Self::KeysUnavailable(_) => "signing-keys-unavailable",
        }
    }
}

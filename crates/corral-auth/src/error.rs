//! The crate's error type.

/// Everything that can go wrong in `corral-auth`.
///
/// Messages never contain secrets: no passwords, keys or tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A role string other than `admin`, `user` or `pending`.
    #[error("unknown role {0:?}; expected admin, user or pending")]
    UnknownRole(String),
    /// The password is empty.
    #[error("the password must not be empty")]
    EmptyPassword,
    /// The password is longer than the policy allows.
    #[error("the password must be at most {max} bytes long")]
    PasswordTooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// A stored password hash that is not an argon2 PHC string.
    #[error("the stored password hash is not a valid argon2 PHC string")]
    InvalidPasswordHash,
    /// The password hasher failed (bad parameters); an internal error.
    #[error("hashing the password failed: {0}")]
    Hashing(String),
    /// The token signing secret is empty.
    #[error("the token signing secret must not be empty")]
    EmptySecret,
    /// The token is not a well-formed HS256 JWT with Open WebUI's claims.
    #[error("the token is malformed")]
    MalformedToken,
    /// The token is well-formed but its signature does not match the secret.
    #[error("the token signature is invalid")]
    BadSignature,
    /// The token's `exp` is in the past.
    #[error("the token has expired")]
    ExpiredToken,
    /// Creating a token failed, for example because its expiry overflows; an internal error.
    #[error("creating the token failed: {0}")]
    TokenEncoding(String),
    /// A token lifetime string (`JWT_EXPIRES_IN`) that does not follow the grammar.
    #[error("invalid token lifetime {value:?}: {reason}")]
    InvalidExpiresIn {
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A stored API key hash that is not 64 lowercase hex digits.
    #[error("the stored API key hash is not 64 lowercase hex digits")]
    InvalidHashedKey,
    /// A model's `access_control` JSON that does not have the expected shape.
    #[error("invalid access control: {0}")]
    InvalidAccessControl(String),
}

impl AuthError {
    /// A short, stable, low-cardinality name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::UnknownRole(_) => "unknown_role",
            AuthError::EmptyPassword => "empty_password",
            AuthError::PasswordTooLong { .. } => "password_too_long",
            AuthError::InvalidPasswordHash => "invalid_password_hash",
            AuthError::Hashing(_) => "hashing",
            AuthError::EmptySecret => "empty_secret",
            AuthError::MalformedToken => "malformed_token",
            AuthError::BadSignature => "bad_signature",
            AuthError::ExpiredToken => "expired_token",
            AuthError::TokenEncoding(_) => "token_encoding",
            AuthError::InvalidExpiresIn { .. } => "invalid_expires_in",
            AuthError::InvalidHashedKey => "invalid_hashed_key",
            AuthError::InvalidAccessControl(_) => "invalid_access_control",
        }
    }

    /// Whether the error comes from a token the client presented (answer 401), as opposed to configuration or
    /// internal failures.
    pub fn is_token_rejection(&self) -> bool {
        matches!(
            self,
            AuthError::MalformedToken | AuthError::BadSignature | AuthError::ExpiredToken
        )
    }
}

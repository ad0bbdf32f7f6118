//! Session tokens: HS256 JWTs with Open WebUI's claims, and the `JWT_EXPIRES_IN` lifetime grammar.
//!
//! Tokens are compatible both ways with Open WebUI sharing the same secret: the claims are
//! `{"id": <user id>, "exp": <unix seconds, omitted for no expiry>, "jti": <uuid4>}`.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::AuthError;

mod expires_in;
#[cfg(test)]
mod tests;

pub use expires_in::{parse_expires_in, DEFAULT_EXPIRES_IN};

/// The verified claims of a session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// The user's id.
    pub id: String,
    /// Expiry as unix seconds, or `None` for a token that never expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// The token's unique id (a hyphenated uuid4), used for revocation at sign-out.
    pub jti: String,
}

/// A freshly issued session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The encoded JWT, for the response body and the `token` cookie.
    pub token: String,
    /// The token's `jti` claim.
    pub jti: String,
    /// The `exp` claim as unix seconds (the response's `expires_at` and the cookie's `Expires`), or `None`.
    pub expires_at: Option<i64>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token", &"<redacted>")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Issues a token for `user_id` at `now`, with a `jti` from the operating system's RNG.
///
/// `expires_in` of `None` omits `exp` (Open WebUI's `JWT_EXPIRES_IN` of `-1` or `0`).
pub fn issue_token(
    secret: &[u8],
    user_id: &str,
    now: DateTime<Utc>,
    expires_in: Option<Duration>,
) -> Result<Token, AuthError> {
    issue_token_with(&mut rand::rngs::OsRng, secret, user_id, now, expires_in)
}

/// Issues a token like [`issue_token`], drawing the `jti` from `rng`.
pub fn issue_token_with<R: RngCore + CryptoRng>(
    rng: &mut R,
    secret: &[u8],
    user_id: &str,
    now: DateTime<Utc>,
    expires_in: Option<Duration>,
) -> Result<Token, AuthError> {
    if secret.is_empty() {
        return Err(AuthError::EmptySecret);
    }
    let exp = match expires_in {
        None => None,
        Some(d) => {
            let d = chrono::Duration::from_std(d).map_err(|e| AuthError::TokenEncoding(e.to_string()))?;
            let at = now
                .checked_add_signed(d)
                .ok_or_else(|| AuthError::TokenEncoding("the expiry is out of range".to_owned()))?;
            // Python's `timegm(utctimetuple())` truncates to whole seconds, and so do we.
            Some(at.timestamp())
        }
    };
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    let jti = uuid::Builder::from_random_bytes(bytes).into_uuid().to_string();
    let claims = Claims {
        id: user_id.to_owned(),
        exp,
        jti: jti.clone(),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::TokenEncoding(e.to_string()))?;
    Ok(Token {
        token,
        jti,
        expires_at: exp,
    })
}

/// The claims as they arrive, before checking `exp`'s type.
#[derive(Deserialize)]
struct RawClaims {
    id: String,
    /// `Some(Value::Null)` for an explicit null, which is malformed; `None` only when absent.
    #[serde(default, deserialize_with = "present")]
    exp: Option<serde_json::Value>,
    jti: String,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

/// Verifies a token's HS256 signature and expiry at `now`, and returns its claims.
///
/// Errors: [`AuthError::BadSignature`], [`AuthError::ExpiredToken`] (when `exp <= now`, in whole seconds, no
/// leeway, as PyJWT), [`AuthError::MalformedToken`] for anything else (not a JWT, another algorithm, missing
/// `id` or `jti`, a non-numeric `exp`), and [`AuthError::EmptySecret`]. Never panics, whatever the input.
pub fn verify_token(secret: &[u8], token: &str, now: DateTime<Utc>) -> Result<Claims, AuthError> {
    if secret.is_empty() {
        return Err(AuthError::EmptySecret);
    }
    let mut validation = Validation::new(Algorithm::HS256);
    // Expiry is checked below against the `now` we were given, not the system clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims = HashSet::new();
    let data = jsonwebtoken::decode::<RawClaims>(token, &DecodingKey::from_secret(secret), &validation).map_err(
        |e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            _ => AuthError::MalformedToken,
        },
    )?;
    let raw = data.claims;
    let exp = match raw.exp {
        None => None,
        Some(serde_json::Value::Number(n)) => Some(number_to_seconds(&n).ok_or(AuthError::MalformedToken)?),
        Some(_) => return Err(AuthError::MalformedToken),
    };
    if let Some(exp) = exp {
        if exp <= now.timestamp() {
            return Err(AuthError::ExpiredToken);
        }
    }
    Ok(Claims {
        id: raw.id,
        exp,
        jti: raw.jti,
    })
}

/// Reads an `exp` claim as whole seconds; PyJWT accepts floats and truncates them.
fn number_to_seconds(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    if f.is_finite() && f.abs() < 1e15 {
        // The bound above keeps the cast exact and in range.
        Some(f.trunc() as i64)
    } else {
        None
    }
}

/// Generates a signing secret: 32 random bytes from the operating system, as 64 lowercase hex characters.
///
/// For first start-up when no secret is configured; the server persists it.
pub fn generate_jwt_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

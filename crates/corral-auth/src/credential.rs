//! Reading credentials from `Authorization` and `Cookie` header values, pure and panic-free.
//!
//! The reference crashes with a plain 500 on an `Authorization` header with no space or several spaces (its
//! API-key middleware splits on one space). Here a header that holds no bearer credential (another scheme, or no
//! value at all) is [`Credential::Other`], after which the cookie is tried, as the reference's `HTTPBearer` does;
//! a bearer value that cannot be a token is [`Credential::Malformed`].

use std::fmt;

use crate::api_key::{looks_like_api_key, PlainKey};

#[cfg(test)]
mod tests;

/// The cookie that carries the session JWT (or, as in the reference, an API key).
pub const TOKEN_COOKIE: &str = "token";

/// What an `Authorization` header value holds.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Bearer <jwt>` (the scheme is case-insensitive).
    Bearer(String),
    /// `Bearer sk-...`: an API key.
    ApiKey(PlainKey),
    /// `Bearer` followed by a value that is not visible ASCII without spaces (several spaces, control or
    /// non-ASCII characters).
    Malformed,
    /// A header with no bearer credential: another scheme (for example `Basic`), held here when it is a valid
    /// scheme name, or no value at all (`Bearer`, empty, no space), with an empty scheme.
    Other(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credential::ApiKey(key) => write!(f, "ApiKey({key:?})"),
            Credential::Malformed => f.write_str("Malformed"),
            Credential::Other(scheme) => write!(f, "Other({scheme:?})"),
        }
    }
}

/// Parses an `Authorization` header value. Never panics.
///
/// Split as Starlette does, at the first space: an empty scheme or an empty value is no credential at all.
pub fn parse_authorization(header: &str) -> Credential {
    let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() || value.is_empty() {
        // Nothing after the scheme (a bare `sk-…` included) is not kept, so a secret cannot reach `Debug`.
        return Credential::Other(String::new());
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        let named = scheme.len() <= 32 && scheme.bytes().all(is_tchar);
        return Credential::Other(if named { scheme.to_owned() } else { String::new() });
    }
    if !is_credential_value(value) {
        return Credential::Malformed;
    }
    if looks_like_api_key(value) {
        Credential::ApiKey(PlainKey::new(value))
    } else {
        Credential::Bearer(value.to_owned())
    }
}

/// Parses a raw `Authorization` header value; a bearer value that is not UTF-8 is [`Credential::Malformed`],
/// another scheme [`Credential::Other`].
///
/// Use it when the HTTP library refuses to turn the value into a string.
pub fn parse_authorization_bytes(header: &[u8]) -> Credential {
    match std::str::from_utf8(header) {
        Ok(s) => parse_authorization(s),
        Err(_) if header.len() > 7 && header[..7].eq_ignore_ascii_case(b"bearer ") => Credential::Malformed,
        Err(_) => Credential::Other(String::new()),
    }
}

/// Where a credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    /// The `Authorization: Bearer` header.
    Header,
    /// The `token` cookie.
    Cookie,
}

/// The credential a request presents, after the preference rules of the reference's section 6.3.
#[derive(Clone, PartialEq, Eq)]
pub enum Presented {
    /// A session JWT.
    Jwt {
        /// The encoded token.
        token: String,
        /// Where it came from.
        source: CredentialSource,
    },
    /// An API key.
    ///
    /// The reference applies its API-key endpoint restriction only to keys in the header, so a key in the cookie
    /// bypasses it; Corral's server should restrict keys from either source.
    ApiKey {
        /// The key.
        key: PlainKey,
        /// Where it came from.
        source: CredentialSource,
    },
    /// A malformed `Authorization` header or `token` cookie: answer 401.
    Malformed,
    /// Nothing usable: answer 401 [`NOT_AUTHENTICATED`](crate::messages::NOT_AUTHENTICATED).
    Missing,
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Presented::Jwt { source, .. } => write!(f, "Jwt {{ token: <redacted>, source: {source:?} }}"),
            Presented::ApiKey { source, .. } => write!(f, "ApiKey {{ key: <redacted>, source: {source:?} }}"),
            Presented::Malformed => f.write_str("Malformed"),
            Presented::Missing => f.write_str("Missing"),
        }
    }
}

/// Chooses the credential from the `Authorization` header value and the `token` cookie value.
///
/// A Bearer header wins. With no header, or a header with another scheme, the cookie is used; an empty cookie
/// counts as absent. Either credential takes the API-key path when it starts with `sk-`.
/// A malformed header is rejected rather than falling back to the cookie: a client that sent a broken header
/// should not silently act as whoever the browser's cookie belongs to.
pub fn select_credential(authorization: Option<&str>, cookie_token: Option<&str>) -> Presented {
    match authorization.map(parse_authorization) {
        Some(Credential::Bearer(token)) => {
            return Presented::Jwt {
                token,
                source: CredentialSource::Header,
            }
        }
        Some(Credential::ApiKey(key)) => {
            return Presented::ApiKey {
                key,
                source: CredentialSource::Header,
            }
        }
        Some(Credential::Malformed) => return Presented::Malformed,
        Some(Credential::Other(_)) | None => {}
    }
    match cookie_token {
        None | Some("") => Presented::Missing,
        Some(value) if !is_credential_value(value) => Presented::Malformed,
        Some(value) if looks_like_api_key(value) => Presented::ApiKey {
            key: PlainKey::new(value),
            source: CredentialSource::Cookie,
        },
        Some(value) => Presented::Jwt {
            token: value.to_owned(),
            source: CredentialSource::Cookie,
        },
    }
}

/// Finds the `token` cookie in a raw `Cookie` header value.
///
/// Follows Starlette's parser: pairs split on `;`, names and values trimmed, surrounding double quotes removed,
/// and the last `token` wins.
pub fn token_from_cookie_header(cookie_header: &str) -> Option<&str> {
    cookie_header
        .rsplit(';')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| name.trim() == TOKEN_COOKIE)
        .map(|(_, value)| {
            let value = value.trim();
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
        })
        .next()
}

/// Splits a comma-separated `API_KEYS_ALLOWED_ENDPOINTS` value into trimmed, non-empty paths.
pub fn parse_allowed_endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether an API key may be used on `path`: the path equals one of `allowed` or starts with it followed by `/`.
///
/// Empty entries are ignored; in the reference a trailing comma yields an empty entry that allows every path.
pub fn api_key_endpoint_allowed(path: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .filter(|a| !a.is_empty())
        .any(|a| path == a || path.strip_prefix(a.as_str()).is_some_and(|rest| rest.starts_with('/')))
}

/// RFC 9110 token characters, allowed in an auth scheme.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A non-empty run of visible ASCII, with no spaces: what a JWT or an API key can contain, and more.
fn is_credential_value(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

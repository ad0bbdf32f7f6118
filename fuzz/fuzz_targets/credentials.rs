//! Credential and cookie parsing in `corral-auth`: any `Authorization` and `Cookie` header values,
//! token and lifetime strings are read without panicking, and a secret never reaches `Debug`.
//!
//! Input: the `Authorization` value, a NUL byte, then the `Cookie` value (also used as a token, an
//! `expires_in` value and an allowed-endpoints list).
#![no_main]

use corral_auth::{
    api_key_endpoint_allowed, parse_allowed_endpoints, parse_authorization, parse_authorization_bytes,
    parse_expires_in, select_credential, token_from_cookie_header, verify_token, Credential, Presented,
};
use libfuzzer_sys::fuzz_target;

/// Whether `secret` shows in `debug`. Only secrets of 8 bytes or more holding a digit are checked:
/// the fixed text of the `Debug` forms (`Malformed`, `Bearer(<redacted>)`, …) has no digit, so it
/// cannot contain them by chance.
fn leaks(debug: &str, secret: &str) -> bool {
    secret.len() >= 8 && secret.bytes().any(|b| b.is_ascii_digit()) && debug.contains(secret)
}

fuzz_target!(|data: &[u8]| {
    let (header, cookie) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };

    let from_bytes = parse_authorization_bytes(header);
    if let Ok(text) = std::str::from_utf8(header) {
        let parsed = parse_authorization(text);
        assert_eq!(parsed, from_bytes, "the byte and text parsers disagree on {text:?}");
        let debug = format!("{parsed:?}");
        if let Some((_, value)) = text.split_once(' ') {
            // `Other` keeps a short scheme name (text before the first space), never what follows it.
            let shown = match &parsed {
                Credential::Other(scheme) => debug.replacen(scheme.as_str(), "", 1),
                _ => debug.clone(),
            };
            assert!(!leaks(&shown, value.trim()), "Debug shows the credential: {debug}");
        }
        match &parsed {
            Credential::Bearer(token) => {
                assert!(
                    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()),
                    "{token:?}"
                )
            }
            Credential::Other(scheme) => assert!(!scheme.eq_ignore_ascii_case("bearer") || scheme.is_empty()),
            Credential::ApiKey(_) | Credential::Malformed => {}
        }
    }

    let Ok(cookie) = std::str::from_utf8(cookie) else {
        return;
    };
    let token = token_from_cookie_header(cookie);
    if let Some(token) = token {
        assert!(
            !token.contains(';'),
            "a cookie value runs into the next pair: {token:?}"
        );
        assert!(cookie.contains(token));
    }
    let header_text = std::str::from_utf8(header).ok();
    let presented = select_credential(header_text, token);
    let debug = format!("{presented:?}");
    if let Some(token) = token {
        assert!(!leaks(&debug, token.trim()), "Debug shows the cookie token: {debug}");
    }
    if let (Some(text), Presented::Missing) = (header_text, &presented) {
        assert!(
            !matches!(parse_authorization(text), Credential::Bearer(_) | Credential::ApiKey(_)),
            "a bearer header was ignored"
        );
    }

    let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
    let _ = verify_token(b"fuzzing secret", cookie, now);
    let _ = parse_expires_in(cookie);
    let allowed = parse_allowed_endpoints(cookie);
    assert!(allowed.iter().all(|p| !p.is_empty() && !p.contains(',')));
    let path = header_text.unwrap_or("/api/chat");
    if api_key_endpoint_allowed(path, &allowed) {
        assert!(allowed.iter().any(|a| path.starts_with(a.as_str())));
    }
});

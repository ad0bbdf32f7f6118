//! Tests for header and cookie parsing.

use proptest::prelude::*;

use super::*;

fn bearer(s: &str) -> Credential {
    Credential::Bearer(s.to_owned())
}

fn api_key(s: &str) -> Credential {
    Credential::ApiKey(PlainKey::new(s))
}

#[test]
fn authorization_headers() {
    let cases = [
        ("Bearer eyJ.abc.def", bearer("eyJ.abc.def")),
        ("bearer eyJ.abc.def", bearer("eyJ.abc.def")),
        ("BEARER x", bearer("x")),
        (
            "Bearer sk-0123456789abcdef0123456789abcdef",
            api_key("sk-0123456789abcdef0123456789abcdef"),
        ),
        ("bearer sk-", api_key("sk-")),
        ("Bearer Sk-abc", bearer("Sk-abc")),
        ("Basic dXNlcjpwYXNz", Credential::Other("Basic".to_owned())),
        ("Token abc", Credential::Other("Token".to_owned())),
        ("X-Custom_1 x", Credential::Other("X-Custom_1".to_owned())),
        ("Bearer= x", Credential::Other(String::new())),
        // A header with no credential is none; a bearer value that cannot be a token is malformed; never a panic.
        ("", Credential::Other(String::new())),
        (" ", Credential::Other(String::new())),
        ("Bearer", Credential::Other(String::new())),
        ("Bearer ", Credential::Other(String::new())),
        ("Bearer  x", Credential::Malformed),
        ("Bearer x ", Credential::Malformed),
        (" Bearer x", Credential::Other(String::new())),
        ("Bearer x y", Credential::Malformed),
        ("Bearer\tx", Credential::Other(String::new())),
        ("Bearer x\ty", Credential::Malformed),
        ("Bearer x\r\n", Credential::Malformed),
        ("Bearer tökén", Credential::Malformed),
        ("Béarer x", Credential::Other(String::new())),
        ("Bearer \u{0}", Credential::Malformed),
        ("sk-0123456789abcdef0123456789abcdef", Credential::Other(String::new())),
        ("Bear(er x", Credential::Other(String::new())),
        ("Basic  x", Credential::Other("Basic".to_owned())),
    ];
    for (header, want) in cases {
        assert_eq!(parse_authorization(header), want, "{header:?}");
    }
}

#[test]
fn authorization_bytes() {
    assert_eq!(parse_authorization_bytes(b"Bearer abc"), bearer("abc"));
    assert_eq!(parse_authorization_bytes(b"Bearer \xff\xfe"), Credential::Malformed);
    assert_eq!(parse_authorization_bytes(b"\x80"), Credential::Other(String::new()));
    assert_eq!(parse_authorization_bytes(b""), Credential::Other(String::new()));
}

#[test]
fn debug_never_shows_secrets() {
    let shown = format!("{:?}", parse_authorization("Bearer secret.jwt.value"));
    assert_eq!(shown, "Bearer(<redacted>)");
    let shown = format!("{:?}", parse_authorization("Bearer sk-secretkey"));
    assert!(!shown.contains("secretkey"), "{shown}");
    let presented = select_credential(None, Some("cookie.jwt.secret"));
    assert!(!format!("{presented:?}").contains("secret"));
    let presented = select_credential(Some("Bearer sk-secret"), None);
    assert!(!format!("{presented:?}").contains("secret"));
}

fn jwt(token: &str, source: CredentialSource) -> Presented {
    Presented::Jwt {
        token: token.to_owned(),
        source,
    }
}

fn key(k: &str, source: CredentialSource) -> Presented {
    Presented::ApiKey {
        key: PlainKey::new(k),
        source,
    }
}

#[test]
fn header_first_then_cookie() {
    use CredentialSource::{Cookie, Header};
    let cases: [(Option<&str>, Option<&str>, Presented); 15] = [
        (None, None, Presented::Missing),
        (None, Some(""), Presented::Missing),
        (Some("Bearer h"), None, jwt("h", Header)),
        (Some("Bearer h"), Some("c"), jwt("h", Header)),
        (Some("Bearer sk-h"), Some("c"), key("sk-h", Header)),
        (None, Some("c"), jwt("c", Cookie)),
        (None, Some("sk-c"), key("sk-c", Cookie)),
        // A non-Bearer scheme is ignored and the cookie is tried, as in the reference.
        (Some("Basic abc"), Some("c"), jwt("c", Cookie)),
        (Some("Basic abc"), None, Presented::Missing),
        // A bearer value that cannot be a token is refused even with a cookie.
        (Some("Bearer  h"), Some("c"), Presented::Malformed),
        // A header with no credential at all is no usable Bearer header: the cookie is tried.
        (Some(""), Some("c"), jwt("c", Cookie)),
        (Some("Bearer"), Some("c"), jwt("c", Cookie)),
        (Some("Bearer "), None, Presented::Missing),
        (None, Some("has space"), Presented::Malformed),
        (None, Some("nön-ascii"), Presented::Malformed),
    ];
    for (header, cookie, want) in cases {
        assert_eq!(select_credential(header, cookie), want, "{header:?} {cookie:?}");
    }
}

#[test]
fn cookie_header_parsing() {
    let cases = [
        ("token=abc", Some("abc")),
        ("a=1; token=abc; b=2", Some("abc")),
        ("a=1;token=abc", Some("abc")),
        (" token = abc ", Some("abc")),
        ("token=\"abc\"", Some("abc")),
        ("token=\"", Some("\"")),
        ("token=a=b", Some("a=b")),
        ("token=first; token=second", Some("second")),
        ("token=", Some("")),
        ("mytoken=abc", None),
        ("tokens=abc", None),
        ("token", None),
        ("", None),
        (";;;", None),
        ("TOKEN=abc", None),
    ];
    for (header, want) in cases {
        assert_eq!(token_from_cookie_header(header), want, "{header:?}");
    }
}

#[test]
fn allowed_endpoints() {
    let allowed = parse_allowed_endpoints(" /api/chat , /ollama/api,,/v1/models, ");
    assert_eq!(allowed, ["/api/chat", "/ollama/api", "/v1/models"]);
    let cases = [
        ("/api/chat", true),
        ("/api/chat/completions", true),
        ("/api/chats", false),
        ("/ollama/api/tags", true),
        ("/ollama/apix", false),
        ("/v1/models", true),
        ("/v1", false),
        ("/", false),
        ("", false),
    ];
    for (path, ok) in cases {
        assert_eq!(api_key_endpoint_allowed(path, &allowed), ok, "{path}");
    }
    // An empty entry must not allow everything (the reference's trailing-comma bug).
    assert!(!api_key_endpoint_allowed("/anything", &[String::new()]));
    assert!(!api_key_endpoint_allowed("/anything", &[]));
}

proptest! {
    #[test]
    fn random_headers_never_panic(header in "\\PC{0,80}") {
        let _ = parse_authorization(&header);
        let _ = select_credential(Some(&header), Some(&header));
        let _ = token_from_cookie_header(&header);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = parse_authorization_bytes(&bytes);
    }

    #[test]
    fn anything_with_whitespace_or_non_ascii_in_the_value_is_malformed(
        value in "[a-z]{0,5}[ \t\r\né\u{0}][a-z]{0,5}",
    ) {
        prop_assert_eq!(parse_authorization(&format!("Bearer {value}")), Credential::Malformed);
    }

    #[test]
    fn well_formed_bearer_values_survive(value in "[A-Za-z0-9._~+/=-]{1,80}") {
        let got = parse_authorization(&format!("Bearer {value}"));
        if value.starts_with("sk-") {
            prop_assert_eq!(got, Credential::ApiKey(PlainKey::new(value)));
        } else {
            prop_assert_eq!(got, Credential::Bearer(value));
        }
    }
}

//! The user a request runs as, and the `X-OpenWebUI-User-*` headers forwarded upstream (reference section 3.1).

use chrono::NaiveDate;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::Role;

/// The user-name header.
pub const USER_NAME_HEADER: &str = "X-OpenWebUI-User-Name";
/// The user-id header.
pub const USER_ID_HEADER: &str = "X-OpenWebUI-User-Id";
/// The user-email header.
pub const USER_EMAIL_HEADER: &str = "X-OpenWebUI-User-Email";
/// The user-role header.
pub const USER_ROLE_HEADER: &str = "X-OpenWebUI-User-Role";
/// The chat-id header, sent with a request body's `metadata.chat_id`.
pub const CHAT_ID_HEADER: &str = "X-OpenWebUI-Chat-Id";

/// Python's `urllib.parse.quote(s, safe=" ")`: everything but ASCII letters, digits, `_.-~` and the space.
const NAME_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b' ');

/// What request handling needs to know about the authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user's id.
    pub id: String,
    /// The display name.
    pub name: String,
    /// The (lower-cased) email.
    pub email: String,
    /// The role.
    pub role: Role,
    /// Free-text bio, for `{{USER_BIO}}`.
    pub bio: Option<String>,
    /// Gender, for `{{USER_GENDER}}`.
    pub gender: Option<String>,
    /// Date of birth, for `{{USER_BIRTH_DATE}}` and `{{USER_AGE}}`.
    pub date_of_birth: Option<NaiveDate>,
    /// Location (`info.location`), for `{{USER_LOCATION}}`.
    pub location: Option<String>,
}

impl UserInfo {
    /// A user with the required fields and no profile details.
    pub fn new(id: impl Into<String>, name: impl Into<String>, email: impl Into<String>, role: Role) -> Self {
        UserInfo {
            id: id.into(),
            name: name.into(),
            email: email.into(),
            role,
            bio: None,
            gender: None,
            date_of_birth: None,
            location: None,
        }
    }
}

/// The user-info headers, in the reference's order: name, id, email, role.
///
/// The name is percent-encoded exactly as the reference does (`José O'Neil` → `Jos%C3%A9 O%27Neil`).
/// The id and email are sent as they are when they are valid header text, and encoded the same way otherwise, so
/// the result is always a valid header value.
pub fn user_info_headers(user: &UserInfo) -> Vec<(&'static str, String)> {
    vec![
        (USER_NAME_HEADER, encode(&user.name)),
        (USER_ID_HEADER, header_safe(&user.id)),
        (USER_EMAIL_HEADER, header_safe(&user.email)),
        (USER_ROLE_HEADER, user.role.as_str().to_owned()),
    ]
}

/// The chat-id header for a request body's `metadata.chat_id`, when it is a non-empty string or a number.
///
/// The reference sends it whenever the value is truthy; values that are not valid header text are encoded.
pub fn chat_id_header(chat_id: &serde_json::Value) -> Option<(&'static str, String)> {
    let text = match chat_id {
        serde_json::Value::String(s) if !s.is_empty() => s.clone(),
        serde_json::Value::Number(n) if n.as_f64() != Some(0.0) => n.to_string(),
        _ => return None,
    };
    Some((CHAT_ID_HEADER, header_safe(&text)))
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, NAME_ENCODE).to_string()
}

/// `s` itself when it is visible ASCII and spaces (with no edge spaces), else percent-encoded.
fn header_safe(s: &str) -> String {
    let plain = s.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) && s.trim() == s;
    if plain {
        s.to_owned()
    } else {
        encode(s)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn headers_for(name: &str) -> String {
        let user = UserInfo::new("u1", name, "a@b.c", Role::User);
        user_info_headers(&user)[0].1.clone()
    }

    #[test]
    fn name_encoding_matches_python_quote_with_space_safe() {
        let cases = [
            ("José O'Neil", "Jos%C3%A9 O%27Neil"),
            ("a/b", "a%2Fb"),
            ("plain", "plain"),
            ("A_b.c-d~e", "A_b.c-d~e"),
            ("x+y=z&w?#%", "x%2By%3Dz%26w%3F%23%25"),
            ("  two  spaces ", "  two  spaces "),
            ("tab\there", "tab%09here"),
            ("日本", "%E6%97%A5%E6%9C%AC"),
            ("😀", "%F0%9F%98%80"),
            ("", ""),
            ("\"quoted\"", "%22quoted%22"),
        ];
        for (name, want) in cases {
            assert_eq!(headers_for(name), want, "{name}");
        }
    }

    #[test]
    fn all_four_headers_in_order() {
        let user = UserInfo::new("6d1c-uuid", "Ann", "ann@example.com", Role::Admin);
        let got = user_info_headers(&user);
        assert_eq!(
            got,
            vec![
                ("X-OpenWebUI-User-Name", "Ann".to_owned()),
                ("X-OpenWebUI-User-Id", "6d1c-uuid".to_owned()),
                ("X-OpenWebUI-User-Email", "ann@example.com".to_owned()),
                ("X-OpenWebUI-User-Role", "admin".to_owned()),
            ]
        );
    }

    #[test]
    fn unsafe_ids_and_emails_are_encoded() {
        let user = UserInfo::new("id\r\nX-Evil: 1", "n", "josé@example.com", Role::Pending);
        let got = user_info_headers(&user);
        assert_eq!(got[1].1, "id%0D%0AX-Evil%3A 1");
        assert_eq!(got[2].1, "jos%C3%A9%40example.com");
        assert_eq!(got[3].1, "pending");
    }

    #[test]
    fn chat_id_header_only_for_truthy_values() {
        assert_eq!(
            chat_id_header(&json!("c-1")),
            Some(("X-OpenWebUI-Chat-Id", "c-1".to_owned()))
        );
        assert_eq!(chat_id_header(&json!(42)), Some((CHAT_ID_HEADER, "42".to_owned())));
        assert_eq!(
            chat_id_header(&json!("a\nb")),
            Some((CHAT_ID_HEADER, "a%0Ab".to_owned()))
        );
        for falsy in [
            json!(""),
            json!(0),
            json!(null),
            json!(false),
            json!([]),
            json!({"a": 1}),
        ] {
            assert_eq!(chat_id_header(&falsy), None, "{falsy}");
        }
    }
}

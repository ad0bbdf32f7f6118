//! Tests for token issuing, verification and the lifetime grammar.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

const SECRET: &[u8] = b"t0p-s3cr3t";

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs arbitrary claims as HS256, the way Open WebUI (PyJWT) would.
fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[test]
fn issue_then_verify_round_trips() {
    let now = at(1_700_000_000);
    let token = issue_token(SECRET, "user-1", now, Some(Duration::from_secs(3600))).unwrap();
    assert_eq!(token.expires_at, Some(1_700_003_600));
    assert_eq!(uuid::Uuid::parse_str(&token.jti).unwrap().get_version_num(), 4);
    let claims = verify_token(SECRET, &token.token, now).unwrap();
    assert_eq!(
        claims,
        Claims {
            id: "user-1".to_owned(),
            exp: Some(1_700_003_600),
            jti: token.jti.clone(),
        }
    );
    assert_eq!(
        verify_token(SECRET, &token.token, at(1_700_003_599)).unwrap().id,
        "user-1"
    );
    assert_eq!(
        verify_token(SECRET, &token.token, at(1_700_003_600)),
        Err(AuthError::ExpiredToken)
    );
    assert_eq!(
        verify_token(SECRET, &token.token, at(1_800_000_000)),
        Err(AuthError::ExpiredToken)
    );
}

#[test]
fn claims_have_open_webui_shape() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let token = issue_token_with(&mut rng, SECRET, "u", at(100), Some(Duration::from_millis(1500))).unwrap();
    let payload = token.token.split('.').nth(1).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    // Fractions of a second are truncated, like PyJWT's timegm().
    assert_eq!(json, serde_json::json!({"id": "u", "exp": 101, "jti": token.jti}));
    let header = token.token.split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header, serde_json::json!({"typ": "JWT", "alg": "HS256"}));
}

#[test]
fn no_expiry_omits_exp() {
    let token = issue_token(SECRET, "u", at(0), None).unwrap();
    assert_eq!(token.expires_at, None);
    let payload = token.token.split('.').nth(1).unwrap();
    let json: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert!(json.get("exp").is_none(), "{json}");
    let claims = verify_token(SECRET, &token.token, at(4_000_000_000)).unwrap();
    assert_eq!(claims.exp, None);
}

#[test]
fn tokens_signed_elsewhere_are_accepted() {
    let float_exp = sign(&serde_json::json!({"id": "u", "exp": 2000.9, "jti": "j"}), SECRET);
    assert_eq!(verify_token(SECRET, &float_exp, at(1999)).unwrap().exp, Some(2000));
    let extra = sign(
        &serde_json::json!({"id": "u", "jti": "j", "iat": 5, "extra": [1]}),
        SECRET,
    );
    assert_eq!(verify_token(SECRET, &extra, at(0)).unwrap().id, "u");
}

#[test]
fn rejection_variants_are_distinct() {
    let now = at(1000);
    let good = issue_token(SECRET, "u", now, Some(Duration::from_secs(60)))
        .unwrap()
        .token;
    assert_eq!(verify_token(b"other", &good, now), Err(AuthError::BadSignature));

    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[2] = b64(b"not the signature at all, not at all");
    assert_eq!(
        verify_token(SECRET, &parts.join("."), now),
        Err(AuthError::BadSignature)
    );

    let tampered_payload = b64(br#"{"id":"admin","jti":"j"}"#);
    let tampered = format!("{}.{}.{}", parts[0], tampered_payload, good.split('.').nth(2).unwrap());
    assert_eq!(verify_token(SECRET, &tampered, now), Err(AuthError::BadSignature));

    let expired = issue_token(SECRET, "u", at(0), Some(Duration::from_secs(1)))
        .unwrap()
        .token;
    assert_eq!(verify_token(SECRET, &expired, now), Err(AuthError::ExpiredToken));

    let malformed = [
        String::new(),
        "garbage".to_owned(),
        "a.b".to_owned(),
        "a.b.c".to_owned(),
        "a.b.c.d".to_owned(),
        "...".to_owned(),
        "é.é.é".to_owned(),
        format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(br#"{"id":"u","jti":"j"}"#)
        ),
        sign(&serde_json::json!({"jti": "j"}), SECRET),
        sign(&serde_json::json!({"id": "u"}), SECRET),
        sign(&serde_json::json!({"id": 5, "jti": "j"}), SECRET),
        sign(&serde_json::json!({"id": "u", "jti": "j", "exp": "soon"}), SECRET),
        sign(&serde_json::json!({"id": "u", "jti": "j", "exp": null}), SECRET),
        sign(&serde_json::json!({"id": "u", "jti": "j", "exp": 1e300}), SECRET),
        sign(&serde_json::json!(["not", "an", "object"]), SECRET),
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"id": "u", "jti": "j"}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap(),
    ];
    for token in &malformed {
        assert_eq!(
            verify_token(SECRET, token, now),
            Err(AuthError::MalformedToken),
            "{token}"
        );
    }
}

#[test]
fn empty_secret_is_refused() {
    assert_eq!(issue_token(b"", "u", at(0), None), Err(AuthError::EmptySecret));
    assert_eq!(verify_token(b"", "a.b.c", at(0)), Err(AuthError::EmptySecret));
}

#[test]
fn overflowing_expiry_is_an_error() {
    let err = issue_token(SECRET, "u", at(0), Some(Duration::from_secs(u64::MAX))).unwrap_err();
    assert_eq!(err.kind(), "token_encoding");
}

#[test]
fn token_debug_is_redacted() {
    let token = issue_token(SECRET, "u", at(0), None).unwrap();
    let debug = format!("{token:?}");
    assert!(!debug.contains(&token.token), "{debug}");
    assert!(debug.contains(&token.jti));
}

#[test]
fn generated_secrets_are_64_hex() {
    let a = generate_jwt_secret();
    assert_eq!(a.len(), 64);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(a, generate_jwt_secret());
}

#[test]
fn expires_in_grammar() {
    let ok: &[(&str, Option<Duration>)] = &[
        ("-1", None),
        ("0", None),
        (" -1 ", None),
        ("4w", Some(Duration::from_secs(4 * 7 * 86_400))),
        ("1h30m", Some(Duration::from_secs(5_400))),
        ("1h 30m", Some(Duration::from_secs(5_400))),
        ("500ms", Some(Duration::from_millis(500))),
        ("1ms", Some(Duration::from_millis(1))),
        ("1.5h", Some(Duration::from_secs(5_400))),
        ("2d", Some(Duration::from_secs(172_800))),
        ("45s", Some(Duration::from_secs(45))),
        ("1m1s1ms", Some(Duration::from_millis(61_001))),
        ("0s1s", Some(Duration::from_secs(1))),
        ("1s1s", Some(Duration::from_secs(2))),
        ("100w", Some(Duration::from_secs(100 * 604_800))),
    ];
    for (input, want) in ok {
        assert_eq!(parse_expires_in(input), Ok(*want), "{input:?}");
    }
    let bad = [
        "",
        " ",
        "4",
        "w",
        "4x",
        "4W",
        "-2",
        "-1h",
        "1h-",
        "1.h",
        ".5h",
        "1..5h",
        "1.2.3h",
        "0s",
        "0ms",
        "4 w",
        "1hm",
        "abc",
        "1h junk",
        "٣h",
        "10000w",
        "99999999999999999999999d",
        "1e3s",
    ];
    for input in bad {
        let err = parse_expires_in(input).unwrap_err();
        assert_eq!(err.kind(), "invalid_expires_in", "{input:?}");
    }
    assert_eq!(
        parse_expires_in(DEFAULT_EXPIRES_IN),
        Ok(Some(Duration::from_secs(2_419_200)))
    );
}

proptest! {
    #[test]
    fn verify_never_panics(token in ".{0,300}", secret in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = verify_token(&secret, &token, at(0));
    }

    #[test]
    fn verify_never_panics_on_jwt_shaped_input(
        a in "[A-Za-z0-9_=+/-]{0,60}",
        b in "[A-Za-z0-9_=+/-]{0,60}",
        c in "[A-Za-z0-9_=+/-]{0,60}",
    ) {
        let _ = verify_token(SECRET, &format!("{a}.{b}.{c}"), at(0));
    }

    #[test]
    fn parse_expires_in_never_panics(s in ".{0,40}") {
        let _ = parse_expires_in(&s);
    }

    #[test]
    fn round_trip_for_any_user_and_lifetime(id in ".{0,40}", secs in 1u64..10_000_000, now in 0i64..4_000_000_000) {
        let token = issue_token(SECRET, &id, at(now), Some(Duration::from_secs(secs))).unwrap();
        let claims = verify_token(SECRET, &token.token, at(now)).unwrap();
        prop_assert_eq!(claims.id, id);
        prop_assert_eq!(claims.exp, Some(now + i64::try_from(secs).unwrap()));
    }
}

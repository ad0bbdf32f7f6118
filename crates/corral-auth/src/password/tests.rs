//! Tests for password hashing, the policy and email helpers.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

/// Cheap parameters so that most tests run fast in debug builds.
const FAST: PasswordParams = PasswordParams {
    m_cost_kib: 64,
    t_cost: 1,
    p_cost: 1,
};

fn fast_hash(password: &str) -> PasswordHash {
    hash_password_with(&mut ChaCha8Rng::seed_from_u64(1), &FAST, password).unwrap()
}

#[test]
fn default_hash_is_argon2id_phc_and_verifies() {
    let hash = hash_password("correct horse battery staple").unwrap();
    assert!(
        hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        hash.as_str()
    );
    assert!(verify_password("correct horse battery staple", &hash));
    assert!(!verify_password("correct horse battery stapler", &hash));
    assert_eq!(PasswordHash::from_phc(hash.as_str()).unwrap(), hash);
}

#[test]
fn salts_differ_between_hashes() {
    let a = hash_password_with(&mut ChaCha8Rng::seed_from_u64(1), &FAST, "pw").unwrap();
    let b = hash_password_with(&mut ChaCha8Rng::seed_from_u64(2), &FAST, "pw").unwrap();
    assert_ne!(a, b);
    assert!(verify_password("pw", &a) && verify_password("pw", &b));
}

#[test]
fn verification_cases() {
    let cases = [
        ("pw", "pw", true),
        ("pw", "Pw", false),
        ("pw", "pw ", false),
        ("pässwörd 🔑", "pässwörd 🔑", true),
        ("pässwörd 🔑", "passwörd 🔑", false),
        ("a\0b", "a\0b", true),
        ("a\0b", "a", false),
    ];
    for (stored, tried, ok) in cases {
        assert_eq!(
            verify_password(tried, &fast_hash(stored)),
            ok,
            "{stored:?} vs {tried:?}"
        );
    }
}

#[test]
fn no_truncation_at_72_bytes_unlike_bcrypt() {
    let long = "x".repeat(100);
    let hash = fast_hash(&long);
    assert!(verify_password(&long, &hash));
    assert!(!verify_password(&long[..72], &hash));
}

#[test]
fn policy_bounds() {
    assert_eq!(check_password_policy(""), Err(AuthError::EmptyPassword));
    assert_eq!(check_password_policy("a"), Ok(()));
    assert_eq!(check_password_policy(&"a".repeat(MAX_PASSWORD_BYTES)), Ok(()));
    let too_long = "a".repeat(MAX_PASSWORD_BYTES + 1);
    assert_eq!(
        check_password_policy(&too_long),
        Err(AuthError::PasswordTooLong {
            max: MAX_PASSWORD_BYTES
        })
    );
    // Bytes, not characters: 342 three-byte characters exceed 1024 bytes.
    assert!(check_password_policy(&"€".repeat(342)).is_err());
    assert_eq!(
        hash_password_with(&mut ChaCha8Rng::seed_from_u64(1), &FAST, "")
            .unwrap_err()
            .kind(),
        "empty_password"
    );
    assert!(hash_password(&too_long).is_err());
    assert!(!verify_password(&too_long, &fast_hash("a")));
    assert!(!verify_password("", &fast_hash("a")));
}

#[test]
fn bad_parameters_are_an_error_not_a_panic() {
    let bad = PasswordParams {
        m_cost_kib: 0,
        t_cost: 0,
        p_cost: 0,
    };
    let err = hash_password_with(&mut ChaCha8Rng::seed_from_u64(1), &bad, "pw").unwrap_err();
    assert_eq!(err.kind(), "hashing");
}

#[test]
fn stored_hash_parsing() {
    for bad in [
        "",
        "plain",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "$argon2id$",
        "$argon2id$v=19$m=19456,t=2,p=1$bad",
        "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA",
        "$scrypt$ln=16,r=8,p=1$c2FsdA$aGFzaA",
    ] {
        assert_eq!(
            PasswordHash::from_phc(bad),
            Err(AuthError::InvalidPasswordHash),
            "{bad}"
        );
    }
    // A hash that slipped past parsing never matches and never panics.
    let garbage = PasswordHash("$argon2id$garbage".to_owned());
    assert!(!verify_password("pw", &garbage));
}

#[test]
fn debug_hides_the_hash() {
    let hash = fast_hash("pw");
    assert_eq!(format!("{hash:?}"), "PasswordHash(<redacted>)");
}

#[test]
fn dummy_hash_uses_the_current_default_parameters() {
    let parsed = argon2::PasswordHash::new(DUMMY_HASH).unwrap();
    let params = Params::try_from(&parsed).unwrap();
    let defaults = PasswordParams::default();
    assert_eq!(parsed.algorithm, Algorithm::Argon2id.ident());
    assert_eq!(
        (params.m_cost(), params.t_cost(), params.p_cost()),
        (defaults.m_cost_kib, defaults.t_cost, defaults.p_cost)
    );
    assert!(!verify_dummy_password("anything"));
    assert!(!verify_dummy_password(""));
}

#[test]
fn email_normalisation_and_shape() {
    assert_eq!(normalize_email("Ann.Lee@Example.COM"), "ann.lee@example.com");
    let cases = [
        ("a@b.c", true),
        ("admin@localhost", true),
        ("first.last+tag@sub.example.org", true),
        ("josé@exämple.de", true),
        ("", false),
        ("a", false),
        ("@b.c", false),
        ("a@", false),
        ("a@b", false),
        ("a@.b", false),
        ("a@b.", false),
        ("a@b@c.d", false),
        ("a b@c.d", false),
        ("a@b.c\n", false),
        ("@localhost", false),
    ];
    for (email, ok) in cases {
        assert_eq!(is_valid_email(email), ok, "{email:?}");
    }
}

#[test]
fn hashing_in_reused_memory_agrees_with_the_allocating_functions() {
    let mut scratch = super::Scratch::default();
    let made = super::hash_password_in(&mut scratch, "correct horse").unwrap();
    assert!(
        made.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        made.as_str()
    );
    // Each side verifies the other's hashes.
    assert!(super::verify_password("correct horse", &made));
    assert!(!super::verify_password("wrong horse", &made));
    let theirs = super::hash_password("battery staple").unwrap();
    assert!(super::verify_password_in(&mut scratch, "battery staple", &theirs));
    assert!(!super::verify_password_in(&mut scratch, "battery stapler", &theirs));
    assert!(super::verify_password_in(&mut scratch, "correct horse", &made));
    assert!(!super::verify_dummy_password_in(&mut scratch, "anything"));
    // Garbage and absurd parameters are refused, never panicked on.
    for phc in [
        "",
        "$argon2id$v=19$m=19456,t=2,p=1$",
        "$argon2id$v=19$m=4000000,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
    ] {
        if let Ok(h) = super::PasswordHash::from_phc(phc) {
            assert!(!super::verify_password_in(&mut scratch, "x", &h), "{phc}");
        }
    }
}

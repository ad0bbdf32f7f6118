//! Secrets sealed at rest: upstream connection keys are stored encrypted with XChaCha20-Poly1305 under a
//! key derived (HKDF-SHA256) from the gateway's secret key, and bound to their connection's URL.
//!
//! A sealed value reads `corral-sealed:v1:<base64url(nonce ‖ ciphertext ‖ tag)>`. The URL is the
//! associated data: someone who can write the database but does not know the secret key cannot send a
//! saved key to another server by editing the connection's URL, because the key then no longer opens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

/// How a sealed value begins; a stored value without it is clear text from before sealing.
pub const SEALED_PREFIX: &str = "corral-sealed:v1:";

/// HKDF salt and info: a key derived for connection keys is never the key used for anything else.
const SALT: &[u8] = b"corral";
const INFO: &[u8] = b"corral/connection-keys/v1";

/// XChaCha20's nonce length: 24 random bytes, so random nonces never collide in practice.
const NONCE_LEN: usize = 24;

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// It is not a value [`Sealer::seal`] produced (truncated, not base64, too short).
    #[error("the sealed value is malformed")]
    Malformed,
    /// The cipher refused it: it was sealed under another secret key, for another URL, or altered.
    #[error("the sealed value does not open with the current secret key (was the secret key changed?)")]
    WrongKey,
}

/// Seals and opens secrets with a key derived from the gateway's secret key. Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// The sealer for the gateway's secret key (`auth.secret_key`, or the one generated and kept in the
    /// database): a 256-bit key derived from it with HKDF-SHA256.
    pub fn from_secret(secret: &[u8]) -> Sealer {
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 255 × 32, so expanding cannot fail.
        let expanded = Hkdf::<Sha256>::new(Some(SALT), secret).expand(INFO, &mut key);
        debug_assert!(expanded.is_ok());
        Sealer {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Seals `secret` for the connection at `url`, under a fresh random nonce.
    pub fn seal(&self, secret: &str, url: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        self.seal_with_nonce(secret, url, &nonce)
    }

    fn seal_with_nonce(&self, secret: &str, url: &str, nonce: &XNonce) -> String {
        let payload = Payload {
            msg: secret.as_bytes(),
            aad: url.as_bytes(),
        };
        // Encryption fails only for messages longer than 256 GiB; an empty sealed body then fails to
        // open, which is reported where it is read rather than panicking here.
        let sealed = self.cipher.encrypt(nonce, payload).unwrap_or_default();
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(nonce);
        bytes.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Opens a value [`Sealer::seal`] produced for `url`.
    pub fn open(&self, sealed: &str, url: &str) -> Result<String, OpenError> {
        let body = sealed.strip_prefix(SEALED_PREFIX).ok_or(OpenError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| OpenError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let payload = Payload {
            msg: sealed,
            aad: url.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| OpenError::WrongKey)?;
        String::from_utf8(plain).map_err(|_| OpenError::Malformed)
    }
}

/// Whether a stored value is sealed (rather than clear text saved before sealing existed).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const URL: &str = "http://gpu-1:11434";

    #[test]
    fn a_sealed_key_opens_only_with_the_same_secret_and_url() {
        let sealer = Sealer::from_secret(b"secret one");
        let sealed = sealer.seal("sk-upstream", URL);
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("sk-upstream"));
        assert_eq!(sealer.open(&sealed, URL).unwrap(), "sk-upstream");
        assert_eq!(
            Sealer::from_secret(b"secret two").open(&sealed, URL),
            Err(OpenError::WrongKey)
        );
        assert_eq!(sealer.open(&sealed, "http://attacker:11434"), Err(OpenError::WrongKey));
    }

    #[test]
    fn sealing_twice_gives_different_values() {
        let sealer = Sealer::from_secret(b"s");
        assert_ne!(sealer.seal("k", URL), sealer.seal("k", URL));
    }

    #[test]
    fn malformed_and_altered_values_are_refused_without_panicking() {
        let sealer = Sealer::from_secret(b"s");
        let sealed = sealer.seal("k", URL);
        for bad in [
            "k",
            SEALED_PREFIX,
            "corral-sealed:v1:!!!",
            "corral-sealed:v1:AAAA",
            &sealed[..sealed.len() - 2],
        ] {
            assert!(sealer.open(bad, URL).is_err(), "{bad}");
        }
        let mut flipped = sealed.into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(sealer.open(&flipped, URL).is_err());
    }

    #[test]
    fn the_derivation_is_stable() {
        // A fixed nonce makes the output reproducible: the key derived from a secret must never change,
        // or every stored key would stop opening after an upgrade.
        let sealer = Sealer::from_secret(b"fixed secret");
        let nonce = XNonce::from([7u8; NONCE_LEN]);
        let sealed = sealer.seal_with_nonce("key", URL, &nonce);
        expect_test::expect!["corral-sealed:v1:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHx0eU3DlEMWgqQnXW5s1rxZAkmg"]
            .assert_eq(&sealed);
    }
}

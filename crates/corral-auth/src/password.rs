//! Password hashing with argon2id, the password policy, and email normalisation.
//!
//! Open WebUI uses bcrypt and silently truncates passwords to 72 bytes; Corral uses argon2id (no truncation) and
//! stores PHC strings such as `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`.

use std::fmt;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::{CryptoRng, RngCore};

use crate::AuthError;

#[cfg(test)]
mod tests;

/// The longest accepted password, in bytes.
///
/// Long enough for any passphrase or password-manager output, short enough that hashing attacker-chosen input
/// stays cheap. Verification of a longer password fails without hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The argon2id cost parameters used for new hashes.
///
/// Existing hashes are always verified with the parameters recorded in their PHC string, so changing these only
/// affects hashes made afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism.
    pub p_cost: u32,
}

impl Default for PasswordParams {
    /// OWASP's first recommended argon2id setting (19 MiB, 2 passes, 1 lane), which is also the `argon2` crate's
    /// default.
    fn default() -> Self {
        PasswordParams {
            m_cost_kib: Params::DEFAULT_M_COST,
            t_cost: Params::DEFAULT_T_COST,
            p_cost: Params::DEFAULT_P_COST,
        }
    }
}

impl PasswordParams {
    fn hasher(&self) -> Result<Argon2<'static>, AuthError> {
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, None)
            .map_err(|e| AuthError::Hashing(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// A stored password hash: an argon2 PHC string.
///
/// `Debug` does not print the hash, which would help offline guessing.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string read from storage, checking that it parses as an argon2 hash.
    pub fn from_phc(phc: impl Into<String>) -> Result<Self, AuthError> {
        let phc = phc.into();
        let parsed = argon2::PasswordHash::new(&phc).map_err(|_| AuthError::InvalidPasswordHash)?;
        if Algorithm::try_from(parsed.algorithm).is_err() {
            return Err(AuthError::InvalidPasswordHash);
        }
        Ok(PasswordHash(phc))
    }

    /// The PHC string, for storage.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The PHC string, for storage.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

/// Checks a new password against the policy: non-empty and at most [`MAX_PASSWORD_BYTES`] bytes.
///
/// There are no composition rules (Open WebUI's optional regex check is off by default).
pub fn check_password_policy(password: &str) -> Result<(), AuthError> {
    if password.is_empty() {
        return Err(AuthError::EmptyPassword);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::PasswordTooLong {
            max: MAX_PASSWORD_BYTES,
        });
    }
    Ok(())
}

/// Hashes a password with the default parameters and a salt from the operating system's RNG.
///
/// The policy is checked first. This is deliberately slow (tens of milliseconds): call it off the async runtime.
pub fn hash_password(password: &str) -> Result<PasswordHash, AuthError> {
    hash_password_with(&mut rand::rngs::OsRng, &PasswordParams::default(), password)
}

/// Hashes a password with the given parameters and a 16-byte salt from `rng`.
pub fn hash_password_with<R: RngCore + CryptoRng>(
    rng: &mut R,
    params: &PasswordParams,
    password: &str,
) -> Result<PasswordHash, AuthError> {
    check_password_policy(password)?;
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hashing(e.to_string()))?;
    let hash = params
        .hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| AuthError::Hashing(e.to_string()))?;
    Ok(PasswordHash(hash.to_string()))
}

/// Whether `password` matches `hash`.
///
/// The comparison of the derived key is constant-time (the `password-hash` crate compares outputs with `subtle`).
/// Unparsable hashes and passwords outside the policy never match.
pub fn verify_password(password: &str, hash: &PasswordHash) -> bool {
    if check_password_policy(password).is_err() {
        return false;
    }
    let Ok(parsed) = argon2::PasswordHash::new(&hash.0) else {
        return false;
    };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// Reusable memory for argon2 (19 MiB with the default parameters), so that a thread that
/// hashes and verifies passwords all day allocates it once: an allocation per verification
/// leaves the allocator holding many such blocks after a burst, and memory grows with it.
#[derive(Default)]
pub struct Scratch(Vec<argon2::Block>);

impl fmt::Debug for Scratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scratch({} blocks)", self.0.len())
    }
}

impl Scratch {
    /// The first `n` blocks, grown (once) to hold them.
    fn blocks(&mut self, n: usize) -> &mut [argon2::Block] {
        if self.0.len() < n {
            self.0.resize(n, argon2::Block::default());
        }
        &mut self.0[..n]
    }
}

/// [`hash_password`] in `scratch`'s memory: the same PHC string, no allocation of the
/// working memory.
pub fn hash_password_in(scratch: &mut Scratch, password: &str) -> Result<PasswordHash, AuthError> {
    check_password_policy(password)?;
    let params = PasswordParams::default();
    let hasher = params.hasher()?;
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hashing(e.to_string()))?;
    let mut raw_salt = [0u8; 64];
    let raw_salt = salt
        .decode_b64(&mut raw_salt)
        .map_err(|e| AuthError::Hashing(e.to_string()))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let blocks = scratch.blocks(hasher.params().block_count());
    hasher
        .hash_password_into_with_memory(password.as_bytes(), raw_salt, &mut out, blocks)
        .map_err(|e| AuthError::Hashing(e.to_string()))?;
    let output = argon2::password_hash::Output::new(&out).map_err(|e| AuthError::Hashing(e.to_string()))?;
    Ok(PasswordHash(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        salt.as_str(),
        output
    )))
}

/// [`verify_password`] in `scratch`'s memory. The comparison is constant-time.
pub fn verify_password_in(scratch: &mut Scratch, password: &str, hash: &PasswordHash) -> bool {
    if check_password_policy(password).is_err() {
        return false;
    }
    let Ok(parsed) = argon2::PasswordHash::new(&hash.0) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    // Stored hashes are Corral's own: refuse parameters that would take far more memory.
    if params.m_cost() > 4 * PasswordParams::default().m_cost_kib {
        return false;
    }
    let mut raw_salt = [0u8; 64];
    let Ok(raw_salt) = salt.decode_b64(&mut raw_salt) else {
        return false;
    };
    let hasher = Argon2::new(algorithm, version, params);
    let mut out = [0u8; argon2::password_hash::Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    let blocks = scratch.blocks(hasher.params().block_count());
    if hasher
        .hash_password_into_with_memory(password.as_bytes(), raw_salt, out, blocks)
        .is_err()
    {
        return false;
    }
    argon2::password_hash::Output::new(out).is_ok_and(|computed| computed == expected)
}

/// [`verify_dummy_password`] in `scratch`'s memory.
pub fn verify_dummy_password_in(scratch: &mut Scratch, password: &str) -> bool {
    if let Ok(dummy) = PasswordHash::from_phc(DUMMY_HASH) {
        let _ = verify_password_in(scratch, password, &dummy);
    }
    false
}

/// A hash of a random, discarded password with the default parameters.
///
/// A unit test checks that its parameters still equal [`PasswordParams::default`].
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$PIOK2yrjvKqX45xeJ2XghQ$zFGUBm0uosFdZLZDRLH90Kb403QAbnqnxmy4PUo8ong";

/// Spends the same time as [`verify_password`] against a real hash, and returns `false`.
///
/// Call it when the account does not exist, so that response time does not reveal which emails are registered.
pub fn verify_dummy_password(password: &str) -> bool {
    let Ok(dummy) = PasswordHash::from_phc(DUMMY_HASH) else {
        return false;
    };
    let _ = verify_password(password, &dummy);
    false
}

/// Lower-cases an email address, as Open WebUI does before every lookup and insert.
pub fn normalize_email(email: &str) -> String {
    email.to_lowercase()
}

/// Whether `email` has an acceptable shape: `local@localhost`, or `local@domain` where the domain contains a dot
/// with text on both sides.
///
/// This is a little stricter than the reference (which only matches a prefix): exactly one `@`, no whitespace or
/// control characters.
pub fn is_valid_email(email: &str) -> bool {
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    if local.is_empty() || domain.contains('@') {
        return false;
    }
    if domain == "localhost" {
        return true;
    }
    domain
        .char_indices()
        .any(|(i, c)| c == '.' && i > 0 && i + 1 < domain.len())
}

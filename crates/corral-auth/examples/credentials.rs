//! Using the auth logic alone: hash and verify a password, issue and verify a session token
//! (time passed in), and make an API key of which only the hash is kept.
//!
//! Run with `cargo run -p corral-auth --example credentials`.

#![allow(clippy::print_stdout)] // An example shows its results.

use std::time::Duration;

use corral_auth::{generate_api_key, hash_password, issue_token, verify_password, verify_token, HashedKey};

fn main() -> Result<(), corral_auth::AuthError> {
    let hash = hash_password("correct horse battery staple")?;
    println!(
        "password accepted: {}",
        verify_password("correct horse battery staple", &hash)
    );
    println!("wrong one accepted: {}", verify_password("Tr0ub4dor&3", &hash));

    let secret = b"a secret of at least thirty-two bytes, from config";
    let now = chrono::Utc::now();
    let token = issue_token(secret, "user-42", now, Some(Duration::from_secs(3600)))?;
    let claims = verify_token(secret, &token.token, now)?;
    println!("token for {} expires at {:?}", claims.id, claims.exp);
    let later = now + chrono::Duration::hours(2);
    println!("two hours later: {:?}", verify_token(secret, &token.token, later).err());

    // The plain key is shown once; the store keeps its hash and finds it by hashing again.
    let (plain, stored, prefix) = generate_api_key();
    println!("key {prefix}… ({plain:?} in logs)");
    println!("the same key hashes alike: {}", HashedKey::of(plain.expose()) == stored);
    Ok(())
}

//! Using the store alone: open (and migrate) a SQLite file, create an account as sign-up
//! does, give it an API key, and watch the revision counters replicas poll.
//!
//! Run with `cargo run -p corral-store --example accounts`; the same works with a
//! `postgres://` URL as the first argument.

#![allow(clippy::print_stdout)] // An example shows its results.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("corral-store-example-{}", std::process::id()));
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| dir.join("corral.db").display().to_string());
    let store = corral_store::Store::open(&url, 2)?;
    println!("opened {} ({:?})", store.name(), store.backend());
    let before = store.revisions()?;

    let now = 1_761_991_200;
    let user = corral_store::check_account(
        "Ada@Example.com",
        "Ada",
        "correct horse battery staple",
        corral_auth::Role::User,
        Some(corral_auth::Role::Admin),
        String::new(),
    )?;
    let ada = store.insert_account(user, "correct horse battery staple", None, now)?;
    println!(
        "created {} as {} (the first account gets the first role)",
        ada.email,
        ada.role.as_str()
    );

    let (plain, hash, prefix) = corral_auth::generate_api_key();
    let key = store.create_api_key(
        &corral_store::NewApiKey {
            user_id: ada.id.clone(),
            name: "example".into(),
            prefix,
            hash,
            expires_at: None,
        },
        now,
    )?;
    println!("key {} made; its plain text ({plain:?}) is never stored", key.id);
    let after = store.revisions()?;
    println!("auth revision {} -> {}: other replicas reload", before.auth, after.auth);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

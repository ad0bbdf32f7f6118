//! Builders for test data.

use corral_auth::{hash_password_with, PasswordHash, PasswordParams, Role};
use corral_store::{NewUser, Sealer, Store, User};

/// A fixed point in time for records; tests add seconds to it.
pub const NOW: i64 = 1_700_000_000;

/// The sealer of a gateway whose secret key is `test secret`.
pub fn sealer() -> Sealer {
    Sealer::from_secret(b"test secret")
}

/// A real argon2id hash with tiny costs, so tests stay fast.
pub fn password_hash(password: &str) -> PasswordHash {
    let cheap = PasswordParams {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };
    hash_password_with(&mut rand::rngs::OsRng, &cheap, password).unwrap()
}

/// A new `user`-role user with this email and no password.
pub fn new_user(email: &str) -> NewUser {
    NewUser {
        email: email.to_owned(),
        name: email.split('@').next().unwrap_or(email).to_owned(),
        role: Role::User,
        first_user_role: None,
        profile_image_url: String::new(),
        password_hash: None,
    }
}

/// Creates a `user`-role user with this email.
pub fn user(store: &Store, email: &str) -> User {
    store.create_user(&new_user(email), NOW).unwrap()
}

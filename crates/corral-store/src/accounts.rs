//! Creating an account the way people ask for one, shared by `corral user create`, HTTP sign-up
//! and an admin's account creation: the fields checked and normalised ([`check_account`]), then the
//! password hashed and the user stored ([`Store::insert_account`]).

use corral_auth::Role;

use crate::{NewUser, Store, StoreError, User, SIGNUP_CLOSED};

/// Why an account was not created.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The email is not an email.
    #[error("Invalid email format")]
    InvalidEmail,
    /// The password breaks the policy (the message says how).
    #[error("{0}")]
    Password(String),
    /// An account already has this email.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Sign-up is closed (only for [`Store::insert_account`] with `signup`).
    #[error("sign-up is closed")]
    SignupClosed,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks and normalises a new account's fields: the email lower-cased and valid, the password within
/// the policy, an empty name replaced by the email. Returns the user to insert (no hash yet).
pub fn check_account(
    email: &str,
    name: &str,
    password: &str,
    role: Role,
    first_user_role: Option<Role>,
    profile_image_url: String,
) -> Result<NewUser, AccountError> {
    let email = corral_auth::normalize_email(email);
    if !corral_auth::is_valid_email(&email) {
        return Err(AccountError::InvalidEmail);
    }
    corral_auth::check_password_policy(password).map_err(|e| AccountError::Password(e.to_string()))?;
    let name = match name.trim() {
        "" => email.clone(),
        name => name.to_owned(),
    };
    Ok(NewUser {
        email,
        name,
        role,
        first_user_role,
        profile_image_url,
        password_hash: None,
    })
}

impl Store {
    /// Refuses an email already taken (before the slow hash), hashes `password` (argon2id, slow by
    /// design: call it off the executor) and stores the user: directly, or with `signup` (sign-up's
    /// default openness) through [`Store::sign_up`], which refuses when sign-up is closed.
    pub fn insert_account(
        &self,
        mut user: NewUser,
        password: &str,
        signup: Option<bool>,
        now: i64,
    ) -> Result<User, AccountError> {
        if self.get_user_by_email(&user.email)?.is_some() {
            return Err(AccountError::EmailTaken);
        }
        // A caller that hashed the password already (the server does, on its bounded pool)
        // passes the hash in `user`; `password` is then not used.
        if user.password_hash.is_none() {
            let hash = corral_auth::hash_password(password).map_err(|e| AccountError::Password(e.to_string()))?;
            user.password_hash = Some(hash);
        }
        let created = match signup {
            Some(open_by_default) => self.sign_up(&user, open_by_default, now),
            None => self.create_user(&user, now),
        };
        created.map_err(|e| match e {
            StoreError::Conflict(m) if m == SIGNUP_CLOSED => AccountError::SignupClosed,
            StoreError::Conflict(_) => AccountError::EmailTaken,
            other => AccountError::Store(other),
        })
    }
}

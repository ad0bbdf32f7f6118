//! Users and their password hashes.
//!
//! Hashes live in their own table (`auths`), as in Open WebUI: listing users never reads them, and a user
//! created through a trusted SSO header may have none.

use std::str::FromStr;

use corral_auth::{normalize_email, PasswordHash, Role};
use diesel::prelude::*;

use crate::conn::{on_backend, AnyConnection};
use crate::revisions::Area;
use crate::schema::{api_keys, auths, users};
use crate::{Store, StoreError};

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// A uuid.
    pub id: String,
    /// Lower-cased and unique.
    pub email: String,
    /// The display name.
    pub name: String,
    /// `admin`, `user` or `pending`.
    pub role: Role,
    /// A URL or data URL; empty when unset.
    pub profile_image_url: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change to the user's record.
    pub updated_at: i64,
    /// Unix seconds of the last request; see [`Store::touch_user`].
    pub last_active_at: i64,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Stored lower-cased.
    pub email: String,
    /// The display name.
    pub name: String,
    /// The role, unless this is the first user and `first_user_role` is set.
    pub role: Role,
    /// The role the very first user gets instead of `role` (Open WebUI makes the first sign-up an admin).
    ///
    /// Decided inside the insert's transaction, with the users table locked on PostgreSQL, so two
    /// simultaneous first sign-ups cannot both get it.
    pub first_user_role: Option<Role>,
    /// A URL or data URL; may be empty.
    pub profile_image_url: String,
    /// The password hash, saved in the same transaction; `None` for users who sign in another way.
    pub password_hash: Option<PasswordHash>,
}

/// Changes to a user's record; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    /// A new email, stored lower-cased; another user's email gives [`StoreError::Conflict`].
    pub email: Option<String>,
    /// A new display name.
    pub name: Option<String>,
    /// A new role.
    pub role: Option<Role>,
    /// A new profile image URL.
    pub profile_image_url: Option<String>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
pub(crate) struct UserRow {
    id: String,
    email: String,
    name: String,
    role: String,
    profile_image_url: String,
    created_at: i64,
    updated_at: i64,
    last_active_at: i64,
}

impl UserRow {
    pub(crate) fn into_user(self) -> Result<User, StoreError> {
        let role = Role::from_str(&self.role)
            .map_err(|_| StoreError::Corrupt(format!("user {}: unknown role {:?}", self.id, self.role)))?;
        Ok(User {
            id: self.id,
            email: self.email,
            name: self.name,
            role,
            profile_image_url: self.profile_image_url,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_active_at: self.last_active_at,
        })
    }
}

#[derive(AsChangeset)]
#[diesel(table_name = users)]
struct UserChangeset<'a> {
    email: Option<String>,
    name: Option<&'a str>,
    role: Option<&'static str>,
    profile_image_url: Option<&'a str>,
    updated_at: i64,
}

/// The setting that names the first account, which became admin by being first.
pub(crate) const FIRST_USER_KEY: &str = "auth.first_user";
/// The admin-saved switch that opens or closes sign-up (Open WebUI's persistent `ENABLE_SIGNUP`).
pub const SIGNUP_SETTING: &str = "auth.enable_signup";
/// What [`Store::sign_up`] says when sign-up is closed.
pub const SIGNUP_CLOSED: &str = "sign-up is closed";
/// The admin-saved role of new sign-ups (Open WebUI's persistent `DEFAULT_USER_ROLE`).
pub const ROLE_SETTING: &str = "auth.default_user_role";

impl Store {
    /// Creates a user (and its password hash) in one transaction and bumps the `auth` revision.
    /// With `first_user_role`, an account created into an empty table gets that role and is
    /// recorded as the first account ([`Store::first_user_id`]).
    ///
    /// An email already taken gives [`StoreError::Conflict`].
    pub fn create_user(&self, new: &NewUser, now: i64) -> Result<User, StoreError> {
        self.insert_user(new, None, now)
    }

    /// Creates a user by sign-up, as [`Store::create_user`]; into an empty table it is the
    /// first account, and sign-up closes behind it ([`SIGNUP_SETTING`] saved false). Otherwise
    /// only while sign-up is open: the saved [`SIGNUP_SETTING`], else `open_by_default`.
    /// Decided under the lock that decides the first account, so of two simultaneous sign-ups
    /// into an empty table the second is refused. A closed sign-up is [`StoreError::Conflict`]
    /// with [`SIGNUP_CLOSED`].
    pub fn sign_up(&self, new: &NewUser, open_by_default: bool, now: i64) -> Result<User, StoreError> {
        self.insert_user(new, Some(open_by_default), now)
    }

    fn insert_user(&self, new: &NewUser, signup: Option<bool>, now: i64) -> Result<User, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let email = normalize_email(&new.email);
        self.write(Area::Auth, |c| {
            if let Some(open_by_default) = signup {
                if let AnyConnection::Postgresql(pg) = c {
                    diesel::sql_query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE").execute(pg)?;
                }
                let count: i64 = users::table.count().get_result(c)?;
                if count > 0 {
                    let saved: Option<String> = crate::schema::settings::table
                        .filter(crate::schema::settings::key.eq(SIGNUP_SETTING))
                        .select(crate::schema::settings::value)
                        .first(c)
                        .optional()?;
                    let open = match saved.as_deref().map(serde_json::from_str::<serde_json::Value>) {
                        Some(Ok(serde_json::Value::Bool(open))) => open,
                        _ => open_by_default,
                    };
                    if !open {
                        return Err(StoreError::Conflict(SIGNUP_CLOSED.to_owned()));
                    }
                } else {
                    crate::settings::upsert(c, SIGNUP_SETTING, "false", now)?;
                }
            }
            let (role, is_first) = match new.first_user_role {
                Some(first) => {
                    if let AnyConnection::Postgresql(pg) = c {
                        diesel::sql_query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE").execute(pg)?;
                    }
                    let count: i64 = users::table.count().get_result(c)?;
                    if count == 0 {
                        (first, true)
                    } else {
                        (new.role, false)
                    }
                }
                None => (new.role, false),
            };
            if is_first {
                crate::settings::upsert(
                    c,
                    FIRST_USER_KEY,
                    &serde_json::Value::from(id.as_str()).to_string(),
                    now,
                )?;
            }
            diesel::insert_into(users::table)
                .values((
                    users::id.eq(&id),
                    users::email.eq(&email),
                    users::name.eq(&new.name),
                    users::role.eq(role.as_str()),
                    users::profile_image_url.eq(&new.profile_image_url),
                    users::created_at.eq(now),
                    users::updated_at.eq(now),
                    users::last_active_at.eq(now),
                ))
                .execute(c)?;
            if let Some(hash) = &new.password_hash {
                diesel::insert_into(auths::table)
                    .values((
                        auths::user_id.eq(&id),
                        auths::password_hash.eq(hash.as_str()),
                        auths::updated_at.eq(now),
                    ))
                    .execute(c)?;
            }
            Ok(User {
                id: id.clone(),
                email: email.clone(),
                name: new.name.clone(),
                role,
                profile_image_url: new.profile_image_url.clone(),
                created_at: now,
                updated_at: now,
                last_active_at: now,
            })
        })
    }

    /// The first account: the one recorded when it was created into an empty table, else (for
    /// accounts made otherwise) the oldest.
    pub fn first_user_id(&self) -> Result<Option<String>, StoreError> {
        if let Some(serde_json::Value::String(id)) = self.get_setting(FIRST_USER_KEY)? {
            if self.get_user(&id)?.is_some() {
                return Ok(Some(id));
            }
        }
        Ok(self.list_users()?.into_iter().next().map(|u| u.id))
    }

    /// How many users exist.
    pub fn count_users(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let count: i64 = users::table.count().get_result(&mut *conn)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The user with this id, if any.
    pub fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.conn()?;
        let row = users::table
            .find(id)
            .select(UserRow::as_select())
            .first(&mut *conn)
            .optional()?;
        row.map(UserRow::into_user).transpose()
    }

    /// The user with this email (compared lower-cased), if any.
    pub fn get_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        Ok(self.get_user_with_password(email)?.map(|(user, _)| user))
    }

    /// The user with this email (compared lower-cased) and its password hash, for signing in.
    pub fn get_user_with_password(&self, email: &str) -> Result<Option<(User, Option<PasswordHash>)>, StoreError> {
        let email = normalize_email(email);
        let mut conn = self.conn()?;
        let row: Option<(UserRow, Option<String>)> = users::table
            .left_join(auths::table)
            .filter(users::email.eq(&email))
            .select((UserRow::as_select(), auths::password_hash.nullable()))
            .first(&mut *conn)
            .optional()?;
        let Some((user, hash)) = row else {
            return Ok(None);
        };
        let user = user.into_user()?;
        let hash = hash.map(|h| parse_hash(&user.id, h)).transpose()?;
        Ok(Some((user, hash)))
    }

    /// Every user, oldest first.
    pub fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let mut conn = self.conn()?;
        let rows = users::table
            .order((users::created_at.asc(), users::id.asc()))
            .select(UserRow::as_select())
            .load(&mut *conn)?;
        rows.into_iter().map(UserRow::into_user).collect()
    }

    /// Applies `changes` to the user `id`, bumps the `auth` revision, and returns the updated user.
    ///
    /// A missing user gives [`StoreError::NotFound`]; an email already taken gives [`StoreError::Conflict`].
    pub fn update_user(&self, id: &str, changes: &UserChanges, now: i64) -> Result<User, StoreError> {
        let changeset = UserChangeset {
            email: changes.email.as_deref().map(normalize_email),
            name: changes.name.as_deref(),
            role: changes.role.map(Role::as_str),
            profile_image_url: changes.profile_image_url.as_deref(),
            updated_at: now,
        };
        self.write(Area::Auth, |c| {
            let n = diesel::update(users::table.find(id)).set(&changeset).execute(c)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            users::table.find(id).select(UserRow::as_select()).first(c)?.into_user()
        })
    }

    /// Records that the user was active at `now`. Cheap, and bumps no revision.
    pub fn touch_user(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::update(users::table.find(id))
            .set(users::last_active_at.eq(now))
            .execute(&mut *conn)?;
        Ok(())
    }

    /// Deletes the user with its password hash, API keys, group memberships and the limits of
    /// the user and its keys; models it owned become ownerless. Bumps the `auth` revision; a
    /// missing user gives [`StoreError::NotFound`].
    pub fn delete_user(&self, id: &str) -> Result<(), StoreError> {
        use corral_auth::limits::Scope;
        self.write(Area::Auth, |c| {
            let keys: Vec<String> = api_keys::table
                .filter(api_keys::user_id.eq(id))
                .select(api_keys::id)
                .load(c)?;
            let n = diesel::delete(users::table.find(id)).execute(c)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            crate::limits::forget_subjects(c, Scope::Key, &keys)?;
            crate::limits::forget_subjects(c, Scope::User, &[id.to_owned()])
        })
    }

    /// The user's password hash, if the user exists and has one.
    pub fn password_hash(&self, user_id: &str) -> Result<Option<PasswordHash>, StoreError> {
        let mut conn = self.conn()?;
        let hash: Option<String> = auths::table
            .find(user_id)
            .select(auths::password_hash)
            .first(&mut *conn)
            .optional()?;
        hash.map(|h| parse_hash(user_id, h)).transpose()
    }

    /// Sets (or replaces) the user's password hash and bumps the `auth` revision.
    ///
    /// A missing user gives [`StoreError::NotFound`].
    pub fn set_password_hash(&self, user_id: &str, hash: &PasswordHash, now: i64) -> Result<(), StoreError> {
        let hash = hash.as_str();
        self.write(Area::Auth, |c| {
            on_backend!(c, c => diesel::insert_into(auths::table)
                .values((auths::user_id.eq(user_id), auths::password_hash.eq(hash), auths::updated_at.eq(now)))
                .on_conflict(auths::user_id)
                .do_update()
                .set((auths::password_hash.eq(hash), auths::updated_at.eq(now)))
                .execute(c))?;
            Ok(())
        })
    }
}

/// Checks a stored hash; the message names the user, never the hash.
fn parse_hash(user_id: &str, hash: String) -> Result<PasswordHash, StoreError> {
    PasswordHash::from_phc(hash).map_err(|_| StoreError::Corrupt(format!("user {user_id}: unreadable password hash")))
}

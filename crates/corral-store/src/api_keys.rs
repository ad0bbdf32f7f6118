//! API keys: only the SHA-256 of a key is stored, with a short prefix for display.

use corral_auth::HashedKey;
use diesel::prelude::*;

use crate::revisions::Area;
use crate::schema::{api_keys, users};
use crate::users::{User, UserRow};
use crate::{Store, StoreError};

/// An API key as shown to its owner: everything but the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// A uuid.
    pub id: String,
    /// The owner.
    pub user_id: String,
    /// The owner's label for the key.
    pub name: String,
    /// The first characters of the key (such as `sk-1a2b`), to tell keys apart.
    pub prefix: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last use the server recorded.
    pub last_used_at: Option<i64>,
    /// Unix seconds after which the key no longer works.
    pub expires_at: Option<i64>,
    /// Unix seconds of revocation.
    pub revoked_at: Option<i64>,
}

impl ApiKey {
    /// Whether the key works at `now`: not revoked and not expired.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// An API key to store.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The owner.
    pub user_id: String,
    /// The owner's label for the key.
    pub name: String,
    /// The first characters of the key, for display.
    pub prefix: String,
    /// The key's hash; the plaintext key is never stored.
    pub hash: HashedKey,
    /// Unix seconds after which the key no longer works.
    pub expires_at: Option<i64>,
}

/// A working key with its hash and owner, for the server's in-memory authentication cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveKey {
    /// The key.
    pub key: ApiKey,
    /// Its hash.
    pub hash: HashedKey,
    /// Its owner.
    pub user: User,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = api_keys)]
struct KeyRow {
    id: String,
    user_id: String,
    name: String,
    key_prefix: String,
    created_at: i64,
    last_used_at: Option<i64>,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<KeyRow> for ApiKey {
    fn from(row: KeyRow) -> Self {
        ApiKey {
            id: row.id,
            user_id: row.user_id,
            name: row.name,
            prefix: row.key_prefix,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// The rows of keys that work at `now`.
macro_rules! active_at {
    ($now:expr) => {
        api_keys::revoked_at
            .is_null()
            .and(api_keys::expires_at.is_null().or(api_keys::expires_at.gt($now)))
    };
}

impl Store {
    /// Stores a new key and bumps the `auth` revision.
    ///
    /// An unknown user gives [`StoreError::NotFound`]; a hash already stored gives [`StoreError::Conflict`].
    pub fn create_api_key(&self, new: &NewApiKey, now: i64) -> Result<ApiKey, StoreError> {
        let key = ApiKey {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: new.user_id.clone(),
            name: new.name.clone(),
            prefix: new.prefix.clone(),
            created_at: now,
            last_used_at: None,
            expires_at: new.expires_at,
            revoked_at: None,
        };
        self.write(Area::Auth, |c| {
            diesel::insert_into(api_keys::table)
                .values((
                    api_keys::id.eq(&key.id),
                    api_keys::user_id.eq(&key.user_id),
                    api_keys::name.eq(&key.name),
                    api_keys::key_prefix.eq(&key.prefix),
                    api_keys::key_hash.eq(new.hash.as_str()),
                    api_keys::created_at.eq(now),
                    api_keys::expires_at.eq(key.expires_at),
                ))
                .execute(c)?;
            Ok(())
        })?;
        Ok(key)
    }

    /// The key with this id, if any (revoked and expired keys included).
    pub fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let mut conn = self.conn()?;
        let row = api_keys::table
            .find(id)
            .select(KeyRow::as_select())
            .first(&mut *conn)
            .optional()?;
        Ok(row.map(ApiKey::from))
    }

    /// Every key of a user, oldest first, revoked and expired ones included; never the hashes.
    pub fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        let mut conn = self.conn()?;
        let rows = api_keys::table
            .filter(api_keys::user_id.eq(user_id))
            .order((api_keys::created_at.asc(), api_keys::id.asc()))
            .select(KeyRow::as_select())
            .load(&mut *conn)?;
        Ok(rows.into_iter().map(ApiKey::from).collect())
    }

    /// The key with this hash and its owner, if the key works at `now` (not revoked, not expired).
    pub fn find_api_key(&self, hash: &HashedKey, now: i64) -> Result<Option<(ApiKey, User)>, StoreError> {
        let mut conn = self.conn()?;
        let row: Option<(KeyRow, UserRow)> = api_keys::table
            .inner_join(users::table)
            .filter(api_keys::key_hash.eq(hash.as_str()))
            .filter(active_at!(now))
            .select((KeyRow::as_select(), UserRow::as_select()))
            .first(&mut *conn)
            .optional()?;
        row.map(|(key, user)| Ok((ApiKey::from(key), user.into_user()?)))
            .transpose()
    }

    /// Every key that works at `now`, with its hash and owner: what the server's authentication cache holds.
    pub fn active_api_keys(&self, now: i64) -> Result<Vec<ActiveKey>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(KeyRow, String, UserRow)> = api_keys::table
            .inner_join(users::table)
            .filter(active_at!(now))
            .order(api_keys::id.asc())
            .select((KeyRow::as_select(), api_keys::key_hash, UserRow::as_select()))
            .load(&mut *conn)?;
        rows.into_iter()
            .map(|(key, hash, user)| {
                let hash = HashedKey::from_hex(&hash)
                    .map_err(|_| StoreError::Corrupt(format!("API key {}: malformed hash", key.id)))?;
                Ok(ActiveKey {
                    key: ApiKey::from(key),
                    hash,
                    user: user.into_user()?,
                })
            })
            .collect()
    }

    /// Records that these keys were used at `now`, in one statement; returns how many keys matched.
    ///
    /// Cheap and bumps no revision, so the server may call it for every request or batch the ids.
    pub fn touch_api_keys(&self, ids: &[String], now: i64) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn()?;
        Ok(diesel::update(api_keys::table.filter(api_keys::id.eq_any(ids)))
            .set(api_keys::last_used_at.eq(now))
            .execute(&mut *conn)?)
    }

    /// Revokes a key at `now` and bumps the `auth` revision; revoking a revoked key keeps its first time.
    ///
    /// A missing key gives [`StoreError::NotFound`].
    pub fn revoke_api_key(&self, id: &str, now: i64) -> Result<(), StoreError> {
        self.write(Area::Auth, |c| {
            let revoked_at: Option<i64> = api_keys::table.find(id).select(api_keys::revoked_at).first(c)?;
            if revoked_at.is_none() {
                diesel::update(api_keys::table.find(id))
                    .set(api_keys::revoked_at.eq(now))
                    .execute(c)?;
            }
            Ok(())
        })
    }

    /// Deletes a key with its limits and bumps the `auth` revision; a missing key gives
    /// [`StoreError::NotFound`].
    pub fn delete_api_key(&self, id: &str) -> Result<(), StoreError> {
        self.write(Area::Auth, |c| {
            match diesel::delete(api_keys::table.find(id)).execute(c)? {
                0 => Err(StoreError::NotFound),
                _ => crate::limits::forget_subjects(c, corral_auth::limits::Scope::Key, &[id.to_owned()]),
            }
        })
    }
}

//! Revoked JWTs (sign-out), shared by every replica until the tokens would have expired anyway.

use diesel::prelude::*;

use crate::conn::on_backend;
use crate::revisions::Area;
use crate::schema::revoked_tokens;
use crate::{Store, StoreError};

/// A revoked token's id and when the token itself expires.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = revoked_tokens)]
pub struct RevokedToken {
    /// The token's `jti` claim.
    pub jti: String,
    /// Unix seconds of the token's `exp`; `i64::MAX` for a token that never expires.
    pub expires_at: i64,
}

impl Store {
    /// Revokes the token `jti` until `expires_at` (its `exp`; `i64::MAX` if it has none) and bumps the
    /// `auth` revision. Revoking it again changes nothing.
    pub fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        self.write(Area::Auth, |c| {
            on_backend!(c, c => diesel::insert_into(revoked_tokens::table)
                .values((revoked_tokens::jti.eq(jti), revoked_tokens::expires_at.eq(expires_at)))
                .on_conflict_do_nothing()
                .execute(c))?;
            Ok(())
        })
    }

    /// Whether the token `jti` was revoked.
    pub fn is_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let found: Option<String> = revoked_tokens::table
            .find(jti)
            .select(revoked_tokens::jti)
            .first(&mut *conn)
            .optional()?;
        Ok(found.is_some())
    }

    /// The revoked tokens that have not yet expired at `now`: what a replica caches.
    pub fn revoked_tokens(&self, now: i64) -> Result<Vec<RevokedToken>, StoreError> {
        let mut conn = self.conn()?;
        Ok(revoked_tokens::table
            .filter(revoked_tokens::expires_at.gt(now))
            .order(revoked_tokens::jti.asc())
            .select(RevokedToken::as_select())
            .load(&mut *conn)?)
    }

    /// Deletes revocations of tokens expired at `now` (they are rejected anyway) and returns how many.
    ///
    /// Bumps no revision: no decision changes.
    pub fn purge_revoked_tokens(&self, now: i64) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        Ok(diesel::delete(revoked_tokens::table.filter(revoked_tokens::expires_at.le(now))).execute(&mut *conn)?)
    }
}

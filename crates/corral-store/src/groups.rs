//! User groups and their members; model access control grants read or write to groups.

use diesel::prelude::*;

use crate::conn::on_backend;
use crate::revisions::Area;
use crate::schema::{group_members, groups};
use crate::{Store, StoreError};

/// A group of users.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = groups)]
pub struct Group {
    /// A uuid.
    pub id: String,
    /// Unique.
    pub name: String,
    /// Free text; may be empty.
    pub description: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change to the name or description.
    pub updated_at: i64,
}

impl Store {
    /// Creates a group and bumps the `auth` revision; a name already taken gives [`StoreError::Conflict`].
    pub fn create_group(&self, name: &str, description: &str, now: i64) -> Result<Group, StoreError> {
        let group = Group {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            description: description.to_owned(),
            created_at: now,
            updated_at: now,
        };
        self.write(Area::Auth, |c| {
            diesel::insert_into(groups::table)
                .values((
                    groups::id.eq(&group.id),
                    groups::name.eq(&group.name),
                    groups::description.eq(&group.description),
                    groups::created_at.eq(now),
                    groups::updated_at.eq(now),
                ))
                .execute(c)?;
            Ok(())
        })?;
        Ok(group)
    }

    /// The group with this id, if any.
    pub fn get_group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        let mut conn = self.conn()?;
        Ok(groups::table
            .find(id)
            .select(Group::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// The group with this name, if any.
    pub fn get_group_by_name(&self, name: &str) -> Result<Option<Group>, StoreError> {
        let mut conn = self.conn()?;
        Ok(groups::table
            .filter(groups::name.eq(name))
            .select(Group::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// Every group, by name.
    pub fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        let mut conn = self.conn()?;
        Ok(groups::table
            .order(groups::name.asc())
            .select(Group::as_select())
            .load(&mut *conn)?)
    }

    /// Renames and redescribes a group, bumps the `auth` revision, and returns it.
    ///
    /// A missing group gives [`StoreError::NotFound`]; a name already taken gives [`StoreError::Conflict`].
    pub fn update_group(&self, id: &str, name: &str, description: &str, now: i64) -> Result<Group, StoreError> {
        self.write(Area::Auth, |c| {
            let n = diesel::update(groups::table.find(id))
                .set((
                    groups::name.eq(name),
                    groups::description.eq(description),
                    groups::updated_at.eq(now),
                ))
                .execute(c)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(groups::table.find(id).select(Group::as_select()).first(c)?)
        })
    }

    /// Deletes a group with its memberships and limits and bumps the `auth` revision.
    ///
    /// A missing group gives [`StoreError::NotFound`].
    pub fn delete_group(&self, id: &str) -> Result<(), StoreError> {
        self.write(Area::Auth, |c| {
            match diesel::delete(groups::table.find(id)).execute(c)? {
                0 => Err(StoreError::NotFound),
                _ => crate::limits::forget_subjects(c, corral_auth::limits::Scope::Group, &[id.to_owned()]),
            }
        })
    }

    /// Adds a user to a group and bumps the `auth` revision; returns false if the user was already a member.
    ///
    /// An unknown group or user gives [`StoreError::NotFound`].
    pub fn add_group_member(&self, group_id: &str, user_id: &str) -> Result<bool, StoreError> {
        self.write(Area::Auth, |c| {
            let added = on_backend!(c, c => diesel::insert_into(group_members::table)
                .values((group_members::group_id.eq(group_id), group_members::user_id.eq(user_id)))
                .on_conflict_do_nothing()
                .execute(c))?;
            Ok(added > 0)
        })
    }

    /// Removes a user from a group and bumps the `auth` revision; returns false if the user was not a member.
    pub fn remove_group_member(&self, group_id: &str, user_id: &str) -> Result<bool, StoreError> {
        self.write(Area::Auth, |c| {
            let removed = diesel::delete(
                group_members::table
                    .filter(group_members::group_id.eq(group_id))
                    .filter(group_members::user_id.eq(user_id)),
            )
            .execute(c)?;
            Ok(removed > 0)
        })
    }

    /// Replaces a user's memberships with exactly `group_ids` in one transaction, and bumps the `auth`
    /// revision (for groups synced from a trusted SSO header).
    ///
    /// An unknown group or user gives [`StoreError::NotFound`] and changes nothing.
    pub fn set_user_groups(&self, user_id: &str, group_ids: &[String]) -> Result<(), StoreError> {
        let mut ids = group_ids.to_vec();
        ids.sort();
        ids.dedup();
        self.write(Area::Auth, |c| {
            diesel::delete(group_members::table.filter(group_members::user_id.eq(user_id))).execute(c)?;
            for group_id in &ids {
                diesel::insert_into(group_members::table)
                    .values((group_members::group_id.eq(group_id), group_members::user_id.eq(user_id)))
                    .execute(c)?;
            }
            Ok(())
        })
    }

    /// The ids of a group's members, sorted.
    pub fn group_members(&self, group_id: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        Ok(group_members::table
            .filter(group_members::group_id.eq(group_id))
            .order(group_members::user_id.asc())
            .select(group_members::user_id)
            .load(&mut *conn)?)
    }

    /// The ids of the groups a user belongs to, sorted.
    pub fn user_group_ids(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        Ok(group_members::table
            .filter(group_members::user_id.eq(user_id))
            .order(group_members::group_id.asc())
            .select(group_members::group_id)
            .load(&mut *conn)?)
    }

    /// Every membership as `(group_id, user_id)`, sorted: what a replica caches for access checks.
    pub fn group_memberships(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.conn()?;
        Ok(group_members::table
            .order((group_members::group_id.asc(), group_members::user_id.asc()))
            .select((group_members::group_id, group_members::user_id))
            .load(&mut *conn)?)
    }
}

//! Per-model access control, as in the reference's section 6.7.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{AuthError, Role};

#[cfg(test)]
mod tests;

/// Who is granted one permission on a model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Grants {
    /// Groups whose members are granted the permission.
    pub group_ids: Vec<String>,
    /// Users granted the permission.
    pub user_ids: Vec<String>,
}

impl Grants {
    fn admits(&self, user_id: &str, user_groups: &[String]) -> bool {
        self.user_ids.iter().any(|u| u == user_id) || user_groups.iter().any(|g| self.group_ids.contains(g))
    }
}

/// A model's `access_control` JSON when it is not null: `{"read": {...}, "write": {...}}`.
///
/// A null `access_control` means public and is represented as `None` wherever an `Option<&AccessControl>` is
/// taken. `{}` is private: only the owner (and admins) may use the model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccessControl {
    /// Who may use the model.
    pub read: Grants,
    /// Who may edit the model's record.
    pub write: Grants,
}

impl AccessControl {
    /// Private to the owner: `{}`.
    pub fn private() -> Self {
        AccessControl::default()
    }

    /// Parses a stored `access_control` value: null gives `Ok(None)` (public), an object gives the grants.
    ///
    /// Missing or null `read`, `write`, `group_ids` and `user_ids` are empty; unknown keys are ignored.
    /// On error, callers should fail closed and treat the model as [`AccessControl::private`].
    pub fn from_json(value: &Value) -> Result<Option<Self>, AuthError> {
        match value {
            Value::Null => Ok(None),
            Value::Object(ac) => Ok(Some(AccessControl {
                read: Grants::from_json(ac, "read")?,
                write: Grants::from_json(ac, "write")?,
            })),
            _ => Err(AuthError::InvalidAccessControl("expected an object or null".to_owned())),
        }
    }
}

impl Grants {
    fn from_json(ac: &Map<String, Value>, permission: &str) -> Result<Self, AuthError> {
        let grants = match ac.get(permission) {
            None | Some(Value::Null) => return Ok(Grants::default()),
            Some(Value::Object(grants)) => grants,
            Some(_) => {
                return Err(AuthError::InvalidAccessControl(format!(
                    "`{permission}` must be an object"
                )));
            }
        };
        Ok(Grants {
            group_ids: id_list(grants, permission, "group_ids")?,
            user_ids: id_list(grants, permission, "user_ids")?,
        })
    }
}

fn id_list(grants: &Map<String, Value>, permission: &str, key: &str) -> Result<Vec<String>, AuthError> {
    let bad = || AuthError::InvalidAccessControl(format!("`{permission}.{key}` must be a list of strings"));
    match grants.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| id.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// The permission being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Using the model (listing it, chatting with it).
    Read,
    /// Editing the model's record.
    Write,
}

/// What the store knows about a model: it exists in the models table with this owner and access control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelRecord<'a> {
    /// The owner's user id (`user_id` column).
    pub owner_id: &'a str,
    /// The parsed `access_control` column; `None` is public.
    pub access_control: Option<&'a AccessControl>,
}

/// Open WebUI's `has_access` in strict mode: whether the grants admit the user, ignoring roles and ownership.
///
/// A public model (`None`) admits everyone for [`Permission::Read`] and no one for [`Permission::Write`].
pub fn has_access(
    user_id: &str,
    user_groups: &[String],
    access_control: Option<&AccessControl>,
    permission: Permission,
) -> bool {
    match (access_control, permission) {
        (None, Permission::Read) => true,
        (None, Permission::Write) => false,
        (Some(ac), Permission::Read) => ac.read.admits(user_id, user_groups),
        (Some(ac), Permission::Write) => ac.write.admits(user_id, user_groups),
    }
}

/// Whether a user may list and use a model.
///
/// - `admin`: always.
/// - `pending`: never (such users are stopped earlier by [`Access::Verified`](crate::Access::Verified)).
/// - `user`: when `bypass` (the `bypass_model_access_control` setting) is on; otherwise only if the model has a
///   record (`model` is `Some`) and the user owns it or is granted read access.
///
/// Models with no record are hidden from and refused to non-admins, as in the reference (403
/// [`MODEL_NOT_FOUND`](crate::messages::MODEL_NOT_FOUND)). `bypass` must come from configuration only: the
/// reference's `?bypass_filter=true` query parameter let any user skip this check (section 8.1, item 1).
pub fn can_read(
    user_id: &str,
    role: Role,
    user_groups: &[String],
    model: Option<ModelRecord<'_>>,
    bypass: bool,
) -> bool {
    match role {
        Role::Admin => true,
        Role::Pending => false,
        Role::User if bypass => true,
        Role::User => model.is_some_and(|m| {
            m.owner_id == user_id || has_access(user_id, user_groups, m.access_control, Permission::Read)
        }),
    }
}

/// Whether a user may edit a model's record: admins always; users if they own it or are granted write access.
///
/// A public model is not writable by other users, and a model with no record is writable only by admins.
pub fn can_write(user_id: &str, role: Role, user_groups: &[String], model: Option<ModelRecord<'_>>) -> bool {
    match role {
        Role::Admin => true,
        Role::Pending => false,
        Role::User => model.is_some_and(|m| {
            m.owner_id == user_id || has_access(user_id, user_groups, m.access_control, Permission::Write)
        }),
    }
}

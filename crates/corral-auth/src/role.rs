//! User roles and the access levels that routes require.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::AuthError;

/// A user's role, stored and sent as a lowercase string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Full access, including configuration and every model.
    Admin,
    /// A verified user; model access is checked per model.
    User,
    /// Signed up but not yet approved by an admin; may only reach unauthenticated routes.
    Pending,
}

impl Role {
    /// Every role, in decreasing order of privilege.
    pub const ALL: [Role; 3] = [Role::Admin, Role::User, Role::Pending];

    /// The lowercase name used in storage, JSON and the `X-OpenWebUI-User-Role` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Pending => "pending",
        }
    }

    /// Whether a user with this role may use a route that requires `access`.
    ///
    /// `pending` satisfies only [`Access::None`], as in Open WebUI's `get_verified_user`.
    pub fn satisfies(self, access: Access) -> bool {
        match access {
            Access::None => true,
            Access::Verified => matches!(self, Role::Admin | Role::User),
            Access::Admin => self == Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    /// Parses exactly `admin`, `user` or `pending` (lowercase, as Open WebUI stores them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            "pending" => Ok(Role::Pending),
            other => Err(AuthError::UnknownRole(other.to_owned())),
        }
    }
}

/// The access level a route requires, as in the reference's router dependencies (section 0.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// No authentication at all.
    None,
    /// An authenticated `user` or `admin` (`get_verified_user`).
    Verified,
    /// An authenticated `admin` (`get_admin_user`).
    Admin,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfies_matrix() {
        let cases = [
            (Role::Admin, [true, true, true]),
            (Role::User, [true, true, false]),
            (Role::Pending, [true, false, false]),
        ];
        for (role, expected) in cases {
            let got = [Access::None, Access::Verified, Access::Admin].map(|a| role.satisfies(a));
            assert_eq!(got, expected, "{role}");
        }
    }

    #[test]
    fn string_forms_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
        }
    }

    #[test]
    fn unknown_roles_are_rejected() {
        for bad in ["", "Admin", "ADMIN", " user", "root", "pending\n"] {
            let err = bad.parse::<Role>().unwrap_err();
            assert_eq!(err.kind(), "unknown_role");
        }
        assert!(serde_json::from_str::<Role>("\"Admin\"").is_err());
    }
}

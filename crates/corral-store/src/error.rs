//! Why a store call failed, in the terms the server answers with (503, 409, 404 or 500).

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// A store failure.
///
/// Messages never contain a password: database URLs are redacted before they are named.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, timed out, is busy, or broke the connection: retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// A uniqueness rule would be broken, such as a second user with the same email (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Nothing matches, or a row refers to something that does not exist (404).
    #[error("not found")]
    NotFound,
    /// Stored data could not be read back (bad JSON, an unknown role, a malformed hash).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Any other database error, such as a broken CHECK constraint.
    #[error("database error: {0}")]
    Query(String),
}

impl StoreError {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Conflict(_) => "conflict",
            StoreError::NotFound => "not_found",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Migration(_) => "migration",
            StoreError::Query(_) => "query",
        }
    }

    /// Whether retrying later may succeed: the database was unreachable or busy.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<DieselError> for StoreError {
    fn from(err: DieselError) -> Self {
        match err {
            DieselError::NotFound => StoreError::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                StoreError::Conflict(info.message().to_owned())
            }
            // The row refers to a user or group that does not exist (or was just deleted).
            DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => StoreError::NotFound,
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::UnableToSendCommand
                | DatabaseErrorKind::SerializationFailure,
                info,
            ) => StoreError::Unavailable(format!("the database connection failed: {}", info.message())),
            DieselError::BrokenTransactionManager => {
                StoreError::Unavailable("the database connection broke".to_owned())
            }
            other => {
                let text = other.to_string();
                if is_transient(&text) {
                    StoreError::Unavailable(text)
                } else {
                    StoreError::Query(text)
                }
            }
        }
    }
}

/// Messages of errors that pass with time: SQLite's lock timeouts and libpq's dropped servers.
fn is_transient(text: &str) -> bool {
    const TRANSIENT: [&str; 5] = [
        "database is locked",
        "database table is locked",
        "database is busy",
        "server closed the connection",
        "no connection to the server",
    ];
    TRANSIENT.iter().any(|t| text.contains(t))
}

//! Why a store call failed, in the terms the server answers with.

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or broke the connection: retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// A uniqueness rule would be broken (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Nothing matches (404).
    #[error("not found")]
    NotFound,
    /// Stored data could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Any other database error.
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
}

impl From<diesel::result::Error> for StoreError {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match err {
            E::NotFound => StoreError::NotFound,
            E::DatabaseError(K::UniqueViolation, info) => StoreError::Conflict(info.message().to_owned()),
            E::DatabaseError(K::ClosedConnection | K::UnableToSendCommand, info) => {
                StoreError::Unavailable(format!("the database connection broke: {}", info.message()))
            }
            E::BrokenTransactionManager => StoreError::Unavailable("the database connection broke".to_owned()),
            other => {
                let text = other.to_string();
                // libpq reports a dropped server this way.
                if text.contains("server closed the connection")
                    || text.contains("connection") && text.contains("closed")
                {
                    StoreError::Unavailable(text)
                } else {
                    StoreError::Query(text)
                }
            }
        }
    }
}

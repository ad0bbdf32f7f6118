//! Every error the gateway itself answers with, and its HTTP status, in one place.
//!
//! The body carries the message twice: `error` is what Ollama's clients read, `detail` is
//! what Open WebUI's frontend reads. Errors from an upstream are passed through unchanged
//! and never become an `AppError`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// An error answered by the gateway itself.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The caller did not authenticate, or may not use this route.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not use this route.
    #[error("{0}")]
    Forbidden(String),
    /// Too many attempts; the caller may try again after `retry_after` seconds.
    #[error("{message}")]
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
        /// What to tell the caller.
        message: String,
    },
    /// A limit of the caller's key, user or group refuses the request (429 with `Retry-After`
    /// and OpenAI's `x-ratelimit-*` headers).
    #[error("{}", .0.message)]
    LimitReached(Box<crate::limits::Refusal>),
    /// The request conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached; nothing was saved.
    #[error("the database is unavailable, nothing was saved: {0}")]
    StoreUnavailable(String),
    /// Nothing matches the request (an unknown model, an instance index out of range).
    #[error("{0}")]
    NotFound(String),
    /// The path is served, but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The client did not send its request body in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// The request body is larger than the gateway accepts.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The Ollama API is switched off, or no instance is configured.
    #[error("{0}")]
    Disabled(String),
    /// An instance could not be reached or broke the connection before answering.
    ///
    /// Clients see the instance's index; its URL, an internal address, is only logged (admins
    /// find it in `/ollama/status`).
    #[error("Ollama instance {idx} is unreachable: {reason}")]
    UpstreamUnreachable {
        /// The instance's index.
        idx: usize,
        /// The instance's base URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// An instance accepted the connection but sent no response headers in time.
    #[error("Ollama instance {idx} did not answer within {secs}s")]
    UpstreamTimeout {
        /// The instance's index.
        idx: usize,
        /// The instance's base URL.
        url: String,
        /// The timeout that ran out.
        secs: f64,
    },
    /// The model is on no instance that answered, and instances that listed it when they
    /// last answered are silent now.
    #[error(
        "model '{model}' is on no reachable Ollama instance: instance(s) {silent:?}, which had it, did not answer"
    )]
    NoInstance {
        /// The model asked for.
        model: String,
        /// Silent instances whose last listing held the model.
        silent: Vec<usize>,
    },
    /// Every instance holding the model is at its slot limit and the queue is full or the
    /// wait ran out.
    #[error("the model is busy on every instance: {reason}; retry in {retry_after}s")]
    Busy {
        /// Seconds to wait before retrying.
        retry_after: u64,
        /// Why.
        reason: String,
    },
    /// A fleet-wide operation failed on some instances (each named in the message).
    #[error("{0}")]
    Partial(String),
    /// The client closed its connection before its answer began (nginx's 499); nobody reads
    /// the answer, the access log does.
    #[error("the client closed the connection")]
    ClientClosed,
    /// A bug in the gateway.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized(_) => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::LimitReached(_) => "limit_reached",
            AppError::Conflict(_) => "conflict",
            AppError::StoreUnavailable(_) => "store_unavailable",
            AppError::NotFound(_) => "not_found",
            AppError::MethodNotAllowed(_) => "method_not_allowed",
            AppError::RequestTimeout(_) => "request_timeout",
            AppError::PayloadTooLarge { .. } => "payload_too_large",
            AppError::Disabled(_) => "disabled",
            AppError::UpstreamUnreachable { .. } => "upstream_unreachable",
            AppError::UpstreamTimeout { .. } => "upstream_timeout",
            AppError::NoInstance { .. } => "no_instance",
            AppError::Busy { .. } => "busy",
            AppError::Partial(_) => "partial",
            AppError::ClientClosed => "client_closed",
            AppError::Internal(_) => "internal",
        }
    }
}

impl AppError {
    /// The JSON body: `error` for Ollama's clients, `detail` for Open WebUI's.
    pub fn body(&self) -> serde_json::Value {
        let message = self.to_string();
        json!({ "error": message, "detail": message })
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::RateLimited { .. } | AppError::LimitReached(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Disabled(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            AppError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            AppError::NoInstance { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Partial(_) => StatusCode::BAD_GATEWAY,
            AppError::ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = self.to_string();
        match self {
            AppError::Internal(_) => {
                tracing::error!(kind = self.kind(), %message, "request failed")
            }
            AppError::UpstreamUnreachable { url, .. } | AppError::UpstreamTimeout { url, .. } => {
                tracing::warn!(kind = self.kind(), %message, upstream = %corral_config::loggable_url(url), "upstream failed")
            }
            AppError::NoInstance { .. } => tracing::warn!(kind = self.kind(), %message, "upstream failed"),
            _ => tracing::debug!(kind = self.kind(), %message, "request refused"),
        }
        let mut resp = HttpResponse::build(self.status_code());
        if let AppError::Busy { retry_after, .. } | AppError::RateLimited { retry_after, .. } = self {
            resp.insert_header((actix_web::http::header::RETRY_AFTER, retry_after.to_string()));
        }
        if let AppError::LimitReached(refusal) = self {
            resp.insert_header((actix_web::http::header::RETRY_AFTER, refusal.retry_after.to_string()));
            for (name, value) in &refusal.headers {
                resp.insert_header((name.clone(), value.clone()));
            }
        }
        if let AppError::NoInstance { .. } = self {
            // About a health check's interval: when the instance is back, or known to be gone.
            resp.insert_header((actix_web::http::header::RETRY_AFTER, "5"));
        }
        resp.json(self.body())
    }
}

impl From<corral_store::StoreError> for AppError {
    fn from(err: corral_store::StoreError) -> Self {
        use corral_store::StoreError as S;
        match err {
            S::Unavailable(m) => AppError::StoreUnavailable(m),
            S::Conflict(m) => AppError::Conflict(m),
            S::NotFound => AppError::NotFound("not found".to_owned()),
            other @ (S::Corrupt(_) | S::Migration(_) | S::Query(_)) => AppError::Internal(other.to_string()),
        }
    }
}

impl From<corral_auth::AuthError> for AppError {
    /// What the caller sent is wrong (a password too long, a bad access list, a bad role), or
    /// the gateway failed (hashing, signing, a corrupt stored hash).
    fn from(err: corral_auth::AuthError) -> Self {
        use corral_auth::AuthError as A;
        match err {
            A::UnknownRole(_)
            | A::EmptyPassword
            | A::PasswordTooLong { .. }
            | A::InvalidExpiresIn { .. }
            | A::InvalidAccessControl(_) => AppError::BadRequest(err.to_string()),
            A::MalformedToken | A::BadSignature | A::ExpiredToken => AppError::Unauthorized(err.to_string()),
            A::InvalidPasswordHash | A::Hashing(_) | A::EmptySecret | A::TokenEncoding(_) | A::InvalidHashedKey => {
                AppError::Internal(err.to_string())
            }
        }
    }
}

impl From<corral_config::ConfigError> for AppError {
    /// A refused configuration names its key: the caller's to fix.
    fn from(err: corral_config::ConfigError) -> Self {
        AppError::BadRequest(err.to_string())
    }
}

impl From<corral_convert::ConvertError> for AppError {
    /// A request that cannot be converted is the caller's; an answer that cannot be, the
    /// instance's.
    fn from(err: corral_convert::ConvertError) -> Self {
        match err.status() {
            400..=499 => AppError::BadRequest(err.to_string()),
            _ => AppError::Internal(err.to_string()),
        }
    }
}

impl From<corral_balance::BalanceError> for AppError {
    /// Only an unknown policy name, which configuration validation refuses first.
    fn from(err: corral_balance::BalanceError) -> Self {
        AppError::BadRequest(err.to_string())
    }
}

impl From<corral_registry::RegistryError> for AppError {
    fn from(err: corral_registry::RegistryError) -> Self {
        match err {
            corral_registry::RegistryError::ModelNotFound { .. } => AppError::NotFound(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::ResponseError;

    use super::AppError;

    #[test]
    fn library_errors_map_to_the_status_they_deserve() {
        use corral_auth::AuthError;
        // A password that cannot be hashed is the gateway's fault, not the caller's.
        assert_eq!(
            AppError::from(AuthError::Hashing("out of memory".to_owned())).status_code(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            AppError::from(AuthError::PasswordTooLong { max: 1024 }).status_code(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            AppError::from(AuthError::ExpiredToken).status_code(),
            StatusCode::UNAUTHORIZED
        );
        let not_found = corral_registry::RegistryError::ModelNotFound { model: "x".to_owned() };
        assert_eq!(AppError::from(not_found).status_code(), StatusCode::NOT_FOUND);
        let body = AppError::Partial("instance 1: answered 500".to_owned()).body();
        assert_eq!(body["error"], body["detail"]);
    }
}

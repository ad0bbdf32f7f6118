//! Errors: the crate's [`ConvertError`], and OpenAI's error envelope built from statuses and
//! from Ollama's native error bodies.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::openai::{ErrorBody, ErrorResponse};

/// Why a conversion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The client's request asks for something Ollama cannot do, or is malformed.
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong, for the client.
        message: String,
        /// The request field at fault (`messages[2].content`), if known.
        param: Option<String>,
    },
    /// The client's body is not the JSON the endpoint expects.
    #[error("{0}")]
    InvalidJson(String),
    /// The upstream answered with a body Corral cannot read.
    #[error("{0}")]
    BadUpstream(String),
}

impl ConvertError {
    /// An [`ConvertError::InvalidRequest`] about `param`.
    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        ConvertError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ConvertError::InvalidRequest { .. } => "invalid_request",
            ConvertError::InvalidJson(_) => "invalid_json",
            ConvertError::BadUpstream(_) => "bad_upstream",
        }
    }

    /// The HTTP status to answer with: 400 for the client's mistakes, 502 for the upstream's.
    pub fn status(&self) -> u16 {
        match self {
            ConvertError::InvalidRequest { .. } | ConvertError::InvalidJson(_) => 400,
            ConvertError::BadUpstream(_) => 502,
        }
    }

    /// The error in OpenAI's envelope, with the type that matches [`ConvertError::status`].
    pub fn to_openai(&self) -> ErrorResponse {
        let param = match self {
            ConvertError::InvalidRequest { param, .. } => param.clone(),
            ConvertError::InvalidJson(_) | ConvertError::BadUpstream(_) => None,
        };
        ErrorResponse {
            error: ErrorBody {
                message: self.to_string(),
                kind: error_type(self.status()).to_owned(),
                param,
                code: None,
            },
        }
    }
}

/// OpenAI's error `type` for an HTTP status.
///
/// 400 (and the other refusals of a request's form: 405, 413, 415, 422)
/// `invalid_request_error`, 401 `authentication_error`, 403 `permission_error`,
/// 404 `not_found_error`, 429 `rate_limit_error`, anything else `api_error`.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

impl ErrorResponse {
    /// An envelope with the type for `status`, and `param` and `code` unset.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ErrorResponse {
            error: ErrorBody {
                message: message.into(),
                kind: error_type(status).to_owned(),
                param: None,
                code: None,
            },
        }
    }

    /// The same envelope naming the request field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.error.param = Some(param.into());
        self
    }

    /// The same envelope with a machine-readable code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.error.code = Some(code.into());
        self
    }
}

/// OpenAI's envelope for an error answer from Ollama: `status` as received, `body` as received.
///
/// The message is the native `{"error":"…"}` text; an OpenAI-shaped body keeps its message,
/// `param` and `code`; any other body (gin's `404 page not found`, a proxy's HTML) is used as
/// text, trimmed; an empty one becomes `upstream answered with HTTP <status>`.
/// The type follows `status`, so keep answering with `status`.
pub fn error_from_native(status: u16, body: &[u8]) -> ErrorResponse {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        match map.get("error") {
            Some(Value::String(message)) => return ErrorResponse::new(status, message.clone()),
            Some(Value::Object(inner)) => {
                let text = |key: &str| inner.get(key).and_then(Value::as_str).map(str::to_owned);
                let mut envelope = ErrorResponse::new(status, text("message").unwrap_or_default());
                envelope.error.param = text("param");
                envelope.error.code = text("code");
                return envelope;
            }
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        ErrorResponse::new(status, format!("upstream answered with HTTP {status}"))
    } else {
        ErrorResponse::new(status, text)
    }
}

/// Parses a client's request body, turning serde's complaint into a 400.
pub fn parse_request<T: DeserializeOwned>(body: &[u8]) -> Result<T, ConvertError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ConvertError::InvalidJson("request body is empty".to_owned()));
    }
    serde_json::from_slice(body).map_err(|e| ConvertError::InvalidJson(format!("invalid request body: {e}")))
}

/// Parses a successful (2xx) non-streaming answer from Ollama, turning a bad body into a 502.
pub fn parse_upstream<T: DeserializeOwned>(body: &[u8]) -> Result<T, ConvertError> {
    serde_json::from_slice(body)
        .map_err(|e| ConvertError::BadUpstream(format!("upstream sent an unreadable answer: {e}")))
}

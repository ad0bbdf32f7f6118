//! Wire types of OpenAI's API as Corral serves it on `/v1/*`.
//!
//! Request types keep every field a client may send: the ones Corral maps are typed, and the
//! rest land in an `extra` map, from which the converters pick what Ollama can use.
//! Response types serialise like OpenAI's (nullable fields are written as `null`), plus the
//! extra usage fields Open WebUI adds (see [`Usage`]).

mod chat;
mod completion;
mod embedding;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub use chat::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ChunkChoice,
    ContentPart, Delta, FunctionCall, FunctionDefinition, ImageUrl, InputAudio, JsonSchemaFormat, MessageContent,
    NamedFunction, NamedToolChoice, ReasoningOptions, ResponseFormat, Tool, ToolCall, ToolChoice,
};
pub use completion::{Completion, CompletionChoice, CompletionRequest, Prompt};
pub use embedding::{Embedding, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EmbeddingVector};

/// `stop`: one sequence or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Whether a final chunk with `usage` and empty `choices` precedes `[DONE]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

/// Token counts of a chat or text completion.
///
/// The three standard fields are always present.
/// Corral also sends the fields Open WebUI's `convert_ollama_usage_to_openai` adds, in the same
/// key order, so dashboards built on Open WebUI keep working; they are `Option` so that real
/// OpenAI usage objects still deserialise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Generation speed, tokens per second rounded to 2 decimals, or `"N/A"`.
    #[serde(rename = "response_token/s", default, skip_serializing_if = "Option::is_none")]
    pub response_tokens_per_second: Option<Rate>,
    /// Prompt evaluation speed, tokens per second rounded to 2 decimals, or `"N/A"`.
    #[serde(rename = "prompt_token/s", default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_per_second: Option<Rate>,
    /// Ollama's `total_duration`, nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    /// Ollama's `load_duration`, nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    /// Ollama's `prompt_eval_count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Ollama's `prompt_eval_duration`, nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_duration: Option<u64>,
    /// Ollama's `eval_count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_count: Option<u64>,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// Ollama's `eval_duration`, nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_duration: Option<u64>,
    /// `total_duration` as `"<h>h<m>m<s>s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approximate_total: Option<String>,
    /// Prompt plus generated tokens.
    pub total_tokens: u64,
    /// The breakdown of generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// A tokens-per-second figure, or the text `"N/A"` when the duration was not positive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rate {
    /// Tokens per second.
    PerSecond(f64),
    /// `"N/A"`.
    Text(String),
}

/// `completion_tokens_details`; Ollama reports no breakdown, so all are 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    /// Tokens spent reasoning.
    #[serde(default)]
    pub reasoning_tokens: u64,
    /// Predicted-output tokens that were used.
    #[serde(default)]
    pub accepted_prediction_tokens: u64,
    /// Predicted-output tokens that were not used.
    #[serde(default)]
    pub rejected_prediction_tokens: u64,
}

/// OpenAI's error envelope: `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error itself.
    pub error: ErrorBody,
}

/// The inside of [`ErrorResponse`]; `param` and `code` are written as `null` when unset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable text.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `not_found_error`,
    /// `rate_limit_error` or `api_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if any.
    #[serde(default)]
    pub param: Option<String>,
    /// A machine-readable code, if any.
    #[serde(default)]
    pub code: Option<String>,
}

/// One model in `/v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    /// The model name.
    pub id: String,
    /// Always `"model"`.
    pub object: String,
    /// Unix seconds (Ollama's `modified_at`).
    pub created: i64,
    /// The namespace part of the name (`library` for official models).
    pub owned_by: String,
}

/// The `/v1/models` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `"list"`.
    pub object: String,
    /// The models; `[]` (never `null`) when there are none.
    pub data: Vec<Model>,
}

/// Accepts a JSON string as is, or any other JSON value as its compact text.
///
/// Tool-call `arguments` are a string in OpenAI's API, but some clients send the object.
fn string_or_json<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(de)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

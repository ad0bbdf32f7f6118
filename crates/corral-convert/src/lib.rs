//! Pure wire types and converters between the Ollama native API and the OpenAI API.
#![doc = include_str!("../README.md")]

mod chat;
mod completion;
mod embedding;
mod error;
pub mod meter;
mod models;
pub mod ndjson;
pub mod ollama;
pub mod openai;
mod params;
pub mod sse;
mod stream;
pub mod stream_end;
mod tools;
mod usage;

pub use chat::{chat_completion, chat_request, ChatChunker, ChatStream};
pub use completion::{completion, completion_request, CompletionChunker, CompletionStream};
pub use embedding::{embedding_request, embedding_response, EncodingFormat};
pub use error::{error_from_native, error_type, parse_request, parse_upstream, ConvertError};
pub use models::{model, model_list, model_not_found, owned_by};
pub use tools::finish_reason;
pub use usage::usage;

/// What every converted answer is stamped with; the caller chooses it, so output is
/// deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMeta {
    /// The response id (`chatcmpl-…` or `cmpl-…`), the same on every chunk of a stream.
    pub id: String,
    /// The model name to report, normally exactly as the client sent it.
    pub model: String,
    /// Unix seconds, the same on every chunk of a stream.
    pub created: i64,
    /// Where reasoning text goes.
    pub reasoning: ReasoningField,
    /// `system_fingerprint` to report, if any.
    pub system_fingerprint: Option<String>,
}

impl ResponseMeta {
    /// Meta with the default reasoning field and no fingerprint.
    pub fn new(id: impl Into<String>, model: impl Into<String>, created: i64) -> Self {
        ResponseMeta {
            id: id.into(),
            model: model.into(),
            created,
            reasoning: ReasoningField::default(),
            system_fingerprint: None,
        }
    }

    /// The same meta with reasoning text sent under `field`.
    pub fn with_reasoning(mut self, field: ReasoningField) -> Self {
        self.reasoning = field;
        self
    }
}

/// The field that carries Ollama's `thinking` text in OpenAI answers.
///
/// There is no standard: DeepSeek introduced `reasoning_content`, which Open WebUI, LiteLLM,
/// the Vercel AI SDK and most other clients read; Ollama's own `/v1` and OpenRouter send
/// `reasoning`.
/// The default is `reasoning_content` alone, since sending both makes a client that reads both
/// show the text twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReasoningField {
    /// `reasoning_content` (the default).
    #[default]
    ReasoningContent,
    /// `reasoning`, as Ollama's own `/v1` sends it.
    Reasoning,
    /// Both fields, with the same text.
    Both,
}

impl ReasoningField {
    /// The `(reasoning_content, reasoning)` pair carrying `text`.
    pub(crate) fn place(self, text: String) -> (Option<String>, Option<String>) {
        match self {
            ReasoningField::ReasoningContent => (Some(text), None),
            ReasoningField::Reasoning => (None, Some(text)),
            ReasoningField::Both => (Some(text.clone()), Some(text)),
        }
    }
}

//! `/v1/completions`: the legacy text-completion request and its `text_completion` answer.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Stop, StreamOptions, Usage};

/// A `POST /v1/completions` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The model name.
    pub model: String,
    /// The prompt; Ollama takes exactly one text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Prompt>,
    /// Text after the insertion point (fill-in-the-middle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Maximum generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// How many choices to generate; Ollama makes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// How many candidates to rank; Ollama makes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_of: Option<u32>,
    /// Whether to answer with server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Return log probabilities of this many alternatives per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// Whether to repeat the prompt before the completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Presence penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// An end-user id; not forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field, kept so Ollama-specific ones (`options`, `keep_alive`, `think`,
    /// `raw`, `system`, …) can be carried over.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `prompt`: a string, strings, or token arrays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One prompt.
    Text(String),
    /// Several prompts (Ollama takes only one).
    Texts(Vec<String>),
    /// Token ids (not supported by Ollama).
    Tokens(Vec<i64>),
    /// Several token arrays (not supported by Ollama).
    TokenBatches(Vec<Vec<i64>>),
}

/// A `text_completion` object: the whole answer, or one stream chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The completion id (`cmpl-…`), the same on every chunk.
    pub id: String,
    /// Always `"text_completion"`.
    pub object: String,
    /// Unix seconds, the same on every chunk.
    pub created: i64,
    /// The model as the client named it.
    pub model: String,
    /// The backend configuration fingerprint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// One choice, or none on the usage chunk.
    pub choices: Vec<CompletionChoice>,
    /// Token counts: on the whole answer, and on the usage chunk of a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One choice of a [`Completion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    /// The generated text (a piece of it in a stream).
    pub text: String,
    /// Always 0.
    pub index: u32,
    /// `{"tokens","token_logprobs","top_logprobs","text_offset"}` when requested, else `null`.
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// Set on the final chunk or the whole answer.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Reasoning text, under the name most clients read (not part of OpenAI's schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Reasoning text, under the name Ollama's own `/v1` uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
}

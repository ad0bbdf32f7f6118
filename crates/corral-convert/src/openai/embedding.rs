//! `/v1/embeddings`: the request and the `list` of `embedding` objects.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A `POST /v1/embeddings` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    /// The model name.
    pub model: String,
    /// One text or several.
    pub input: EmbeddingInput,
    /// `float` (the default) or `base64`, case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// Truncate vectors to this many dimensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// An end-user id; not forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field, kept so Ollama-specific ones (`truncate`, `keep_alive`, `options`)
    /// can be carried over.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `input`: a string, strings, or token arrays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// Token ids (not supported by Ollama).
    Tokens(Vec<i64>),
    /// Several token arrays (not supported by Ollama).
    TokenBatches(Vec<Vec<i64>>),
}

/// The `/v1/embeddings` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// Always `"list"`.
    pub object: String,
    /// One entry per input, in input order.
    pub data: Vec<Embedding>,
    /// The model as the client named it.
    pub model: String,
    /// Token counts.
    pub usage: EmbeddingUsage,
}

/// One vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Always `"embedding"`.
    pub object: String,
    /// The vector, as numbers or as base64 of little-endian `f32`s.
    pub embedding: EmbeddingVector,
    /// The input's position.
    pub index: u32,
}

/// An embedding in the requested encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `encoding_format: "float"`.
    Float(Vec<f32>),
    /// `encoding_format: "base64"`: the little-endian `f32` bytes, standard base64.
    Base64(String),
}

/// Token counts of an embeddings request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Tokens over all inputs.
    pub prompt_tokens: u64,
    /// The same number (embeddings generate nothing).
    pub total_tokens: u64,
}

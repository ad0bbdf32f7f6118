//! Wire types of Ollama's native API (`/api/chat`, `/api/generate`, `/api/embed`).
//!
//! Field order follows Ollama's Go structs, and `Option` fields are skipped when unset, so a
//! serialised request looks like one an official client would send.
//! Open-ended parts (`options`, `format`, tool parameters, `keep_alive`) stay
//! `serde_json::Value`, so nothing a client sent is lost on the way through.
//! Deserialisation is lenient (missing fields take defaults), because the stream converters
//! must turn whatever an upstream sends into a well-formed OpenAI answer.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A `POST /api/chat` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model name, as the client spelled it.
    pub model: String,
    /// The conversation so far.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// Whether to stream NDJSON (Ollama's default is true when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// `"json"` or a JSON schema object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    /// How long to keep the model loaded: seconds or a Go duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
    /// Sampling and runner options (`temperature`, `num_predict`, `stop`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Map<String, Value>>,
    /// Thinking switch or level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Think>,
    /// Whether to truncate the history to fit the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    /// Whether to shift the context when it fills up during generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<bool>,
    /// Whether to return log probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many alternatives per token to return with `logprobs` (0–20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
}

/// The `think` request field: a switch or a level (`"low"`, `"medium"`, `"high"`, `"max"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Think {
    /// `true` or `false`.
    Enabled(bool),
    /// A named effort level.
    Level(String),
}

/// One chat message, in a request's history or a response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    #[serde(default)]
    pub role: String,
    /// The text; always present on the wire, possibly empty.
    #[serde(default)]
    pub content: String,
    /// The model's reasoning text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Images as standard base64 without a `data:` prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    /// Tool calls made by the assistant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// On a `tool` message: the name of the tool whose result this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// On a `tool` message: the id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A tool definition: `{"type":"function","function":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `"function"` today.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function's name, description and JSON-schema parameters.
    pub function: FunctionDefinition,
}

/// A callable function's description, shared by both dialects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    /// The function name the model calls.
    pub name: String,
    /// What the function does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema of the arguments, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// A tool call made by the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call id (`call_…`), when the server produced one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What is called and with which arguments.
    #[serde(default)]
    pub function: ToolCallFunction,
}

/// The function part of a tool call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallFunction {
    /// The position of the call in the response (always present on Ollama's wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The function name.
    #[serde(default)]
    pub name: String,
    /// The arguments as a JSON object (never a string on the native API).
    #[serde(default)]
    pub arguments: Value,
}

/// One `/api/chat` response object: a stream chunk, or the whole answer with `stream:false`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The model name as the request spelled it.
    #[serde(default)]
    pub model: String,
    /// The cloud model behind a `:cloud` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_model: Option<String>,
    /// The cloud host behind a `:cloud` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<String>,
    /// RFC 3339 creation time of this object.
    #[serde(default)]
    pub created_at: String,
    /// The message (delta when streaming).
    #[serde(default)]
    pub message: Message,
    /// Whether this is the final object.
    #[serde(default)]
    pub done: bool,
    /// Why generation stopped: `stop`, `length`, `load`, `unload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    /// Log probabilities, when requested: Ollama's array of token entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    /// Whole request time in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    /// Model load time in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    /// Prompt tokens, cached ones included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
    /// Prompt evaluation time in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_duration: Option<u64>,
    /// Generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_count: Option<u64>,
    /// Generation time in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_duration: Option<u64>,
}

/// A `POST /api/generate` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// The model name.
    pub model: String,
    /// The prompt; empty means a load-only request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Fill-in-the-middle text after the insertion point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Overrides the Modelfile system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Overrides the Modelfile template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Deprecated context tokens from an earlier response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<i64>>,
    /// Whether to stream NDJSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Whether to skip templating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<bool>,
    /// `"json"` or a JSON schema object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    /// How long to keep the model loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
    /// Images as standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    /// Sampling and runner options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Map<String, Value>>,
    /// Thinking switch or level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Think>,
    /// Whether to truncate the prompt to fit the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    /// Whether to shift the context when it fills up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<bool>,
    /// Whether to return log probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many alternatives per token to return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
}

/// One `/api/generate` response object: a stream chunk or the whole answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateResponse {
    /// The model name as the request spelled it.
    #[serde(default)]
    pub model: String,
    /// The cloud model behind a `:cloud` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_model: Option<String>,
    /// The cloud host behind a `:cloud` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<String>,
    /// RFC 3339 creation time of this object.
    #[serde(default)]
    pub created_at: String,
    /// Generated text (a token when streaming).
    #[serde(default)]
    pub response: String,
    /// Reasoning text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Whether this is the final object.
    #[serde(default)]
    pub done: bool,
    /// Why generation stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    /// Context tokens for a follow-up request (deprecated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<i64>>,
    /// Whole request time in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    /// Model load time in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    /// Prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
    /// Prompt evaluation time in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_duration: Option<u64>,
    /// Generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_count: Option<u64>,
    /// Generation time in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_duration: Option<u64>,
    /// Tool calls parsed from the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Log probabilities, when requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

/// A `POST /api/embed` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedRequest {
    /// The model name.
    pub model: String,
    /// One text or a batch of texts.
    pub input: EmbedInput,
    /// Whether to truncate inputs that exceed the context (Ollama's default is true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    /// Truncate vectors to this many dimensions (then normalise again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// Runner options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Map<String, Value>>,
    /// How long to keep the model loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
}

/// The `input` of an embed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbedInput {
    /// One text.
    Single(String),
    /// Several texts, one vector each.
    Batch(Vec<String>),
}

/// A `/api/embed` response body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbedResponse {
    /// The model name as the request spelled it.
    #[serde(default)]
    pub model: String,
    /// One L2-normalised vector per input, in input order.
    #[serde(default)]
    pub embeddings: Vec<Vec<f32>>,
    /// Whole request time in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    /// Model load time in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    /// Tokens over all inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
}

/// Ollama's error body, `{"error":"…"}`, also sent as the last line of a broken stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error text.
    pub error: String,
}

/// The timing and token counters of a final response object, gathered from either endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Whole request time in nanoseconds.
    pub total_duration: Option<u64>,
    /// Model load time in nanoseconds.
    pub load_duration: Option<u64>,
    /// Prompt tokens.
    pub prompt_eval_count: Option<u64>,
    /// Prompt evaluation time in nanoseconds.
    pub prompt_eval_duration: Option<u64>,
    /// Generated tokens.
    pub eval_count: Option<u64>,
    /// Generation time in nanoseconds.
    pub eval_duration: Option<u64>,
}

impl ChatResponse {
    /// The counters carried by this object (all `None` on intermediate chunks).
    pub fn metrics(&self) -> Metrics {
        Metrics {
            total_duration: self.total_duration,
            load_duration: self.load_duration,
            prompt_eval_count: self.prompt_eval_count,
            prompt_eval_duration: self.prompt_eval_duration,
            eval_count: self.eval_count,
            eval_duration: self.eval_duration,
        }
    }
}

impl GenerateResponse {
    /// The counters carried by this object (all `None` on intermediate chunks).
    pub fn metrics(&self) -> Metrics {
        Metrics {
            total_duration: self.total_duration,
            load_duration: self.load_duration,
            prompt_eval_count: self.prompt_eval_count,
            prompt_eval_duration: self.prompt_eval_duration,
            eval_count: self.eval_count,
            eval_duration: self.eval_duration,
        }
    }
}

//! What a simulated instance holds and how it behaves.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One model the instance holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimModel {
    /// Display name with tag, e.g. `llama3.2:latest`.
    pub name: String,
    /// Model family, e.g. `llama`.
    pub family: String,
    /// e.g. `3.2B`.
    pub parameter_size: String,
    /// e.g. `Q4_K_M`.
    pub quantization_level: String,
    /// Bytes on disk.
    pub size: u64,
    /// 64 hex characters.
    pub digest: String,
    /// `completion`, `tools`, `thinking`, `vision`, `embedding`, `insert`.
    pub capabilities: Vec<String>,
    /// Embedding vector length.
    pub embedding_length: usize,
    /// Context length.
    pub context_length: u64,
    /// RFC 3339 modification time.
    pub modified_at: String,
}

impl Default for SimModel {
    fn default() -> Self {
        SimModel::chat("llama3.2")
    }
}

impl SimModel {
    /// A chat and completion model that can call tools.
    pub fn chat(name: &str) -> SimModel {
        let name = with_tag(name);
        let digest = crate::text::digest_of(&name);
        SimModel {
            family: "llama".to_owned(),
            parameter_size: "3.2B".to_owned(),
            quantization_level: "Q4_K_M".to_owned(),
            size: 2_019_393_189,
            digest,
            capabilities: vec!["completion".to_owned(), "tools".to_owned()],
            embedding_length: 3072,
            context_length: 131_072,
            modified_at: "2025-11-01T10:00:00.123456789-07:00".to_owned(),
            name,
        }
    }

    /// A model that thinks before it answers.
    pub fn thinking(name: &str) -> SimModel {
        let mut m = SimModel::chat(name);
        m.family = "qwen3".to_owned();
        m.capabilities = vec!["completion".to_owned(), "tools".to_owned(), "thinking".to_owned()];
        m
    }

    /// An embedding model.
    pub fn embedding(name: &str) -> SimModel {
        let mut m = SimModel::chat(name);
        m.family = "bert".to_owned();
        m.parameter_size = "23M".to_owned();
        m.quantization_level = "F16".to_owned();
        m.size = 45_960_996;
        m.capabilities = vec!["embedding".to_owned()];
        m.embedding_length = 384;
        m.context_length = 256;
        m
    }

    /// Whether the model has `capability`.
    pub fn can(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

/// `name` with `:latest` added when it has no tag.
pub fn with_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

/// Faults to inject; all off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share of requests (0 to 1) answered with `error_status` before any chunk.
    pub error_rate: f64,
    /// Status of injected errors (500 if 0).
    pub error_status: u16,
    /// Message of injected errors.
    pub error_message: String,
    /// When set, errors are injected only on this route (e.g. `/api/chat`).
    pub error_route: Option<String>,
    /// Abort the connection after this many chunks.
    pub drop_after_chunks: Option<usize>,
    /// Send an `{"error":…}` line after this many chunks and end the stream.
    pub error_after_chunks: Option<usize>,
    /// Stop sending after this many chunks, keeping the connection open.
    pub stall_after_chunks: Option<usize>,
    /// Wait this long before sending response headers.
    #[serde(with = "millis")]
    pub header_delay: Duration,
    /// Send this many chunks, then wait for the latch to be released.
    pub latch_after_chunks: Option<usize>,
}

/// How the instance behaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Models the instance holds.
    pub models: Vec<SimModel>,
    /// Models `/api/pull` can fetch.
    pub registry: Vec<SimModel>,
    /// Reported by `/api/version`.
    pub version: String,
    /// Generation speed; 0 sends as fast as possible.
    pub tokens_per_sec: f64,
    /// Time to load a model that is not loaded.
    #[serde(with = "millis")]
    pub load_time: Duration,
    /// Models loaded at start.
    pub loaded: Vec<String>,
    /// Most models loaded at once; 0 means no limit. The least recently used is evicted.
    pub max_loaded: usize,
    /// Requests served at once per model; more wait in a queue.
    pub num_parallel: usize,
    /// Requests that may wait; beyond it the instance answers 503.
    pub max_queue: usize,
    /// Bearer key every request must carry, if set.
    pub api_key: Option<String>,
    /// Content chunks when the request does not set `num_predict`.
    pub default_chunks: usize,
    /// Default keep-alive of a loaded model.
    #[serde(with = "millis")]
    pub keep_alive: Duration,
    /// Seed mixed into every generation.
    pub seed: u64,
    /// HTTP worker threads.
    pub workers: usize,
    /// Faults to inject.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            models: vec![
                SimModel::chat("llama3.2"),
                SimModel::embedding("all-minilm"),
                SimModel::thinking("qwen3"),
            ],
            registry: vec![SimModel::chat("mistral"), SimModel::chat("phi3")],
            version: "0.33.0".to_owned(),
            tokens_per_sec: 0.0,
            load_time: Duration::ZERO,
            loaded: Vec::new(),
            max_loaded: 0,
            num_parallel: 4,
            max_queue: 512,
            api_key: None,
            default_chunks: 10,
            keep_alive: Duration::from_secs(300),
            seed: 0,
            workers: 1,
            faults: Faults::default(),
        }
    }
}

/// Durations as whole milliseconds in JSON.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

//! `/v1/embeddings` ↔ `/api/embed`, single and batch.

use base64::Engine as _;

use crate::ollama::{self, EmbedInput};
use crate::openai::{self, EmbeddingInput, EmbeddingVector};
use crate::params::take;
use crate::ConvertError;

/// How vectors are written in the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EncodingFormat {
    /// JSON numbers (the default).
    #[default]
    Float,
    /// Standard base64 of the little-endian `f32` bytes.
    Base64,
}

/// Converts an OpenAI embeddings request into Ollama's `/api/embed` request, and says how
/// the answer must be encoded.
///
/// A single text stays single (an empty one is sent as `[""]`, since Ollama treats `""` as
/// "just load the model"); a list is a batch.
/// An empty list and token arrays are refused with 400, as is an `encoding_format` other
/// than `float` or `base64` (case-insensitive).
/// `dimensions` is passed on; Ollama fields a client adds (`truncate`, `keep_alive`,
/// `options`) are carried.
pub fn embedding_request(
    req: openai::EmbeddingRequest,
) -> Result<(ollama::EmbedRequest, EncodingFormat), ConvertError> {
    let mut extra = req.extra;
    let format = match req.encoding_format.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(_) => {
            let given = req.encoding_format.unwrap_or_default();
            return Err(ConvertError::invalid(
                format!("Invalid value for 'encoding_format' = {given}. Supported values: ['float', 'base64']."),
                "encoding_format",
            ));
        }
    };
    let input = match req.input {
        EmbeddingInput::Text(text) if text.is_empty() => EmbedInput::Batch(vec![text]),
        EmbeddingInput::Text(text) => EmbedInput::Single(text),
        EmbeddingInput::Texts(texts) if texts.is_empty() => {
            return Err(ConvertError::invalid(
                "invalid input: the list of inputs is empty",
                "input",
            ))
        }
        EmbeddingInput::Texts(texts) => EmbedInput::Batch(texts),
        EmbeddingInput::Tokens(_) | EmbeddingInput::TokenBatches(_) => {
            return Err(ConvertError::invalid(
                "token inputs are not supported; send text",
                "input",
            ))
        }
    };
    let native = ollama::EmbedRequest {
        model: req.model,
        input,
        truncate: take(&mut extra, "truncate")?,
        dimensions: req.dimensions,
        options: take(&mut extra, "options")?,
        keep_alive: take(&mut extra, "keep_alive")?,
    };
    Ok((native, format))
}

/// Converts Ollama's `/api/embed` answer into OpenAI's `list` of `embedding` objects, with
/// `model` reported as `model` (normally the client's spelling).
pub fn embedding_response(
    resp: ollama::EmbedResponse,
    model: &str,
    format: EncodingFormat,
) -> openai::EmbeddingResponse {
    let tokens = resp.prompt_eval_count.unwrap_or(0);
    let data = resp
        .embeddings
        .into_iter()
        .zip(0u32..)
        .map(|(vector, index)| openai::Embedding {
            object: "embedding".to_owned(),
            embedding: match format {
                EncodingFormat::Float => EmbeddingVector::Float(vector),
                EncodingFormat::Base64 => EmbeddingVector::Base64(base64_f32(&vector)),
            },
            index,
        })
        .collect();
    openai::EmbeddingResponse {
        object: "list".to_owned(),
        data,
        model: model.to_owned(),
        usage: openai::EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }
}

fn base64_f32(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

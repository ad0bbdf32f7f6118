//! Ollama's `/api/chat` NDJSON stream as OpenAI `chat.completion.chunk` events.

use serde_json::Value;

use super::response::chat_logprobs;
use crate::ollama::{self, Metrics};
use crate::openai::{ChatCompletionChunk, ChunkChoice, Delta};
use crate::stream::{ChunkConverter, Driver};
use crate::tools::{finish_reason, tool_call};
use crate::{sse, usage, ResponseMeta};

/// Converts native chat chunks into OpenAI chunks, one step at a time.
///
/// Each step returns `Option` because many native chunks have no counterpart for it (no
/// reasoning text, no content, not the final chunk).
/// The order of a whole stream is: content and reasoning chunks (the first one carries
/// `role:"assistant"`), one finish chunk with an empty delta and `finish_reason`, and, when
/// asked, a usage chunk with `choices: []`.
#[derive(Debug, Clone)]
pub struct ChatChunker {
    meta: ResponseMeta,
    include_usage: bool,
    opened: bool,
    tool_calls: u32,
}

impl ChatChunker {
    /// A chunker for one response.
    pub fn new(meta: ResponseMeta, include_usage: bool) -> Self {
        ChatChunker {
            meta,
            include_usage,
            opened: false,
            tool_calls: 0,
        }
    }

    /// The chunk carrying a native chunk's reasoning text, if it has any.
    ///
    /// Reasoning gets its own chunk, before the content of the same native chunk, as Ollama's
    /// `/v1` does; `content` is `""` so clients that concatenate content never meet `null`.
    pub fn reasoning_chunk(
        &mut self,
        thinking: Option<String>,
        logprobs: Option<Value>,
    ) -> Option<ChatCompletionChunk> {
        let text = thinking.filter(|t| !t.is_empty())?;
        let (reasoning_content, reasoning) = self.meta.reasoning.place(text);
        let delta = Delta {
            role: self.role(),
            content: Some(String::new()),
            reasoning_content,
            reasoning,
            tool_calls: None,
        };
        Some(self.chunk(delta, chat_logprobs(logprobs), None))
    }

    /// The chunk carrying content and tool calls, if the native chunk has either.
    ///
    /// Tool calls arrive whole (Ollama does not stream arguments piecewise); each gets its
    /// `index` over the whole response, its id, and JSON-string arguments.
    pub fn content_chunk(
        &mut self,
        content: String,
        tool_calls: Option<Vec<ollama::ToolCall>>,
        logprobs: Option<Value>,
    ) -> Option<ChatCompletionChunk> {
        let calls = tool_calls.filter(|c| !c.is_empty());
        if content.is_empty() && calls.is_none() {
            return None;
        }
        let calls = calls.map(|calls| {
            calls
                .into_iter()
                .map(|call| {
                    let position = self.tool_calls;
                    self.tool_calls += 1;
                    tool_call(call, &self.meta.id, position, Some(position))
                })
                .collect()
        });
        let delta = Delta {
            role: self.role(),
            content: Some(content),
            reasoning_content: None,
            reasoning: None,
            tool_calls: calls,
        };
        Some(self.chunk(delta, chat_logprobs(logprobs), None))
    }

    /// A role-only chunk if nothing was sent yet, so even an empty answer opens with the role.
    pub fn opening_chunk(&mut self) -> Option<ChatCompletionChunk> {
        let role = self.role()?;
        let delta = Delta {
            role: Some(role),
            content: Some(String::new()),
            ..Delta::default()
        };
        Some(self.chunk(delta, None, None))
    }

    /// The finish chunk: an empty delta with [`crate::finish_reason`] for `done_reason`.
    pub fn finish_chunk(&self, done_reason: Option<&str>) -> ChatCompletionChunk {
        self.chunk(
            Delta::default(),
            None,
            Some(finish_reason(done_reason, self.tool_calls > 0)),
        )
    }

    /// The usage chunk (`choices: []`), if the client asked for one.
    pub fn usage_chunk(&self, metrics: &Metrics) -> Option<ChatCompletionChunk> {
        if !self.include_usage {
            return None;
        }
        let mut chunk = self.chunk(Delta::default(), None, None);
        chunk.choices.clear();
        chunk.usage = Some(usage(metrics));
        Some(chunk)
    }

    /// Hands every chunk for one native chunk to `emit`, in order; returns whether it was the
    /// final native chunk (after which the stream ends with `[DONE]`).
    pub fn convert(&mut self, native: ollama::ChatResponse, mut emit: impl FnMut(&ChatCompletionChunk)) -> bool {
        let metrics = native.metrics();
        let message = native.message;
        let has_content = !message.content.is_empty() || message.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
        let (reasoning_logprobs, content_logprobs) = if has_content {
            (None, native.logprobs)
        } else {
            (native.logprobs, None)
        };
        if let Some(chunk) = self.reasoning_chunk(message.thinking, reasoning_logprobs) {
            emit(&chunk);
        }
        if let Some(chunk) = self.content_chunk(message.content, message.tool_calls, content_logprobs) {
            emit(&chunk);
        }
        if !native.done {
            return false;
        }
        if let Some(chunk) = self.opening_chunk() {
            emit(&chunk);
        }
        emit(&self.finish_chunk(native.done_reason.as_deref()));
        if let Some(chunk) = self.usage_chunk(&metrics) {
            emit(&chunk);
        }
        true
    }

    /// `Some("assistant")` the first time it is asked, then `None`.
    fn role(&mut self) -> Option<String> {
        if self.opened {
            return None;
        }
        self.opened = true;
        Some("assistant".to_owned())
    }

    fn chunk(&self, delta: Delta, logprobs: Option<Value>, finish_reason: Option<String>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.meta.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.meta.created,
            model: self.meta.model.clone(),
            system_fingerprint: self.meta.system_fingerprint.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs,
                finish_reason,
            }],
            usage: None,
        }
    }
}

impl ChunkConverter for ChatChunker {
    type Native = ollama::ChatResponse;

    fn convert(&mut self, native: Self::Native, out: &mut Vec<u8>) -> bool {
        ChatChunker::convert(self, native, |chunk| sse::write_event(out, chunk))
    }
}

/// Converts Ollama's `/api/chat` NDJSON stream into OpenAI's SSE stream, incrementally.
///
/// Feed the upstream body with [`ChatStream::push`] as it arrives and call
/// [`ChatStream::finish`] at its end; send every returned byte to the client as is.
/// The output is the same however the input is split.
///
/// * A successful stream ends with the finish chunk, the usage chunk when asked for, and
///   `data: [DONE]`.
/// * An `{"error":"…"}` line becomes `data: {"error":{"message":"…","type":"api_error",
///   "param":null,"code":null}}` and the stream ends there, **without** `[DONE]`: OpenAI's
///   SDKs raise `APIError` on that event, and a client that waits for `[DONE]` sees a broken
///   stream rather than a clean end.
/// * A line that is not valid JSON, or an upstream end before the final object, produces the
///   same kind of error event.
#[derive(Debug, Clone)]
pub struct ChatStream {
    driver: Driver<ChatChunker>,
}

impl ChatStream {
    /// A converter for one response.
    pub fn new(meta: ResponseMeta, include_usage: bool) -> Self {
        ChatStream {
            driver: Driver::new(ChatChunker::new(meta, include_usage)),
        }
    }

    /// Feeds upstream bytes; returns the SSE bytes for every line completed so far (possibly
    /// none). Partial lines are kept for the next push.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.driver.push_into(bytes, &mut out);
        out
    }

    /// Like [`ChatStream::push`], appending to `out` to reuse its allocation.
    pub fn push_into(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.driver.push_into(bytes, out);
    }

    /// Ends the input (upstream EOF): converts a last line without `\n`, and if the stream had
    /// not ended, emits an error event saying the upstream stream ended early.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.driver.finish_into(&mut out);
        out
    }

    /// Whether the output is complete (`[DONE]` or an error event was emitted); later input is
    /// ignored, so the caller may stop reading the upstream.
    pub fn is_done(&self) -> bool {
        self.driver.is_done()
    }
}

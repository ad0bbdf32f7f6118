//! Ollama's `/api/generate` NDJSON stream as OpenAI `text_completion` chunk events.

use serde_json::Value;

use super::completion_logprobs;
use crate::ollama::{self, Metrics};
use crate::openai::{Completion, CompletionChoice};
use crate::stream::{ChunkConverter, Driver};
use crate::tools::finish_reason;
use crate::{sse, usage, ResponseMeta};

/// Converts native generate chunks into `text_completion` chunks, one step at a time.
///
/// The order of a whole stream is: text and reasoning chunks, one finish chunk with `text:""`
/// and `finish_reason`, and, when asked, a usage chunk with `choices: []`.
#[derive(Debug, Clone)]
pub struct CompletionChunker {
    meta: ResponseMeta,
    include_usage: bool,
    offset: usize,
}

impl CompletionChunker {
    /// A chunker for one response.
    pub fn new(meta: ResponseMeta, include_usage: bool) -> Self {
        CompletionChunker {
            meta,
            include_usage,
            offset: 0,
        }
    }

    /// The chunk carrying reasoning text (with `text:""`), if there is any.
    pub fn reasoning_chunk(&mut self, thinking: Option<String>) -> Option<Completion> {
        let text = thinking.filter(|t| !t.is_empty())?;
        let (reasoning_content, reasoning) = self.meta.reasoning.place(text);
        Some(self.chunk(CompletionChoice {
            reasoning_content,
            reasoning,
            ..choice(String::new(), None, None)
        }))
    }

    /// The chunk carrying generated text, if there is any.
    pub fn text_chunk(&mut self, text: String, logprobs: Option<Value>) -> Option<Completion> {
        if text.is_empty() {
            return None;
        }
        let logprobs = completion_logprobs(logprobs, &mut self.offset);
        Some(self.chunk(choice(text, logprobs, None)))
    }

    /// The finish chunk: `text:""` with [`crate::finish_reason`] for `done_reason`.
    pub fn finish_chunk(&self, done_reason: Option<&str>) -> Completion {
        self.chunk(choice(String::new(), None, Some(finish_reason(done_reason, false))))
    }

    /// The usage chunk (`choices: []`), if the client asked for one.
    pub fn usage_chunk(&self, metrics: &Metrics) -> Option<Completion> {
        if !self.include_usage {
            return None;
        }
        let mut chunk = self.chunk(choice(String::new(), None, None));
        chunk.choices.clear();
        chunk.usage = Some(usage(metrics));
        Some(chunk)
    }

    /// Hands every chunk for one native chunk to `emit`, in order; returns whether it was the
    /// final native chunk.
    pub fn convert(&mut self, native: ollama::GenerateResponse, mut emit: impl FnMut(&Completion)) -> bool {
        let metrics = native.metrics();
        if let Some(chunk) = self.reasoning_chunk(native.thinking) {
            emit(&chunk);
        }
        if let Some(chunk) = self.text_chunk(native.response, native.logprobs) {
            emit(&chunk);
        }
        if !native.done {
            return false;
        }
        emit(&self.finish_chunk(native.done_reason.as_deref()));
        if let Some(chunk) = self.usage_chunk(&metrics) {
            emit(&chunk);
        }
        true
    }

    fn chunk(&self, choice: CompletionChoice) -> Completion {
        Completion {
            id: self.meta.id.clone(),
            object: "text_completion".to_owned(),
            created: self.meta.created,
            model: self.meta.model.clone(),
            system_fingerprint: self.meta.system_fingerprint.clone(),
            choices: vec![choice],
            usage: None,
        }
    }
}

fn choice(text: String, logprobs: Option<Value>, finish_reason: Option<String>) -> CompletionChoice {
    CompletionChoice {
        text,
        index: 0,
        logprobs,
        finish_reason,
        reasoning_content: None,
        reasoning: None,
    }
}

impl ChunkConverter for CompletionChunker {
    type Native = ollama::GenerateResponse;

    fn convert(&mut self, native: Self::Native, out: &mut Vec<u8>) -> bool {
        CompletionChunker::convert(self, native, |chunk| sse::write_event(out, chunk))
    }
}

/// Converts Ollama's `/api/generate` NDJSON stream into OpenAI's completions SSE stream,
/// incrementally; it behaves like [`crate::ChatStream`], errors included.
#[derive(Debug, Clone)]
pub struct CompletionStream {
    driver: Driver<CompletionChunker>,
}

impl CompletionStream {
    /// A converter for one response.
    pub fn new(meta: ResponseMeta, include_usage: bool) -> Self {
        CompletionStream {
            driver: Driver::new(CompletionChunker::new(meta, include_usage)),
        }
    }

    /// Feeds upstream bytes; returns the SSE bytes for every line completed so far.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.driver.push_into(bytes, &mut out);
        out
    }

    /// Like [`CompletionStream::push`], appending to `out`.
    pub fn push_into(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.driver.push_into(bytes, out);
    }

    /// Ends the input; emits an error event if the upstream stream ended early.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.driver.finish_into(&mut out);
        out
    }

    /// Whether the output is complete.
    pub fn is_done(&self) -> bool {
        self.driver.is_done()
    }
}

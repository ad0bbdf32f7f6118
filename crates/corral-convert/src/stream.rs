//! The NDJSON-in, SSE-out driver shared by the chat and completion streams.
//!
//! Lines are converted as soon as they are complete, so the output depends only on the bytes
//! received, never on how they were split into pushes.

use serde::de::DeserializeOwned;

use crate::ndjson::LineSplitter;
use crate::sse;

/// Turns one native stream object into SSE events.
pub(crate) trait ChunkConverter {
    /// The native object type of one NDJSON line.
    type Native: DeserializeOwned;

    /// Appends the events for `native` to `out`; returns true when it was the final object,
    /// after which the driver appends `[DONE]`.
    fn convert(&mut self, native: Self::Native, out: &mut Vec<u8>) -> bool;
}

/// The message of the error event sent when the upstream stops without a final object.
pub(crate) const ENDED_EARLY: &str = "the upstream stream ended before its final object";

/// Splits lines, recognises error lines, and ends the stream exactly once.
#[derive(Debug, Clone)]
pub(crate) struct Driver<C> {
    lines: LineSplitter,
    conv: C,
    ended: bool,
}

impl<C: ChunkConverter> Driver<C> {
    pub(crate) fn new(conv: C) -> Self {
        Driver {
            lines: LineSplitter::default(),
            conv,
            ended: false,
        }
    }

    pub(crate) fn push_into(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let Driver { lines, conv, ended } = self;
        lines.push(bytes, |line| {
            if !*ended {
                *ended = handle(conv, line, out);
            }
        });
        if self.ended {
            // Whatever follows the end is ignored; do not keep it.
            self.lines = LineSplitter::default();
        }
    }

    pub(crate) fn finish_into(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if let Some(line) = self.lines.finish() {
            self.ended = handle(&mut self.conv, &line, out);
        }
        if !self.ended {
            sse::write_error(out, ENDED_EARLY);
            self.ended = true;
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.ended
    }
}

/// Converts one line; returns true when the stream has ended (final object or error).
fn handle<C: ChunkConverter>(conv: &mut C, line: &[u8], out: &mut Vec<u8>) -> bool {
    let line = line.trim_ascii();
    if line.is_empty() {
        return false;
    }
    if let Some(message) = native_error(line) {
        sse::write_error(out, &message);
        return true;
    }
    match serde_json::from_slice::<C::Native>(line) {
        Ok(native) => {
            let last = conv.convert(native, out);
            if last {
                out.extend_from_slice(sse::DONE);
            }
            last
        }
        Err(e) => {
            sse::write_error(out, &format!("the upstream sent a stream line that is not valid: {e}"));
            true
        }
    }
}

/// The message of an Ollama error line, `{"error":"…"}`.
///
/// A cheap byte search skips the full parse for ordinary chunks; the key can only appear
/// unescaped as a key or as a whole string value, and the parse below tells which.
fn native_error(line: &[u8]) -> Option<String> {
    // Built once: building a searcher costs more than searching a line.
    static ERROR_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"error\""));
    ERROR_KEY.find(line)?;
    let serde_json::Value::Object(map) = serde_json::from_slice(line).ok()? else {
        return None;
    };
    match map.get("error")? {
        serde_json::Value::String(message) if !message.is_empty() => Some(message.clone()),
        serde_json::Value::String(_) | serde_json::Value::Null => None,
        serde_json::Value::Object(inner) => Some(
            inner
                .get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| inner_text(inner), str::to_owned),
        ),
        other => Some(other.to_string()),
    }
}

fn inner_text(inner: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::Value::Object(inner.clone()).to_string()
}

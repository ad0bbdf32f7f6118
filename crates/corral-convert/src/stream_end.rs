//! Whether a relayed stream ended properly, decided from its last complete line.
//!
//! A relay must tell a stream the instance finished from one it broke off. Searching the
//! relayed bytes for `"done":true` is not enough: tool-call arguments are a JSON object
//! whose keys are model output, so `{"done":true}` can appear nested in any chunk. What
//! ends an NDJSON stream is its last line being an object whose *top-level* `done` is
//! `true`, whose `status` is `"success"` (pull, push, create) or that carries an `error`;
//! what ends an SSE stream is its last event being `data: [DONE]` or an error object.
//!
//! [`StreamEnd`] keeps only the last complete line and the line in progress (a copy of at
//! most one line, the relayed bytes themselves are not kept), and parses one line, once, when
//! the stream ends. How the stream is split into chunks does not change the answer.

use serde::Deserialize;

/// How the stream is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndFraming {
    /// Ollama's NDJSON: one JSON object per line.
    NdJson,
    /// Server-sent events (`data: …` lines, blank lines between events).
    Sse,
}

/// The longest line kept for the end decision. A terminal line is small (metrics, a status,
/// an error; `/api/generate`'s `context` is a few thousand numbers); a longer last line is
/// not taken for a terminal one, and the stream gets an error line.
pub const MAX_END_LINE: usize = 16 * 1024 * 1024;

/// Follows a stream chunk by chunk and says at the end whether it ended properly.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    framing: EndFraming,
    /// The last complete, non-blank line (without its newline).
    last: Vec<u8>,
    /// The line in progress (bytes after the last newline).
    partial: Vec<u8>,
    /// Whether the line in progress outgrew [`MAX_END_LINE`].
    partial_overlong: bool,
    /// Whether the last complete line outgrew [`MAX_END_LINE`].
    last_overlong: bool,
}

impl StreamEnd {
    /// A tracker for a stream with this framing.
    pub fn new(framing: EndFraming) -> StreamEnd {
        StreamEnd {
            framing,
            last: Vec::new(),
            partial: Vec::new(),
            partial_overlong: false,
            last_overlong: false,
        }
    }

    /// Notes the next chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        let Some(nl) = memchr::memrchr(b'\n', chunk) else {
            self.extend_partial(chunk);
            return;
        };
        // The bytes after the last newline start the next line.
        let (done, rest) = (&chunk[..nl], &chunk[nl + 1..]);
        // The last complete line ending in this chunk, and the last non-blank one before it
        // when it is blank (SSE separates events with blank lines; NDJSON may end with one).
        let mut end = done.len();
        loop {
            let start = memchr::memrchr(b'\n', &done[..end]).map_or(0, |p| p + 1);
            let line = &done[start..end];
            let first_in_chunk = start == 0;
            if first_in_chunk {
                // This line began in an earlier chunk: it is `partial` + `line`.
                self.extend_partial(line);
                if !is_blank(&self.partial) || self.partial_overlong {
                    std::mem::swap(&mut self.last, &mut self.partial);
                    self.last_overlong = self.partial_overlong;
                }
                self.partial.clear();
                self.partial_overlong = false;
                break;
            }
            if !is_blank(line) {
                self.set_last(line);
                self.partial.clear();
                self.partial_overlong = false;
                break;
            }
            end = start - 1;
        }
        self.extend_partial(rest);
    }

    /// Whether a stream that ended after the chunks pushed so far ended properly.
    pub fn ended_properly(&self) -> bool {
        // Bytes after the last newline are a last line without its newline.
        let (line, overlong) = if is_blank(&self.partial) && !self.partial_overlong {
            (&self.last, self.last_overlong)
        } else {
            (&self.partial, self.partial_overlong)
        };
        !overlong && is_terminal(self.framing, trim(line))
    }

    fn set_last(&mut self, line: &[u8]) {
        self.last.clear();
        self.last_overlong = line.len() > MAX_END_LINE;
        if !self.last_overlong {
            self.last.extend_from_slice(line);
        }
    }

    fn extend_partial(&mut self, bytes: &[u8]) {
        if self.partial_overlong {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_END_LINE {
            self.partial_overlong = true;
            self.partial = Vec::new();
            return;
        }
        self.partial.extend_from_slice(bytes);
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

fn trim(line: &[u8]) -> &[u8] {
    let start = line.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &line[start..end]
}

/// The top-level fields that end a stream; nested objects are skipped unread.
#[derive(Deserialize)]
struct Terminal {
    #[serde(default)]
    done: Option<serde_json::Value>,
    #[serde(default)]
    status: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

/// Whether `line` is a line that ends a stream with this framing.
pub fn is_terminal(framing: EndFraming, line: &[u8]) -> bool {
    let json = match framing {
        EndFraming::NdJson => line,
        EndFraming::Sse => {
            let Some(data) = line.strip_prefix(b"data:") else {
                return false;
            };
            let data = trim(data);
            if data == b"[DONE]" {
                return true;
            }
            data
        }
    };
    if json.first() != Some(&b'{') {
        return false;
    }
    let Ok(fields) = serde_json::from_slice::<Terminal>(json) else {
        return false;
    };
    match framing {
        EndFraming::Sse => fields.error.is_some(),
        EndFraming::NdJson => {
            fields.error.is_some()
                || fields.done == Some(serde_json::Value::Bool(true))
                || fields.status.as_ref().and_then(serde_json::Value::as_str) == Some("success")
        }
    }
}

#[cfg(test)]
mod tests;

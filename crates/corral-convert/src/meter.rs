//! Token counts read from an answer as it is relayed, without parsing every chunk.
//!
//! Ollama puts its counts (`prompt_eval_count`, `eval_count`) at the end of the last object
//! of an answer, streamed or not; its OpenAI-compatible layer puts them in a `usage` object
//! (`prompt_tokens`, `completion_tokens`) at the end of a whole answer, or in the last data
//! event of a stream that asked for it (`stream_options.include_usage`).
//!
//! [`Meter`] follows the answer line by line and keeps at most the last [`TAIL`] bytes of the
//! line in progress. Each complete line is searched for the keys, the last occurrence
//! winning. A key in quotes followed by a colon can only be an object key: inside a JSON
//! string every quote is escaped, so `"eval_count":` cannot be part of generated text. A
//! nested object (tool-call arguments are objects whose keys are model output) comes before
//! the counts, which Ollama writes last, so the last occurrence on the line is the answer's.

use memchr::memmem::Finder;

/// How many bytes of a long line are kept: the counts sit in its last few hundred.
pub const TAIL: usize = 4096;

/// Prompt and completion tokens, as the instance counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tokens read (`prompt_eval_count`, `prompt_tokens`).
    pub input: Option<u64>,
    /// Tokens generated (`eval_count`, `completion_tokens`).
    pub output: Option<u64>,
}

impl Counts {
    /// Whether the instance gave any count.
    pub fn any(&self) -> bool {
        self.input.is_some() || self.output.is_some()
    }
}

/// Follows an answer chunk by chunk and keeps the counts it carries.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    /// The line in progress, or its last [`TAIL`] bytes.
    line: Vec<u8>,
    /// Non-blank lines seen (NDJSON objects, SSE data lines).
    lines: u64,
    counts: Counts,
}

impl Meter {
    /// A meter that has seen nothing.
    pub fn new() -> Meter {
        Meter::default()
    }

    /// Notes the next chunk of the answer.
    pub fn push(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let (head, tail) = (&rest[..nl], &rest[nl + 1..]);
            if self.line.is_empty() {
                // The whole line is in this chunk: read it where it is.
                self.end_line_in(head);
            } else {
                self.extend(head);
                let line = std::mem::take(&mut self.line);
                self.end_line_in(&line);
                self.line = line;
                self.line.clear();
            }
            rest = tail;
        }
        self.extend(rest);
    }

    /// Ends the answer: bytes after the last newline are its last line.
    pub fn finish(&mut self) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.end_line_in(&line);
        }
    }

    /// The counts seen so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The non-blank lines seen so far: for a stream, about one per generated token.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    fn extend(&mut self, bytes: &[u8]) {
        if bytes.len() >= TAIL {
            self.line.clear();
            self.line.extend_from_slice(&bytes[bytes.len() - TAIL..]);
            return;
        }
        if self.line.len() + bytes.len() > TAIL {
            let drop = self.line.len() + bytes.len() - TAIL;
            self.line.drain(..drop);
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line_in(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.lines += 1;
        // Every object of an Ollama stream but the last ends with `"done":false}` (the counts
        // come with `"done":true`, after it): nothing to search for, in about ten instructions
        // where the search below takes about two hundred.
        if line.trim_ascii_end().ends_with(b"\"done\":false}") {
            return;
        }
        // Only the tail of a long line can hold the counts.
        let line = &line[line.len().saturating_sub(TAIL)..];
        let keys = keys();
        // Nearly every line of a stream holds no count: one pass over it for either kind of
        // key rules it out, where looking for each key in turn took three.
        if keys.any.as_ref().is_some_and(|any| any.find(line).is_none()) {
            return;
        }
        if let Some(n) = last_number(line, &keys.eval_count) {
            self.counts.output = Some(n);
            self.counts.input = last_number(line, &keys.prompt_eval_count).or(self.counts.input);
        } else if let Some(n) = last_number(line, &keys.prompt_eval_count) {
            // `/api/embed` reads and generates nothing.
            self.counts.input = Some(n);
        } else if keys.usage.find(line).is_some() {
            if let Some(n) = last_number(line, &keys.prompt_tokens) {
                self.counts.input = Some(n);
            }
            if let Some(n) = last_number(line, &keys.completion_tokens) {
                self.counts.output = Some(n);
            }
        }
    }
}

/// The keys searched for, each with its searcher built once (building one costs more than
/// running it over a line of an answer). Forward searchers: they skip a line without the key
/// with vector instructions, which memchr's reverse searchers do not use.
struct Keys {
    /// The end of both of Ollama's keys (`"eval_count":`, `"prompt_eval_count":`) and OpenAI's
    /// `"usage":`, found in one pass (a vectorised multi-pattern search). `None` where this CPU
    /// has no vector instructions for it: every line is then searched key by key.
    any: Option<aho_corasick::packed::Searcher>,
    eval_count: Finder<'static>,
    prompt_eval_count: Finder<'static>,
    usage: Finder<'static>,
    prompt_tokens: Finder<'static>,
    completion_tokens: Finder<'static>,
}

fn keys() -> &'static Keys {
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| Keys {
        any: aho_corasick::packed::Config::new()
            .builder()
            .add(b"eval_count\":")
            .add(b"\"usage\":")
            .build(),
        eval_count: Finder::new(b"\"eval_count\":"),
        prompt_eval_count: Finder::new(b"\"prompt_eval_count\":"),
        usage: Finder::new(b"\"usage\":"),
        prompt_tokens: Finder::new(b"\"prompt_tokens\":"),
        completion_tokens: Finder::new(b"\"completion_tokens\":"),
    })
}

/// The unsigned number after the last occurrence of `key` on `line`.
fn last_number(line: &[u8], key: &Finder<'_>) -> Option<u64> {
    let at = key.find_iter(line).last()? + key.needle().len();
    let rest = &line[at..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let digits = &rest[start..];
    let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{Counts, Meter, TAIL};

    fn metered(body: &[u8], step: usize) -> (Counts, u64) {
        let mut meter = Meter::new();
        for chunk in body.chunks(step) {
            meter.push(chunk);
        }
        meter.finish();
        (meter.counts(), meter.lines())
    }

    #[test]
    fn a_native_stream_split_anywhere_gives_its_final_counts() {
        let body = b"{\"message\":{\"content\":\"a \\\"eval_count\\\":99\"},\"done\":false}\n{\"message\":{\"content\":\"b\"},\"done\":false}\n{\"done\":true,\"prompt_eval_count\":12,\"prompt_eval_duration\":5,\"eval_count\":2,\"eval_duration\":7}\n";
        for step in 1..body.len() {
            let (counts, lines) = metered(body, step);
            assert_eq!(
                counts,
                Counts {
                    input: Some(12),
                    output: Some(2)
                },
                "split every {step}"
            );
            assert_eq!(lines, 3);
        }
    }

    #[test]
    fn objects_that_are_not_done_are_passed_over_and_the_last_ones_counts_kept() {
        // A generate stream, one object with a counts-shaped key before `"done":false` (no
        // Ollama sends one; the last object's counts win whatever the earlier ones said).
        let body = b"{\"response\":\"a\",\"done\":false}\n{\"eval_count\":40,\"done\":false} \r\n{\"response\":\"\",\"done\":true,\"prompt_eval_count\":7,\"eval_count\":2}\n";
        for step in 1..body.len() {
            let (counts, lines) = metered(body, step);
            assert_eq!(
                counts,
                Counts {
                    input: Some(7),
                    output: Some(2)
                },
                "split every {step}"
            );
            assert_eq!(lines, 3);
        }
        // A stream cut before its last object has no counts, even where an object that is not
        // done looked like it had some (searched, it gave 40).
        for body in [
            &b"{\"response\":\"a\",\"done\":false}\n{\"response\":\"b\",\"done\":false}\n"[..],
            &b"{\"response\":\"a\",\"done\":false}\n{\"eval_count\":40,\"done\":false} \r\n"[..],
        ] {
            let (counts, _) = metered(body, 7);
            assert!(!counts.any(), "{counts:?}");
        }
    }

    #[test]
    fn nested_keys_before_the_counts_lose_to_them() {
        let body = br#"{"message":{"tool_calls":[{"function":{"arguments":{"eval_count":500,"prompt_eval_count":700}}}]},"done":true,"prompt_eval_count":3,"eval_count":4}"#;
        assert_eq!(
            metered(body, 7).0,
            Counts {
                input: Some(3),
                output: Some(4)
            }
        );
    }

    #[test]
    fn a_long_whole_answer_keeps_only_its_tail_and_still_counts() {
        let mut body = b"{\"model\":\"m\",\"embeddings\":[[".to_vec();
        for _ in 0..100_000 {
            body.extend_from_slice(b"0.123,");
        }
        body.extend_from_slice(b"0.1]],\"total_duration\":1,\"prompt_eval_count\":42}");
        for step in [1000, 65_536, body.len()] {
            let mut meter = Meter::new();
            for chunk in body.chunks(step) {
                meter.push(chunk);
                assert!(meter.line.len() <= TAIL);
            }
            meter.finish();
            assert_eq!(
                meter.counts(),
                Counts {
                    input: Some(42),
                    output: None
                }
            );
        }
    }

    #[test]
    fn openai_usage_in_a_stream_or_a_whole_answer() {
        let sse = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            metered(sse, 5),
            (
                Counts {
                    input: Some(9),
                    output: Some(1)
                },
                3
            )
        );
        let whole = br#"{"choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":1}"}}],"usage":{"prompt_tokens":5,"completion_tokens":6}}"#;
        assert_eq!(
            metered(whole, 3).0,
            Counts {
                input: Some(5),
                output: Some(6)
            }
        );
        // A stream without usage gives no counts, only its lines.
        let (counts, lines) = metered(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n", 4);
        assert!(!counts.any());
        assert_eq!(lines, 2);
    }
}

//! The relay's end-of-stream decision (`corral_convert::stream_end`): it never panics, its
//! answer does not depend on how the stream is split into chunks, and it agrees with a plain
//! reading of the whole stream: the last non-blank line (or the bytes after the last
//! newline) is a JSON object whose top-level `done` is `true`, whose `status` is `"success"`
//! or that has an `error` (for SSE: `data: [DONE]` or an error object).

#![no_main]

use corral_convert::stream_end::{is_terminal, EndFraming, StreamEnd, MAX_END_LINE};
use libfuzzer_sys::fuzz_target;

/// The decision read from the whole stream at once.
fn reference(body: &[u8], framing: EndFraming) -> bool {
    let last = match body.iter().rposition(|b| *b == b'\n') {
        Some(nl) if !body[nl + 1..].iter().all(u8::is_ascii_whitespace) => &body[nl + 1..],
        _ => body
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .last()
            .unwrap_or(&[]),
    };
    let start = last.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(last.len());
    let end = last.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |p| p + 1);
    last.len() <= MAX_END_LINE && is_terminal(framing, &last[start..end])
}

fuzz_target!(|input: &[u8]| {
    // The first byte picks the framing and the chunk sizes; the rest is the stream.
    let Some((&seed, body)) = input.split_first() else { return };
    let framing = if seed & 1 == 0 { EndFraming::NdJson } else { EndFraming::Sse };
    let want = reference(body, framing);
    for step in [1usize, 2, 3, 7, usize::from(seed).max(1), body.len().max(1)] {
        let mut end = StreamEnd::new(framing);
        for chunk in body.chunks(step) {
            end.push(chunk);
        }
        assert_eq!(end.ended_properly(), want, "split every {step} bytes");
    }
});

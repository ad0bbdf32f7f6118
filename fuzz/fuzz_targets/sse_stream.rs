//! The NDJSON-to-SSE stream converters (`/v1/chat/completions` and `/v1/completions` streams): any
//! upstream bytes, split anywhere, give the same events as the same bytes in one piece, never panic,
//! and end exactly once.
//!
//! Input: byte 0 chooses the converter (bit 0: completions instead of chat; bit 1: usage chunk),
//! bytes 1..5 are a cycle of chunk lengths (0 means 1), the rest is the upstream stream.
#![no_main]

use corral_convert::{ChatStream, CompletionStream, ResponseMeta};
use libfuzzer_sys::fuzz_target;

/// Either stream converter, driven the same way.
enum Stream {
    Chat(ChatStream),
    Completion(CompletionStream),
}

impl Stream {
    fn new(completion: bool, usage: bool) -> Stream {
        let meta = ResponseMeta::new("chatcmpl-fuzz", "llama3.2", 1_700_000_000);
        if completion {
            Stream::Completion(CompletionStream::new(meta, usage))
        } else {
            Stream::Chat(ChatStream::new(meta, usage))
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Stream::Chat(s) => s.push(bytes),
            Stream::Completion(s) => s.push(bytes),
        }
    }

    fn finish(&mut self) -> Vec<u8> {
        match self {
            Stream::Chat(s) => s.finish(),
            Stream::Completion(s) => s.finish(),
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Stream::Chat(s) => s.is_done(),
            Stream::Completion(s) => s.is_done(),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (cuts, input) = rest.split_at(rest.len().min(4));
    let (completion, usage) = (mode & 1 == 1, mode & 2 == 2);

    let mut whole = Stream::new(completion, usage);
    let mut expected = whole.push(input);
    expected.extend(whole.finish());

    let mut split = Stream::new(completion, usage);
    let mut got = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().cycle() {
        if at >= input.len() {
            break;
        }
        let end = (at + usize::from(cut.max(1))).min(input.len());
        got.extend(split.push(&input[at..end]));
        at = end;
    }
    got.extend(split.finish());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected),
        "the output depends on how the input was split"
    );

    // Ended exactly once: done after finish, and nothing more comes out.
    assert!(split.is_done());
    assert!(split.push(b"{\"done\":true}\n").is_empty());
    assert!(split.finish().is_empty());

    // Every event is `data: <JSON object>` or `data: [DONE]`, and `[DONE]` comes last if at all.
    let text = std::str::from_utf8(&expected).expect("SSE output is UTF-8");
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    for (i, event) in events.iter().enumerate() {
        let data = event
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("not an SSE data event: {event:?}"));
        if data == "[DONE]" {
            assert_eq!(i + 1, events.len(), "[DONE] is not last");
        } else {
            let value: serde_json::Value =
                serde_json::from_str(data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data:?}"));
            assert!(value.is_object(), "{data:?}");
        }
    }
    // The stream always ends: with [DONE] after a final object, or with an error event.
    let last = events
        .last()
        .expect("finish always writes something when nothing ended the stream");
    assert!(*last == "data: [DONE]" || last.contains("\"error\""), "{last:?}");
});

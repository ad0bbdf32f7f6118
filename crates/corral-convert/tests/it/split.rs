//! Properties: the SSE output does not depend on how the NDJSON input is split into pushes.

use corral_convert::ndjson::LineSplitter;
use corral_convert::{ChatStream, CompletionStream};
use proptest::prelude::*;
use serde_json::json;

use crate::{chat_meta, completion_meta, inputs};

/// Feeds `input` in pieces of the given sizes (cycled), then finishes.
fn chat_in_pieces(input: &[u8], sizes: &[usize], include_usage: bool) -> Vec<u8> {
    let mut stream = ChatStream::new(chat_meta(), include_usage);
    let mut out = Vec::new();
    for piece in pieces(input, sizes) {
        out.extend(stream.push(piece));
    }
    out.extend(stream.finish());
    assert!(stream.is_done());
    out
}

fn completion_in_pieces(input: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut stream = CompletionStream::new(completion_meta(), true);
    let mut out = Vec::new();
    for piece in pieces(input, sizes) {
        stream.push_into(piece, &mut out);
    }
    out.extend(stream.finish());
    out
}

fn pieces<'a>(input: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = input;
    let mut sizes = sizes.iter().cycle();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = (*sizes.next()?).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        Some(piece)
    })
}

/// A realistic native chat stream built from arbitrary texts; optionally broken by an error
/// line, or cut before its final object.
fn native_chat_stream(texts: &[(String, bool)], ending: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (text, thinking)) in texts.iter().enumerate() {
        let message = if *thinking {
            json!({"role": "assistant", "content": "", "thinking": text})
        } else if i % 7 == 6 {
            json!({"role": "assistant", "content": text, "tool_calls": [{"function": {"index": 0, "name": "f", "arguments": {"q": text}}}]})
        } else {
            json!({"role": "assistant", "content": text})
        };
        let line = json!({"model": "m", "created_at": "2025-11-01T10:00:00.1Z", "message": message, "done": false});
        out.extend(corral_convert::ndjson::line(&line));
    }
    match ending % 3 {
        0 => out.extend(corral_convert::ndjson::line(&json!({
            "model": "m", "created_at": "2025-11-01T10:00:01Z", "message": {"role": "assistant", "content": ""},
            "done": true, "done_reason": (["stop", "length"][usize::from(ending & 1)]),
            "total_duration": 5, "prompt_eval_count": 3, "prompt_eval_duration": 2, "eval_count": texts.len(), "eval_duration": 4
        }))),
        1 => out.extend(corral_convert::ndjson::line(&json!({"error": "boom"}))),
        _ => {}
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fixture_streams_split_anywhere(sizes in prop::collection::vec(1usize..300, 1..40)) {
        for input in inputs("chat_stream", ".jsonl") {
            let bytes = std::fs::read(&input).unwrap();
            prop_assert_eq!(chat_in_pieces(&bytes, &sizes, true), chat_in_pieces(&bytes, &[usize::MAX], true));
        }
        for input in inputs("generate_stream", ".jsonl") {
            let bytes = std::fs::read(&input).unwrap();
            prop_assert_eq!(completion_in_pieces(&bytes, &sizes), completion_in_pieces(&bytes, &[usize::MAX]));
        }
    }

    #[test]
    fn generated_streams_split_anywhere(
        texts in prop::collection::vec((any::<String>(), any::<bool>()), 0..30),
        ending in any::<u8>(),
        include_usage in any::<bool>(),
        sizes in prop::collection::vec(1usize..64, 1..40),
    ) {
        let input = native_chat_stream(&texts, ending);
        let whole = chat_in_pieces(&input, &[usize::MAX], include_usage);
        prop_assert_eq!(&chat_in_pieces(&input, &sizes, include_usage), &whole);
        prop_assert_eq!(&chat_in_pieces(&input, &[1], include_usage), &whole);
        let text = String::from_utf8(whole).unwrap();
        prop_assert_eq!(text.ends_with("data: [DONE]\n\n"), ending % 3 == 0);
        prop_assert_eq!(text.matches("\"role\":\"assistant\"").count(), usize::from(ending % 3 == 0 || texts.iter().any(|(t, _)| !t.is_empty())));
    }

    #[test]
    fn splitter_reassembles_lines(
        lines in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..200), 0..20),
        final_newline in any::<bool>(),
        sizes in prop::collection::vec(1usize..50, 1..20),
    ) {
        let mut input = lines.join(&b'\n');
        if final_newline && !lines.is_empty() {
            input.push(b'\n');
        }
        let mut splitter = LineSplitter::default();
        let mut got = Vec::new();
        for piece in pieces(&input, &sizes) {
            splitter.push(piece, |line| got.push(line.to_vec()));
        }
        got.extend(splitter.finish());
        let strip = |l: &Vec<u8>| l.strip_suffix(b"\r").map_or_else(|| l.clone(), <[u8]>::to_vec);
        let mut raw: Vec<&Vec<u8>> = lines.iter().collect();
        if !final_newline && raw.last().is_some_and(|l| l.is_empty()) {
            raw.pop();
        }
        let want: Vec<Vec<u8>> = raw.into_iter().map(strip).collect();
        prop_assert_eq!(got, want);
    }
}

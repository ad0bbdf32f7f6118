//! Criterion benchmarks of NDJSON-to-SSE stream conversion.
//!
//! A realistic `/api/chat` stream (a few thinking chunks, one token per content chunk, a final
//! chunk with metrics) of 100 and 1000 chunks is fed to [`ChatStream`] in pieces of
//! 1460 bytes (one TCP segment, so most lines are split across pieces) and one line per piece
//! (as Ollama flushes them).
//! Each case is reported twice: as bytes of NDJSON input per second, and as native chunks per
//! second.

use std::hint::black_box;
use std::time::Duration;

use corral_convert::{ChatStream, CompletionStream, ResponseMeta};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::json;

const WORDS: &[&str] = &[
    " The",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog",
    ".",
    "\n",
    " It's",
    " \"fine\"",
];

/// A native chat stream of `chunks` objects, the last one final.
fn chat_stream(chunks: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..chunks - 1 {
        let created_at = format!("2025-11-01T10:00:{:02}.{:09}Z", i / 1000 % 60, i * 7919 % 1_000_000_000);
        let message = if i < chunks / 10 {
            json!({"role": "assistant", "content": "", "thinking": WORDS[i % WORDS.len()]})
        } else {
            json!({"role": "assistant", "content": WORDS[i % WORDS.len()]})
        };
        corral_convert::ndjson::write_line(
            &mut out,
            &json!({"model": "qwen3:8b", "created_at": created_at, "message": message, "done": false}),
        );
    }
    corral_convert::ndjson::write_line(
        &mut out,
        &json!({"model": "qwen3:8b", "created_at": "2025-11-01T10:00:59.999Z", "message": {"role": "assistant", "content": ""},
            "done": true, "done_reason": "stop", "total_duration": 5_523_000_000u64, "load_duration": 3_100_000,
            "prompt_eval_count": 15, "prompt_eval_duration": 20_000_000, "eval_count": chunks, "eval_duration": 5_480_000_000u64}),
    );
    out
}

/// A native generate stream of `chunks` objects.
fn generate_stream(chunks: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..chunks - 1 {
        corral_convert::ndjson::write_line(
            &mut out,
            &json!({"model": "llama3.2", "created_at": "2025-11-01T10:00:00.123456789Z", "response": WORDS[i % WORDS.len()], "done": false}),
        );
    }
    corral_convert::ndjson::write_line(
        &mut out,
        &json!({"model": "llama3.2", "created_at": "2025-11-01T10:00:01Z", "response": "", "done": true, "done_reason": "stop",
            "context": [128006, 882, 128007, 271], "total_duration": 1_234_567_890u64, "eval_count": chunks, "eval_duration": 987_654_000}),
    );
    out
}

fn meta() -> ResponseMeta {
    ResponseMeta::new("chatcmpl-417", "qwen3:8b", 1_761_991_200)
}

/// Splits `input` into TCP-segment-sized pieces.
fn segments(input: &[u8]) -> Vec<&[u8]> {
    input.chunks(1460).collect()
}

/// Splits `input` into one piece per line, `\n` included.
fn lines(input: &[u8]) -> Vec<&[u8]> {
    input.split_inclusive(|b| *b == b'\n').collect()
}

fn convert_chat(pieces: &[&[u8]]) -> usize {
    let mut stream = ChatStream::new(meta(), true);
    let mut out = Vec::with_capacity(64 * 1024);
    for piece in pieces {
        stream.push_into(piece, &mut out);
    }
    out.extend(stream.finish());
    assert!(stream.is_done());
    out.len()
}

fn convert_generate(pieces: &[&[u8]]) -> usize {
    let mut stream = CompletionStream::new(meta(), true);
    let mut out = Vec::with_capacity(64 * 1024);
    for piece in pieces {
        stream.push_into(piece, &mut out);
    }
    out.extend(stream.finish());
    out.len()
}

fn chat(c: &mut Criterion) {
    for (unit, bytes) in [("bytes", true), ("chunks", false)] {
        let mut group = c.benchmark_group(format!("chat_stream_{unit}"));
        for n in [100, 1000] {
            let input = chat_stream(n);
            group.throughput(if bytes {
                Throughput::Bytes(input.len() as u64)
            } else {
                Throughput::Elements(n as u64)
            });
            for (split, pieces) in [("tcp_segments", segments(&input)), ("line_per_push", lines(&input))] {
                group.bench_with_input(BenchmarkId::new(split, n), &pieces, |b, pieces| {
                    b.iter(|| convert_chat(black_box(pieces)));
                });
            }
        }
        group.finish();
    }
}

/// The token meter over a 100-chunk chat stream, one line per push (as every relayed stream
/// is metered when usage or metrics are on).
fn meter(c: &mut Criterion) {
    let mut group = c.benchmark_group("meter");
    let input = chat_stream(100);
    group.throughput(Throughput::Elements(100));
    let pieces = lines(&input);
    group.bench_with_input(BenchmarkId::new("line_per_push", 100), &pieces, |b, pieces| {
        b.iter(|| {
            let mut meter = corral_convert::meter::Meter::new();
            for piece in black_box(pieces) {
                meter.push(piece);
            }
            meter.finish();
            meter.counts()
        });
    });
    group.finish();
}

fn generate(c: &mut Criterion) {
    let mut group = c.benchmark_group("generate_stream_bytes");
    let input = generate_stream(1000);
    group.throughput(Throughput::Bytes(input.len() as u64));
    let pieces = segments(&input);
    group.bench_with_input(BenchmarkId::new("tcp_segments", 1000), &pieces, |b, pieces| {
        b.iter(|| convert_generate(black_box(pieces)));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = chat, generate, meter
}
criterion_main!(benches);

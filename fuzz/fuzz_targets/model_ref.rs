//! The routing-field reader (`corral-server`'s `handlers/model_ref.rs`): any body is read without
//! panicking, and what it reads agrees with a plain JSON parse of the same body, as Ollama's decoder
//! would see it, whenever it accepts the body.
//!
//! The reader is compiled from the server's own source file, so this target does not build the
//! server (actix-web, awc, diesel) with fuzzing instrumentation.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/corral-server/src/handlers/model_ref.rs"]
mod model_ref;

use libfuzzer_sys::fuzz_target;
use model_ref::ModelRef;
use serde_json::Value;

/// Go's `encoding/json` key folding (`foldName`): each rune becomes the smallest rune of its
/// simple case-folding orbit. Only two orbits hold non-ASCII runes besides ASCII letters:
/// {K, k, U+212A KELVIN SIGN} and {S, s, U+017F LATIN SMALL LETTER LONG S}.
fn go_fold(key: &str) -> Option<String> {
    key.chars()
        .map(|c| match c {
            'a'..='z' => Some(c.to_ascii_uppercase()),
            '\u{17f}' => Some('S'),
            '\u{212a}' => Some('K'),
            c if c.is_ascii() => Some(c),
            // Other runes never fold to ASCII, so the key cannot match an ASCII field name.
            _ => None,
        })
        .collect()
}

/// The string value of the one key of `object` that Go's `encoding/json` would read as `field`;
/// the reader refuses bodies where several could match.
fn go_reads<'a>(object: &'a serde_json::Map<String, Value>, field: &str) -> Option<&'a str> {
    let folded = go_fold(field);
    let mut found = object.iter().filter(|(k, _)| go_fold(k) == folded);
    let (_, value) = found.next()?;
    assert!(found.next().is_none(), "a case variant of `{field}` was accepted");
    value.as_str()
}

/// How `serde_json` names the values it refuses to hold but the grammar allows.
const BENIGN: [&str; 4] = [
    "number out of range",
    "lone leading surrogate in hex escape",
    "unexpected end of hex escape",
    "invalid unicode code point",
];

fuzz_target!(|data: &[u8]| {
    let read: Result<ModelRef, _> = serde_json::from_slice(data);
    let Ok(read) = read else { return };
    // Accepted: the body is a JSON object, and the reader saw the same routing fields as a full
    // parse. Like Go's decoder (which reads invalid UTF-8 as U+FFFD), the reader does not refuse
    // invalid UTF-8 in the parts it skips; it refuses it in the routing fields it reads.
    let text = String::from_utf8_lossy(data);
    let object = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(object)) => object,
        // Valid JSON that only a parse into values refuses: a number too large for an f64, and a
        // `\u` escape of a lone surrogate (Go reads it as U+FFFD). The reader skips both where they
        // are not a routing field, as Go does, and refuses them in a routing field.
        Err(e) if BENIGN.iter().any(|m| e.to_string().starts_with(m)) => return,
        Ok(_) | Err(_) => panic!("the reader accepted a body that is not a JSON object"),
    };
    assert_eq!(read.model.as_deref(), go_reads(&object, "model"), "model");
    assert_eq!(read.name.as_deref(), go_reads(&object, "name"), "name");
    assert_eq!(read.source.as_deref(), go_reads(&object, "source"), "source");
    let _ = go_reads(&object, "destination");
    assert_eq!(read.stream, object.get("stream").and_then(Value::as_bool), "stream");
});

//! Server-sent-event framing as pure byte functions: `data: <json>\n\n` and `data: [DONE]\n\n`.

use serde::Serialize;

use crate::openai::ErrorResponse;

/// The event that ends a successful OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Appends one event carrying `data` as compact JSON to `out`.
pub fn write_event<T: Serialize + ?Sized>(out: &mut Vec<u8>, data: &T) {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, data).is_err() {
        // Only maps with non-string keys fail to serialise; none of the wire types has one.
        out.truncate(start);
        write_event(out, &ErrorResponse::new(500, "failed to serialise a stream event"));
        return;
    }
    out.extend_from_slice(b"\n\n");
}

/// One event carrying `data` as compact JSON.
pub fn event<T: Serialize + ?Sized>(data: &T) -> Vec<u8> {
    let mut out = Vec::new();
    write_event(&mut out, data);
    out
}

/// Appends the error event `{"error":{"message","type":"api_error","param":null,"code":null}}`.
///
/// OpenAI's SDKs raise an `APIError` carrying `message` when an event's data has an `error`
/// key, so this is how a stream reports a failure after its `200` status was sent.
pub fn write_error(out: &mut Vec<u8>, message: &str) {
    write_event(out, &ErrorResponse::new(500, message));
}

/// The `[DONE]` event as an owned buffer.
pub fn done() -> Vec<u8> {
    DONE.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(event(&serde_json::json!({"a": "<b>"})), b"data: {\"a\":\"<b>\"}\n\n");
        let mut out = Vec::new();
        write_error(&mut out, "boom");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "data: {\"error\":{\"message\":\"boom\",\"type\":\"api_error\",\"param\":null,\"code\":null}}\n\n"
        );
        assert_eq!(done(), b"data: [DONE]\n\n");
    }
}

//! The usage event of an OpenAI-shaped stream, asked for and taken out again.
//!
//! A streamed OpenAI answer carries token counts only when the request says
//! `stream_options: {"include_usage": true}`: one more event, with empty `choices` and a `usage`
//! object, before `data: [DONE]`. To meter exactly, the gateway asks for it on the client's
//! behalf ([`ask_for_usage`]) and, when the client did not, takes that event out of what the
//! client receives ([`UsageEventStrip`]), after the meter has read it.

use serde_json::Value;

/// The body with `stream_options.include_usage` set, when it streams and does not ask for
/// usage itself; `None` when it should be sent as it is (not a streamed object, or usage
/// already asked for or explicitly refused).
pub fn ask_for_usage(body: &[u8]) -> Option<Vec<u8>> {
    // Nearly every streamed request says nothing of `stream_options`: the option is added after
    // the client's own fields, which pass as they came. The probe reads the body once without
    // building it (keys are compared decoded, so an escaped `stream_options` is seen). Last, as
    // the whole reading below puts it: a reader that takes the last of two keys (Go's, which
    // also matches names regardless of case) sees the gateway's.
    #[derive(serde::Deserialize)]
    struct Probe {
        stream: Option<bool>,
        /// Whether the field is there at all (`null` included).
        #[serde(default, deserialize_with = "present")]
        stream_options: bool,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| true)
    }
    use serde::Deserialize as _;
    let first = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let last = body.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if body[first] != b'{' || body[last] != b'}' {
        return None;
    }
    match serde_json::from_slice::<Probe>(body) {
        // `stream` is a field, so the object is not empty: the option follows a comma.
        Ok(Probe {
            stream: Some(true),
            stream_options: false,
        }) => {
            const OPTION: &[u8] = br#","stream_options":{"include_usage":true}"#;
            let mut out = Vec::with_capacity(body.len() + OPTION.len());
            out.extend_from_slice(&body[..last]);
            out.extend_from_slice(OPTION);
            out.extend_from_slice(&body[last..]);
            return Some(out);
        }
        Ok(Probe { stream: Some(true), .. }) => {}
        // Not a stream, or not JSON; a duplicate field is left to the whole reading below.
        Ok(_) => return None,
        Err(_) => {}
    }
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let map = value.as_object_mut()?;
    if map.get("stream").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let options = map
        .entry("stream_options")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let options = options.as_object_mut()?;
    if options.contains_key("include_usage") {
        return None;
    }
    options.insert("include_usage".to_owned(), Value::Bool(true));
    serde_json::to_vec(&value).ok()
}

/// Takes the usage-only events (`"choices": []` with a `usage` object) out of a server-sent
/// event stream and passes every other event on whole, as soon as its blank line arrives.
#[derive(Debug, Clone, Default)]
pub struct UsageEventStrip {
    /// The event in progress.
    pending: Vec<u8>,
}

impl UsageEventStrip {
    /// A filter that has seen nothing.
    pub fn new() -> UsageEventStrip {
        UsageEventStrip::default()
    }

    /// Whether `chunk` passes on exactly as it is, so it need not be copied through
    /// [`UsageEventStrip::push`]: no event is pending, the chunk ends its last event, and
    /// nothing in it names `"usage"`. Nearly every chunk of a stream: only the last events need
    /// a closer look.
    pub fn passes_whole(&self, chunk: &[u8]) -> bool {
        self.pending.is_empty()
            && (chunk.ends_with(b"\n\n") || chunk.ends_with(b"\r\n\r\n"))
            && USAGE_KEY.find(chunk).is_none()
    }

    /// The bytes of `chunk` to pass on: the events it completes, but usage-only ones. An
    /// event's start waits for its end (usually in the same chunk).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len());
        let mut rest = chunk;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            // The line may have begun in an earlier chunk.
            let start = memchr::memrchr(b'\n', &self.pending).map_or(0, |i| i + 1);
            self.pending.extend_from_slice(&rest[..=nl]);
            rest = &rest[nl + 1..];
            let blank = matches!(&self.pending[start..], b"\n" | b"\r\n");
            if blank {
                if !is_usage_only(&self.pending) {
                    out.extend_from_slice(&self.pending);
                }
                self.pending.clear();
            }
        }
        self.pending.extend_from_slice(rest);
        out
    }

    /// What is left at the end of the stream (an event without its blank line), passed on.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// The searcher for `"usage"`, built once.
static USAGE_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));

/// Whether an event's data is an object with empty `choices` and a `usage` object.
fn is_usage_only(event: &[u8]) -> bool {
    if USAGE_KEY.find(event).is_none() {
        return false;
    }
    let mut data = Vec::new();
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(d) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
        }
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&data) else {
        return false;
    };
    map.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty)
        && map.get("usage").is_some_and(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::{ask_for_usage, UsageEventStrip};

    #[test]
    fn usage_is_asked_for_only_on_streams_that_do_not_say() {
        let asked = ask_for_usage(br#"{"model":"m","stream":true,"stream_options":{"x":1}}"#).unwrap();
        assert_eq!(
            String::from_utf8(asked).unwrap(),
            r#"{"model":"m","stream":true,"stream_options":{"x":1,"include_usage":true}}"#
        );
        let asked = ask_for_usage(b" {\"model\":\"m\",\"stream\":true}\n").unwrap();
        assert_eq!(
            String::from_utf8(asked).unwrap(),
            " {\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}\n"
        );
        // The same as the whole reading gives, key order included.
        let body = br#"{"model":"m","Stream_Options":{"include_usage":false},"stream":true}"#;
        let mut value: serde_json::Value = serde_json::from_slice(body).unwrap();
        value["stream_options"] = serde_json::json!({"include_usage": true});
        assert_eq!(ask_for_usage(body).unwrap(), serde_json::to_vec(&value).unwrap());
        // `null` is an answer: the body goes as it is.
        assert!(ask_for_usage(br#"{"stream":true,"stream_options":null}"#).is_none());
        // An escaped name is the same field.
        assert!(ask_for_usage(br#"{"stream":true,"stream\u005foptions":{"include_usage":false}}"#).is_none());
        // A duplicate field goes the long way, as serde_json reads it (the last one counts).
        assert!(ask_for_usage(br#"{"stream":false,"stream":true}"#).is_some());
        assert!(ask_for_usage(br#"[true]"#).is_none());
        assert!(ask_for_usage(br#"{"model":"m","stream":false}"#).is_none());
        assert!(ask_for_usage(br#"{"model":"m"}"#).is_none());
        assert!(ask_for_usage(br#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#).is_none());
        assert!(ask_for_usage(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#).is_none());
        assert!(ask_for_usage(b"not json").is_none());
    }

    #[test]
    fn the_usage_event_goes_whatever_the_split_and_the_rest_passes_whole() {
        let events = [
            "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\"\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        ];
        let body = events.concat();
        let want = [events[0], events[1], events[3]].concat();
        for step in 1..body.len() {
            let mut strip = UsageEventStrip::new();
            let mut out = Vec::new();
            for chunk in body.as_bytes().chunks(step) {
                out.extend(strip.push(chunk));
            }
            out.extend(strip.finish());
            assert_eq!(String::from_utf8(out).unwrap(), want, "split every {step} bytes");
        }
        // Whole events without "usage" pass as they are; the rest go through `push`, and
        // the result is the same however the stream is cut.
        for step in 1..body.len() {
            let mut strip = UsageEventStrip::new();
            let mut out = Vec::new();
            let mut whole = 0;
            for chunk in body.as_bytes().chunks(step) {
                if strip.passes_whole(chunk) {
                    whole += 1;
                    out.extend_from_slice(chunk);
                } else {
                    out.extend(strip.push(chunk));
                }
            }
            out.extend(strip.finish());
            assert_eq!(String::from_utf8(out).unwrap(), want, "split every {step} bytes");
            if step == events[0].len() {
                assert!(whole >= 1, "the first event passed whole");
            }
        }
        let mut strip = UsageEventStrip::new();
        assert!(strip.passes_whole(events[1].as_bytes()));
        assert!(!strip.passes_whole(events[2].as_bytes()), "names usage");
        assert!(!strip.passes_whole(b"data: {}\n"), "the event is not ended");
        assert_eq!(strip.push(b"{\"error\":\"no\"}"), b"");
        assert!(!strip.passes_whole(events[1].as_bytes()), "an event is pending");
        assert_eq!(strip.finish(), b"{\"error\":\"no\"}");
    }
}

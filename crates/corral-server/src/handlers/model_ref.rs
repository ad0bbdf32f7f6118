//! The fields of a request body the gateway routes and authorises on, read so that the gateway
//! and Ollama cannot disagree about which model a body names.
//!
//! Ollama decodes bodies with Go's `encoding/json`, which matches keys case-insensitively (with
//! Unicode simple case folding, so `ſ` U+017F reads as `s` and `K` U+212A as `k`) and lets the
//! last of duplicate keys win. A body with `"model"` and `"Model"` would be checked here for one
//! model and run by Ollama as the other, so a top-level key that Go would read as a routing field
//! but is not spelled as one, or a routing field given twice, is refused with a 400.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// The fields of a request body the gateway routes on; everything else is forwarded untouched.
#[derive(Debug, Default)]
pub struct ModelRef {
    /// The model, as Ollama's current API names it.
    pub model: Option<String>,
    /// The model, as older clients (and ollama-js for pull/push/delete) name it.
    pub name: Option<String>,
    /// The model a copy starts from.
    pub source: Option<String>,
    /// How long the model should stay loaded; `0` unloads it.
    pub keep_alive: Option<serde_json::Value>,
    /// Open WebUI's `metadata` (chat id, template variables): read by the gateway on
    /// `/api/chat`, not sent upstream.
    pub metadata: Option<IgnoredAny>,
    /// `stream`, when the body says.
    pub stream: Option<bool>,
    /// Whether the body gives the model something to run: a non-empty `prompt` or `messages`.
    pub input: bool,
}

/// A top-level key, as far as routing cares.
enum Key {
    Model,
    Name,
    Source,
    Destination,
    KeepAlive,
    Metadata,
    Stream,
    /// `prompt` or `messages`.
    Input,
    /// A key Ollama would read as the routing field named here.
    CaseVariant(&'static str, String),
    Other,
}

/// The fields whose case variants Ollama would read as them.
const GUARDED: [&str; 4] = ["model", "name", "source", "destination"];

impl Key {
    fn of(key: &str) -> Key {
        match key {
            "model" => Key::Model,
            "name" => Key::Name,
            "source" => Key::Source,
            "destination" => Key::Destination,
            "keep_alive" => Key::KeepAlive,
            "metadata" => Key::Metadata,
            "stream" => Key::Stream,
            "prompt" | "messages" => Key::Input,
            other => match GUARDED.iter().find(|g| go_matches(other, g)) {
                Some(field) => Key::CaseVariant(field, other.to_owned()),
                None => Key::Other,
            },
        }
    }
}

/// Whether Go's `encoding/json` would read the key `key` as the lower-case ASCII field `field`.
///
/// Go folds each rune to the smallest rune of its simple case-folding orbit; the only orbits
/// that join a non-ASCII rune to an ASCII letter are {K, k, U+212A KELVIN SIGN} and
/// {S, s, U+017F LATIN SMALL LETTER LONG S}.
fn go_matches(key: &str, field: &str) -> bool {
    let mut chars = key.chars();
    for wanted in field.chars() {
        let folded = match chars.next() {
            None => return false,
            Some('\u{17f}') => 's',
            Some('\u{212a}') => 'k',
            Some(c) => c.to_ascii_lowercase(),
        };
        if folded != wanted {
            return false;
        }
    }
    chars.next().is_none()
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key::of(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for ModelRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ModelRef, D::Error> {
        d.deserialize_map(RefVisitor)
    }
}

struct RefVisitor;

impl<'de> Visitor<'de> for RefVisitor {
    type Value = ModelRef;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ModelRef, A::Error> {
        let mut out = ModelRef::default();
        let mut seen = [false; 4];
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::Model => Some((0, "model", &mut out.model)),
                Key::Name => Some((1, "name", &mut out.name)),
                Key::Source => Some((2, "source", &mut out.source)),
                Key::Destination => {
                    once(&mut seen[3], "destination")?;
                    map.next_value::<IgnoredAny>()?;
                    None
                }
                Key::KeepAlive => {
                    out.keep_alive = map.next_value()?;
                    None
                }
                Key::Metadata => {
                    out.metadata = map.next_value()?;
                    None
                }
                Key::Stream => {
                    out.stream = map.next_value()?;
                    None
                }
                Key::Input => {
                    out.input |= map.next_value::<NonEmpty>()?.0;
                    None
                }
                Key::CaseVariant(field, key) => {
                    return Err(de::Error::custom(format!(
                        "field `{key}` differs from `{field}` only in case; Ollama would read it as `{field}`, so send `{field}` alone"
                    )));
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    None
                }
            };
            if let Some((i, field, value)) = slot {
                once(&mut seen[i], field)?;
                *value = map.next_value()?;
            }
        }
        Ok(out)
    }
}

/// Whether a value holds something: a non-empty string or array. Read without copying it.
struct NonEmpty(bool);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NonEmpty, D::Error> {
        struct NonEmptyVisitor;
        impl<'de> Visitor<'de> for NonEmptyVisitor {
            type Value = NonEmpty;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NonEmpty, E> {
                Ok(NonEmpty(!v.is_empty()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<NonEmpty, A::Error> {
                let mut any = false;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(NonEmpty(any))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NonEmpty, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(NonEmpty(true))
            }
            fn visit_unit<E: de::Error>(self) -> Result<NonEmpty, E> {
                Ok(NonEmpty(false))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(true))
            }
        }
        d.deserialize_any(NonEmptyVisitor)
    }
}

/// Refuses a routing field given twice (Ollama would take the last, a first-wins reader the first).
fn once<E: de::Error>(seen: &mut bool, field: &str) -> Result<(), E> {
    if std::mem::replace(seen, true) {
        return Err(E::custom(format!("duplicate field `{field}`")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ModelRef;

    fn parse(body: &str) -> Result<ModelRef, String> {
        serde_json::from_str(body).map_err(|e| e.to_string())
    }

    #[test]
    fn routing_fields_are_read_and_the_rest_skipped() {
        let r = parse(
            r#"{"messages":[{"name":"x","Model":"y"}],"model":"llama3.2","keep_alive":0,"metadata":{"chat_id":"c"},"format":{"properties":{"name":{}}}}"#,
        )
        .unwrap();
        assert_eq!(r.model.as_deref(), Some("llama3.2"));
        assert!(r.unloads() && r.metadata.is_some() && r.name.is_none());
        assert!(r.input && !r.only_unloads(), "a request with messages runs the model");
        let r = parse(r#"{"model":"m","prompt":"","keep_alive":"0s","stream":false}"#).unwrap();
        assert!(!r.input && r.only_unloads() && r.stream == Some(false));
        assert!(!parse(r#"{"model":"m","messages":[],"keep_alive":0}"#).unwrap().input);
        assert!(parse(r#"{"model":"m","prompt":"\u0068i"}"#).unwrap().input);
        let r = parse(r#"{"name":"a","source":"b","destination":"c","\u006dodel":"m"}"#).unwrap();
        assert_eq!(
            (r.name.as_deref(), r.source.as_deref(), r.model.as_deref()),
            (Some("a"), Some("b"), Some("m"))
        );
    }

    #[test]
    fn case_variants_and_duplicates_of_routing_fields_are_refused() {
        for body in [
            r#"{"model":"a","Model":"b"}"#,
            r#"{"MODEL":"b"}"#,
            r#"{"name":"a","NAME":"b"}"#,
            r#"{"model":"a","model":"b"}"#,
            r#"{"name":"a","name":"b"}"#,
            r#"{"Source":"a"}"#,
            r#"{"destination":"a","destination":"b"}"#,
        ] {
            assert!(parse(body).is_err(), "{body}");
        }
        let err = parse(r#"{"model":"a","Model":"b"}"#).unwrap_err();
        assert!(err.contains("`Model` differs from `model` only in case"), "{err}");
    }

    #[test]
    fn keys_go_folds_to_a_routing_field_through_unicode_are_refused() {
        // Found by the `model_ref` fuzz target: Go's decoder reads `ſource` (U+017F) as `source`,
        // the last one winning, so the gateway would check one model and Ollama copy another.
        for body in [
            "{\"source\":\"llama3.2\",\"\u{17f}ource\":\"private\"}",
            "{\"destination\":\"a\",\"DE\u{17f}TINATION\":\"b\"}",
            // The same keys written as JSON escapes.
            r#"{"source":"llama3.2","\u017fource":"private"}"#,
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.contains("only in case"), "{body}: {err}");
        }
        // Other non-ASCII letters never fold to ASCII: such keys are someone else's fields.
        let r = parse("{\"model\":\"m\",\"mod\u{e9}l\":\"x\",\"\u{212a}eep\":1}").unwrap();
        assert_eq!(r.model.as_deref(), Some("m"));
    }

    #[test]
    fn wrong_types_are_refused() {
        for body in [r#"{"model":5}"#, r#"{"name":["a"]}"#, r#"[]"#, r#""model""#] {
            assert!(parse(body).is_err(), "{body}");
        }
        assert!(parse(r#"{"model":null}"#).unwrap().model.is_none());
    }
}

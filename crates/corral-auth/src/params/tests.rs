//! Tests for applying model params to request bodies.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn check_ollama(params: Value, body: Value, want: Value) {
    let mut got = body.clone();
    apply_params_ollama(&params, &mut got);
    assert_eq!(got, want, "params {params}\nbody {body}");
    // Key order matters for byte-level diffs against the reference.
    assert_eq!(got.to_string(), want.to_string());
}

fn check_openai(params: Value, body: Value, want: Value) {
    let mut got = body.clone();
    apply_params_openai(&params, &mut got);
    assert_eq!(got, want, "params {params}\nbody {body}");
    assert_eq!(got.to_string(), want.to_string());
}

#[test]
fn ollama_options_and_casts() {
    check_ollama(
        json!({"temperature": "0.5", "top_k": "40", "num_ctx": 4096.9, "use_mmap": 1, "seed": "42", "tfs_z": 1}),
        json!({"model": "m", "messages": []}),
        json!({"model": "m", "messages": [], "options": {
            "temperature": 0.5, "top_k": 40, "num_ctx": 4096, "use_mmap": true, "seed": "42", "tfs_z": 1
        }}),
    );
    // Ints become floats where the reference casts with float().
    check_ollama(
        json!({"temperature": 1, "top_p": true, "min_p": " 0.05 "}),
        json!({}),
        json!({"options": {"temperature": 1.0, "top_p": 1.0, "min_p": 0.05}}),
    );
    // Casts that fail keep the value, for the upstream to reject.
    check_ollama(
        json!({"temperature": "warm", "num_ctx": "4k", "top_k": [1], "mirostat_eta": "nan", "num_gpu": 1e300}),
        json!({}),
        json!({"options": {"temperature": "warm", "num_ctx": "4k", "top_k": [1], "mirostat_eta": "nan", "num_gpu": 1e300}}),
    );
    check_ollama(
        json!({"use_mlock": "false", "use_mmap": "yes", "num_keep": -1, "repeat_last_n": "+64", "num_thread": false}),
        json!({}),
        json!({"options": {"use_mlock": false, "use_mmap": true, "num_keep": -1, "repeat_last_n": 64, "num_thread": 0}}),
    );
}

#[test]
fn ollama_model_params_override_client_options_key_by_key() {
    check_ollama(
        json!({"temperature": 0.1, "num_ctx": 8192}),
        json!({"options": {"temperature": 0.9, "top_k": 5}, "model": "m"}),
        json!({"options": {"temperature": 0.1, "top_k": 5, "num_ctx": 8192}, "model": "m"}),
    );
    // Null or non-object client options are replaced by an object, in place.
    check_ollama(
        json!({"top_k": 1}),
        json!({"options": null, "x": 1}),
        json!({"options": {"top_k": 1}, "x": 1}),
    );
    check_ollama(
        json!({"top_k": 1}),
        json!({"options": "bad"}),
        json!({"options": {"top_k": 1}}),
    );
    // Even empty params leave an options object behind, as the reference does.
    check_ollama(json!({}), json!({"model": "m"}), json!({"model": "m", "options": {}}));
}

#[test]
fn ollama_open_webui_keys_are_dropped() {
    check_ollama(
        json!({
            "stream_response": true, "stream_delta_chunk_size": 3, "function_calling": "native",
            "reasoning_tags": ["<t>", "</t>"], "system": "hi", "top_k": 2,
            "custom_params": {"system": "sneaky", "function_calling": "x"}
        }),
        json!({}),
        json!({"options": {"top_k": 2}}),
    );
}

#[test]
fn ollama_nulls_are_skipped() {
    check_ollama(
        json!({"temperature": null, "max_tokens": null, "format": null, "keep_alive": null, "think": null}),
        json!({"format": "json", "options": {"temperature": 0.3}}),
        json!({"format": "json", "options": {"temperature": 0.3}}),
    );
}

#[test]
fn ollama_max_tokens_becomes_num_predict() {
    check_ollama(
        json!({"max_tokens": "128"}),
        json!({}),
        json!({"options": {"num_predict": 128}}),
    );
    check_ollama(
        json!({"num_predict": 5, "max_tokens": 7}),
        json!({}),
        json!({"options": {"num_predict": 7}}),
    );
}

#[test]
fn ollama_root_params() {
    check_ollama(
        json!({"format": "json", "keep_alive": "5m", "think": "yes"}),
        json!({"format": {"type": "object"}, "keep_alive": 0}),
        json!({"format": "json", "keep_alive": "5m", "think": true, "options": {}}),
    );
    check_ollama(
        json!({"format": "{\"type\": \"object\"}", "keep_alive": "300", "think": "high"}),
        json!({}),
        json!({"format": {"type": "object"}, "keep_alive": 300, "think": "high", "options": {}}),
    );
    check_ollama(
        json!({"keep_alive": -1, "think": "false"}),
        json!({}),
        json!({"keep_alive": -1, "think": false, "options": {}}),
    );
    check_ollama(json!({"think": ""}), json!({}), json!({"think": false, "options": {}}));
    check_ollama(json!({"think": 0}), json!({}), json!({"think": false, "options": {}}));
    check_ollama(
        json!({"think": " Low "}),
        json!({}),
        json!({"think": " Low ", "options": {}}),
    );
}

#[test]
fn custom_params_merge() {
    check_ollama(
        json!({
            "top_k": 5,
            "nested": {"a": 1, "b": {"c": 2}},
            "custom_params": {
                "top_k": "10",
                "nested": "{\"b\": {\"d\": 3}}",
                "plain": "not json",
                "num_ctx": 2048,
                "keep_alive": "\"10m\""
            }
        }),
        json!({}),
        json!({"keep_alive": "10m", "options": {
            "top_k": 10, "nested": {"a": 1, "b": {"c": 2, "d": 3}}, "plain": "not json", "num_ctx": 2048
        }}),
    );
    // A non-object custom_params is ignored.
    check_ollama(
        json!({"custom_params": "{\"top_k\": 1}", "top_p": 0.5}),
        json!({}),
        json!({"options": {"top_p": 0.5}}),
    );
    // A custom object replaces a scalar and vice versa.
    check_openai(
        json!({"a": 1, "b": {"x": 1}, "custom_params": {"a": {"y": 2}, "b": 3}}),
        json!({}),
        json!({"a": {"y": 2}, "b": 3}),
    );
}

#[test]
fn stop_decoding_keeps_non_ascii() {
    check_ollama(
        json!({"stop": ["\\n", "a\\tb", "\\\\", "\\\"q\\\"", "日本語", "Ünïcödé\\n", "\\r", "\\u0041", "end\\"]}),
        json!({}),
        json!({"options": {"stop": ["\n", "a\tb", "\\", "\"q\"", "日本語", "Ünïcödé\n", "\\r", "\\u0041", "end\\"]}}),
    );
    // A string stop becomes a one-element list (the reference splits it into characters).
    check_ollama(
        json!({"stop": "<|end|>"}),
        json!({}),
        json!({"options": {"stop": ["<|end|>"]}}),
    );
    // Non-string elements and non-list values pass through.
    check_ollama(
        json!({"stop": [1, "x"]}),
        json!({}),
        json!({"options": {"stop": [1, "x"]}}),
    );
    check_ollama(json!({"stop": 5}), json!({}), json!({"options": {"stop": 5}}));
    check_openai(
        json!({"stop": ["\\n\\n"]}),
        json!({"stop": ["x"]}),
        json!({"stop": ["\n\n"]}),
    );
}

#[test]
fn openai_top_level_with_casts() {
    check_openai(
        json!({
            "temperature": "0.2", "top_p": 1, "min_p": "0.1", "frequency_penalty": 0, "presence_penalty": "-1.5",
            "max_tokens": "256", "reasoning_effort": 1, "response_format": {"type": "json_object"},
            "seed": 7, "logit_bias": {"50256": -100}, "num_ctx": 4096, "system": "dropped"
        }),
        json!({"model": "m", "temperature": 0.9, "max_tokens": 10}),
        json!({
            "model": "m", "temperature": 0.2, "max_tokens": 256, "top_p": 1.0, "min_p": 0.1,
            "frequency_penalty": 0.0, "presence_penalty": -1.5, "reasoning_effort": "1",
            "response_format": {"type": "json_object"}, "seed": 7, "logit_bias": {"50256": -100}, "num_ctx": 4096
        }),
    );
    // No options object and no renaming on the OpenAI side.
    check_openai(json!({"num_predict": 5}), json!({}), json!({"num_predict": 5}));
    check_openai(json!({"max_tokens": 2.7}), json!({}), json!({"max_tokens": 2}));
    check_openai(
        json!({"max_tokens": null}),
        json!({"max_tokens": 3}),
        json!({"max_tokens": 3}),
    );
}

#[test]
fn non_object_inputs_are_left_alone() {
    check_ollama(json!(null), json!({"a": 1}), json!({"a": 1}));
    check_ollama(json!([1]), json!({"a": 1}), json!({"a": 1}));
    check_ollama(json!({"top_k": 1}), json!([1]), json!([1]));
    check_openai(json!("x"), json!({"a": 1}), json!({"a": 1}));
    check_openai(json!({"top_k": 1}), json!(null), json!(null));
}

#[test]
fn escape_decoder() {
    let cases = [
        ("", ""),
        ("plain", "plain"),
        ("\\n", "\n"),
        ("\\t", "\t"),
        ("\\\\n", "\\n"),
        ("\\\"", "\""),
        ("\\", "\\"),
        ("\\x", "\\x"),
        ("\\é", "\\é"),
        ("é\\n", "é\n"),
    ];
    for (input, want) in cases {
        assert_eq!(decode_escapes(input), want, "{input:?}");
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("temperature".to_owned()),
                    Just("num_ctx".to_owned()),
                    Just("use_mmap".to_owned()),
                    Just("stop".to_owned()),
                    Just("think".to_owned()),
                    Just("format".to_owned()),
                    Just("max_tokens".to_owned()),
                    Just("custom_params".to_owned()),
                    Just("options".to_owned()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn never_panics(params in arb_json(), body in arb_json()) {
        let mut a = body.clone();
        apply_params_ollama(&params, &mut a);
        let mut b = body;
        apply_params_openai(&params, &mut b);
    }
}

//! Ollama's counters as an OpenAI `usage` object, with Open WebUI's extra timing fields.

use crate::ollama::Metrics;
use crate::openai::{CompletionTokensDetails, Rate, Usage};

/// The `usage` object for a final response's counters.
///
/// Missing counters count as 0, as in Open WebUI's `convert_ollama_usage_to_openai`, whose key
/// order and arithmetic this follows so that figures compare equal digit for digit.
pub fn usage(m: &Metrics) -> Usage {
    let prompt = m.prompt_eval_count.unwrap_or(0);
    let completion = m.eval_count.unwrap_or(0);
    Usage {
        response_tokens_per_second: Some(rate(completion, m.eval_duration.unwrap_or(0))),
        prompt_tokens_per_second: Some(rate(prompt, m.prompt_eval_duration.unwrap_or(0))),
        total_duration: Some(m.total_duration.unwrap_or(0)),
        load_duration: Some(m.load_duration.unwrap_or(0)),
        prompt_eval_count: Some(prompt),
        prompt_tokens: prompt,
        prompt_eval_duration: Some(m.prompt_eval_duration.unwrap_or(0)),
        eval_count: Some(completion),
        completion_tokens: completion,
        eval_duration: Some(m.eval_duration.unwrap_or(0)),
        approximate_total: Some(approximate(m.total_duration.unwrap_or(0))),
        total_tokens: prompt + completion,
        completion_tokens_details: Some(CompletionTokensDetails::default()),
    }
}

/// Tokens per second rounded to 2 decimals, or `"N/A"` for a zero duration.
///
/// Open WebUI computes `(count / (duration / 10_000_000)) * 100` and Python's `round(x, 2)`;
/// the same operations in the same order give the same `f64`, and formatting with two
/// decimals rounds the exact binary value as Python does.
fn rate(count: u64, duration_ns: u64) -> Rate {
    if duration_ns == 0 {
        return Rate::Text("N/A".to_owned());
    }
    // Counts and nanoseconds stay far below 2^53, so the conversions are exact.
    let raw = (count as f64 / (duration_ns as f64 / 10_000_000.0)) * 100.0;
    Rate::PerSecond(round2(raw))
}

/// `raw` rounded to 2 decimals as Python's `round(raw, 2)` (and Rust's `{:.2}`) round it: the
/// exact binary value, halves to even. Where `raw × 100` lies clearly away from a half, the
/// product's rounding error (below 2.3e-4 under 10^12) cannot change which integer is nearest,
/// and that integer over 100, one correctly rounded division, is the `f64` nearest the
/// two-decimal result, as parsing the formatted text would give. Near a half (and for huge or
/// non-finite values) the text is formatted and parsed: about 2,000 instructions a rate, twice
/// per answer, which the arithmetic avoids.
fn round2(raw: f64) -> f64 {
    let scaled = raw * 100.0;
    if scaled.abs() < 1e12 && (scaled - scaled.floor() - 0.5).abs() > 1e-3 {
        return scaled.round() / 100.0;
    }
    format!("{raw:.2}").parse().unwrap_or(raw)
}

/// `total_duration` as `"<h>h<m>m<s>s"`, whole seconds rounded down.
fn approximate(total_ns: u64) -> String {
    let s = total_ns / 1_000_000_000;
    format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use proptest::prelude::*;

    use super::*;

    fn round2_by_text(raw: f64) -> f64 {
        format!("{raw:.2}").parse().unwrap_or(raw)
    }

    proptest! {
        #[test]
        fn round2_is_the_formatted_rounding(count in 0u64..1_000_000, ns in 1u64..1_000_000_000_000) {
            let raw = (count as f64 / (ns as f64 / 10_000_000.0)) * 100.0;
            prop_assert_eq!(round2(raw).to_bits(), round2_by_text(raw).to_bits());
        }

        #[test]
        fn round2_is_the_formatted_rounding_for_any_float(raw in proptest::num::f64::ANY) {
            let (fast, text) = (round2(raw), round2_by_text(raw));
            prop_assert!(fast.to_bits() == text.to_bits() || (fast.is_nan() && text.is_nan()));
        }
    }

    #[test]
    fn round2_halves_go_to_the_exact_binary_value() {
        // 0.125 is exact: a true half, to even; 1.005 is just below its half in binary.
        for raw in [0.125, 0.375, 1.005, 2.675, 1.015, 1e13 + 0.005, -0.125, 0.0, -0.0] {
            assert_eq!(round2(raw).to_bits(), round2_by_text(raw).to_bits(), "{raw}");
        }
    }

    #[test]
    fn follows_open_webui() {
        let m = Metrics {
            total_duration: Some(5_523_000_000),
            load_duration: Some(3_100_000),
            prompt_eval_count: Some(15),
            prompt_eval_duration: Some(20_000_000),
            eval_count: Some(40),
            eval_duration: Some(480_000_000),
        };
        let json = serde_json::to_string(&usage(&m)).unwrap();
        expect![[r#"{"response_token/s":83.33,"prompt_token/s":750.0,"total_duration":5523000000,"load_duration":3100000,"prompt_eval_count":15,"prompt_tokens":15,"prompt_eval_duration":20000000,"eval_count":40,"completion_tokens":40,"eval_duration":480000000,"approximate_total":"0h0m5s","total_tokens":55,"completion_tokens_details":{"reasoning_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#]].assert_eq(&json);
    }

    #[test]
    fn missing_counters_are_zero_and_rates_not_available() {
        let json = serde_json::to_string(&usage(&Metrics::default())).unwrap();
        expect![[r#"{"response_token/s":"N/A","prompt_token/s":"N/A","total_duration":0,"load_duration":0,"prompt_eval_count":0,"prompt_tokens":0,"prompt_eval_duration":0,"eval_count":0,"completion_tokens":0,"eval_duration":0,"approximate_total":"0h0m0s","total_tokens":0,"completion_tokens_details":{"reasoning_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#]].assert_eq(&json);
        assert_eq!(approximate(3_725_900_000_000), "1h2m5s");
    }
}

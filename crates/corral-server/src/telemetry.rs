//! OpenTelemetry traces: one server span per request, with children for routing, the queue
//! wait, the upstream call and the relay to completion, carrying the GenAI semantic
//! conventions' attributes (`gen_ai.system`, `gen_ai.request.model`, `gen_ai.response.model`,
//! `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`).
//!
//! Spans are exported over OTLP/HTTP (protobuf) only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not `true`);
//! otherwise no span is made at all, and a request costs one `Option` check. A client's W3C
//! `traceparent` is continued either way: the server span is its child when exporting, and
//! without an exporter a valid `traceparent` is passed upstream as it came (rewritten from
//! its parsed form, never echoed raw); a malformed one is dropped.
//!
//! The child spans are written when the request ends, from the times noted on the way
//! (`crate::observe::Note`), with their real start and end times: nothing on the request path
//! waits for the exporter, whose batch processor runs on its own thread.

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// The span exporter, when one is configured.
#[derive(Default)]
pub struct Telemetry {
    exporting: Option<(SdkTracerProvider, SdkTracer)>,
}

/// Where spans go, read from the standard OpenTelemetry environment variables.
pub fn endpoint_from_env(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    if let Some(traces) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Some(traces);
    }
    set("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
}

impl Telemetry {
    /// Exports spans over OTLP/HTTP protobuf to `endpoint` (the full URL, `…/v1/traces`).
    /// The other `OTEL_EXPORTER_OTLP_*` variables (headers, timeout) are read by the exporter.
    pub fn otlp(endpoint: &str) -> Result<Telemetry, String> {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| e.to_string())?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("corral")
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("corral");
        Ok(Telemetry {
            exporting: Some((provider, tracer)),
        })
    }

    /// Whether spans are made and exported.
    pub fn exporting(&self) -> bool {
        self.exporting.is_some()
    }

    /// Sends the spans still buffered (at shutdown, and in tests). Blocking.
    pub fn flush(&self) {
        if let Some((provider, _)) = &self.exporting {
            let _ = provider.force_flush();
        }
    }

    /// Starts the server span of a request, as a child of the client's `traceparent` if it is
    /// valid; returns its context. `None` when not exporting.
    pub fn start(&self, name: String, parent: &Context, at: SystemTime) -> Option<Context> {
        let (_, tracer) = self.exporting.as_ref()?;
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(at)
            .with_attributes([KeyValue::new("gen_ai.system", "ollama")])
            .start_with_context(tracer, parent);
        Some(parent.with_span(span))
    }

    /// Writes a finished child span of `parent` from `start` to `end`.
    pub fn child(
        &self,
        parent: &Context,
        name: &'static str,
        start: SystemTime,
        end: SystemTime,
        kind: SpanKind,
        attrs: Vec<KeyValue>,
    ) {
        let Some((_, tracer)) = self.exporting.as_ref() else {
            return;
        };
        let mut span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(start)
            .with_attributes(attrs)
            .start_with_context(tracer, parent);
        span.end_with_timestamp(end);
    }
}

/// Ends the server span in `cx` at `end` with `attrs` and the answer's `status`.
pub fn end_server(cx: &Context, status: u16, attrs: Vec<KeyValue>, end: SystemTime) {
    let span = cx.span();
    span.set_attributes(attrs);
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
    if status >= 500 {
        span.set_status(Status::error(format!("answered {status}")));
    }
    span.end_with_timestamp(end);
}

/// The context a request's `traceparent` and `tracestate` carry, if valid.
pub fn extract(headers: &actix_web::http::header::HeaderMap) -> Option<Context> {
    let traceparent = headers.get("traceparent")?;
    let carrier = Headers(headers);
    let _ = traceparent;
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The `traceparent` (and `tracestate`) that passes `cx` on.
pub fn inject(cx: &Context) -> HashMap<String, String> {
    let mut out = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut out);
    out
}

/// The trace id of `cx`, as 32 hex digits.
pub fn trace_id(cx: &Context) -> String {
    cx.span().span_context().trace_id().to_string()
}

struct Headers<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // Several values, or bytes beyond visible ASCII, make the header invalid.
        let mut all = self.0.get_all(key);
        let first = all.next()?;
        if all.next().is_some() {
            return None;
        }
        first.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(actix_web::http::header::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    fn headers(traceparent: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static("traceparent"),
            HeaderValue::from_str(traceparent).unwrap(),
        );
        h
    }

    #[test]
    fn only_a_well_formed_traceparent_is_continued() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = super::extract(&headers(good)).unwrap();
        assert_eq!(super::trace_id(&cx), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(super::inject(&cx).get("traceparent").map(String::as_str), Some(good));
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "zz",
            "",
        ] {
            assert!(super::extract(&headers(bad)).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_endpoint_comes_from_the_standard_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(super::endpoint_from_env(env(&[])), None);
        assert_eq!(
            super::endpoint_from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])).as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(
            super::endpoint_from_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x")
            ]))
            .as_deref(),
            Some("http://t:1/x")
        );
        assert_eq!(
            super::endpoint_from_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "true")
            ])),
            None
        );
    }
}

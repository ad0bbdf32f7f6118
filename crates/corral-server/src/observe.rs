//! The outermost middleware: a request id for every request, the W3C trace context, the
//! access log line, the HTTP request counter and the server span.
//!
//! - The id is the client's `X-Request-Id` when it is valid (1 to 128 visible ASCII
//!   characters), else a new UUID. It replaces the header the handlers and the upstream see
//!   (so it is sent upstream with the request) and is returned in the answer.
//! - A `traceparent` is parsed; a malformed one is dropped, never passed on or echoed.
//! - What the access line and the span need beyond the request line (user, key, model,
//!   instance, tokens) is noted on the way in a [`Note`] kept in the request's extensions.
//! - The answer's body is wrapped to count its bytes and time its first one; when it ends
//!   (or is dropped), the access line is written and the span ended. When the access log is
//!   filtered out and no span is exported, nothing is wrapped and no line is built.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _, HttpRequest};
use bytes::Bytes;

use crate::state::Shared;

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";

/// The longest client request id kept.
const MAX_ID_LEN: usize = 128;

/// What the request noted on its way, for its access line and span.
#[derive(Default)]
pub struct Note {
    /// The user's id.
    pub user_id: Option<String>,
    /// The API key's id.
    pub key_id: Option<std::sync::Arc<str>>,
    /// The model the client asked for.
    pub model: Option<String>,
    /// The model the instance ran.
    pub model_run: Option<String>,
    /// The instance that answered.
    pub instance: Option<usize>,
    /// Tokens in and out, when known.
    pub tokens: Option<(u64, u64)>,
    /// When routing was done and the request let in (after any queue wait).
    pub admitted: Option<Instant>,
    /// How long it waited in the queue.
    pub queue_wait: Option<Duration>,
    /// When the upstream request was sent, and when its headers came.
    pub upstream: Option<(Instant, Instant)>,
}

/// One request's scope, in its extensions.
pub struct Scope {
    /// The request id.
    pub id: HeaderValue,
    started: Instant,
    started_at: SystemTime,
    span: Option<opentelemetry::Context>,
    /// What the request noted.
    pub note: RefCell<Note>,
}

impl Scope {
    /// The request's exchange record is done: its tokens, model, instance and key are noted.
    pub fn finished(&self, f: &crate::exchange::Finished) {
        let mut note = self.note.borrow_mut();
        note.tokens = Some((f.input_tokens, f.output_tokens));
        if !f.model_run.is_empty() {
            note.model_run = Some(f.model_run.clone());
        }
        note.instance = f.instance;
        note.key_id.clone_from(&f.key_id);
    }
}

/// Notes something about `req` for its access line and span (nothing if it has no scope).
pub fn note(req: &HttpRequest, f: impl FnOnce(&mut Note)) {
    if let Some(scope) = req.extensions().get::<Rc<Scope>>() {
        f(&mut scope.note.borrow_mut());
    }
}

/// Whether a client's request id may be kept: 1 to 128 visible ASCII characters.
pub fn valid_id(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= MAX_ID_LEN && value.iter().all(|b| b.is_ascii_graphic())
}

/// The middleware.
pub async fn observe(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let Some(shared) = req.app_data::<web::Data<Shared>>().cloned() else {
        let res = next.call(req).await?;
        return Ok(res.map_body(|_, b| Observed { inner: b, end: None }));
    };
    let started_at = SystemTime::now();
    let id = {
        let given = req.headers().get(REQUEST_ID).filter(|v| valid_id(v.as_bytes()));
        match given {
            Some(v) if req.headers().get_all(REQUEST_ID).count() == 1 => v.clone(),
            _ => new_id(),
        }
    };
    let headers = req.headers_mut();
    headers.insert(HeaderName::from_static(REQUEST_ID), id.clone());
    let parent = if headers.contains_key("traceparent") {
        let parsed = crate::telemetry::extract(headers);
        headers.remove("traceparent");
        headers.remove("tracestate");
        parsed
    } else {
        None
    };
    let span = if shared.telemetry.exporting() {
        let name = format!("{} {}", req.method(), route_name(&req));
        let parent = parent.clone().unwrap_or_default();
        shared.telemetry.start(name, &parent, started_at)
    } else {
        None
    };
    // What goes upstream: the server span, else the client's context as it came (rewritten).
    if let Some(cx) = span.as_ref().or(parent.as_ref()) {
        let headers = req.headers_mut();
        for (name, value) in crate::telemetry::inject(cx) {
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                headers.insert(name, value);
            }
        }
    }
    let logging = tracing::enabled!(target: "corral::access", tracing::Level::INFO);
    let watching = logging || span.is_some();
    let scope = Rc::new(Scope {
        id: id.clone(),
        started,
        started_at,
        span,
        note: RefCell::new(Note::default()),
    });
    req.extensions_mut().insert(scope.clone());
    // Kept for an error answer, which has no request left to read them from (holding a clone of
    // the request here would stop the router from taking it mutably).
    let family = crate::metrics::family(req.path());
    let errored_line = logging.then(|| crate::access_line(req.method(), req.uri(), req.version()));
    let mut res = match next.call(req).await {
        Ok(res) => res,
        Err(err) => {
            let status = err.as_response_error().status_code().as_u16();
            shared.metrics.http_request_in(family, status);
            if let Some(line) = errored_line {
                tracing::info!(target: "corral::access", request = %line, status, request_id = id.to_str().unwrap_or("-"), "\"{line}\" {status}");
            }
            return Err(err);
        }
    };
    let status = res.status().as_u16();
    shared.metrics.http_request_in(family, status);
    res.headers_mut().insert(HeaderName::from_static(REQUEST_ID), id);
    let end = watching.then(|| {
        let req = res.request();
        if let Some(crate::auth::Identified(caller)) = req.extensions().get::<crate::auth::Identified>() {
            let mut note = scope.note.borrow_mut();
            if let Some(user) = &caller.user {
                note.user_id = Some(user.id.clone());
            }
            note.key_id.clone_from(&caller.key_id);
        }
        Box::new(End {
            shared: shared.clone(),
            scope: scope.clone(),
            logging,
            client: crate::guard::client_ip(req).map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
            line: crate::access_line(req.method(), req.uri(), req.version()),
            status,
            bytes: 0,
            first_byte: None,
        })
    });
    Ok(res.map_body(|_, b| Observed { inner: b, end }))
}

/// A fresh request id.
fn new_id() -> HeaderValue {
    let id = uuid::Uuid::new_v4().as_hyphenated().to_string();
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The route's pattern (`/api/chat`, `/ollama/api/chat/{url_idx}`), not the raw path, so span
/// names stay few.
fn route_name(req: &ServiceRequest) -> String {
    req.match_pattern().unwrap_or_else(|| req.path().to_owned())
}

/// What is written when the answer ends.
struct End {
    shared: web::Data<Shared>,
    scope: Rc<Scope>,
    logging: bool,
    client: String,
    line: String,
    status: u16,
    bytes: u64,
    first_byte: Option<Instant>,
}

impl Drop for End {
    fn drop(&mut self) {
        let now = Instant::now();
        let scope = &self.scope;
        let note = scope.note.borrow();
        let duration = now.duration_since(scope.started);
        let ttft = self.first_byte.map(|t| t.duration_since(scope.started));
        if self.logging {
            tracing::info!(
                target: "corral::access",
                client = %self.client,
                request = %self.line,
                status = self.status,
                bytes = self.bytes,
                ms = duration.as_secs_f64() * 1000.0,
                ttft_ms = ttft.map(|t| t.as_secs_f64() * 1000.0),
                request_id = scope.id.to_str().unwrap_or("-"),
                user_id = note.user_id.as_deref(),
                key_id = note.key_id.as_deref(),
                model = note.model.as_deref(),
                instance = note.instance,
                "{} \"{}\" {} {}",
                self.client,
                self.line,
                self.status,
                self.bytes,
            );
        }
        if let Some(cx) = &scope.span {
            let at = |t: Instant| scope.started_at + t.duration_since(scope.started);
            let telemetry = &self.shared.telemetry;
            use opentelemetry::trace::SpanKind;
            use opentelemetry::KeyValue;
            let model = |m: &Option<String>| m.clone().unwrap_or_default();
            if let Some(admitted) = note.admitted {
                let waited = note.queue_wait.unwrap_or_default();
                let queued_at = admitted.checked_sub(waited).unwrap_or(admitted);
                telemetry.child(
                    cx,
                    "routing",
                    scope.started_at,
                    at(queued_at),
                    SpanKind::Internal,
                    vec![],
                );
                if !waited.is_zero() {
                    telemetry.child(
                        cx,
                        "queue wait",
                        at(queued_at),
                        at(admitted),
                        SpanKind::Internal,
                        vec![],
                    );
                }
            }
            if let Some((sent, headers)) = note.upstream {
                let mut attrs = vec![KeyValue::new("gen_ai.request.model", model(&note.model))];
                if let Some(idx) = note.instance {
                    attrs.push(KeyValue::new("corral.instance", idx as i64));
                }
                telemetry.child(cx, "upstream call", at(sent), at(headers), SpanKind::Client, attrs);
                if let Some(first) = self.first_byte {
                    telemetry.child(cx, "first byte", at(headers), at(first), SpanKind::Internal, vec![]);
                    telemetry.child(cx, "completion", at(first), at(now), SpanKind::Internal, vec![]);
                }
            }
            let mut attrs = vec![
                KeyValue::new("http.request.id", scope.id.to_str().unwrap_or("-").to_owned()),
                KeyValue::new("http.route", self.line.clone()),
            ];
            if let Some(m) = &note.model {
                attrs.push(KeyValue::new("gen_ai.request.model", m.clone()));
                attrs.push(KeyValue::new(
                    "gen_ai.response.model",
                    note.model_run.clone().unwrap_or_else(|| m.clone()),
                ));
            }
            if let Some((input, output)) = note.tokens {
                attrs.push(KeyValue::new("gen_ai.usage.input_tokens", input as i64));
                attrs.push(KeyValue::new("gen_ai.usage.output_tokens", output as i64));
            }
            if let Some(t) = ttft {
                attrs.push(KeyValue::new("gen_ai.server.time_to_first_token", t.as_secs_f64()));
            }
            crate::telemetry::end_server(cx, self.status, attrs, at(now));
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer's body, passed through, its bytes counted and its end noted.
    pub struct Observed<B> {
        #[pin]
        inner: B,
        end: Option<Box<End>>,
    }
}

impl<B: MessageBody> MessageBody for Observed<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_next(cx);
        if let (Some(end), Poll::Ready(Some(Ok(chunk)))) = (this.end.as_mut(), &polled) {
            if end.first_byte.is_none() && !chunk.is_empty() {
                end.first_byte = Some(Instant::now());
            }
            end.bytes += chunk.len() as u64;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_short_visible_ascii_ids_are_kept() {
        assert!(super::valid_id(b"abc-123_XYZ.{}"));
        assert!(super::valid_id(&[b'a'; 128]));
        assert!(!super::valid_id(&[b'a'; 129]));
        assert!(!super::valid_id(b""));
        assert!(!super::valid_id(b"a b"));
        assert!(!super::valid_id(b"a\tb"));
        assert!(!super::valid_id(b"a\x7fb"));
        assert!(!super::valid_id("é".as_bytes()));
    }
}

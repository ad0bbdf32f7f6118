//! The OpenAI-compatible API at the root (`/v1/*`, and Open WebUI's `/api/chat/completions`
//! and `/api/models`): requests are converted to Ollama's native API, routed like native
//! requests, and the answers converted back, streams chunk by chunk as they arrive.
//!
//! Conversion happens here rather than in the instance's own `/v1` layer, so the answers are
//! the same whatever Ollama version serves them, keep Ollama's token counts and timings, and
//! carry upstream errors instead of losing them.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use corral_convert::openai::ErrorResponse;
use corral_convert::{ollama, openai, ConvertError, ResponseMeta};
use futures_util::Stream;
use serde_json::Value;

use super::balanced::{self, Answer, Call};
use super::native::Spec;
use super::{check_json, read_body};
use crate::auth::Caller;
use crate::error::AppError;
use crate::proxy;
use crate::state::Shared;

/// The largest non-streamed answer read whole for conversion (embeddings of a big batch).
const ANSWER_LIMIT: usize = 256 * 1024 * 1024;

/// An error on an OpenAI route, answered in OpenAI's shape:
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    body: ErrorResponse,
    /// `Retry-After` and a limit's `x-ratelimit-*`, if any.
    headers: Option<Box<[(HeaderName, HeaderValue)]>>,
}

impl std::fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.body.error.message)
    }
}

impl ResponseError for OpenAiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        for (name, value) in self.headers.iter().flat_map(|h| h.iter()) {
            resp.insert_header((name.clone(), value.clone()));
        }
        resp.json(&self.body)
    }
}

impl From<AppError> for OpenAiError {
    fn from(err: AppError) -> Self {
        let status = err.status_code();
        // Log it as the native routes do, then reshape the body.
        drop(err.error_response());
        let retry_after = match &err {
            AppError::Busy { retry_after, .. } | AppError::RateLimited { retry_after, .. } => Some(*retry_after),
            AppError::LimitReached(refusal) => Some(refusal.retry_after),
            AppError::NoInstance { .. } => Some(5),
            _ => None,
        };
        if let AppError::LimitReached(refusal) = &err {
            // OpenAI's own 429s: `rate_limit_exceeded` (type `requests` or `tokens`) is worth a
            // retry, `insufficient_quota` is not.
            let mut body = ErrorResponse::new(status.as_u16(), err.to_string());
            let (kind, code) = refusal.openai_kind();
            body.error.kind = kind.to_owned();
            body.error.code = Some(code.to_owned());
            return OpenAiError {
                status,
                body,
                headers: retry_headers(retry_after, &refusal.headers),
            };
        }
        let mut body = ErrorResponse::new(status.as_u16(), err.to_string());
        // A refused request's form has no code, as OpenAI's own 400s; the rest name their kind.
        if !matches!(err, AppError::BadRequest(_) | AppError::PayloadTooLarge { .. }) {
            body.error.code = Some(err.kind().to_owned());
        }
        if matches!(err, AppError::NotFound(_)) {
            body.error.param = Some("model".to_owned());
            body.error.code = Some("model_not_found".to_owned());
        }
        OpenAiError {
            status,
            body,
            headers: retry_headers(retry_after, &[]),
        }
    }
}

impl From<ConvertError> for OpenAiError {
    fn from(err: ConvertError) -> Self {
        OpenAiError {
            status: StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST),
            body: err.to_openai(),
            headers: None,
        }
    }
}

/// `Retry-After` (if any) and `more`.
fn retry_headers(
    retry_after: Option<u64>,
    more: &[(HeaderName, HeaderValue)],
) -> Option<Box<[(HeaderName, HeaderValue)]>> {
    let mut out: Vec<(HeaderName, HeaderValue)> = retry_after
        .map(|secs| (header::RETRY_AFTER, HeaderValue::from(secs)))
        .into_iter()
        .collect();
    out.extend_from_slice(more);
    (!out.is_empty()).then(|| out.into_boxed_slice())
}

type Result<T> = std::result::Result<T, OpenAiError>;

/// The verified caller of an OpenAI route; a refusal comes in OpenAI's error shape, which
/// typed clients parse.
pub struct OpenAiCaller(pub Caller);

impl actix_web::FromRequest for OpenAiCaller {
    type Error = OpenAiError;
    type Future = std::future::Ready<Result<OpenAiCaller>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let caller = crate::auth::require(req, crate::auth::Level::Verified)
            .and_then(|c| c.ok_or_else(|| AppError::Internal("no caller on a verified route".to_owned())));
        std::future::ready(caller.map(OpenAiCaller).map_err(OpenAiError::from))
    }
}

/// `POST /v1/chat/completions` (and `/api/chat/completions`): to `/api/chat`.
pub async fn chat(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    OpenAiCaller(caller): OpenAiCaller,
) -> Result<HttpResponse> {
    let mut value = read_request(payload).await?;
    let model = model_of(&value)?;
    let grant = caller.model_for(&shared, &client, &model).await?;
    caller.apply_openai_system(&grant, &mut value);
    grant.rename(&mut value);
    let headers = caller.forwarded_headers(&shared.settings(), Some(&value));
    let request: openai::ChatCompletionRequest = from_value(value)?;
    let (stream, usage) = (request.is_stream(), request.include_usage());
    // The record's params are applied to the converted body, as on `/api/chat`.
    let mut native = to_value(corral_convert::chat_request(request)?)?;
    caller.apply_native_params(&grant, &mut native);
    let meta = meta("chatcmpl", &model);
    let answer = send(
        &req,
        &shared,
        &client,
        headers,
        "/api/chat",
        grant.routed(&model),
        &native,
    )
    .await?;
    if !answer.resp.status().is_success() {
        return upstream_error(answer).await;
    }
    if stream {
        return Ok(sse(answer, corral_convert::ChatStream::new(meta, usage)));
    }
    let added = answer.added;
    let resp: ollama::ChatResponse = read_answer(answer).await?;
    Ok(answered(
        HttpResponse::Ok().json(corral_convert::chat_completion(resp, &meta)),
        added,
    ))
}

/// `POST /v1/completions`: to `/api/generate`.
pub async fn completions(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    OpenAiCaller(caller): OpenAiCaller,
) -> Result<HttpResponse> {
    let mut value = read_request(payload).await?;
    let model = model_of(&value)?;
    let grant = caller.model_for(&shared, &client, &model).await?;
    grant.rename(&mut value);
    let headers = caller.forwarded_headers(&shared.settings(), Some(&value));
    let request: openai::CompletionRequest = from_value(value)?;
    let (stream, usage) = (request.is_stream(), request.include_usage());
    // The record's params are applied to the converted body, as on `/api/chat`.
    let mut native = to_value(corral_convert::completion_request(request)?)?;
    caller.apply_native_params(&grant, &mut native);
    let meta = meta("cmpl", &model);
    let answer = send(
        &req,
        &shared,
        &client,
        headers,
        "/api/generate",
        grant.routed(&model),
        &native,
    )
    .await?;
    if !answer.resp.status().is_success() {
        return upstream_error(answer).await;
    }
    if stream {
        return Ok(sse(answer, corral_convert::CompletionStream::new(meta, usage)));
    }
    let added = answer.added;
    let resp: ollama::GenerateResponse = read_answer(answer).await?;
    Ok(answered(
        HttpResponse::Ok().json(corral_convert::completion(resp, &meta)),
        added,
    ))
}

/// `POST /v1/embeddings`: to `/api/embed`, one text or a batch.
pub async fn embeddings(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    OpenAiCaller(caller): OpenAiCaller,
) -> Result<HttpResponse> {
    let mut value = read_request(payload).await?;
    let model = model_of(&value)?;
    let grant = caller.model_for(&shared, &client, &model).await?;
    grant.rename(&mut value);
    let headers = caller.forwarded_headers(&shared.settings(), None);
    let request: openai::EmbeddingRequest = from_value(value)?;
    let (native, format) = corral_convert::embedding_request(request)?;
    let answer = send(
        &req,
        &shared,
        &client,
        headers,
        "/api/embed",
        grant.routed(&model),
        &native,
    )
    .await?;
    if !answer.resp.status().is_success() {
        return upstream_error(answer).await;
    }
    let added = answer.added;
    let resp: ollama::EmbedResponse = read_answer(answer).await?;
    Ok(answered(
        HttpResponse::Ok().json(corral_convert::embedding_response(resp, &model, format)),
        added,
    ))
}

/// `GET /v1/models` (and `/api/models`): the merged catalogue as the caller may see it.
pub async fn models(
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    OpenAiCaller(caller): OpenAiCaller,
) -> Result<HttpResponse> {
    let models = caller.visible_models(&shared, &client).await?;
    let list = corral_convert::model_list(models.iter().map(|(id, created)| (id.as_str(), *created)));
    Ok(HttpResponse::Ok().json(list))
}

/// `GET /v1/models/{model}`: one model, or OpenAI's 404.
pub async fn model(
    path: web::Path<String>,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    OpenAiCaller(caller): OpenAiCaller,
) -> Result<HttpResponse> {
    let requested = path.into_inner();
    let not_found = || OpenAiError {
        status: StatusCode::NOT_FOUND,
        body: corral_convert::model_not_found(&requested),
        headers: None,
    };
    let bypass = shared.settings().auth.bypass_model_access_control;
    if let Some(preset) = caller.preset(&requested) {
        return if caller.can_read(&preset.id, bypass) {
            Ok(HttpResponse::Ok().json(corral_convert::model(&preset.id, preset.created_at)))
        } else {
            Err(not_found())
        };
    }
    match super::holders(&shared, &client, &requested).await {
        Ok(Some((snap, id, _))) if caller.can_read(&id, bypass) => {
            let created = snap
                .catalogue
                .resolve(&id)
                .map_or(0, |e| crate::auth::modified_at(&e.object));
            Ok(HttpResponse::Ok().json(corral_convert::model(&id, created)))
        }
        // Not listed by any instance that answered: OpenAI's 404, as for any unknown model.
        Ok(_) => Err(not_found()),
        // Maybe on an instance that did not answer: an outage (502) for a model the caller
        // may read, so a client does not take it for deleted; else the 404 of any unknown.
        Err(err @ AppError::NoInstance { .. }) => {
            let readable = caller.can_read(&requested, bypass)
                || caller.can_read(&corral_registry::with_latest(&requested), bypass);
            Err(if readable { err.into() } else { not_found() })
        }
        Err(other) => Err(other.into()),
    }
}

/// Reads the body as a JSON object.
async fn read_request(payload: web::Payload) -> Result<Value> {
    let body = read_body(payload).await?;
    check_json(&body)?;
    Ok(corral_convert::parse_request(&body)?)
}

/// The body's `model`, which must be a non-empty string.
fn model_of(value: &Value) -> Result<String> {
    match value.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ConvertError::invalid("you must provide a model parameter", "model").into())
        }
        Some(_) => Err(ConvertError::invalid("'model' must be a string", "model").into()),
    }
}

/// The typed request, with serde's complaint as a 400.
/// Reads the request as `T`; a field of the wrong shape is a 400 naming it (`param`).
fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde's wording for a value that fits none of a field's accepted forms.
        let why = if inner.starts_with("data did not match any variant") {
            "it has none of the accepted types".to_owned()
        } else {
            inner
        };
        let err = if path == "." {
            ConvertError::InvalidJson(format!("invalid request body: {why}"))
        } else {
            ConvertError::invalid(format!("invalid value for '{path}': {why}"), path)
        };
        err.into()
    })
}

/// Sends the converted request to a holder of the model.
async fn send(
    req: &HttpRequest,
    shared: &Shared,
    client: &awc::Client,
    mut extra_headers: Vec<(HeaderName, HeaderValue)>,
    path: &'static str,
    model: &str,
    native: &impl serde::Serialize,
) -> Result<Answer> {
    let body = serde_json::to_vec(native).map_err(|e| AppError::Internal(e.to_string()))?;
    let fields = check_json(&body)?;
    // The answer is read on the way, so it must come uncompressed.
    extra_headers.push((header::ACCEPT_ENCODING, HeaderValue::from_static("identity")));
    extra_headers.push((header::ACCEPT, HeaderValue::from_static("application/x-ndjson")));
    let call = Call {
        spec: Spec::post(path),
        method: &Method::POST,
        model,
        fields: &fields,
        body: Bytes::from(body),
        extra_headers,
        converted: true,
    };
    Ok(balanced::dispatch(req, shared, client, call).await?)
}

/// A converted request as JSON, for the record's params to be applied to it.
fn to_value(native: impl serde::Serialize) -> Result<Value> {
    Ok(serde_json::to_value(native).map_err(|e| AppError::Internal(e.to_string()))?)
}

/// An upstream error answer, in OpenAI's shape with the upstream's status.
async fn upstream_error(answer: Answer) -> Result<HttpResponse> {
    let Answer {
        mut resp,
        on_end,
        mut exchange,
        ..
    } = answer;
    let status = resp.status();
    let body = proxy::read_all(&mut resp, 1024 * 1024).await.unwrap_or_default();
    on_end();
    exchange.chunk(&body);
    exchange.completed();
    Err(OpenAiError {
        status,
        body: corral_convert::error_from_native(status.as_u16(), &body),
        headers: None,
    })
}

/// Reads a whole non-streamed answer and parses it.
async fn read_answer<T: serde::de::DeserializeOwned>(answer: Answer) -> Result<T> {
    let Answer {
        mut resp,
        on_end,
        target,
        mut exchange,
        ..
    } = answer;
    let body = proxy::read_all(&mut resp, ANSWER_LIMIT).await;
    on_end();
    match &body {
        Ok(bytes) => {
            exchange.chunk(bytes);
            exchange.completed();
        }
        Err(_) => exchange.failed(),
    }
    let body = body.map_err(|reason| AppError::UpstreamUnreachable {
        idx: target.idx,
        url: target.base_url.clone(),
        reason,
    })?;
    Ok(corral_convert::parse_upstream(&body)?)
}

/// Stamps a new response: a fresh id, the model as the client named it, the time.
fn meta(kind: &str, model: &str) -> ResponseMeta {
    let id = format!("{kind}-{}", hex::encode(rand::random::<[u8; 12]>()));
    let mut meta = ResponseMeta::new(id, model, now());
    // OpenAI always sends one; Ollama's own `/v1` sends this one for the same backend.
    meta.system_fingerprint = Some("fp_ollama".to_owned());
    meta
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A stream converter: NDJSON bytes in, SSE bytes out.
pub trait Converter: Unpin + 'static {
    /// Converts a piece of the native stream.
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>);
    /// Ends the stream (an error event if the native stream had no final object).
    fn finish(&mut self, out: &mut Vec<u8>);
}

impl Converter for corral_convert::ChatStream {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.push_into(bytes, out);
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&corral_convert::ChatStream::finish(self));
    }
}

impl Converter for corral_convert::CompletionStream {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.push_into(bytes, out);
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&corral_convert::CompletionStream::finish(self));
    }
}

/// `resp` (a 200 answer) carrying how long the request waited in the queue if it did, and the
/// caller's limits: inserted into its head directly, not through a builder's conversions.
fn answered(mut resp: HttpResponse, added: proxy::Added) -> HttpResponse {
    added.write(&mut resp);
    resp
}

/// The SSE answer: each upstream chunk is converted and sent as soon as it arrives.
fn sse<C: Converter>(answer: Answer, converter: C) -> HttpResponse {
    let Answer {
        resp,
        target,
        settings,
        on_end,
        exchange,
        added,
    } = answer;
    let body = proxy::ndjson_body(resp, &settings.upstream, &target, on_end, exchange);
    let resp = HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((HeaderName::from_static("x-accel-buffering"), "no"))
        .streaming(Converted {
            inner: Box::pin(body),
            converter,
            ended: false,
        });
    answered(resp, added)
}

/// Converts a native stream as it is polled.
struct Converted<C> {
    inner: Pin<Box<dyn Stream<Item = std::result::Result<Bytes, actix_web::Error>>>>,
    converter: C,
    ended: bool,
}

impl<C: Converter> Stream for Converted<C> {
    type Item = std::result::Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            let mut out = Vec::new();
            match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => this.converter.push(&chunk, &mut out),
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => {
                    this.ended = true;
                    this.converter.finish(&mut out);
                }
            }
            // A chunk that completed no line yields nothing yet; poll for the next one.
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Bytes::from(out))));
            }
        }
    }
}

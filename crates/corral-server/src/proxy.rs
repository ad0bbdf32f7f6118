//! Forwarding one request to one Ollama instance, and relaying its answer as it arrives.
//!
//! The response body is relayed chunk by chunk: nothing is buffered, re-framed or split into
//! lines, so no line is too long and no chunk waits for another. Dropping the response (the
//! client went away) drops the upstream connection, which cancels the generation upstream.

mod relay;

use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpResponse};
use awc::error::SendRequestError;
use bytes::Bytes;
use corral_config::UpstreamSettings;
use futures_util::StreamExt;

use crate::error::AppError;
use crate::exchange::Exchange;
use relay::{Framing, Relay};

/// The instance a request goes to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its index in `ollama.base_urls`.
    pub idx: usize,
    /// Its base URL, without a trailing slash.
    pub base_url: String,
    /// Its bearer key, if any.
    pub key: Option<String>,
}

/// What is sent upstream as the request body.
pub enum Body {
    /// No body.
    Empty,
    /// A body already read (and checked) by the gateway.
    Bytes(Bytes),
    /// A body streamed through as it arrives (blob uploads of many GB).
    Stream(web::Payload),
}

/// A request to forward.
pub struct Outgoing<'a> {
    /// The HTTP method upstream.
    pub method: Method,
    /// Path and query upstream, e.g. `/api/chat` or `/api/tags?x=1`.
    pub path_and_query: String,
    /// The client's headers; only end-to-end content headers are copied.
    pub client_headers: &'a HeaderMap,
    /// Extra headers to send (user information).
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Body,
    /// Whether the instance answers only once a long job is done (a blob upload, a pull, push
    /// or create that does not stream), so no first-byte deadline applies.
    pub patient: bool,
}

/// Builds this worker's upstream client: connect timeout from the settings, no overall
/// timeout (each request sets its own), no redirects, no decompression.
pub fn client(settings: &UpstreamSettings) -> awc::Client {
    install_crypto();
    let connector = awc::Connector::new()
        .connector(tcp_connector())
        .timeout(secs(settings.connect_timeout).unwrap_or(Duration::from_secs(5)))
        .limit(0);
    awc::Client::builder()
        .connector(connector)
        .disable_timeout()
        .disable_redirects()
        .max_http_version(awc::http::Version::HTTP_11)
        .finish()
}

/// This worker's client for requests sent again after a connection broke ([`send_again_if_closed`]):
/// every request it sends closes its connection after the answer (`force_close`), so its pool
/// holds none and each goes out on a new one. Made at the first such request (building a
/// client builds its TLS settings), and again when the connect timeout changes.
fn fresh_client(settings: &UpstreamSettings) -> awc::Client {
    thread_local! {
        static FRESH: std::cell::RefCell<Option<(u64, awc::Client)>> = const { std::cell::RefCell::new(None) };
    }
    let timeout = settings.connect_timeout.to_bits();
    FRESH.with_borrow_mut(|fresh| match fresh {
        Some((made_for, client)) if *made_for == timeout => client.clone(),
        _ => {
            let client = client(settings);
            *fresh = Some((timeout, client.clone()));
            client
        }
    })
}

/// The upstream TCP connector: awc's own, with Nagle's algorithm switched off on every
/// connection it opens.
///
/// A request is written as a head and then a body; on a reused connection the body is a
/// small second write behind unacknowledged data, which Nagle's algorithm holds until the
/// instance's delayed ACK (40 ms on Linux). A gateway must never add that wait.
pub(crate) fn tcp_connector() -> impl actix_service::Service<
    actix_tls::connect::ConnectInfo<awc::http::Uri>,
    Response = actix_tls::connect::Connection<awc::http::Uri, actix_web::rt::net::TcpStream>,
    Error = actix_tls::connect::ConnectError,
> + Clone {
    use actix_service::ServiceExt as _;
    actix_tls::connect::Connector::new(actix_tls::connect::Resolver::default())
        .service()
        .map(
            |conn: actix_tls::connect::Connection<awc::http::Uri, actix_web::rt::net::TcpStream>| {
                if let Err(err) = conn.io_ref().set_nodelay(true) {
                    tracing::debug!(%err, "could not switch off Nagle's algorithm on an upstream connection");
                }
                conn
            },
        )
}

/// Client headers that are about the content and so travel upstream. Everything else
/// (Host, Authorization, cookies, Origin, hop-by-hop headers) stays at the gateway.
/// The request id and the W3C trace context go too: the observe middleware has replaced
/// them with the gateway's own (a client's invalid ones never pass).
const FORWARDED_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::USER_AGENT,
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
];

/// Sends `out` to `target` and waits for the response headers.
///
/// A request whose connection broke before any answer came (the instance closed a kept-alive
/// connection just as it was reused) is sent once more on a new connection; a body streamed
/// through cannot be sent again.
pub async fn send(
    client: &awc::Client,
    settings: &UpstreamSettings,
    target: &Target,
    out: Outgoing<'_>,
) -> Result<awc::ClientResponse, AppError> {
    let url = format!("{}{}", target.base_url, out.path_and_query);
    // A streamed upload of many GB is still being sent when the deadline would fall.
    let patient = out.patient || matches!(out.body, Body::Stream(_));
    let first_byte = secs(settings.first_byte_timeout).filter(|_| !patient);
    let json_body = matches!(out.body, Body::Bytes(_)) && !out.client_headers.contains_key(header::CONTENT_TYPE);
    let request = |client: &awc::Client| {
        let mut req = client.request(out.method.clone(), url.as_str());
        for name in &FORWARDED_HEADERS {
            if let Some(value) = out.client_headers.get(name) {
                req = req.insert_header((name.clone(), value.clone()));
            }
        }
        if json_body {
            req = req.insert_header((header::CONTENT_TYPE, "application/json"));
        }
        if let Some(key) = target.key.as_deref().filter(|k| !k.is_empty()) {
            req = req.insert_header((header::AUTHORIZATION, format!("Bearer {key}")));
        }
        for (name, value) in &out.extra_headers {
            req = req.insert_header((name.clone(), value.clone()));
        }
        if let Some(limit) = first_byte {
            req = req.timeout(limit);
        }
        req
    };
    let sent = match out.body {
        Body::Stream(payload) => request(client).send_stream(payload).await,
        // A long job (a pull, push or create that does not stream) is never sent twice.
        Body::Empty if patient => request(client).send().await,
        Body::Bytes(bytes) if patient => request(client).send_body(bytes).await,
        Body::Empty => send_again_if_closed(client, settings, request, None).await,
        Body::Bytes(bytes) => send_again_if_closed(client, settings, request, Some(&bytes)).await,
    };
    sent.map_err(|err| send_error(target, err, settings.first_byte_timeout))
}

/// Sends the request `request` makes on `client`, with `body` if any, and once more on a new
/// connection when the connection broke at once, before any answer.
///
/// An instance (or a proxy in front of it) closes a kept-alive connection after its idle
/// timeout (5 s for the simulator, Node and uvicorn); when that happens just as the gateway
/// reuses the connection, the request meets a closed socket. The pool checks a connection
/// before reusing it, but not after: such a request fails although the instance is fine.
/// The gateway sends it again on a connection of its own, as Go's client does for a request
/// that met a connection the server had closed: only when the break came within
/// [`RESEND_WITHIN`] of sending, so a request the instance had been working on (then lost its
/// connection, crashed or restarted) is not run again; that one fails over as before. An
/// instance that closes every connection at once (a container's published port with nothing
/// behind it) fails both tries, with one more connect. The second try has the same deadline
/// as the first, so an answer may take up to [`RESEND_WITHIN`] more.
pub(crate) async fn send_again_if_closed(
    client: &awc::Client,
    settings: &UpstreamSettings,
    request: impl Fn(&awc::Client) -> awc::ClientRequest,
    body: Option<&Bytes>,
) -> Result<awc::ClientResponse, SendRequestError> {
    let send = |req: awc::ClientRequest| match body {
        Some(bytes) => req.send_body(bytes.clone()),
        None => req.send(),
    };
    let sent = std::time::Instant::now();
    match send(request(client)).await {
        Err(err) if connection_broke(&err) && sent.elapsed() < RESEND_WITHIN => {
            tracing::debug!(%err, "the connection to the instance broke before an answer; sending again on a new one");
            send(request(&fresh_client(settings)).force_close()).await
        }
        other => other,
    }
}

/// How soon after sending a broken connection counts as one the instance had already closed
/// (a write into it fails, or the close arrives, within a round trip), rather than a request it
/// had taken up.
pub(crate) const RESEND_WITHIN: Duration = Duration::from_secs(1);

/// Whether `err` says the connection closed or broke after it was made and before the
/// response head: nothing came back. A connection that could not be made, a timeout or a
/// malformed answer is not such a failure.
fn connection_broke(err: &SendRequestError) -> bool {
    use actix_web::error::ParseError;
    use awc::error::ConnectError;
    match err {
        // awc's word for a connection that ended before the response head.
        SendRequestError::Connect(ConnectError::Disconnected) => true,
        // Writing the request failed (the instance had closed or reset the connection).
        SendRequestError::Send(_) => true,
        SendRequestError::Response(ParseError::Incomplete | ParseError::Io(_)) => true,
        _ => false,
    }
}

/// Whether the instance holds the blob at `path` (`/api/blobs/sha256:…`), by a `HEAD`; an
/// instance that cannot say is taken not to.
pub async fn has_blob(client: &awc::Client, settings: &UpstreamSettings, target: &Target, path: &str) -> bool {
    let mut req = client.head(format!("{}{path}", target.base_url));
    if let Some(key) = target.key.as_deref().filter(|k| !k.is_empty()) {
        req = req.insert_header((header::AUTHORIZATION, format!("Bearer {key}")));
    }
    if let Some(limit) = secs(settings.first_byte_timeout) {
        req = req.timeout(limit);
    }
    req.send().await.is_ok_and(|resp| resp.status() == StatusCode::OK)
}

/// Relays an upstream response to the client as it arrives.
pub fn relay(
    resp: awc::ClientResponse,
    settings: &UpstreamSettings,
    upstream: &Target,
    method: &Method,
) -> HttpResponse {
    relay_with(
        resp,
        settings,
        upstream,
        method,
        None,
        Exchange::unwatched(),
        Added::default(),
    )
}

/// [`relay`], running `on_end` once the body has been relayed or abandoned, feeding the
/// body and how it ended to `exchange`, with the gateway's own `added` headers (in place of
/// any the instance sent by those names).
pub fn relay_with(
    resp: awc::ClientResponse,
    settings: &UpstreamSettings,
    upstream: &Target,
    method: &Method,
    on_end: Option<Box<dyn FnOnce()>>,
    exchange: Exchange,
    added: Added,
) -> HttpResponse {
    let status = resp.status();
    let mut builder = HttpResponse::build(resp.status());
    let mut length = None;
    for (name, value) in resp.headers() {
        if name == header::CONTENT_LENGTH {
            length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
            continue;
        }
        if is_hop_by_hop(name) || name == header::DATE || name == header::SERVER {
            continue;
        }
        // The caller's own limits stand in place of any the instance sent.
        if added.limits.is_some() && name.as_str().starts_with(crate::limits::HEADER_PREFIX) {
            continue;
        }
        builder.append_header((name.clone(), value.clone()));
    }
    let framing = Framing::of(resp.headers().get(header::CONTENT_TYPE));
    // A HEAD answer, a 204 or a 304 declares a length it does not send.
    let bodyless = *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    // A compressed body is relayed as it is; its lines cannot be read on the way.
    let encoded = resp
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.eq_ignore_ascii_case("identity"));
    let framing = if bodyless || encoded { Framing::Opaque } else { framing };
    let mut body = Relay::new(resp, secs(settings.idle_timeout), framing, upstream.idx)
        .expect_len(if bodyless { None } else { length })
        .exchange(exchange);
    if let Some(hook) = on_end {
        body = body.on_drop(hook);
    }
    let mut answer = match length {
        Some(len) => builder.body(actix_web::body::SizedStream::new(len, body)),
        None => builder.streaming(body),
    };
    added.write(&mut answer);
    answer
}

/// The response header that says how long a request waited in its model's queue, in
/// milliseconds; sent only on answers that waited.
pub const QUEUE_WAIT_HEADER: &str = "x-corral-queue-wait-ms";

/// The headers the gateway adds to an instance's answer, in place of any the instance sent
/// by those names: the caller's `x-ratelimit-*` and how long the request queued. Kept as
/// figures beside the instance's response until the answer's head is made, then written
/// straight into it (the `x-ratelimit-*` as encoded lines the head carries).
#[derive(Debug, Clone, Copy, Default)]
pub struct Added {
    /// The figures of the `x-ratelimit-*` headers (answers in OpenAI's shape only).
    pub limits: Option<corral_auth::limits::Headroom>,
    /// Milliseconds the request waited for a slot, if it queued.
    pub queue_wait_ms: Option<u64>,
}

impl Added {
    /// Writes the headers into `answer`'s head. Its header map must hold no `x-ratelimit-*`
    /// when limits are added (the instance's are left out when its answer is copied).
    pub fn write(&self, answer: &mut HttpResponse) {
        if let Some(lines) = self.limits.as_ref().and_then(crate::limits::encoded_headers) {
            answer.head_mut().set_encoded_headers(lines);
        }
        if let Some(ms) = self.queue_wait_ms {
            answer
                .headers_mut()
                .insert(HeaderName::from_static(QUEUE_WAIT_HEADER), HeaderValue::from(ms));
        }
    }
}

/// The body of an NDJSON answer as it arrives, ending with an error line if the upstream
/// breaks off or goes silent; for handlers that convert the stream on the way.
pub fn ndjson_body(
    resp: awc::ClientResponse,
    settings: &UpstreamSettings,
    upstream: &Target,
    on_end: Box<dyn FnOnce()>,
    exchange: Exchange,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    Relay::new(resp, secs(settings.idle_timeout), Framing::NdJson, upstream.idx)
        .on_drop(on_end)
        .exchange(exchange)
}

/// Reads a whole response body (for the small JSON answers the gateway merges), with a limit.
pub async fn read_all(resp: &mut awc::ClientResponse, limit: usize) -> Result<Bytes, String> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if buf.len() + chunk.len() > limit {
            return Err(format!("response larger than {limit} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn send_error(target: &Target, err: SendRequestError, timeout: f64) -> AppError {
    match err {
        SendRequestError::Timeout => AppError::UpstreamTimeout {
            idx: target.idx,
            url: target.base_url.clone(),
            secs: timeout,
        },
        other => AppError::UpstreamUnreachable {
            idx: target.idx,
            url: target.base_url.clone(),
            reason: other.to_string(),
        },
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Seconds from the settings as a duration; 0 means no limit.
pub fn secs(value: f64) -> Option<Duration> {
    (value > 0.0 && value.is_finite()).then(|| Duration::from_secs_f64(value))
}

/// Selects ring as rustls's crypto for `https://` instances, once per process.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means another provider is already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

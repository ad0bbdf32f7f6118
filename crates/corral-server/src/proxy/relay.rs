//! The response body relay: upstream chunks out as they come, with an idle timeout.
//!
//! When the upstream breaks off mid-stream (reset, idle timeout), a stream the client reads
//! line by line gets a last error line in its own framing, so Ollama's and OpenAI's clients
//! raise an error instead of seeing a silently truncated answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header::HeaderValue;
use bytes::Bytes;
use futures_util::Stream;
use memchr::memmem::Finder;
use tokio::time::{Instant, Sleep};

/// How the client reads the body, which decides how a late error is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Ollama's NDJSON: a last `{"error":"…"}` line.
    NdJson,
    /// Server-sent events: a last `data: {"error":{…}}` event.
    Sse,
    /// Anything else: the connection is aborted.
    Opaque,
}

impl Framing {
    /// The framing of a response with this content type.
    pub fn of(content_type: Option<&HeaderValue>) -> Framing {
        let ct = content_type.and_then(|v| v.to_str().ok()).unwrap_or_default();
        if ct.contains("ndjson") {
            Framing::NdJson
        } else if ct.contains("event-stream") {
            Framing::Sse
        } else {
            Framing::Opaque
        }
    }
}

/// Relays a body stream, ending it with an error line if the upstream fails or goes silent.
pub struct Relay<S> {
    inner: S,
    idle: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    framing: Framing,
    at_line_start: bool,
    done: bool,
    upstream: usize,
    on_drop: Option<Box<dyn FnOnce()>>,
    /// The declared body length, checked at the end.
    expected_len: Option<u64>,
    relayed: u64,
    /// Whether a terminal marker (final object, success, error, `[DONE]`) went by.
    complete: bool,
    /// The last bytes relayed, so a marker split across two chunks is still seen.
    carry: [u8; CARRY],
    carry_len: usize,
}

/// Byte sequences that end a stream properly. Inside a JSON string `"` is escaped, so
/// model output cannot fake them.
const NDJSON_ENDS: [&[u8]; 3] = [b"\"done\":true", b"\"status\":\"success\"", b"{\"error\":"];
const SSE_ENDS: [&[u8]; 2] = [b"data: [DONE]", b"data: {\"error\":"];
/// The searchers for the markers, built once: building one costs more than searching a chunk.
static NDJSON_FINDERS: LazyLock<Vec<Finder<'static>>> = LazyLock::new(|| NDJSON_ENDS.iter().map(Finder::new).collect());
static SSE_FINDERS: LazyLock<Vec<Finder<'static>>> = LazyLock::new(|| SSE_ENDS.iter().map(Finder::new).collect());
const CARRY: usize = 24;

impl<S> Drop for Relay<S> {
    fn drop(&mut self) {
        if let Some(hook) = self.on_drop.take() {
            hook();
        }
    }
}

impl<S> Relay<S> {
    /// Wraps `inner`; `idle` is the longest silence allowed between two chunks.
    pub fn new(inner: S, idle: Option<Duration>, framing: Framing, upstream: usize) -> Relay<S> {
        Relay {
            inner,
            idle,
            sleep: idle.map(|d| Box::pin(tokio::time::sleep(d))),
            framing,
            at_line_start: true,
            done: false,
            upstream,
            on_drop: None,
            expected_len: None,
            relayed: 0,
            complete: false,
            carry: [0; CARRY],
            carry_len: 0,
        }
    }

    /// Checks at the end that exactly `len` bytes were relayed.
    pub fn expect_len(mut self, len: Option<u64>) -> Relay<S> {
        self.expected_len = len;
        self
    }

    /// Notes terminal markers in `chunk` (and across its boundary with the last one).
    fn scan(&mut self, chunk: &[u8]) {
        if self.complete {
            return;
        }
        let ends: &[Finder<'static>] = match self.framing {
            Framing::NdJson => &NDJSON_FINDERS,
            Framing::Sse => &SSE_FINDERS,
            Framing::Opaque => return,
        };
        // The seam: the carried tail of the last chunk and the head of this one, on the stack.
        let mut seam = [0u8; 2 * CARRY];
        let head = chunk.len().min(CARRY);
        seam[..self.carry_len].copy_from_slice(&self.carry[..self.carry_len]);
        seam[self.carry_len..self.carry_len + head].copy_from_slice(&chunk[..head]);
        let seam = &seam[..self.carry_len + head];
        self.complete = ends.iter().any(|m| m.find(chunk).is_some() || m.find(seam).is_some());
        // Keep the stream's last CARRY bytes, which may span several small chunks.
        let mut tail = [0u8; CARRY];
        let from_chunk = chunk.len().min(CARRY);
        let from_carry = (CARRY - from_chunk).min(self.carry_len);
        tail[..from_carry].copy_from_slice(&self.carry[self.carry_len - from_carry..self.carry_len]);
        tail[from_carry..from_carry + from_chunk].copy_from_slice(&chunk[chunk.len() - from_chunk..]);
        self.carry = tail;
        self.carry_len = from_carry + from_chunk;
    }

    /// Whether the body ended where it should have.
    fn ended_properly(&self) -> bool {
        match self.framing {
            Framing::NdJson | Framing::Sse => self.complete,
            Framing::Opaque => self.expected_len.is_none_or(|n| self.relayed >= n),
        }
    }

    /// Runs `hook` when the relay ends (the body finished, failed, or the client went away).
    pub fn on_drop(mut self, hook: Box<dyn FnOnce()>) -> Relay<S> {
        self.on_drop = Some(hook);
        self
    }

    fn fail(&mut self, message: String) -> Option<Result<Bytes, actix_web::Error>> {
        self.done = true;
        tracing::warn!(upstream = self.upstream, %message, "upstream stream ended early");
        let lead = if self.at_line_start { "" } else { "\n" };
        let text = serde_json::Value::String(message.clone()).to_string();
        match self.framing {
            Framing::NdJson => Some(Ok(Bytes::from(format!("{lead}{{\"error\":{text}}}\n")))),
            Framing::Sse => Some(Ok(Bytes::from(format!(
                "{lead}data: {{\"error\":{{\"message\":{text},\"type\":\"api_error\",\"param\":null,\"code\":null}}}}\n\n"
            )))),
            Framing::Opaque => Some(Err(actix_web::error::ErrorBadGateway(message))),
        }
    }
}

impl<S, E> Stream for Relay<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let (Some(sleep), Some(idle)) = (this.sleep.as_mut(), this.idle) {
                    sleep.as_mut().reset(Instant::now() + idle);
                }
                if let Some(last) = chunk.last() {
                    this.at_line_start = *last == b'\n';
                }
                this.relayed += chunk.len() as u64;
                this.scan(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(err))) => {
                Poll::Ready(this.fail(format!("the Ollama instance broke off the response: {err}")))
            }
            Poll::Ready(None) => {
                if this.ended_properly() {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(this.fail("the Ollama instance ended the response before it was complete".to_owned()))
            }
            Poll::Pending => {
                let timed_out = match this.sleep.as_mut() {
                    Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if timed_out {
                    let secs = this.idle.map_or(0.0, |d| d.as_secs_f64());
                    return Poll::Ready(this.fail(format!(
                        "the Ollama instance sent nothing for {secs}s and the gateway gave up"
                    )));
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_util::StreamExt;

    use super::{Framing, Relay};

    /// Relays `body` cut at every `step` bytes and returns what the client gets.
    fn relay(body: &[u8], step: usize, framing: Framing) -> Vec<u8> {
        let chunks: Vec<Result<Bytes, String>> = body.chunks(step).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let relay = Relay::new(futures_util::stream::iter(chunks), None, framing, 0);
        futures::executor::block_on(relay.map(|c| c.map(|b| b.to_vec()).unwrap_or_default()).concat())
    }

    #[test]
    fn a_final_object_split_anywhere_still_ends_the_stream_properly() {
        let body =
            b"{\"message\":{\"content\":\"say \\\"done\\\":true\"},\"done\":false}\n{\"done\":true,\"eval_count\":3}\n";
        for step in 1..body.len() {
            assert_eq!(
                relay(body, step, Framing::NdJson),
                body.to_vec(),
                "split every {step} bytes"
            );
        }
    }

    #[test]
    fn a_stream_without_its_final_object_gets_an_error_line() {
        let body = b"{\"message\":{\"content\":\"\\\"done\\\":true is escaped here\"},\"done\":false}\n";
        for step in [1, 7, body.len()] {
            let out = String::from_utf8(relay(body, step, Framing::NdJson)).unwrap();
            assert!(out.ends_with("before it was complete\"}\n"), "{out}");
        }
        let sse = b"data: {\"choices\":[]}\n\n";
        let out = String::from_utf8(relay(sse, 5, Framing::Sse)).unwrap();
        assert!(out.contains("data: {\"error\":{\"message\""), "{out}");
        assert_eq!(
            relay(b"data: x\n\ndata: [DONE]\n\n", 3, Framing::Sse),
            b"data: x\n\ndata: [DONE]\n\n".to_vec()
        );
    }
}

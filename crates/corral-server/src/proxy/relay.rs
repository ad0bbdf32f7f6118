//! The response body relay: upstream chunks out as they come, with an idle timeout.
//!
//! When the upstream breaks off mid-stream (reset, idle timeout), a stream the client reads
//! line by line gets a last error line in its own framing, so Ollama's and OpenAI's clients
//! raise an error instead of seeing a silently truncated answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header::HeaderValue;
use bytes::Bytes;
use corral_convert::stream_end::{EndFraming, StreamEnd};
use futures_util::Stream;
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
    /// Armed for `idle` after the last chunk, at the latest: a chunk only notes its time, and
    /// the timer, when it fires, is armed again from that time (moving a timer for every chunk
    /// cost about 200 instructions a chunk; reading the clock, about 30).
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the last chunk came (or the relay began).
    last_chunk: Instant,
    framing: Framing,
    at_line_start: bool,
    done: bool,
    upstream: usize,
    on_drop: Option<Box<dyn FnOnce()>>,
    /// The declared body length, checked at the end.
    expected_len: Option<u64>,
    relayed: u64,
    /// The last lines seen, to tell a finished stream from one that broke off.
    end: Option<StreamEnd>,
    /// The record of a model-running request, fed the bytes as they pass.
    exchange: crate::exchange::Exchange,
    /// Takes out the usage event the gateway asked for on the client's behalf (after the
    /// exchange read it).
    usage_strip: Option<corral_convert::usage_event::UsageEventStrip>,
    /// Whether the upstream body has ended.
    inner_ended: bool,
}

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
            last_chunk: Instant::now(),
            framing,
            at_line_start: true,
            done: false,
            upstream,
            on_drop: None,
            expected_len: None,
            relayed: 0,
            end: match framing {
                Framing::NdJson => Some(StreamEnd::new(EndFraming::NdJson)),
                Framing::Sse => Some(StreamEnd::new(EndFraming::Sse)),
                Framing::Opaque => None,
            },
            exchange: crate::exchange::Exchange::unwatched(),
            usage_strip: None,
            inner_ended: false,
        }
    }

    /// Feeds the relayed bytes, and how the answer ended, to `exchange`.
    pub fn exchange(mut self, exchange: crate::exchange::Exchange) -> Relay<S> {
        if exchange.strips_usage_event() && self.framing == Framing::Sse {
            self.usage_strip = Some(corral_convert::usage_event::UsageEventStrip::new());
        }
        self.exchange = exchange;
        self
    }

    /// Checks at the end that exactly `len` bytes were relayed.
    pub fn expect_len(mut self, len: Option<u64>) -> Relay<S> {
        self.expected_len = len;
        self
    }

    /// Whether the body ended where it should have.
    fn ended_properly(&self) -> bool {
        match &self.end {
            Some(end) => end.ended_properly(),
            None => self.expected_len.is_none_or(|n| self.relayed >= n),
        }
    }

    /// Runs `hook` when the relay ends (the body finished, failed, or the client went away).
    pub fn on_drop(mut self, hook: Box<dyn FnOnce()>) -> Relay<S> {
        self.on_drop = Some(hook);
        self
    }

    fn fail(&mut self, message: String) -> Option<Result<Bytes, actix_web::Error>> {
        self.done = true;
        self.exchange.failed();
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
        loop {
            let polled = if this.inner_ended {
                Poll::Ready(None)
            } else {
                Pin::new(&mut this.inner).poll_next(cx)
            };
            return match polled {
                Poll::Ready(Some(Ok(chunk))) => {
                    if this.sleep.is_some() {
                        this.last_chunk = Instant::now();
                    }
                    if let Some(last) = chunk.last() {
                        this.at_line_start = *last == b'\n';
                    }
                    this.relayed += chunk.len() as u64;
                    if let Some(end) = this.end.as_mut() {
                        end.push(&chunk);
                    }
                    this.exchange.chunk(&chunk);
                    if let Some(strip) = this.usage_strip.as_mut().filter(|s| !s.passes_whole(&chunk)) {
                        let out = strip.push(&chunk);
                        if out.is_empty() {
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Bytes::from(out))));
                    }
                    Poll::Ready(Some(Ok(chunk)))
                }
                Poll::Ready(Some(Err(err))) => {
                    Poll::Ready(this.fail(format!("the Ollama instance broke off the response: {err}")))
                }
                Poll::Ready(None) => {
                    this.inner_ended = true;
                    let rest = this.usage_strip.as_mut().map(|s| s.finish()).unwrap_or_default();
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Bytes::from(rest))));
                    }
                    if this.ended_properly() {
                        this.done = true;
                        this.exchange.completed();
                        return Poll::Ready(None);
                    }
                    Poll::Ready(this.fail("the Ollama instance ended the response before it was complete".to_owned()))
                }
                Poll::Pending => {
                    let timed_out = match (this.sleep.as_mut(), this.idle) {
                        (Some(sleep), Some(idle)) => loop {
                            if sleep.as_mut().poll(cx).is_pending() {
                                break false;
                            }
                            // Fired: silent since the last chunk for `idle`, or armed again
                            // for `idle` after it (and polled, so that it wakes this task).
                            let due = this.last_chunk + idle;
                            if due <= Instant::now() {
                                break true;
                            }
                            sleep.as_mut().reset(due);
                        },
                        _ => false,
                    };
                    if timed_out {
                        let secs = this.idle.map_or(0.0, |d| d.as_secs_f64());
                        return Poll::Ready(this.fail(format!(
                            "the Ollama instance sent nothing for {secs}s and the gateway gave up"
                        )));
                    }
                    Poll::Pending
                }
            };
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

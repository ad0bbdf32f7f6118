//! The HTTP layer's own refusals, in JSON like every other error.
//!
//! actix-http answers a request it cannot parse before any of Corral's code sees it: 431 for
//! a head over its buffer or with more than 96 headers, 400 for a malformed head (say
//! `Content-Length` together with `Transfer-Encoding`), 408 for a head that does not arrive
//! in time. Those answers have no body and cannot be configured. This wrapper around the
//! client's connection recognises them as they are written, by their exact shape (one of those
//! three statuses, `content-length: 0` and no content type, which no response of Corral's own
//! has), and writes the same status with a JSON body instead. The connection closes after them
//! anyway. Every other write passes through unchanged; the check looks at a write's first
//! bytes only.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::rt::net::TcpStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::client_gone::Hangup;

/// A client connection whose empty protocol-level refusals are rewritten as JSON, and whose
/// end is told to the request it serves ([`crate::client_gone`]).
#[derive(Debug)]
pub struct JsonRefusals {
    io: TcpStream,
    /// Set when a read finds the client's side ended.
    hangup: Rc<Hangup>,
    /// A rewritten answer still being written, and how much of it went out.
    pending: Vec<u8>,
    sent: usize,
}

impl JsonRefusals {
    /// Wraps the accepted connection.
    pub fn new(io: TcpStream) -> JsonRefusals {
        JsonRefusals {
            io,
            hangup: Rc::default(),
            pending: Vec::new(),
            sent: 0,
        }
    }

    /// The connection's hang-up flag, for its requests.
    pub fn hangup(&self) -> &Rc<Hangup> {
        &self.hangup
    }

    /// Writes what is pending; ready once nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.pending[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

/// The JSON answer standing for `buf` when `buf` is one of the HTTP layer's empty refusals.
pub fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    if buf.len() < 12 || !buf.starts_with(b"HTTP/1.") {
        return None;
    }
    let (status, message) = match &buf[9..12] {
        b"400" => ("400 Bad Request", "the request could not be parsed as HTTP"),
        b"408" => ("408 Request Timeout", "the request head did not arrive in time"),
        b"431" => (
            "431 Request Header Fields Too Large",
            "the request head is too large (at most 32 KiB and 96 headers)",
        ),
        _ => return None,
    };
    let end = memchr::memmem::find(buf, b"\r\n\r\n")?;
    let head = buf[..end].to_ascii_lowercase();
    let empty = memchr::memmem::find(&head, b"\r\ncontent-length: 0").is_some();
    let typed = memchr::memmem::find(&head, b"\r\ncontent-type:").is_some();
    if !empty || typed || end + 4 != buf.len() {
        return None;
    }
    let body = serde_json::json!({ "error": message, "detail": message }).to_string();
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl AsyncRead for JsonRefusals {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let (room, before) = (buf.remaining(), buf.filled().len());
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        match &read {
            // A read with room that gets nothing is the end of the client's side.
            Poll::Ready(Ok(())) if room > 0 && buf.filled().len() == before => self.hangup.left(),
            Poll::Ready(Err(e)) if e.kind() != io::ErrorKind::Interrupted => self.hangup.left(),
            _ => {}
        }
        read
    }
}

impl AsyncWrite for JsonRefusals {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.pending.is_empty() {
            match this.drain(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other.map(|r| r.map(|()| 0)),
            }
        }
        if let Some(json) = rewrite(buf) {
            this.pending = json;
            this.sent = 0;
            // The refusal is taken whole; what is not written yet goes out on flush.
            let _ = this.drain(cx);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_shutdown(cx),
            other => other,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // One buffer at a time, so that each passes the check above.
        let buf = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &**b);
        self.poll_write(cx, buf)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn only_the_http_layers_empty_refusals_are_rewritten() {
        let refusal = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 21:00:00 GMT\r\n\r\n";
        let json = String::from_utf8(rewrite(refusal).unwrap()).unwrap();
        assert!(json.starts_with("HTTP/1.1 431 "), "{json}");
        assert!(json.contains("content-type: application/json"), "{json}");
        let body = json.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["detail"].as_str().unwrap().contains("too large"));
        assert!(rewrite(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_some());
        // Corral's own errors carry a content type and a body; other statuses are left alone.
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 40\r\ncontent-type: application/json\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nextra",
            b"{\"done\":true}\n",
        ] {
            assert!(rewrite(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}

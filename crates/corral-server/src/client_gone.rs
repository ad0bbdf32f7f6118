//! Noticing a client that goes away while its request is still being worked on.
//!
//! actix-web drops a request's handler when a response body cannot be written, so a stream
//! stops as soon as its client leaves. Before the response starts (a request waiting for a
//! slot, a non-streamed generation) actix does not act on the connection's end, and the handler
//! would run on, its upstream generation too, for nobody. actix-http does go on reading the
//! connection while a request runs, so the end of the client's side shows up there, as a read
//! of nothing or an error. The connection wrapper (`json_refusals::JsonRefusals`) notes it in a
//! [`Hangup`] shared with the connection's requests, and wakes the request watching it, which
//! is then dropped: that gives back its place in the queue, its slot, and (by closing the
//! upstream connection) the instance's generation.
//!
//! No system call, descriptor or timer per request or connection: the watch is a flag and a
//! waker, set by reads actix makes anyway (a timer starts only once a client has left).

use std::cell::Cell;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use actix_web::dev::Extensions;

/// Whether a client connection's peer has closed its side (or the connection broke), shared
/// between the connection and the request it is serving.
#[derive(Default)]
pub struct Hangup {
    /// Set once the client's side has ended.
    left: Cell<bool>,
    /// The request waiting to hear it (one at a time on an HTTP/1 connection).
    watcher: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hangup")
            .field("left", &self.left.get())
            .finish_non_exhaustive()
    }
}

impl Hangup {
    /// Notes that the client's side has ended and wakes the request watching.
    pub fn left(&self) {
        self.left.set(true);
        if let Some(waker) = self.watcher.take() {
            waker.wake();
        }
    }
}

/// A request's view of its connection's [`Hangup`], kept in the connection's data.
#[derive(Clone)]
pub struct ClientSocket(Rc<Hangup>);

/// `on_connect` hook: hands the connection's [`Hangup`] to its requests.
pub fn on_connect(hangup: &Rc<Hangup>, ext: &mut Extensions) {
    ext.insert(ClientSocket(hangup.clone()));
}

/// How long a request runs on after its client's side of the connection ended: a client that
/// closed only its sending side (some scripts and probes do) still gets an answer ready by
/// then, as it did when the socket was looked at every 100 ms.
const GRACE: Duration = Duration::from_millis(100);

impl ClientSocket {
    /// Resolves [`GRACE`] after the client has closed its side of the connection (or it broke).
    /// Bytes the client sent say nothing about that, and are left to actix.
    pub async fn gone(&self) {
        std::future::poll_fn(|cx| {
            if self.0.left.get() {
                return Poll::Ready(());
            }
            self.0.watcher.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await;
        tokio::time::sleep(GRACE).await;
    }
}

/// What a request the client left ends with: nobody reads it, but the access log shows it,
/// with nginx's 499 for "client closed request".
pub fn left() -> actix_web::Error {
    tracing::debug!("the client closed the connection before its answer began; the request was dropped");
    crate::error::AppError::ClientClosed.into()
}

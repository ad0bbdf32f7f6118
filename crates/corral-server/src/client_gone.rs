//! Noticing a client that goes away while its request is still being worked on.
//!
//! actix-web drops a request's handler when a response body cannot be written, so a stream
//! stops as soon as its client leaves. Before the response starts (a request waiting for a
//! slot, a non-streamed generation) actix does not look at the connection, and the handler
//! would run on, its upstream generation too, for nobody. So each plain-TCP connection keeps
//! a second handle on its socket, and a request in progress watches it: when the client has
//! closed the connection, the request is dropped, which gives back its place in the queue,
//! its slot, and (by closing the upstream connection) the instance's generation.

use std::any::Any;
use std::rc::Rc;
use std::time::Duration;

use actix_web::dev::Extensions;

/// A second handle on a client's socket, kept with the connection. It is not registered with
/// the event loop: it is only looked at, now and then, by a request that is taking a while.
#[derive(Clone)]
pub struct ClientSocket(Rc<std::net::TcpStream>);

/// How often a request in progress looks whether its client is still there. A request
/// answered sooner never looks: most requests cost nothing here (no system call, no event
/// registration), and a client that leaves is noticed within this time.
const RECHECK: Duration = Duration::from_millis(100);

/// `HttpServer::on_connect` hook: keeps a duplicate of a plain TCP connection's socket.
/// Nothing is kept for other connection types, and nothing is watched then.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    let Ok(socket) = socket2::SockRef::from(tcp).try_clone() else {
        return;
    };
    // The duplicate shares the original's file status flags, so it is already non-blocking;
    // set it anyway, as a peek must never block the worker.
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    ext.insert(ClientSocket(Rc::new(socket.into())));
}

impl ClientSocket {
    /// Resolves once the client has closed the connection (or it broke), looking every
    /// [`RECHECK`]. Bytes waiting to be read say nothing about that, so they are left for
    /// actix and looked past.
    pub async fn gone(&self) {
        let mut byte = [0u8; 1];
        loop {
            tokio::time::sleep(RECHECK).await;
            match self.0.peek(&mut byte) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return,
            }
        }
    }
}

/// What a request the client left ends with: nobody reads it, but the access log shows it,
/// with nginx's 499 for "client closed request".
pub fn left() -> actix_web::Error {
    tracing::debug!("the client closed the connection before its answer began; the request was dropped");
    crate::error::AppError::ClientClosed.into()
}

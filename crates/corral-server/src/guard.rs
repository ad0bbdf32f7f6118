//! What every request passes before its handler: the client's address, a cap on requests
//! without a valid credential per address, and a deadline on the request body.
//!
//! - The client's address is the TCP peer, or behind a trusted proxy
//!   (`server.forwarded_allow_ips`) the address the proxy names; the sign-in limiter, this
//!   cap and the access log all use it.
//! - A request without a valid credential counts against its address while it runs; past
//!   `server.max_unauthenticated_per_address` at once it gets a JSON 429, so a stranger cannot
//!   hold many requests open (a slow body, a sign-in storm) from one address.
//! - A body must arrive in time: a body read whole within `server.body_read_timeout`, a
//!   streamed upload with no longer pause than that between chunks. Past it the request gets a
//!   JSON 408 instead of being held for as long as the client likes.
//!
//! The credential is checked here once and the result kept for the route's own extractor.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};
use bytes::Bytes;
use corral_config::{Settings, TrustedProxies};
use dashmap::DashMap;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::error::AppError;
use crate::password_pool::PasswordPool;
use crate::state::Shared;

/// The guard's settings and counters, shared by every worker.
pub struct Guard {
    trusted: TrustedProxies,
    cap: usize,
    in_progress: Arc<DashMap<IpAddr, usize>>,
    body_timeout: Option<Duration>,
    /// Where password hashing and verification run.
    pub passwords: PasswordPool,
}

/// The client's address, worked out once per request.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl Guard {
    /// A guard for `settings` (its server and auth sections are read once, at start-up).
    pub fn new(settings: &Settings) -> Guard {
        let trusted = TrustedProxies::parse(&settings.server.forwarded_allow_ips).unwrap_or_else(|err| {
            // Validation refuses this at load; a host that skipped it trusts no proxy.
            tracing::error!(%err, "server.forwarded_allow_ips is invalid; no proxy is trusted");
            TrustedProxies::default()
        });
        Guard {
            trusted,
            cap: settings.server.max_unauthenticated_per_address,
            in_progress: Arc::new(DashMap::new()),
            body_timeout: crate::proxy::secs(settings.server.body_read_timeout),
            passwords: PasswordPool::new(
                settings.auth.password_workers,
                settings.auth.password_queue,
                crate::proxy::secs(settings.auth.password_wait).unwrap_or(Duration::from_secs(5)),
            ),
        }
    }

    /// The client's address for a request with this peer and these headers.
    fn client_ip(&self, peer: Option<IpAddr>, headers: &actix_web::http::header::HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if self.trusted.is_empty() {
            return Some(peer);
        }
        let values = |name: &str| {
            headers
                .get_all(name)
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
        };
        let (forwarded, xff) = (values("forwarded"), values("x-forwarded-for"));
        Some(corral_config::client_address(
            peer,
            forwarded.into_iter(),
            xff.into_iter(),
            &self.trusted,
        ))
    }

    /// Counts one request without a valid credential from `ip`, or refuses it past the cap.
    fn admit_unauthenticated(&self, ip: IpAddr) -> Result<Ticket, AppError> {
        if self.cap == 0 {
            return Ok(Ticket(None));
        }
        let mut count = self.in_progress.entry(ip).or_insert(0);
        if *count >= self.cap {
            return Err(AppError::RateLimited {
                retry_after: 1,
                message: format!(
                    "too many requests without a valid credential in progress from this address (at most {})",
                    self.cap
                ),
            });
        }
        *count += 1;
        Ok(Ticket(Some((self.in_progress.clone(), ip))))
    }
}

/// One counted request; the count goes down when it is dropped.
struct Ticket(Option<(Arc<DashMap<IpAddr, usize>>, IpAddr)>);

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((map, ip)) = self.0.take() {
            map.remove_if_mut(&ip, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

/// The client's address of `req` (its peer when the guard did not run, as in a host app).
pub fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    if let Some(ClientIp(ip)) = req.extensions().get::<ClientIp>() {
        return Some(*ip);
    }
    let shared = req.app_data::<web::Data<Shared>>()?;
    shared.guard.client_ip(req.peer_addr().map(|a| a.ip()), req.headers())
}

/// The middleware: client address, the credential checked once, the cap, the body deadline.
pub async fn check(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(shared) = req.app_data::<web::Data<Shared>>().cloned() else {
        return next.call(req).await;
    };
    let guard = &shared.guard;
    if shared.exchanges.watched() {
        req.extensions_mut()
            .insert(crate::exchange::Arrived(std::time::Instant::now()));
    }
    let ip = guard.client_ip(req.peer_addr().map(|a| a.ip()), req.headers());
    if let Some(ip) = ip {
        req.extensions_mut().insert(ClientIp(ip));
    }
    let mut ticket = None;
    if shared.auth.enforced() {
        match crate::auth::identify(req.request()) {
            Ok(caller) => {
                req.extensions_mut().insert(crate::auth::Identified(caller));
            }
            Err(_) => {
                if let Some(ip) = ip {
                    ticket = Some(guard.admit_unauthenticated(ip)?);
                }
            }
        }
    }
    if let Some(limit) = guard.body_timeout.filter(|_| has_body(&req)) {
        // Streamed uploads of many GB have no deadline for the whole, only for each pause.
        let whole = !is_streamed_upload(req.path());
        let payload = req.take_payload();
        req.set_payload(Payload::Stream {
            payload: Box::pin(Timed::new(payload, limit, whole)),
        });
    }
    let res = next.call(req).await;
    drop(ticket);
    res
}

fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(actix_web::http::header::TRANSFER_ENCODING)
        || headers
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Blob uploads and model file uploads, which may take as long as they keep moving.
fn is_streamed_upload(path: &str) -> bool {
    path.contains("/api/blobs/") || path.contains("/models/upload")
}

/// A request body with a deadline: for the whole body, or for each pause between chunks.
struct Timed {
    inner: Payload,
    limit: Duration,
    whole: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timed {
    fn new(inner: Payload, limit: Duration, whole: bool) -> Timed {
        Timed {
            inner,
            limit,
            whole,
            sleep: None,
        }
    }
}

/// The error a body that did not arrive in time ends with; [`is_timeout`] recognises it.
fn timed_out(limit: Duration) -> PayloadError {
    PayloadError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the request body did not arrive within {}s", limit.as_secs_f64()),
    ))
}

/// Whether a body read failed because the client was too slow.
pub fn is_timeout(err: &PayloadError) -> bool {
    matches!(err, PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

impl Stream for Timed {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(item) => {
                if !this.whole {
                    // Each chunk restarts the pause deadline.
                    this.sleep = None;
                }
                Poll::Ready(item)
            }
            Poll::Pending => {
                // The timer is made only once the client keeps the gateway waiting, so a body
                // that came with its head costs none.
                let limit = this.limit;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(timed_out(limit)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

//! Corral's HTTP server.
#![doc = include_str!("../README.md")]

pub mod auth;
mod catalogue;
mod client_gone;
mod config_watch;
pub mod console;
mod cors;
mod discovery;
mod error;
pub mod exchange;
mod fleet;
mod guard;
mod handlers;
mod health_check;
mod instances;
mod json_refusals;
mod lifecycle;
pub mod limits;
pub mod metrics;
mod observe;
mod password_pool;
pub mod probe;
mod proxy;
pub mod rlimit;
pub mod routes;
mod state;
pub mod telemetry;
mod usage;

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{web, App};
use corral_config::Settings;

pub use error::AppError;
pub use lifecycle::Phase;
pub use state::Shared;

/// A configured gateway: shared state plus the routes that serve it.
///
/// Clone it into every worker's app factory; clones share one state.
#[derive(Clone)]
pub struct Corral {
    shared: Arc<Shared>,
}

impl Corral {
    /// Builds a gateway from validated settings, with no database: admin writes answer 503.
    pub fn new(settings: Settings) -> Corral {
        Corral {
            shared: Arc::new(Shared::new(settings)),
        }
    }

    /// Builds a gateway whose configuration lives in `store`; what admins saved there is
    /// applied over `settings`. Blocks on the database: call it at start-up.
    pub fn with_store(settings: Settings, store: corral_store::Store) -> Result<Corral, AppError> {
        Ok(Corral {
            shared: Arc::new(Shared::with_store(settings, store)?),
        })
    }

    /// Lets every caller in as an admin, for a host application that authenticates requests
    /// before they reach the mounted gateway (and for tests). Admin routes then answer only
    /// when the server listens on a loopback address.
    pub fn open_access(self) -> Corral {
        self.shared.auth.disable();
        self
    }

    /// Exports request spans through `telemetry` (see [`telemetry`]). Call it right after
    /// building the gateway, before it is cloned or started.
    pub fn with_telemetry(mut self, telemetry: telemetry::Telemetry) -> Corral {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.telemetry = telemetry,
            None => tracing::error!("with_telemetry called on a gateway already shared; spans are not exported"),
        }
        self
    }

    /// The state every request reads.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Registers Corral's state and routes on an app or scope.
    ///
    /// Call it inside the `HttpServer` app factory: it creates this worker's upstream client.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        let client = proxy::client(&self.shared.settings().upstream);
        cfg.app_data(web::Data::from(self.shared.clone()))
            .app_data(web::Data::new(client))
            // A query string or path segment that does not parse is a JSON 400, as all errors are.
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|err, _| error::AppError::BadRequest(format!("invalid query string: {err}")).into()),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|err, _| error::AppError::BadRequest(format!("invalid path: {err}")).into()),
            );
        let settings = self.shared.settings();
        // The console signs in with Corral's accounts: it is served only with a database.
        let console =
            (settings.server.console && self.shared.store().is_some()).then_some(settings.server.console_path.as_str());
        routes::configure(cfg, console);
    }

    /// Starts the gateway's background work (catalogue refresh, health checks) on the
    /// current actix system. Call it once, before serving.
    pub fn start(&self) {
        fleet::spawn_refresher(self.shared.clone());
        config_watch::spawn(self.shared.clone());
        health_check::spawn(self.shared.clone());
        usage::spawn(self.shared.clone());
        limits::spawn(self.shared.clone());
    }

    /// Serves the gateway on `listener` until SIGTERM or SIGINT, then drains (see [`Corral::drain`])
    /// and returns once the last request has finished and buffered writes are flushed. A second
    /// signal during the drain exits the process at once, with status 1.
    pub async fn serve(self, listener: TcpListener) -> io::Result<()> {
        let shared = self.shared.clone();
        let server = self.build(listener, false)?;
        let handle = server.handle();
        let signals = shared.clone();
        actix_rt::spawn(async move {
            let Ok(mut signals_in) = StopSignals::new() else {
                tracing::error!("cannot watch for SIGTERM and SIGINT; stop the gateway with SIGKILL");
                return;
            };
            let first = signals_in.next().await;
            tracing::info!(signal = first, "stop signal received: draining");
            let drained = Corral { shared: signals }.drain(handle);
            tokio::select! {
                () = drained => {}
                second = signals_in.next() => {
                    tracing::warn!(signal = second, "second stop signal: exiting at once");
                    std::process::exit(1);
                }
            }
        });
        server.await?;
        let flushed = shared.clone();
        actix_rt::task::spawn_blocking(move || flushed.flush_buffers())
            .await
            .map_err(io::Error::other)?;
        tracing::info!("drained; buffered writes flushed");
        Ok(())
    }

    /// Drains the server behind `handle`. `/ready` answers 503 at once; for
    /// `server.shutdown_delay` seconds the gateway still serves (so a load balancer takes it out
    /// of rotation first); then new connections are refused, connections still open are closed
    /// after their current answer, and requests in flight (streams included) get
    /// `server.shutdown_grace` seconds to finish. Requests still waiting in an admission queue
    /// a second before the grace period ends get a 503 with `Retry-After`, while their answer
    /// can still be written. Resolves when the server stopped.
    pub async fn drain(self, handle: actix_web::dev::ServerHandle) {
        let server = self.shared.settings().server.clone();
        self.shared.lifecycle.advance(Phase::Draining);
        if server.shutdown_delay > 0.0 {
            tokio::time::sleep(std::time::Duration::from_secs_f64(server.shutdown_delay)).await;
        }
        let life = self.shared.clone();
        actix_rt::spawn(async move {
            let queues_close = grace_secs(server.shutdown_grace).saturating_sub(1);
            tokio::time::sleep(std::time::Duration::from_secs(queues_close)).await;
            life.lifecycle.advance(Phase::GraceOver);
        });
        handle.stop(true).await;
    }

    /// Builds the HTTP server on `listener` without awaiting it; the caller runs it and may
    /// stop it through its handle (tests do). actix-web's own signal handling stays on: use
    /// [`Corral::serve`] for Corral's drain.
    pub fn server(self, listener: TcpListener) -> io::Result<actix_web::dev::Server> {
        self.build(listener, true)
    }

    fn build(self, listener: TcpListener, actix_signals: bool) -> io::Result<actix_web::dev::Server> {
        let settings = self.shared.settings();
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let cors_origins = settings.server.cors_allow_origin.clone();
        let corral = self.clone();
        let app = move || {
            App::new()
                // A request whose client has gone is dropped before it answers (see `client_gone`).
                .wrap_fn(|req, srv| {
                    let socket = req.conn_data::<client_gone::ClientSocket>().cloned();
                    let call = actix_web::dev::Service::call(srv, req);
                    async move {
                        let Some(socket) = socket else {
                            return call.await;
                        };
                        tokio::select! {
                            biased;
                            answer = call => answer,
                            () = socket.gone() => Err(client_gone::left()),
                        }
                    }
                })
                // Client address, the credential checked once, the unauthenticated cap, the
                // body deadline (see `guard`).
                .wrap(actix_web::middleware::from_fn(guard::check))
                // While draining, a connection still open is closed after its answer, so the
                // client (or proxy) opens its next one to another replica.
                .wrap_fn(|req, srv| {
                    let draining = req
                        .app_data::<web::Data<Shared>>()
                        .is_some_and(|s| s.lifecycle.draining());
                    let call = actix_web::dev::Service::call(srv, req);
                    async move {
                        let mut res = call.await?;
                        if draining {
                            res.response_mut()
                                .head_mut()
                                .set_connection_type(actix_web::http::ConnectionType::Close);
                        }
                        Ok(res)
                    }
                })
                .wrap(cors::cors(&cors_origins))
                // Request id, trace context, access line, request counter, server span.
                .wrap(actix_web::middleware::from_fn(observe::observe))
                .configure(|cfg| corral.configure(cfg))
        };
        // actix-web's `HttpServer`, spelled out: the same HTTP service with actix-web's
        // defaults, over a connection wrapper that turns the HTTP layer's own empty refusals
        // into JSON (see `json_refusals`).
        let builder = actix_server::ServerBuilder::default()
            .workers(workers)
            .shutdown_timeout(grace_secs(settings.server.shutdown_grace));
        let builder = if actix_signals {
            builder
        } else {
            builder.disable_signals()
        };
        let shutdown = builder.graceful_shutdown_signal();
        let local = listener.local_addr()?;
        let builder = builder.listen("corral", listener, move || {
            let shutdown = shutdown.clone();
            use actix_service::ServiceFactoryExt as _;
            let app = actix_service::map_config(
                actix_service::IntoServiceFactory::into_factory(app())
                    .map_err(|err: actix_web::Error| actix_web::ResponseError::error_response(err.as_response_error())),
                |_| actix_web::dev::AppConfig::default(),
            );
            let http = actix_http::HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = shutdown.clone();
                    async move { signal.notified().await }
                })
                .keep_alive(actix_http::KeepAlive::default())
                .client_request_timeout(std::time::Duration::from_secs(5))
                .client_disconnect_timeout(std::time::Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(local)
                .on_connect_ext(
                    |io: &json_refusals::JsonRefusals, ext: &mut actix_web::dev::Extensions| {
                        client_gone::on_connect(io.hangup(), ext)
                    },
                )
                .h1(app);
            actix_service::fn_service(|io: actix_web::rt::net::TcpStream| async move {
                // Streams end with small writes (the last chunk, the chunked terminator):
                // Nagle's algorithm would hold them for the client's delayed ACK on every
                // reused connection.
                if let Err(err) = io.set_nodelay(true) {
                    tracing::debug!(%err, "could not switch off Nagle's algorithm on a client connection");
                }
                let peer = io.peer_addr().ok();
                Ok::<_, actix_http::error::DispatchError>((json_refusals::JsonRefusals::new(io), peer))
            })
            .and_then(http)
        })?;
        Ok(builder.run())
    }
}

/// The grace period in whole seconds, as actix-web counts it (rounded up).
fn grace_secs(grace: f64) -> u64 {
    // Validated finite, non-negative and at most a year.
    grace.ceil().clamp(0.0, 365.0 * 24.0 * 3600.0) as u64
}

/// SIGTERM and SIGINT, as one stream.
struct StopSignals {
    term: actix_rt::signal::unix::Signal,
    int: actix_rt::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> io::Result<StopSignals> {
        use actix_rt::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next stop signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The request line for the access log, with the values of query parameters that may carry a
/// credential (`token`, `key`, `api_key`, `password`, …) replaced by `***`.
fn access_line(
    method: &actix_web::http::Method,
    uri: &actix_web::http::Uri,
    version: actix_web::http::Version,
) -> String {
    let path = uri.path();
    let line = match uri.query() {
        None => path.to_owned(),
        Some(query) => {
            // `;` separates pairs too for some parsers.
            let pairs: Vec<String> = query
                .split('&')
                .flat_map(|p| p.split(';'))
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if secret_name(name) => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
    };
    format!("{method} {line} {version:?}")
}

/// Whether a query parameter's name says it may hold a secret.
fn secret_name(name: &str) -> bool {
    // Named as a query parser reads it: `%74oken` is `token`, `+` a space.
    let name = name.replace('+', " ");
    let name = percent_encoding::percent_decode_str(&name)
        .decode_utf8_lossy()
        .to_ascii_lowercase();
    [
        "token",
        "key",
        "secret",
        "password",
        "passwd",
        "auth",
        "signature",
        "sig",
        "jwt",
        "session",
    ]
    .iter()
    .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use actix_web::http::{Method, Uri, Version};

    #[test]
    fn the_access_line_hides_credentials_in_the_query() {
        let uri: Uri = "/api/tags?token=eyJ.a.b&api_key=sk-123&x=1&Authorization=Bearer%20z&flag"
            .parse()
            .unwrap();
        assert_eq!(
            super::access_line(&Method::GET, &uri, Version::HTTP_11),
            "GET /api/tags?token=***&api_key=***&x=1&Authorization=***&flag HTTP/1.1"
        );
        let uri: Uri = "/api/tags?%74oken=a&tok%65n=b&x=1;token=c".parse().unwrap();
        assert_eq!(
            super::access_line(&Method::GET, &uri, Version::HTTP_11),
            "GET /api/tags?%74oken=***&tok%65n=***&x=1&token=*** HTTP/1.1"
        );
        let uri: Uri = "/api/chat".parse().unwrap();
        assert_eq!(
            super::access_line(&Method::POST, &uri, Version::HTTP_2),
            "POST /api/chat HTTP/2.0"
        );
    }
}

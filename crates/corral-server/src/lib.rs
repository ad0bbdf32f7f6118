//! Corral's HTTP server.
#![doc = include_str!("../README.md")]

pub mod auth;
mod catalogue;
mod client_gone;
mod config_watch;
mod cors;
mod discovery;
mod error;
mod fleet;
mod guard;
mod handlers;
mod health_check;
mod instances;
mod password_pool;
mod proxy;
pub mod rlimit;
mod routes;
mod state;

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use corral_config::Settings;

pub use error::AppError;
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
        routes::configure(cfg);
    }

    /// Starts the gateway's background work (catalogue refresh, health checks) on the
    /// current actix system. Call it once, before serving.
    pub fn start(&self) {
        fleet::spawn_refresher(self.shared.clone());
        config_watch::spawn(self.shared.clone());
        health_check::spawn(self.shared.clone());
    }

    /// Serves the gateway on `listener` until the process is stopped.
    pub async fn serve(self, listener: TcpListener) -> io::Result<()> {
        self.server(listener)?.await
    }

    /// Builds the HTTP server on `listener` without awaiting it; the caller runs it and may
    /// stop it through its handle (tests do).
    pub fn server(self, listener: TcpListener) -> io::Result<actix_web::dev::Server> {
        let settings = self.shared.settings();
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let cors_origins = settings.server.cors_allow_origin.clone();
        let corral = self.clone();
        let server = HttpServer::new(move || {
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
                .wrap(cors::cors(&cors_origins))
                .wrap(
                    actix_web::middleware::Logger::new("%{client}xi \"%{request}xi\" %s %b %Dms")
                        .custom_request_replace("client", |req| {
                            guard::client_ip(req.request()).map_or_else(|| "-".to_owned(), |ip| ip.to_string())
                        })
                        .custom_request_replace("request", |req| access_line(req.method(), req.uri(), req.version()))
                        .log_target("corral::access"),
                )
                .configure(|cfg| corral.configure(cfg))
        })
        .workers(workers)
        // Streams end with small writes (the last chunk, the chunked terminator): Nagle's
        // algorithm would hold them for the client's delayed ACK on every reused connection.
        .tcp_nodelay(true)
        .on_connect(client_gone::on_connect)
        .listen(listener)?
        .run();
        Ok(server)
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

//! Test harness: a gateway on a loopback port in front of simulators, and small client helpers.

use std::net::TcpListener;
use std::time::Duration;

use awc::Client;
use bytes::Bytes;
use corral_config::Settings;
use corral_server::Corral;
use corral_sim::{SimConfig, SimHandle};
use futures_util::StreamExt;

/// A gateway running in this test's actix system.
pub struct Gateway {
    pub url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Gateway {
    /// Starts a gateway with `settings` on a free loopback port.
    pub async fn start(settings: Settings) -> Gateway {
        Gateway::start_with(settings, |_| {})
    }

    /// Starts a gateway with `settings` whose finished requests `observer` watches.
    pub async fn watched(
        settings: Settings,
        observer: std::sync::Arc<dyn corral_server::exchange::Observer>,
    ) -> Gateway {
        Gateway::start_with(settings, |shared| shared.exchanges.observe(observer))
    }

    /// Starts a gateway with `settings` on a free loopback port, after `setup` saw its state.
    fn start_with(mut settings: Settings, setup: impl FnOnce(&corral_server::Shared)) -> Gateway {
        settings.server.workers = 1;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let corral = Corral::new(settings).open_access();
        setup(corral.shared());
        corral.start();
        let server = corral.server(listener).unwrap();
        let handle = server.handle();
        actix_rt::spawn(server);
        Gateway { url, handle }
    }

    /// Starts a gateway whose only instance is `upstream`.
    pub async fn in_front_of(upstream: &str) -> Gateway {
        Gateway::start(settings_for(&[upstream])).await
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Settings with these instances and fast timeouts.
pub fn settings_for(upstreams: &[&str]) -> Settings {
    let mut settings = Settings::default();
    settings.ollama.base_urls = upstreams.iter().map(|u| (*u).to_owned()).collect();
    settings.upstream.connect_timeout = 1.0;
    settings.upstream.discovery_timeout = 1.0;
    settings
}

/// A simulator holding `llama3.2` and `all-minilm`, answering as fast as it can.
pub async fn sim() -> SimHandle {
    SimHandle::start(SimConfig::default()).await.unwrap()
}

/// A client without an overall timeout (streams may be long).
pub fn client() -> Client {
    Client::builder().disable_timeout().finish()
}

/// A chat body for `model` asking for `chunks` content chunks.
pub fn chat_body(model: &str, chunks: usize, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Tell me about corrals."}],
        "stream": stream,
        "options": {"num_predict": chunks, "seed": 7},
    })
}

/// Reads a response body to its end.
pub async fn body_of<S>(resp: &mut awc::ClientResponse<S>) -> Bytes
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    resp.body().limit(64 * 1024 * 1024).await.unwrap()
}

/// Reads NDJSON lines as they arrive until `n` full lines are in, or the timeout ends.
pub async fn read_lines<S>(resp: &mut awc::ClientResponse<S>, n: usize, timeout: Duration) -> Vec<String>
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut buf = Vec::new();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while lines.len() < n {
        let next = tokio::time::timeout_at(deadline, resp.next()).await;
        let Ok(Some(chunk)) = next else { break };
        buf.extend_from_slice(&chunk.unwrap());
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            lines.push(String::from_utf8(line[..line.len() - 1].to_vec()).unwrap());
        }
    }
    lines
}

/// Every line of an NDJSON body.
pub fn lines(body: &[u8]) -> Vec<serde_json::Value> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// Polls `cond` until it holds or two seconds pass.
pub async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// An address nothing listens on.
pub fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

impl Gateway {
    /// Starts a gateway whose configuration lives in the database at `db_url`, letting every
    /// caller in.
    pub async fn with_store(settings: Settings, db_url: &str) -> Gateway {
        Gateway::store_backed(settings, db_url, false).await
    }

    /// Starts a gateway on the database at `db_url` that authenticates its callers.
    pub async fn with_auth(settings: Settings, db_url: &str) -> Gateway {
        Gateway::store_backed(settings, db_url, true).await
    }

    /// Like [`Gateway::with_auth`], also returning the gateway's state (its limit clock).
    pub async fn with_auth_state(settings: Settings, db_url: &str) -> (Gateway, std::sync::Arc<corral_server::Shared>) {
        let mut settings = settings;
        settings.server.workers = 1;
        let store = corral_store::Store::open(db_url, 2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let corral = Corral::with_store(settings, store).unwrap();
        let shared = corral.shared().clone();
        corral.start();
        let server = corral.server(listener).unwrap();
        let handle = server.handle();
        actix_rt::spawn(server);
        (Gateway { url, handle }, shared)
    }

    async fn store_backed(mut settings: Settings, db_url: &str, auth: bool) -> Gateway {
        settings.server.workers = 1;
        let store = corral_store::Store::open(db_url, 2).unwrap();
        store.migrate().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let corral = Corral::with_store(settings, store).unwrap();
        let corral = if auth { corral } else { corral.open_access() };
        corral.start();
        let server = corral.server(listener).unwrap();
        let handle = server.handle();
        actix_rt::spawn(server);
        Gateway { url, handle }
    }
}

/// A TCP relay the test can cut and restore, standing between Corral and its database.
pub struct Relay {
    pub addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    /// Relays a free loopback port to `target`.
    pub fn start(target: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (open2, live2) = (open.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !open2.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                {
                    let mut live = live2.lock().unwrap();
                    live.push(client.try_clone().unwrap());
                    live.push(server.try_clone().unwrap());
                }
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay { addr, open, live }
    }

    /// Breaks every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::Release);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Relays a free loopback port to the PostgreSQL server of `db_url` (which comes from
    /// `TEST_DATABASE_URL`, whatever server that names).
    pub fn in_front_of(db_url: &str) -> Relay {
        use std::net::ToSocketAddrs;
        let parsed = url::Url::parse(db_url).unwrap_or_else(|e| panic!("{db_url} is not a URL: {e}"));
        let host = parsed
            .host_str()
            .unwrap_or_else(|| panic!("the test database URL names no TCP host"));
        let target = (host.trim_matches(['[', ']']), parsed.port().unwrap_or(5432))
            .to_socket_addrs()
            .unwrap()
            .next()
            .unwrap_or_else(|| panic!("{host} does not resolve"));
        Relay::start(target)
    }

    /// `url` with its `host:port` replaced by the relay's.
    pub fn route(&self, url: &str) -> String {
        let mut routed = url::Url::parse(url).unwrap();
        routed.set_host(Some(&self.addr.ip().to_string())).unwrap();
        routed.set_port(Some(self.addr.port())).unwrap();
        routed.to_string()
    }
}

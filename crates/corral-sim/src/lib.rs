//! A fast, faithful Ollama simulator.
#![doc = include_str!("../README.md")]
// Handlers answer early with a whole response, so their `Err` variants are responses.
#![allow(clippy::result_large_err)]

mod config;
mod control;
mod native;
mod openai;
mod state;
mod text;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

pub use config::{Faults, SimConfig, SimModel};
pub use state::{RecordedRequest, Stats};

use state::Sim;

/// A running simulator.
pub struct SimHandle {
    sim: Arc<Sim>,
    addr: SocketAddr,
    server: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimHandle {
    /// Starts a simulator on a free loopback port, in the current actix system.
    pub async fn start(config: SimConfig) -> io::Result<SimHandle> {
        SimHandle::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a simulator on `addr`, in the current actix system.
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> io::Result<SimHandle> {
        let listener = TcpListener::bind(addr)?;
        let (sim, server, addr) = build(config, listener)?;
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(SimHandle {
            sim,
            addr,
            server: handle,
            thread: None,
        })
    }

    /// Starts a simulator on `addr` with its own actix system on a new thread, for callers
    /// that do not run one (benchmarks, the `corral` binary's demo mode).
    pub fn spawn_thread(config: SimConfig, addr: SocketAddr) -> io::Result<SimHandle> {
        let listener = TcpListener::bind(addr)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("corral-sim".to_owned())
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(async move {
                    match build(config, listener) {
                        Ok((sim, server, addr)) => {
                            let _ = tx.send(Ok((sim, server.handle(), addr)));
                            let _ = server.await;
                        }
                        Err(err) => {
                            let _ = tx.send(Err(err));
                        }
                    }
                });
            })?;
        let (sim, server, addr) = rx.recv().map_err(|e| io::Error::other(e.to_string()))??;
        Ok(SimHandle {
            sim,
            addr,
            server,
            thread: Some(thread),
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A copy of the counters.
    pub fn stats(&self) -> Stats {
        self.sim.stats()
    }

    /// The last request received on `path` (control routes excluded), if any: unlike
    /// `stats().last_request`, not displaced by the gateway's own listings and health checks.
    pub fn last_request_to(&self, path: &str) -> Option<RecordedRequest> {
        self.sim.last_request_to(path)
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        self.sim.reset_stats();
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.sim.set_faults(faults);
    }

    /// Lets every stream held at the latch continue.
    pub fn release_latch(&self) {
        self.sim.release_latch();
    }

    /// Replaces the models the instance holds.
    pub fn set_models(&self, models: Vec<SimModel>) {
        self.sim.set_models(models);
    }

    /// The names of the models loaded now.
    pub fn loaded_models(&self) -> Vec<String> {
        self.sim.loaded_models()
    }

    /// Stops the server and frees its port.
    pub async fn stop(mut self) {
        self.server.stop(false).await;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Built = (Arc<Sim>, actix_web::dev::Server, SocketAddr);

fn build(config: SimConfig, listener: TcpListener) -> io::Result<Built> {
    let addr = listener.local_addr()?;
    let workers = config.workers.max(1);
    let sim = Arc::new(Sim::new(config));
    let data = web::Data::from(sim.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(256 * 1024 * 1024))
            .configure(control::routes)
            .configure(native::routes)
            .configure(openai::routes)
            .default_service(web::to(native::not_found))
    })
    .workers(workers)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((sim, server, addr))
}

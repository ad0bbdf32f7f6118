//! `corral serve`: listen, open and migrate the database, start the gateway and serve until a
//! stop signal has drained it; the labelled demo mode.

use std::net::TcpListener;

use anyhow::Context;
use corral_config::Settings;

use crate::cli::ServeArgs;
use crate::setup::{init_tracing, open_store};

pub fn serve(mut settings: Settings, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(host) = args.host {
        settings.server.host = host;
    }
    if let Some(port) = args.port {
        settings.server.port = port;
    }
    init_tracing(&settings.server.log, &settings.server.log_format);
    // Many streams need many descriptors: the soft limit goes up to the hard one (logged).
    corral_server::rlimit::raise_open_files();
    let local_ollama = args
        .demo_ollama_url
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| Settings::default().ollama.base_urls[0].clone());
    // Keeps the simulator running for the life of the gateway.
    let _simulator = if args.no_simulator {
        None
    } else {
        demo_simulator(&mut settings, &local_ollama)?
    };
    let addr = (settings.server.host.as_str(), settings.server.port);
    let listener = TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {}:{}", settings.server.host, settings.server.port))?;
    let local = listener.local_addr()?;
    let store = open_store(&settings)?;
    let ran = store.migrate().context("running database migrations")?;
    tracing::info!(database = store.name(), migrations_applied = ran, "database ready");
    if store.count_users()? == 0 {
        tracing::warn!(
            "no accounts yet: every API route answers 401 until one exists. Sign up the first \
             account (it becomes admin) with POST /api/v1/auths/signup, or run \
             `corral user create --admin --email you@example.com`"
        );
    }
    let corral = corral_server::Corral::with_store(settings, store).context("loading the saved configuration")?;
    // Spans go over OTLP only when the standard OpenTelemetry variables say where.
    let corral = match corral_server::telemetry::endpoint_from_env(|name| std::env::var(name).ok()) {
        Some(endpoint) => {
            let telemetry = corral_server::telemetry::Telemetry::otlp(&endpoint)
                .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
            tracing::info!(%endpoint, "exporting traces over OTLP/HTTP");
            corral.with_telemetry(telemetry)
        }
        None => corral,
    };
    let stand_in = _simulator.as_ref().map(corral_sim::SimHandle::url);
    actix_rt::System::new().block_on(async move {
        corral.start();
        if let Some(stand_in) = stand_in {
            watch_for_ollama(corral.shared().clone(), stand_in, local_ollama);
        }
        tracing::info!(address = %local, "corral listening on http://{local}");
        corral.serve(listener).await
    })?;
    Ok(())
}

/// When Corral is left at its default upstream and no Ollama answers at `local_ollama` (the
/// default address unless `--demo-ollama-url` says otherwise), starts the built-in simulator in
/// its place, so a newcomer gets a working gateway, and says so loudly.
fn demo_simulator(settings: &mut Settings, local_ollama: &str) -> anyhow::Result<Option<corral_sim::SimHandle>> {
    if settings.ollama.base_urls != Settings::default().ollama.base_urls || reachable(local_ollama) {
        return Ok(None);
    }
    let config = corral_sim::SimConfig {
        version: "0.0.0-corral-simulator".to_owned(),
        tokens_per_sec: 40.0,
        load_time: std::time::Duration::from_millis(800),
        workers: 1,
        ..corral_sim::SimConfig::default()
    };
    let sim = corral_sim::SimHandle::spawn_thread(config, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .context("starting the built-in simulator")?;
    tracing::warn!(
        simulator = %sim.url(),
        "NO OLLAMA ANSWERED at {}. Corral is serving its BUILT-IN SIMULATOR at {} instead: \
         answers are generated filler text, not a language model. Set OLLAMA_BASE_URL (or \
         OLLAMA_BASE_URLS) to your Ollama servers, or pass --no-simulator.",
        local_ollama,
        sim.url()
    );
    settings.ollama.base_urls = vec![sim.url()];
    Ok(Some(sim))
}

/// How often the default Ollama address is tried while the simulator stands in for it.
const OLLAMA_WATCH: std::time::Duration = std::time::Duration::from_secs(2);

/// While the simulator stands in, watches the local Ollama address; once an Ollama answers
/// there (one started after Corral), the gateway serves it instead, and says so.
fn watch_for_ollama(shared: std::sync::Arc<corral_server::Shared>, stand_in: String, local_ollama: String) {
    actix_rt::spawn(async move {
        loop {
            actix_rt::time::sleep(OLLAMA_WATCH).await;
            let current = shared.settings();
            // An admin pointed the gateway elsewhere: the stand-in is no longer in use.
            if current.ollama.base_urls != [stand_in.as_str()] {
                return;
            }
            let url = local_ollama.clone();
            let up = actix_rt::task::spawn_blocking(move || reachable(&url)).await;
            if up.unwrap_or(false) {
                let mut next = (*current).clone();
                next.ollama.base_urls = vec![local_ollama.clone()];
                shared.set_settings(next);
                tracing::warn!(
                    "an Ollama answers at {local_ollama} now: Corral serves it, and no longer the built-in simulator"
                );
                return;
            }
        }
    });
}

/// Whether something accepts TCP connections at `url`'s host and port.
pub fn reachable(url: &str) -> bool {
    let Some(rest) = url.split("://").nth(1) else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let Ok(mut addrs) = std::net::ToSocketAddrs::to_socket_addrs(authority) else {
        return false;
    };
    addrs.any(|a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_millis(500)).is_ok())
}

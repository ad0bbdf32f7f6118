//! `corral-sim`: run a simulated Ollama instance.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use corral_sim::{Faults, SimConfig, SimHandle, SimModel};

/// A fast, faithful Ollama simulator.
#[derive(Debug, Parser)]
#[command(name = "corral-sim", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 11434)]
    port: u16,
    /// A JSON file holding a whole `SimConfig`; flags below override it.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Models held, comma-separated; `name@embedding` or `name@thinking` picks the kind.
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Models loaded at start.
    #[arg(long, value_delimiter = ',')]
    loaded: Vec<String>,
    /// Version reported by `/api/version`.
    #[arg(long)]
    ollama_version: Option<String>,
    /// Tokens per second; 0 is as fast as possible.
    #[arg(long)]
    tokens_per_sec: Option<f64>,
    /// Milliseconds to load a model.
    #[arg(long)]
    load_time_ms: Option<u64>,
    /// Most models loaded at once (0: no limit).
    #[arg(long)]
    max_loaded: Option<usize>,
    /// Requests served at once per model.
    #[arg(long)]
    num_parallel: Option<usize>,
    /// Requests that may wait before the instance answers 503.
    #[arg(long)]
    max_queue: Option<usize>,
    /// Bearer key every request must carry.
    #[arg(long)]
    api_key: Option<String>,
    /// Content chunks when a request sets no `num_predict`.
    #[arg(long)]
    chunks: Option<usize>,
    /// HTTP worker threads.
    #[arg(long)]
    workers: Option<usize>,
    /// Seed mixed into every generation.
    #[arg(long)]
    seed: Option<u64>,
    /// Share of requests (0 to 1) that fail with --error-status.
    #[arg(long)]
    error_rate: Option<f64>,
    /// Status of injected errors.
    #[arg(long, default_value_t = 500)]
    error_status: u16,
    /// Milliseconds before response headers.
    #[arg(long)]
    header_delay_ms: Option<u64>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => serde_json::from_str(&std::fs::read_to_string(path)?).map_err(std::io::Error::other)?,
        None => SimConfig::default(),
    };
    if !args.models.is_empty() {
        config.models = args.models.iter().map(|m| parse_model(m)).collect();
    }
    if !args.loaded.is_empty() {
        config.loaded = args.loaded.clone();
    }
    macro_rules! set {
        ($($field:ident = $value:expr),* $(,)?) => { $(if let Some(v) = $value { config.$field = v; })* };
    }
    set!(
        version = args.ollama_version.clone(),
        tokens_per_sec = args.tokens_per_sec,
        load_time = args.load_time_ms.map(Duration::from_millis),
        max_loaded = args.max_loaded,
        num_parallel = args.num_parallel,
        max_queue = args.max_queue,
        default_chunks = args.chunks,
        workers = args.workers,
        seed = args.seed,
    );
    if args.api_key.is_some() {
        config.api_key = args.api_key.clone();
    }
    if args.error_rate.is_some() || args.header_delay_ms.is_some() {
        config.faults = Faults {
            error_rate: args.error_rate.unwrap_or(0.0),
            error_status: args.error_status,
            header_delay: Duration::from_millis(args.header_delay_ms.unwrap_or(0)),
            ..config.faults
        };
    }
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .map_err(|e| std::io::Error::other(format!("bad address: {e}")))?;
    let handle = SimHandle::spawn_thread(config, addr)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "corral-sim listening on {}", handle.url())?;
    out.flush()?;
    drop(out);
    // Serve until killed.
    loop {
        std::thread::park();
    }
}

fn parse_model(spec: &str) -> SimModel {
    match spec.split_once('@') {
        Some((name, "embedding")) => SimModel::embedding(name),
        Some((name, "thinking")) => SimModel::thinking(name),
        Some((name, _)) => SimModel::chat(name),
        None => SimModel::chat(spec),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Args::command().debug_assert();
    }
}

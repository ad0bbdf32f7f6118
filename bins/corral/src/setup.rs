//! What every command shares: the settings from the file and the environment, the database,
//! logging, the clock.

use std::collections::HashMap;

use anyhow::Context;
use corral_config::Settings;

pub fn load_settings(path: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    let file = match path {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    corral_config::load(file.as_deref(), &env).context("invalid configuration")
}

/// Opens the configured database: `database.url`, else `corral.db` in the data directory.
/// An unreachable database stops start-up within a few seconds with a clear message.
pub fn open_store(settings: &Settings) -> anyhow::Result<corral_store::Store> {
    // Connect without migrating: `serve` and `migrate` run the migrations themselves and report them.
    corral_store::Store::connect(&database_url(settings), settings.database.pool_size).context("opening the database")
}

/// `database.url`, else the `corral.db` file in the data directory.
pub fn database_url(settings: &Settings) -> String {
    match settings.database.url.trim() {
        "" => std::path::Path::new(&settings.server.data_dir)
            .join("corral.db")
            .display()
            .to_string(),
        url => url.to_owned(),
    }
}

/// Logs to standard error through `filter`, as text or (`format` `json`) one JSON object a line.
pub fn init_tracing(filter: &str, format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Opens the database and runs its pending migrations.
pub fn migrated_store(settings: &Settings) -> anyhow::Result<corral_store::Store> {
    let store = open_store(settings)?;
    store.migrate().context("running database migrations")?;
    Ok(store)
}

/// The seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

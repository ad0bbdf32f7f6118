//! The `corral` binary: command line, configuration loading, start.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use corral_config::Settings;

/// One authenticated, load-balanced front door for a fleet of Ollama servers.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about)]
struct Cli {
    /// A TOML configuration file (also `CORRAL_CONFIG`).
    #[arg(long, global = true, env = "CORRAL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gateway (the default).
    Serve(ServeArgs),
    /// Run the database migrations and exit.
    Migrate,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Accounts.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Create an account. The password is the first line of standard input, so it never
    /// shows in the process list or the shell history.
    Create {
        /// The account's email (its sign-in name).
        #[arg(long)]
        email: String,
        /// The display name (default: the email).
        #[arg(long)]
        name: Option<String>,
        /// Make the account an admin.
        #[arg(long, conflicts_with = "role")]
        admin: bool,
        /// The role: admin, user or pending (default: user).
        #[arg(long)]
        role: Option<String>,
    },
    /// List the accounts.
    List,
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Create an `sk-` API key for a user and print it (it is shown this once).
    Create {
        /// The email of the key's owner.
        #[arg(long)]
        user: String,
        /// A label for the key.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Seconds until the key stops working (default: never).
        #[arg(long)]
        expires_in: Option<i64>,
    },
}

#[derive(Debug, Default, clap::Args)]
struct ServeArgs {
    /// Address to listen on (overrides `HOST`).
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on (overrides `PORT`).
    #[arg(long)]
    port: Option<u16>,
    /// Never start the built-in simulator, even when no Ollama answers at the default address.
    #[arg(long)]
    no_simulator: bool,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Validate the configuration and exit: 0 if valid, 1 with the problem otherwise.
    Check,
    /// Print the effective configuration (secrets redacted).
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("corral: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = load_settings(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Config {
            action: ConfigAction::Check,
        } => {
            eprintln!("configuration is valid");
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Show,
        } => {
            eprintln!("{settings:#?}");
            Ok(())
        }
        Command::Migrate => {
            let store = open_store(&settings)?;
            let ran = store.migrate()?;
            eprintln!("{}: {ran} migration(s) applied", store.name());
            Ok(())
        }
        Command::Serve(args) => serve(settings, args),
        Command::User { action } => user(&settings, action),
        Command::Key { action } => key(&settings, action),
    }
}

fn migrated_store(settings: &Settings) -> anyhow::Result<corral_store::Store> {
    let store = open_store(settings)?;
    store.migrate().context("running database migrations")?;
    Ok(store)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn user(settings: &Settings, action: UserAction) -> anyhow::Result<()> {
    let store = migrated_store(settings)?;
    match action {
        UserAction::List => {
            let mut out = std::io::stdout().lock();
            for u in store.list_users()? {
                writeln!(out, "{}\t{}\t{}\t{}", u.id, u.email, u.role.as_str(), u.name)?;
            }
            Ok(())
        }
        UserAction::Create {
            email,
            name,
            admin,
            role,
        } => {
            let role: corral_auth::Role = match (admin, role.as_deref()) {
                (true, _) => corral_auth::Role::Admin,
                (false, Some(r)) => r
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--role must be admin, user or pending"))?,
                (false, None) => corral_auth::Role::User,
            };
            let email = corral_auth::normalize_email(&email);
            anyhow::ensure!(corral_auth::is_valid_email(&email), "{email:?} is not a valid email");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']).to_owned();
            corral_auth::check_password_policy(&password).map_err(|e| anyhow::anyhow!("password: {e}"))?;
            anyhow::ensure!(
                store.get_user_by_email(&email)?.is_none(),
                "an account with the email {email} already exists"
            );
            let new = corral_store::NewUser {
                name: name.unwrap_or_else(|| email.clone()),
                email,
                role,
                // An admin made into an empty table is recorded as the first account.
                first_user_role: (role == corral_auth::Role::Admin).then_some(role),
                profile_image_url: String::new(),
                password_hash: Some(corral_auth::hash_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?),
            };
            let created = store.create_user(&new, unix_now())?;
            // As a first sign-up does, the first account closes sign-up until an admin opens it.
            if store.first_user_id()?.as_deref() == Some(created.id.as_str())
                && store.get_setting(corral_store::SIGNUP_SETTING)?.is_none()
            {
                store.put_setting(corral_store::SIGNUP_SETTING, &false.into(), unix_now())?;
            }
            eprintln!(
                "created {} ({}), id {}",
                created.email,
                created.role.as_str(),
                created.id
            );
            Ok(())
        }
    }
}

fn key(settings: &Settings, action: KeyAction) -> anyhow::Result<()> {
    let store = migrated_store(settings)?;
    match action {
        KeyAction::Create { user, name, expires_in } => {
            let email = corral_auth::normalize_email(&user);
            let owner = store
                .get_user_by_email(&email)?
                .with_context(|| format!("no account with the email {email}"))?;
            anyhow::ensure!(expires_in.is_none_or(|s| s > 0), "--expires-in must be positive");
            let (plain, hash, prefix) = corral_auth::generate_api_key();
            let now = unix_now();
            let new = corral_store::NewApiKey {
                user_id: owner.id,
                name,
                prefix,
                hash,
                expires_at: expires_in.map(|s| now.saturating_add(s)),
            };
            let key = store.create_api_key(&new, now)?;
            eprintln!("created API key {} for {email}; it is shown only now:", key.id);
            // The key is the command's output, on standard output alone, for scripts.
            writeln!(std::io::stdout().lock(), "{}", plain.expose())?;
            Ok(())
        }
    }
}

fn load_settings(path: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    let file = match path {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    corral_config::load(file.as_deref(), &env).context("invalid configuration")
}

fn serve(mut settings: Settings, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(host) = args.host {
        settings.server.host = host;
    }
    if let Some(port) = args.port {
        settings.server.port = port;
    }
    init_tracing(&settings.server.log);
    corral_server::rlimit::raise_open_files();
    // Keeps the simulator running for the life of the gateway.
    let _simulator = if args.no_simulator {
        None
    } else {
        demo_simulator(&mut settings)?
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
    let stand_in = _simulator.as_ref().map(corral_sim::SimHandle::url);
    actix_rt::System::new().block_on(async move {
        corral.start();
        if let Some(stand_in) = stand_in {
            watch_for_ollama(corral.shared().clone(), stand_in);
        }
        tracing::info!(address = %local, "corral listening on http://{local}");
        corral.serve(listener).await
    })?;
    Ok(())
}

/// When Corral is left at its default upstream and no Ollama answers there, starts the
/// built-in simulator in its place, so a newcomer gets a working gateway, and says so loudly.
fn demo_simulator(settings: &mut Settings) -> anyhow::Result<Option<corral_sim::SimHandle>> {
    let default = Settings::default().ollama.base_urls;
    if settings.ollama.base_urls != default || reachable(&default[0]) {
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
        default[0],
        sim.url()
    );
    settings.ollama.base_urls = vec![sim.url()];
    Ok(Some(sim))
}

/// How often the default Ollama address is tried while the simulator stands in for it.
const OLLAMA_WATCH: std::time::Duration = std::time::Duration::from_secs(2);

/// While the simulator stands in, watches the default Ollama address; once an Ollama answers
/// there (one started after Corral), the gateway serves it instead, and says so.
fn watch_for_ollama(shared: std::sync::Arc<corral_server::Shared>, stand_in: String) {
    let default = Settings::default().ollama.base_urls;
    actix_rt::spawn(async move {
        loop {
            actix_rt::time::sleep(OLLAMA_WATCH).await;
            let current = shared.settings();
            // An admin pointed the gateway elsewhere: the stand-in is no longer in use.
            if current.ollama.base_urls != [stand_in.as_str()] {
                return;
            }
            let url = default[0].clone();
            let up = actix_rt::task::spawn_blocking(move || reachable(&url)).await;
            if up.unwrap_or(false) {
                let mut next = (*current).clone();
                next.ollama.base_urls.clone_from(&default);
                shared.set_settings(next);
                tracing::warn!(
                    "an Ollama answers at {} now: Corral serves it, and no longer the built-in simulator",
                    default[0]
                );
                return;
            }
        }
    });
}

/// Whether something accepts TCP connections at `url`'s host and port.
fn reachable(url: &str) -> bool {
    let Some(rest) = url.split("://").nth(1) else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let Ok(mut addrs) = std::net::ToSocketAddrs::to_socket_addrs(authority) else {
        return false;
    };
    addrs.any(|a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_millis(500)).is_ok())
}

/// Opens the configured database: `database.url`, else `corral.db` in the data directory.
/// An unreachable database stops start-up within a few seconds with a clear message.
fn open_store(settings: &Settings) -> anyhow::Result<corral_store::Store> {
    let url = match settings.database.url.trim() {
        "" => std::path::Path::new(&settings.server.data_dir)
            .join("corral.db")
            .display()
            .to_string(),
        url => url.to_owned(),
    };
    // Connect without migrating: `serve` and `migrate` run the migrations themselves and report them.
    corral_store::Store::connect(&url, settings.database.pool_size).context("opening the database")
}

fn init_tracing(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}

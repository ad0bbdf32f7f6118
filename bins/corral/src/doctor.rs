//! `corral doctor`: checks a deployment and says what to fix. Each check prints `ok`, `warn`
//! or `FAIL` with what it found and, when something is wrong, the fix; the exit status is 1
//! when any check failed.
//!
//! It checks the configuration, the database (reachable, migrated), the signing secret, each
//! enabled instance (reachable, accepting its key, answering as an Ollama), the open-file
//! limit, and the clocks (this machine's against the database's and the instances').

use std::path::Path;
use std::process::ExitCode;

use corral_config::Settings;
use corral_server::probe::Answer;

/// The secrets published as examples, which sign nothing safely.
const KNOWN_SECRETS: [&str; 6] = ["t0p-s3cr3t", "secret", "changeme", "change-me", "corral", "password"];

/// Open files below which the gateway runs short under load (each stream holds two sockets).
const FILE_LIMIT_LOW: u64 = 4096;

/// Clock differences, in seconds, worth a warning and a failure (session tokens carry times).
const SKEW_WARN: f64 = 2.0;
const SKEW_FAIL: f64 = 60.0;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Warn,
    Fail,
}

/// The findings so far.
#[derive(Default)]
struct Report {
    worst: Option<Level>,
}

impl Report {
    fn say(&mut self, level: Level, what: &str, found: &str, fix: Option<&str>) {
        let tag = match level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        // One line per finding, however the driver wrapped its message.
        let found = found.split_whitespace().collect::<Vec<_>>().join(" ");
        match fix {
            Some(fix) => eprintln!("{tag}  {what}: {found}\n      fix: {fix}"),
            None => eprintln!("{tag}  {what}: {found}"),
        }
        self.worst = self.worst.max(Some(level));
    }
}

/// Runs every check on the configuration at `config` (and the environment); the exit status.
pub fn run(config: Option<&Path>) -> ExitCode {
    let mut report = Report::default();
    let settings = match crate::setup::load_settings(config) {
        Ok(s) => {
            let from = config.map_or_else(|| "environment and defaults".to_owned(), |p| p.display().to_string());
            report.say(Level::Ok, "configuration", &format!("valid ({from})"), None);
            s
        }
        Err(e) => {
            report.say(
                Level::Fail,
                "configuration",
                &format!("{e:#}"),
                Some("correct the named setting (`corral config check` repeats this check); docs/configuration.md lists them all"),
            );
            return finish(&report);
        }
    };
    let effective = database(&mut report, &settings).unwrap_or(settings);
    instances(&mut report, &effective);
    file_limit(&mut report);
    finish(&report)
}

fn finish(report: &Report) -> ExitCode {
    if report.worst == Some(Level::Fail) {
        eprintln!("\nsomething needs fixing (see FAIL above)");
        ExitCode::FAILURE
    } else {
        eprintln!("\nno problem found");
        ExitCode::SUCCESS
    }
}

/// The database, the secret and the database's clock; returns the settings with what admins
/// saved in the database applied, as the gateway would serve them.
fn database(report: &mut Report, settings: &Settings) -> Option<Settings> {
    let url = crate::setup::database_url(settings);
    if !url.starts_with("postgres") {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(&url);
        if !Path::new(path).exists() {
            report.say(
                Level::Fail,
                "database",
                &format!("no SQLite database at {path}"),
                Some("run `corral migrate` to create it (`corral serve` does too), or set DATA_DIR / DATABASE_URL to the existing one"),
            );
            secret(report, settings, None);
            return None;
        }
    }
    let store = match crate::setup::open_store(settings) {
        Ok(store) => store,
        Err(e) => {
            report.say(
                Level::Fail,
                "database",
                &format!("{e:#}"),
                Some("start the database or correct DATABASE_URL (for SQLite, DATA_DIR must be writable)"),
            );
            secret(report, settings, None);
            return None;
        }
    };
    match store.pending_migrations() {
        Ok(pending) if pending.is_empty() => {
            report.say(
                Level::Ok,
                "database",
                &format!("{} answers and is migrated", store.name()),
                None,
            );
        }
        Ok(pending) => {
            report.say(
                Level::Fail,
                "database",
                &format!(
                    "{} answers but {} migration(s) are pending ({})",
                    store.name(),
                    pending.len(),
                    pending.join(", ")
                ),
                Some("run `corral migrate` (`corral serve` also migrates at start)"),
            );
            secret(report, settings, None);
            return None;
        }
        Err(e) => {
            report.say(
                Level::Fail,
                "database",
                &e.to_string(),
                Some("run `corral migrate` and read its error"),
            );
            return None;
        }
    }
    secret(report, settings, Some(&store));
    match store.database_clock() {
        Ok(Some(theirs)) => skew(report, "clock against the database", theirs),
        Ok(None) => {}
        Err(e) => report.say(Level::Warn, "clock against the database", &e.to_string(), None),
    }
    // Saved connection keys are sealed with a key derived from the secret key: the configured
    // one, else the one kept in the database.
    let configured = settings.auth.secret_key.trim();
    let secret = if configured.is_empty() {
        store
            .get_setting(corral_server::auth::SECRET_SETTING)
            .ok()
            .flatten()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    } else {
        configured.to_owned()
    };
    let sealer = corral_store::Sealer::from_secret(secret.as_bytes());
    match store.load_ollama(&sealer) {
        Ok(Some(stored)) => {
            let ollama = corral_config::OllamaSettings {
                enable: stored.enable,
                base_urls: stored.base_urls,
                api_configs: stored.api_configs,
                models_cache_ttl: settings.ollama.models_cache_ttl,
            };
            match settings.with_stored_ollama(ollama) {
                Ok(s) => Some(s),
                Err(e) => {
                    report.say(
                        Level::Fail,
                        "saved configuration",
                        &format!("the connections an admin saved are unusable: {e}"),
                        Some("correct them at POST /ollama/config/update"),
                    );
                    None
                }
            }
        }
        Ok(None) => None,
        Err(e) => {
            report.say(Level::Fail, "saved configuration", &e.to_string(), None);
            None
        }
    }
}

/// The signing secret: configured and not a published example, or generated and kept in the
/// database.
fn secret(report: &mut Report, settings: &Settings, store: Option<&corral_store::Store>) {
    let configured = settings.auth.secret_key.trim();
    let fix = "set CORRAL_SECRET_KEY (or WEBUI_SECRET_KEY) to a long random value, e.g. `openssl rand -hex 32`, the same on every replica";
    if configured.is_empty() {
        let saved = store.and_then(|s| s.get_setting(corral_server::auth::SECRET_SETTING).ok().flatten());
        match saved {
            Some(_) => report.say(Level::Ok, "secret key", "generated once and kept in the database", None),
            None => report.say(
                Level::Ok,
                "secret key",
                "not set: the first `corral serve` generates one and keeps it in the database",
                None,
            ),
        }
    } else if KNOWN_SECRETS.iter().any(|k| k.eq_ignore_ascii_case(configured)) {
        report.say(
            Level::Fail,
            "secret key",
            "set to a published example value: anyone can sign sessions",
            Some(fix),
        );
    } else if configured.len() < 32 {
        report.say(
            Level::Warn,
            "secret key",
            &format!("only {} characters long", configured.len()),
            Some(fix),
        );
    } else {
        report.say(Level::Ok, "secret key", "set", None);
    }
}

/// Asks each enabled instance for its listing with its key.
fn instances(report: &mut Report, settings: &Settings) {
    if !settings.ollama.enable {
        report.say(
            Level::Warn,
            "instances",
            "the Ollama API is disabled (ENABLE_OLLAMA_API=false)",
            None,
        );
        return;
    }
    let answers = actix_rt::System::new().block_on(corral_server::probe::instances(settings));
    if answers.is_empty() {
        report.say(
            Level::Fail,
            "instances",
            "no enabled instance",
            Some("set OLLAMA_BASE_URLS, or enable a connection at /ollama/config/update"),
        );
        return;
    }
    for (idx, answer) in answers {
        let url = settings
            .ollama
            .base_urls
            .get(idx)
            .map_or_else(String::new, |u| corral_config::loggable_url(u).into_owned());
        let what = format!("instance {idx} ({url})");
        match answer {
            Answer::Listed { models, clock } => {
                report.say(Level::Ok, &what, &format!("answers with its key; {models} model(s)"), None);
                if let Some(theirs) = clock {
                    skew(report, &format!("clock against instance {idx}"), theirs as f64);
                }
            }
            Answer::Refused { status, keyed: true } => report.say(
                Level::Fail,
                &what,
                &format!("refused the key ({status})"),
                Some(&format!("set the instance's key in OLLAMA_API_CONFIGS[\"{idx}\"].key (admin: POST /ollama/config/update)")),
            ),
            Answer::Refused { status, keyed: false } => report.say(
                Level::Fail,
                &what,
                &format!("asks for a key ({status}) and none is configured"),
                Some(&format!("set OLLAMA_API_CONFIGS[\"{idx}\"].key to the key its proxy expects")),
            ),
            Answer::Odd(why) => report.say(Level::Fail, &what, &why, Some("check that the URL points at an Ollama server (its root answers \"Ollama is running\")")),
            Answer::Unreachable(why) => report.say(
                Level::Fail,
                &what,
                &format!("unreachable: {why}"),
                Some("start the instance, or correct its URL in OLLAMA_BASE_URLS; a remote Ollama must listen beyond loopback (OLLAMA_HOST=0.0.0.0)"),
            ),
        }
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux).
fn file_limit(report: &mut Report) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .map(|v| {
            if v == "unlimited" {
                Some(u64::MAX)
            } else {
                v.parse().ok()
            }
        });
    match soft.flatten() {
        Some(n) if n >= FILE_LIMIT_LOW => report.say(Level::Ok, "open-file limit", &n.to_string(), None),
        Some(n) => report.say(
            Level::Fail,
            "open-file limit",
            &format!("{n}: each stream holds two sockets, so the gateway runs short under load"),
            Some("raise it to 65536 or more (systemd: LimitNOFILE=65536; shell: ulimit -n 65536; containers: --ulimit nofile=65536)"),
        ),
        None => report.say(Level::Warn, "open-file limit", "unknown (no /proc/self/limits)", None),
    }
}

/// Compares this machine's clock with `theirs` (seconds since the epoch).
fn skew(report: &mut Report, what: &str, theirs: f64) {
    let ours = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let off = ours - theirs;
    let found = format!("{off:+.1} s");
    let fix = "synchronise the clocks (systemd-timesyncd, chrony or ntpd): session tokens carry times";
    match off.abs() {
        d if d >= SKEW_FAIL => report.say(Level::Fail, what, &found, Some(fix)),
        d if d >= SKEW_WARN => report.say(Level::Warn, what, &found, Some(fix)),
        _ => report.say(Level::Ok, what, &found, None),
    }
}

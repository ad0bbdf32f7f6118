//! The command line: every command and its arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// One authenticated, load-balanced front door for a fleet of Ollama servers.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about)]
pub struct Cli {
    /// A TOML configuration file (also `CORRAL_CONFIG`).
    #[arg(long, global = true, env = "CORRAL_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gateway (the default).
    Serve(ServeArgs),
    /// Run the database migrations and exit.
    Migrate,
    /// Check the deployment (configuration, database, secret, instances and their keys, file
    /// limit, clocks) and say what to fix; exits 1 when something is wrong.
    Doctor,
    /// Ask the gateway on this machine for `/health` (with `--ready`, `/ready`): exit 0 on
    /// 200, else 1. For container health checks.
    Health {
        /// Ask `/ready` instead of `/health`.
        #[arg(long)]
        ready: bool,
    },
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
    /// Print usage (requests and tokens) from the database: the table `GET /api/v1/usage` gives.
    Usage(UsageArgs),
    /// Limits per API key, user and group (requests and tokens per minute, concurrent
    /// requests, token budgets). A running gateway picks changes up within half a second.
    Limits {
        #[command(subcommand)]
        action: LimitsAction,
    },
}

/// `corral usage`: the same parameters as `GET /api/v1/usage`.
#[derive(Debug, Default, clap::Args)]
pub struct UsageArgs {
    /// Start: a date (2026-12-05), an RFC 3339 time or Unix seconds (default: the first record).
    #[arg(long)]
    pub from: Option<String>,
    /// End: the same forms; a bare date includes that whole day (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Group by user, key, group, model, instance or day (comma-separated or repeated).
    #[arg(long)]
    pub group_by: Vec<String>,
    /// Only this user (an id, or an email).
    #[arg(long)]
    pub user: Option<String>,
    /// Only this API key (its id).
    #[arg(long)]
    pub key: Option<String>,
    /// Only this model (as run or as asked for).
    #[arg(long)]
    pub model: Option<String>,
    /// Only this instance (its index in `ollama.base_urls`).
    #[arg(long)]
    pub instance: Option<String>,
    /// Only this group (its id).
    #[arg(long)]
    pub group: Option<String>,
    /// `table`, `csv` or `json`.
    #[arg(long, default_value = "table")]
    pub format: String,
}

/// Whose limits: `key` (by its id), `user` (by id or email) or `group` (by id or name).
#[derive(Debug, Clone, clap::Args)]
pub struct LimitSubject {
    /// key, user or group.
    pub scope: String,
    /// The key's id, the user's id or email, the group's id or name.
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum LimitsAction {
    /// Every limit set, one per line: scope, id, limits as JSON.
    List,
    /// The limits of one key, user or group, as JSON.
    Show(LimitSubject),
    /// Set (replace) the limits of one key, user or group; a limit left out is no limit.
    Set {
        #[command(flatten)]
        subject: LimitSubject,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens (prompt plus completion) per minute.
        #[arg(long)]
        tpm: Option<u64>,
        /// Requests running at once.
        #[arg(long)]
        concurrent: Option<u64>,
        /// A token budget per period.
        #[arg(long)]
        budget: Option<u64>,
        /// The budget's period: day, week or month.
        #[arg(long, requires = "budget", default_value = "month")]
        period: String,
        /// The budget counts the last day, week or 30 days instead of the calendar's.
        #[arg(long, requires = "budget")]
        rolling: bool,
        /// A model the budget counts (repeat for several; default: every model).
        #[arg(long = "model", requires = "budget")]
        models: Vec<String>,
    },
    /// Remove the limits of one key, user or group.
    Remove(LimitSubject),
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
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
pub enum KeyAction {
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
pub struct ServeArgs {
    /// Address to listen on (overrides `HOST`).
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on (overrides `PORT`).
    #[arg(long)]
    pub port: Option<u16>,
    /// Never start the built-in simulator, even when no Ollama answers at the default address.
    #[arg(long)]
    pub no_simulator: bool,
    /// Where the demo mode expects a local Ollama (default: the default of `ollama.base_urls`).
    /// When the instances are left at their default and nothing answers here, the built-in
    /// simulator stands in until an Ollama answers at this address, which then takes over.
    #[arg(long, value_name = "URL")]
    pub demo_ollama_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the configuration and exit: 0 if valid, 1 with the problem otherwise.
    Check,
    /// Print the effective configuration (secrets redacted).
    Show,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}

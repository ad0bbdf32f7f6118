//! The `corral` binary: parses the command line and runs the command.

mod accounts;
mod cli;
mod doctor;
mod health;
mod limits;
mod serve;
mod setup;
mod usage;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, ConfigAction, ServeArgs};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("corral: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.as_deref();
    let settings = || setup::load_settings(config);
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Config { action } => {
            let settings = settings()?;
            match action {
                ConfigAction::Check => eprintln!("configuration is valid"),
                ConfigAction::Show => eprintln!("{settings:#?}"),
            }
        }
        Command::Migrate => {
            let store = setup::open_store(&settings()?)?;
            let ran = store.migrate()?;
            eprintln!("{}: {ran} migration(s) applied", store.name());
        }
        // The doctor reports a bad configuration as one of its findings.
        Command::Doctor => return Ok(doctor::run(config)),
        Command::Health { ready } => return Ok(health::run(&settings()?, ready)),
        Command::Serve(args) => serve::serve(settings()?, args)?,
        Command::User { action } => accounts::user(&settings()?, action)?,
        Command::Key { action } => accounts::key(&settings()?, action)?,
        Command::Usage(args) => usage::run(&settings()?, args)?,
        Command::Limits { action } => limits::run(&settings()?, action)?,
    }
    Ok(ExitCode::SUCCESS)
}

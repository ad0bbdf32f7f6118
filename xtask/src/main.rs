//! `cargo xtask`: developer tasks for the Corral workspace.
//!
//! Run `cargo xtask help` for the list.

mod bench;
mod deps;
mod fuzz;
mod rolling;
mod test;
mod tidy;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("tidy") => tidy::run(&tidy::workspace_root()),
        Some("test") if args.get(1).map(String::as_str) == Some("console") => {
            test::console_tests(&tidy::workspace_root())
        }
        Some("test") => test::run(&tidy::workspace_root()),
        Some("deps") => deps::run(&tidy::workspace_root()),
        Some("bench") => bench::run(&tidy::workspace_root(), &args[1..]),
        Some("fuzz") => fuzz::run(&tidy::workspace_root(), &args[1..]),
        Some("rolling") => rolling::run(&tidy::workspace_root(), &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <test [console]|bench [balance|streams|metering|limits] [--quick] [--smoke]|fuzz [--seconds N|--smoke] [target]|rolling [--quick]|tidy|deps>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

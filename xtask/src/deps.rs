//! `cargo xtask deps`: the dependency rules of ARCHITECTURE.md, checked with `cargo tree`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Crates that do no IO and so must not reach the IO stack.
const PURE: &[&str] = &[
    "corral-config",
    "corral-convert",
    "corral-registry",
    "corral-balance",
    "corral-auth",
];
/// What the pure crates must not depend on.
const IO_STACK: &[&str] = &["actix-web", "awc", "tokio", "diesel"];
/// Crates allowed to name diesel as a direct dependency.
const DIESEL_OK: &[&str] = &["corral-store"];

/// Runs every rule; all violations are reported together.
pub fn run(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    let members = members(root)?;
    for krate in PURE {
        if !members.iter().any(|m| m == krate) {
            eprintln!("deps: {krate} does not exist yet; skipped");
            continue;
        }
        for banned in IO_STACK {
            if depends_on(root, krate, banned, false)? {
                problems.push(format!("{krate} depends on {banned}, but it must do no IO"));
            }
        }
    }
    for krate in members.iter().filter(|m| !DIESEL_OK.contains(&m.as_str())) {
        if depends_on(root, krate, "diesel", true)? {
            problems.push(format!("{krate} depends on diesel; only corral-store may"));
        }
    }
    if problems.is_empty() {
        eprintln!("deps: every dependency rule holds");
        Ok(())
    } else {
        bail!("{}", problems.join("\n"))
    }
}

/// Workspace member package names, from the `crates/` directory.
fn members(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).context("listing crates/")? {
        let entry = entry?;
        if entry.path().join("Cargo.toml").exists() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `krate` depends (normally; directly, or at any depth) on `dep`.
fn depends_on(root: &Path, krate: &str, dep: &str, direct: bool) -> Result<bool> {
    let depth = if direct { "1" } else { "100" };
    let out = Command::new("cargo")
        .args([
            "tree", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}", "--depth", depth,
        ])
        .current_dir(root)
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!("cargo tree -p {krate} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().any(|l| l.split_whitespace().next() == Some(dep)))
}

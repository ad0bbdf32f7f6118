//! Tidy checks over the source tree: module docs, no ignored tests, matching migrations.
//!
//! They also run as a unit test, so `cargo test` enforces them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The workspace root, found from this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs every tidy check and reports all failures at once.
pub fn run(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in ["crates", "bins", "xtask"] {
        collect_rs(&root.join(dir), &mut files)?;
    }
    for file in &files {
        let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let rel = file.strip_prefix(root).unwrap_or(file).display().to_string();
        check_module_doc(&rel, &text, &mut problems);
        check_banned(&rel, &text, &mut problems);
        check_route_registration(&rel, &text, &mut problems);
    }
    check_migrations(root, &mut problems)?;
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("tidy found {} problem(s):\n{}", problems.len(), problems.join("\n"))
    }
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            if name == "target" || name == "node_modules" || name.starts_with('.') {
                continue;
            }
            collect_rs(&path, out)?;
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every module file starts with a `//!` doc line (attributes and blank lines may come first).
fn check_module_doc(rel: &str, text: &str, problems: &mut Vec<String>) {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("#!["));
    match first {
        Some(line) if line.starts_with("//!") => {}
        _ => problems.push(format!("{rel}: module does not start with a `//!` doc comment")),
    }
}

fn check_banned(rel: &str, text: &str, problems: &mut Vec<String>) {
    // The patterns are split so this file does not flag itself.
    let banned = [
        (concat!("#[", "ignore"), "ignored test: CI must run every test"),
        (concat!("#[", "should_panic"), "should_panic: assert the error instead"),
        (concat!("todo", "!("), "todo!: a stub is not done"),
        (concat!("unimplemented", "!("), "unimplemented!: a stub is not done"),
    ];
    for (no, line) in text.lines().enumerate() {
        for (pat, why) in banned {
            if line.contains(pat) {
                problems.push(format!("{rel}:{}: {why}", no + 1));
            }
        }
        if line.ends_with(' ') || line.ends_with('\t') {
            problems.push(format!("{rel}:{}: trailing whitespace", no + 1));
        }
    }
}

/// Routes are registered only through `corral_server::routes::Routes::add`, which takes the
/// route's access level: an actix registration anywhere else in the server would add a route
/// without one.
fn check_route_registration(rel: &str, text: &str, problems: &mut Vec<String>) {
    if !rel.starts_with("crates/corral-server/src/") || rel == "crates/corral-server/src/routes.rs" {
        return;
    }
    let registrations = [
        concat!("web::", "resource("),
        concat!("web::", "scope("),
        concat!("cfg.", "route("),
        concat!("cfg.", "service("),
        concat!(".default_", "service("),
    ];
    for (no, line) in text.lines().enumerate() {
        if let Some(pat) = registrations.iter().find(|p| line.contains(*p)) {
            problems.push(format!(
                "{rel}:{}: `{pat}` registers a route without an access level; use routes::Routes::add",
                no + 1
            ));
        }
    }
}

/// `migrations/postgres` and `migrations/sqlite` hold the same migration directories.
fn check_migrations(root: &Path, problems: &mut Vec<String>) -> Result<()> {
    let list = |dialect: &str| -> Result<Vec<String>> {
        let dir = root.join("migrations").join(dialect);
        let mut names = Vec::new();
        if dir.exists() {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                if entry.path().is_dir() {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    };
    let pg = list("postgres")?;
    let lite = list("sqlite")?;
    if pg != lite {
        problems.push(format!(
            "migrations differ between dialects: postgres {pg:?}, sqlite {lite:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_route_registered_without_a_level_fails_the_check() {
        let mut problems = Vec::new();
        let handler = concat!("    cfg.", "route(\"/secret\", web::get().to(secret));\n");
        super::check_route_registration("crates/corral-server/src/handlers/secret.rs", handler, &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("without an access level"), "{problems:?}");
        let mut problems = Vec::new();
        super::check_route_registration("crates/corral-server/src/routes.rs", handler, &mut problems);
        assert!(problems.is_empty());
    }

    #[test]
    fn tidy() {
        if let Err(err) = super::run(&super::workspace_root()) {
            panic!("{err:#}");
        }
    }
}

//! Database URLs: which backend a URL selects, what its driver is given, and how it is named in messages.

use std::path::Path;

use crate::Backend;

/// How long libpq waits for a PostgreSQL server to accept a connection, in seconds.
const PG_CONNECT_TIMEOUT_SECS: u32 = 3;

/// The backend a URL selects and the string its driver is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) backend: Backend,
    /// A libpq URL with a connect timeout, or a SQLite file path.
    pub(crate) target: String,
}

/// Reads `url`: `postgres://` and `postgresql://` select PostgreSQL; `sqlite://PATH`, `sqlite:PATH` or a
/// plain path select SQLite.
pub(crate) fn parse(url: &str) -> Target {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Target {
            backend: Backend::Postgres,
            target: with_connect_timeout(url),
        };
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    Target {
        backend: Backend::Sqlite,
        target: path.to_owned(),
    }
}

/// The directory a SQLite file lives in, if the path names one.
pub(crate) fn sqlite_parent(path: &str) -> Option<&Path> {
    Path::new(path).parent().filter(|p| !p.as_os_str().is_empty())
}

/// Adds libpq's `connect_timeout` so an unreachable server fails fast, unless the URL sets one.
fn with_connect_timeout(url: &str) -> String {
    if url.contains("connect_timeout=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}connect_timeout={PG_CONNECT_TIMEOUT_SECS}")
}

/// `url` with any password replaced by `***`, for messages and logs.
///
/// Both places a libpq URL can hold a password are covered: `user:password@host` and `?password=…`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = match authority_and_path.rsplit_once('@') {
        Some((creds, host)) => match creds.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{creds}@{host}"),
        },
        None => authority_and_path.to_owned(),
    };
    let Some(query) = query else {
        return format!("{scheme}://{authority}");
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{scheme}://{authority}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_their_backend() {
        let pg = parse("postgres://u@h/db");
        assert_eq!(pg.backend, Backend::Postgres);
        assert_eq!(pg.target, "postgres://u@h/db?connect_timeout=3");
        let pg = parse("postgresql://u@h/db?sslmode=disable&connect_timeout=9");
        assert_eq!(pg.target, "postgresql://u@h/db?sslmode=disable&connect_timeout=9");
        for (url, path) in [
            ("sqlite:///var/lib/corral/db.sqlite", "/var/lib/corral/db.sqlite"),
            ("sqlite://data/corral.db", "data/corral.db"),
            ("sqlite:corral.db", "corral.db"),
            ("/tmp/corral.db", "/tmp/corral.db"),
            ("corral.db", "corral.db"),
        ] {
            assert_eq!(
                parse(url),
                Target {
                    backend: Backend::Sqlite,
                    target: path.to_owned()
                },
                "{url}"
            );
        }
        assert_eq!(sqlite_parent("corral.db"), None);
        assert_eq!(sqlite_parent("data/corral.db"), Some(Path::new("data")));
    }

    #[test]
    fn passwords_are_redacted() {
        for (url, shown) in [
            ("postgres://u:secret@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?user=u&password=secret",
                "postgres://h/db?user=u&password=***",
            ),
            (
                "postgres://u:p@ss@h/db?PASSWORD=x&sslmode=require",
                "postgres://u:***@h/db?PASSWORD=***&sslmode=require",
            ),
            ("/tmp/a.db", "/tmp/a.db"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }
}

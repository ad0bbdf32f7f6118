//! Model names: the implied `:latest` tag and connection prefixes.

/// `name` with `:latest` added when its last path segment has no tag, as Ollama implies it.
pub fn with_latest(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

/// `model` without a leading `<prefix>.`; unchanged when there is no prefix or it does not
/// lead. Only one leading occurrence is removed (Open WebUI removes every occurrence).
pub fn strip_prefix<'a>(model: &'a str, prefix: Option<&str>) -> &'a str {
    match prefix.filter(|p| !p.is_empty()) {
        Some(p) => model
            .strip_prefix(p)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(model),
        None => model,
    }
}

//! Choosing the lowest Ollama version across instances, as Open WebUI reports it.

/// The comparison key of a version string: a leading `v` and everything from the first `-`
/// dropped, then the dot-separated parts as numbers. A part that is not a number counts by
/// its leading digits (`3rc1` is 3, `x` is 0), so no version string can fail the listing.
pub fn version_key(version: &str) -> Vec<u64> {
    let core = version.trim().trim_start_matches('v');
    let core = core.split('-').next().unwrap_or(core);
    core.split('.')
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap_or(0)
        })
        .collect()
}

/// The lowest version among `(instance, version)` pairs, with its instance; `None` if empty.
pub fn lowest_version(versions: &[(usize, String)]) -> Option<(usize, String)> {
    versions
        .iter()
        .min_by(|a, b| version_key(&a.1).cmp(&version_key(&b.1)).then(a.0.cmp(&b.0)))
        .cloned()
}

//! Choosing the lowest Ollama version across instances, as Open WebUI reports it.

/// The comparison key of a version string, as Open WebUI computes it: a leading `v` and
/// everything from the first `-` dropped (`V` too), then the dot-separated parts as numbers.
///
/// Open WebUI crashes on a part that is not a number; here such a part counts by its
/// leading digits (`3rc1` is 3, `x` is 0). A version whose first part has no leading digit
/// at all (`banana`, ``) has no key: it is not a version we can compare.
pub fn version_key(version: &str) -> Option<Vec<u64>> {
    let core = version.trim();
    let core = core.strip_prefix(['v', 'V']).unwrap_or(core);
    let core = core.split('-').next().unwrap_or(core);
    if !core.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(
        core.split('.')
            .map(|part| {
                let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                match digits.as_str() {
                    "" => 0,
                    // Only a number too large for u64 fails here: it is very high, not 0.
                    d => d.parse().unwrap_or(u64::MAX),
                }
            })
            .collect(),
    )
}

/// The lowest version among `(instance, version)` pairs, with its instance; ties go to the
/// lower instance index. Versions without a key rank after every comparable one, so one
/// instance reporting nonsense neither fails the answer nor becomes the fleet's version
/// while another reports a real one. `None` only when `versions` is empty.
pub fn lowest_version(versions: &[(usize, String)]) -> Option<(usize, String)> {
    versions
        .iter()
        .min_by(|a, b| {
            let (ka, kb) = (version_key(&a.1), version_key(&b.1));
            // `None` sorts before `Some` in `Option`'s order, so compare "has no key" first.
            (ka.is_none(), ka).cmp(&(kb.is_none(), kb)).then(a.0.cmp(&b.0))
        })
        .cloned()
}

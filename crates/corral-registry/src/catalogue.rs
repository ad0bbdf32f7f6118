//! The merged catalogue: the listings it answers and the lookups routing needs.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::merge::{annotate, merge_ps, merge_tags, prefix_of};
use crate::{strip_prefix, with_latest, ConnectionView, Entry, RegistryError};

/// The merged catalogue: an immutable value, rebuilt on every refresh and shared as is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalogue {
    entries: Vec<Entry>,
    ps: Vec<Entry>,
    prefixes: HashMap<usize, String>,
    /// Hashed with `foldhash`: every model-running request looks a name up here, several times.
    exact: foldhash::HashMap<String, usize>,
    normalised: foldhash::HashMap<String, usize>,
}

/// The lookup key of a model name: `:latest` implied, case folded.
fn normalise(name: &str) -> String {
    with_latest(name).to_lowercase()
}

/// The longest name [`normalise_ascii`] folds without allocating.
const NAME_BUF: usize = 256;

/// [`normalise`] of an ASCII name, written into `buf` (a lookup on every request, without an
/// allocation); `None` for a longer or non-ASCII name, which [`normalise`] folds instead.
fn normalise_ascii<'b>(name: &str, buf: &'b mut [u8; NAME_BUF]) -> Option<&'b str> {
    const LATEST: &[u8] = b":latest";
    let last = name.rsplit('/').next().unwrap_or(name);
    let tail: &[u8] = if last.contains(':') { b"" } else { LATEST };
    let len = name.len() + tail.len();
    if !name.is_ascii() || len > NAME_BUF {
        return None;
    }
    let out = &mut buf[..len];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out[name.len()..].copy_from_slice(tail);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

impl Catalogue {
    /// Merges per-instance `/api/tags` and `/api/ps` bodies as Open WebUI does: slot `i` of
    /// `tags` and `ps` belongs to the connection whose `idx` is `i`; `None` stands for an
    /// instance that was disabled, down, timed out or answered something that is not JSON.
    /// Missing slots count as `None`.
    pub fn merge(connections: &[ConnectionView], tags: &[Option<Value>], ps: &[Option<Value>]) -> Catalogue {
        let mut entries = merge_tags(connections, tags);
        let ps = merge_ps(connections, ps);
        annotate(&mut entries, &ps);
        let prefixes = connections
            .iter()
            .filter_map(|c| Some((c.idx, prefix_of(c)?.to_owned())))
            .collect();
        Catalogue::build(entries, ps, prefixes)
    }

    fn build(entries: Vec<Entry>, ps: Vec<Entry>, prefixes: HashMap<usize, String>) -> Catalogue {
        let exact = entries.iter().enumerate().map(|(i, e)| (e.id.clone(), i)).collect();
        let mut normalised = foldhash::HashMap::default();
        for (i, e) in entries.iter().enumerate() {
            normalised.entry(normalise(&e.id)).or_insert(i);
        }
        Catalogue {
            entries,
            ps,
            prefixes,
            exact,
            normalised,
        }
    }

    /// Every model, in first-seen order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The `models` list of a merged `/api/tags` answer.
    pub fn models_json(&self) -> Vec<Value> {
        self.entries.iter().map(|e| Value::Object(e.object.clone())).collect()
    }

    /// The `models` list of a merged `/api/ps` answer.
    pub fn ps_json(&self) -> Vec<Value> {
        self.ps.iter().map(|e| Value::Object(e.object.clone())).collect()
    }

    /// The `data` list of `/v1/models`, as Open WebUI maps the merged list: `id` is the
    /// prefixed model, `created` the given Unix time, `owned_by` literally `"openai"`.
    pub fn openai_models(&self, created: u64) -> Vec<Value> {
        self.entries
            .iter()
            .map(|e| json!({ "id": e.id, "object": "model", "created": created, "owned_by": "openai" }))
            .collect()
    }

    /// The models loaded on instance `idx` according to its `/api/ps`, by catalogue id.
    pub fn loaded_on(&self, idx: usize) -> Vec<&str> {
        self.ps
            .iter()
            .filter(|e| e.urls.contains(&idx))
            .map(|e| e.id.as_str())
            .collect()
    }

    /// The entry a client means by `requested`: the exact id, else the one that matches with
    /// `:latest` implied on both sides and case folded (as Ollama's own lookup does), so
    /// `llama3` finds `llama3:latest` and `gpu.llama3` finds `gpu.llama3:latest`.
    pub fn resolve(&self, requested: &str) -> Option<&Entry> {
        self.exact
            .get(requested)
            .or_else(|| match normalise_ascii(requested, &mut [0; NAME_BUF]) {
                Some(key) => self.normalised.get(key),
                None => self.normalised.get(&normalise(requested)),
            })
            .and_then(|&i| self.entries.get(i))
    }

    /// Like [`Catalogue::resolve`], with Open WebUI's "not found" error for a miss.
    pub fn require(&self, requested: &str) -> Result<&Entry, RegistryError> {
        self.resolve(requested).ok_or_else(|| RegistryError::ModelNotFound {
            model: with_latest(requested),
        })
    }

    /// The instances holding the model `requested` resolves to, lowest index first; empty
    /// when none does.
    pub fn holders(&self, requested: &str) -> &[usize] {
        self.resolve(requested).map_or(&[], |e| e.urls.as_slice())
    }

    /// The model name to send to instance `idx` for catalogue id `id`: that instance's
    /// prefix removed once, and only where it leads (`gpu.gpu.x` becomes `gpu.x`).
    pub fn upstream_name<'a>(&self, idx: usize, id: &'a str) -> &'a str {
        strip_prefix(id, self.prefixes.get(&idx).map(String::as_str))
    }

    /// Every holder of the model `requested` resolves to, lowest index first, with the name
    /// to send it (the catalogue id with that instance's leading prefix removed): what an
    /// unload or any fleet-wide call on a model fans out to. Empty when nothing resolves.
    pub fn targets(&self, requested: &str) -> Vec<(usize, &str)> {
        self.resolve(requested).map_or_else(Vec::new, |e| {
            e.urls
                .iter()
                .map(|&idx| (idx, self.upstream_name(idx, &e.id)))
                .collect()
        })
    }

    /// The listing of the entries `keep` accepts, for a per-user `/api/tags`; the catalogue
    /// itself is untouched.
    pub fn filtered(&self, keep: impl Fn(&Entry) -> bool) -> Vec<Value> {
        self.entries
            .iter()
            .filter(|e| keep(e))
            .map(|e| Value::Object(e.object.clone()))
            .collect()
    }

    /// A new catalogue holding only the entries (and `/api/ps` entries) `keep` accepts, for a
    /// per-user view; the shared catalogue is never mutated.
    pub fn filter(&self, keep: impl Fn(&Entry) -> bool) -> Catalogue {
        let entries = self.entries.iter().filter(|e| keep(e)).cloned().collect();
        let ps = self.ps.iter().filter(|e| keep(e)).cloned().collect();
        Catalogue::build(entries, ps, self.prefixes.clone())
    }
}

#[cfg(test)]
mod normalise_tests {
    use super::{normalise, normalise_ascii, NAME_BUF};

    #[test]
    fn the_ascii_fold_without_allocation_is_the_same_fold() {
        let long = "m".repeat(NAME_BUF);
        for name in [
            "llama3.2",
            "Llama3.2",
            "LLAMA3.2:8B",
            "gpu.llama3",
            "registry.example:5000/ns/Model",
            "registry.example:5000/ns/model:q4",
            "",
            ":",
            "a/b/",
        ] {
            assert_eq!(
                normalise_ascii(name, &mut [0; NAME_BUF]),
                Some(normalise(name).as_str()),
                "{name}"
            );
        }
        assert_eq!(
            normalise_ascii("modèle", &mut [0; NAME_BUF]),
            None,
            "non-ASCII folds through normalise"
        );
        assert_eq!(
            normalise_ascii(&long, &mut [0; NAME_BUF]),
            None,
            "too long for the buffer"
        );
    }
}

//! The fleet's model catalogue.
#![doc = include_str!("../README.md")]

mod names;
mod version;

use std::collections::HashMap;

use serde_json::{Map, Value};

pub use names::{strip_prefix, with_latest};
pub use version::{lowest_version, version_key};

/// One configured Ollama connection, as the merge needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionView {
    /// Index in the configured list: the instance's `url_idx`.
    pub idx: usize,
    /// Base URL.
    pub url: String,
    /// A disabled connection contributes nothing.
    pub enabled: bool,
    /// Prepended as `<prefix>.` to this connection's model ids.
    pub prefix_id: Option<String>,
    /// Attached to this connection's models when non-empty.
    pub tags: Option<Vec<Value>>,
    /// When non-empty, only these unprefixed model ids are taken from this connection.
    pub model_ids: Vec<String>,
    /// `local` (the default) or `external`.
    pub connection_type: Option<String>,
}

/// One model of the merged catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The id clients use: the upstream `model`, with the first holder's prefix.
    pub id: String,
    /// Indices of the instances that hold it, lowest first.
    pub urls: Vec<usize>,
    /// The model object to list (from the lowest-index holder), with Corral's fields added.
    pub object: Map<String, Value>,
}

/// The merged catalogue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalogue {
    entries: Vec<Entry>,
    ps: Vec<Entry>,
    prefixes: HashMap<usize, String>,
    exact: HashMap<String, usize>,
    folded: HashMap<String, usize>,
}

impl Catalogue {
    /// Merges per-instance `/api/tags` and `/api/ps` bodies (`None` for a disabled, dead or
    /// failing instance), slot `i` belonging to `connections[i]`.
    pub fn merge(connections: &[ConnectionView], tags: &[Option<Value>], ps: &[Option<Value>]) -> Catalogue {
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for conn in connections.iter().filter(|c| c.enabled) {
            for (upstream_id, id, mut object) in listed(conn, tags) {
                if !conn.model_ids.is_empty() && !conn.model_ids.contains(&upstream_id) {
                    continue;
                }
                object.insert("model".to_owned(), Value::String(id.clone()));
                if let Some(tags) = conn.tags.as_ref().filter(|t| !t.is_empty()) {
                    object.insert("tags".to_owned(), Value::Array(tags.clone()));
                }
                let kind = conn
                    .connection_type
                    .clone()
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "local".to_owned());
                object.insert("connection_type".to_owned(), Value::String(kind));
                match seen.get(&id) {
                    Some(&at) => {
                        if !entries[at].urls.contains(&conn.idx) {
                            entries[at].urls.push(conn.idx);
                        }
                    }
                    None => {
                        seen.insert(id.clone(), entries.len());
                        entries.push(Entry {
                            id,
                            urls: vec![conn.idx],
                            object,
                        });
                    }
                }
            }
        }
        let ps = merge_ps(connections, ps);
        let expiry: HashMap<&str, i64> = ps
            .iter()
            .filter_map(|e| {
                let at = e.object.get("expires_at").and_then(Value::as_str)?;
                Some((
                    e.id.as_str(),
                    chrono::DateTime::parse_from_rfc3339(at).ok()?.timestamp(),
                ))
            })
            .collect();
        for entry in &mut entries {
            if let Some(at) = expiry.get(entry.id.as_str()) {
                entry.object.insert("expires_at".to_owned(), Value::from(*at));
            }
            entry.object.insert("urls".to_owned(), Value::from(entry.urls.clone()));
        }
        let prefixes = connections
            .iter()
            .filter_map(|c| Some((c.idx, c.prefix_id.clone().filter(|p| !p.is_empty())?)))
            .collect();
        let exact = entries.iter().enumerate().map(|(i, e)| (e.id.clone(), i)).collect();
        let mut folded = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            folded.entry(e.id.to_lowercase()).or_insert(i);
        }
        Catalogue {
            entries,
            ps,
            prefixes,
            exact,
            folded,
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

    /// The models loaded on instance `idx`, by catalogue id.
    pub fn loaded_on(&self, idx: usize) -> Vec<&str> {
        self.ps
            .iter()
            .filter(|e| e.urls.contains(&idx))
            .map(|e| e.id.as_str())
            .collect()
    }

    /// The entry a client means by `requested`: exact, then with `:latest` implied, then
    /// ignoring case (as Ollama's own lookup does).
    pub fn resolve(&self, requested: &str) -> Option<&Entry> {
        let tagged = with_latest(requested);
        self.exact
            .get(requested)
            .or_else(|| self.exact.get(&tagged))
            .or_else(|| self.folded.get(&tagged.to_lowercase()))
            .map(|&i| &self.entries[i])
    }

    /// The model name to send to instance `idx` for catalogue id `id`: its prefix, if it
    /// leads, removed.
    pub fn upstream_name<'a>(&self, idx: usize, id: &'a str) -> &'a str {
        strip_prefix(id, self.prefixes.get(&idx).map(String::as_str))
    }

    /// A copy holding only the entries `keep` accepts: per-user views never touch the shared
    /// catalogue.
    pub fn filtered(&self, keep: impl Fn(&Entry) -> bool) -> Vec<Value> {
        self.entries
            .iter()
            .filter(|e| keep(e))
            .map(|e| Value::Object(e.object.clone()))
            .collect()
    }
}

/// The model objects connection `conn` listed in `bodies` (`/api/tags` or `/api/ps` answers
/// by index), each with its upstream `model` and its catalogue id (prefixed).
fn listed<'a>(
    conn: &'a ConnectionView,
    bodies: &'a [Option<Value>],
) -> impl Iterator<Item = (String, String, Map<String, Value>)> + 'a {
    let models = bodies
        .get(conn.idx)
        .and_then(Option::as_ref)
        .and_then(|b| b.get("models"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    models.iter().filter_map(move |model| {
        let object = model.as_object()?.clone();
        let upstream_id = object.get("model").and_then(Value::as_str)?.to_owned();
        let id = match conn.prefix_id.as_deref().filter(|p| !p.is_empty()) {
            Some(prefix) => format!("{prefix}.{upstream_id}"),
            None => upstream_id.clone(),
        };
        Some((upstream_id, id, object))
    })
}

/// `/api/ps` merge: prefixed `model`, `urls`, first occurrence wins.
fn merge_ps(connections: &[ConnectionView], ps: &[Option<Value>]) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for conn in connections.iter().filter(|c| c.enabled) {
        for (_, id, mut object) in listed(conn, ps) {
            if let Some(entry) = out.iter_mut().find(|e| e.id == id) {
                entry.urls.push(conn.idx);
                entry.object.insert("urls".to_owned(), Value::from(entry.urls.clone()));
                continue;
            }
            object.insert("model".to_owned(), Value::String(id.clone()));
            object.insert("urls".to_owned(), Value::from(vec![conn.idx]));
            out.push(Entry {
                id,
                urls: vec![conn.idx],
                object,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;

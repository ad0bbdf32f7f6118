//! Open WebUI's merge of the instances' `/api/tags` and `/api/ps` answers (its
//! `get_all_models`), as pure functions over already-fetched bodies.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::{ConnectionView, Entry};

/// The connection's prefix, if it has a non-empty one.
pub(crate) fn prefix_of(conn: &ConnectionView) -> Option<&str> {
    conn.prefix_id.as_deref().filter(|p| !p.is_empty())
}

/// The model objects connection `conn` listed in `bodies` (`/api/tags` or `/api/ps` answers
/// by index), each with its upstream `model` and its catalogue id (prefixed).
///
/// A missing slot, a body without a `models` list (such as a 401's `{"error": …}`) and
/// items that are not objects or have no string `model` contribute nothing.
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
        let id = match prefix_of(conn) {
            Some(prefix) => format!("{prefix}.{upstream_id}"),
            None => upstream_id.clone(),
        };
        Some((upstream_id, id, object))
    })
}

/// Adds `object` under `id` held by `idx`: the first occurrence keeps its object, later
/// ones only add their index to `urls`.
fn add(out: &mut Vec<Entry>, seen: &mut HashMap<String, usize>, id: String, idx: usize, object: Map<String, Value>) {
    match seen.get(&id) {
        Some(&at) => {
            if !out[at].urls.contains(&idx) {
                out[at].urls.push(idx);
            }
        }
        None => {
            seen.insert(id.clone(), out.len());
            out.push(Entry {
                id,
                urls: vec![idx],
                object,
            });
        }
    }
}

/// The `/api/tags` merge: enabled connections in index order, each model filtered by the
/// connection's `model_ids` (unprefixed), given its prefixed `model` (not `name`), `tags`
/// and `connection_type`; first occurrence wins and `urls` collects the holders.
pub(crate) fn merge_tags(connections: &[ConnectionView], tags: &[Option<Value>]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    for conn in enabled_in_order(connections) {
        let kind = conn
            .connection_type
            .as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or("local");
        for (upstream_id, id, mut object) in listed(conn, tags) {
            if !conn.model_ids.is_empty() && !conn.model_ids.contains(&upstream_id) {
                continue;
            }
            object.insert("model".to_owned(), Value::String(id.clone()));
            if let Some(tags) = conn.tags.as_ref().filter(|t| !t.is_empty()) {
                object.insert("tags".to_owned(), Value::Array(tags.clone()));
            }
            object.insert("connection_type".to_owned(), Value::String(kind.to_owned()));
            add(&mut out, &mut seen, id, conn.idx, object);
        }
    }
    out
}

/// The `/api/ps` merge: prefixed `model`, `urls`, first occurrence wins; no `model_ids`,
/// `tags` or `connection_type`.
pub(crate) fn merge_ps(connections: &[ConnectionView], ps: &[Option<Value>]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    for conn in enabled_in_order(connections) {
        for (_, id, mut object) in listed(conn, ps) {
            object.insert("model".to_owned(), Value::String(id.clone()));
            add(&mut out, &mut seen, id, conn.idx, object);
        }
    }
    for entry in &mut out {
        entry.object.insert("urls".to_owned(), Value::from(entry.urls.clone()));
    }
    out
}

/// Sets `expires_at` (integer Unix seconds, truncated) on every entry whose id is loaded
/// somewhere, from the first instance that reported it; sets `urls` on every entry.
///
/// A value that does not parse as RFC 3339 is skipped alone (Open WebUI stops the whole
/// step at the first one).
pub(crate) fn annotate(entries: &mut [Entry], ps: &[Entry]) {
    let expiry: HashMap<&str, i64> = ps
        .iter()
        .filter_map(|e| {
            let at = e.object.get("expires_at").and_then(Value::as_str)?;
            Some((e.id.as_str(), unix_seconds(at)?))
        })
        .collect();
    for entry in entries {
        if let Some(at) = expiry.get(entry.id.as_str()) {
            entry.object.insert("expires_at".to_owned(), Value::from(*at));
        }
        entry.object.insert("urls".to_owned(), Value::from(entry.urls.clone()));
    }
}

/// Integer Unix seconds of an RFC 3339 time (fractions of any length, any offset),
/// truncated toward zero as Python's `int(dt.timestamp())` does.
pub(crate) fn unix_seconds(rfc3339: &str) -> Option<i64> {
    let at = chrono::DateTime::parse_from_rfc3339(rfc3339.trim()).ok()?;
    let secs = at.timestamp();
    Some(if secs < 0 && at.timestamp_subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    })
}

/// The enabled connections by ascending index (the merge order), whatever order they came in.
fn enabled_in_order(connections: &[ConnectionView]) -> Vec<&ConnectionView> {
    let mut enabled: Vec<&ConnectionView> = connections.iter().filter(|c| c.enabled).collect();
    enabled.sort_by_key(|c| c.idx);
    enabled
}

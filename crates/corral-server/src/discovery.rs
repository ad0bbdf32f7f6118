//! Asking every enabled instance what it holds (`/api/tags`) and runs (`/api/ps`),
//! concurrently, each within the discovery timeout.
//!
//! A dead, slow or erroring instance yields `None` for its slot and a log line; it never
//! stalls or fails the whole listing.

use std::time::Duration;

use corral_config::Settings;
use futures_util::future::join_all;
use serde_json::Value;

use crate::proxy::{self, secs};

/// The largest listing body accepted from one instance.
const LISTING_LIMIT: usize = 32 * 1024 * 1024;

/// What one instance said, slot by slot in `ollama.base_urls` order.
#[derive(Debug, Default, Clone)]
pub struct Listings {
    /// `/api/tags` bodies; `None` for disabled, dead, slow or erroring instances.
    pub tags: Vec<Option<Value>>,
    /// `/api/ps` bodies, likewise.
    pub ps: Vec<Option<Value>>,
}

/// Fetches `/api/tags` and `/api/ps` from every enabled instance at once, but those `out`
/// names (ejected instances: a listing must not wait on them while they are out), for which
/// what they said last time (`previous`, taken with the same settings) stands.
pub async fn fetch_listings(
    client: &awc::Client,
    settings: &Settings,
    out: &dyn Fn(usize) -> bool,
    previous: Option<&Listings>,
) -> Listings {
    if !settings.ollama.enable {
        return Listings::default();
    }
    let n = settings.ollama.base_urls.len();
    let ask = |i: usize, path: &'static str| async move {
        if out(i) {
            let last = previous.map(|p| if path == "/api/tags" { &p.tags } else { &p.ps });
            last.and_then(|l| l.get(i).cloned().flatten())
        } else {
            fetch_json(client, settings, i, path).await
        }
    };
    let tags = join_all((0..n).map(|i| ask(i, "/api/tags")));
    let ps = join_all((0..n).map(|i| ask(i, "/api/ps")));
    let (tags, ps) = futures_util::join!(tags, ps);
    Listings { tags, ps }
}

/// `GET path` on instance `idx` as JSON, or `None` (logged) if it is disabled or fails.
pub async fn fetch_json(client: &awc::Client, settings: &Settings, idx: usize, path: &str) -> Option<Value> {
    let base = settings.ollama.base_urls.get(idx)?.trim_end_matches('/');
    let conn = settings.ollama.connection(idx);
    if !conn.enabled() {
        return None;
    }
    let timeout = secs(settings.upstream.discovery_timeout).unwrap_or(Duration::from_secs(3));
    let url = format!("{base}{path}");
    let request = |client: &awc::Client| {
        let mut req = client.get(url.as_str()).timeout(timeout);
        if let Some(key) = conn.bearer() {
            req = req.insert_header(("Authorization", format!("Bearer {key}")));
        }
        req
    };
    let work = async {
        let mut resp = proxy::send_again_if_closed(client, &settings.upstream, request, None)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = proxy::read_all(&mut resp, LISTING_LIMIT).await?;
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        serde_json::from_slice::<Value>(&body).map_err(|e| format!("sent a body that is not JSON: {e}"))
    };
    // The request timeout covers the headers; this one covers the body too.
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(reason)) => {
            tracing::warn!(instance = idx, url = %corral_config::loggable_url(base), path, %reason, "instance left out of the listing");
            None
        }
        Err(_) => {
            tracing::warn!(
                instance = idx,
                url = %corral_config::loggable_url(base),
                path,
                timeout_secs = timeout.as_secs_f64(),
                "instance too slow; left out of the listing"
            );
            None
        }
    }
}

//! One-off checks of the instances, for `corral doctor`: each enabled instance is asked for
//! `/api/tags` with its key, as the gateway would ask it, and its clock is read from the
//! answer's `Date` header.

use std::time::Duration;

use corral_config::Settings;
use futures_util::future::join_all;

use crate::proxy::{self, secs};

/// What one instance answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It listed its models: how many; and its clock (seconds since the epoch) if it sent one.
    Listed {
        /// Models listed.
        models: usize,
        /// The `Date` header, in seconds since the Unix epoch.
        clock: Option<i64>,
    },
    /// It refused the key (401 or 403); `keyed` says whether a key was sent.
    Refused {
        /// The status.
        status: u16,
        /// Whether Corral sent a key.
        keyed: bool,
    },
    /// It answered with another status, or something that is not a listing.
    Odd(String),
    /// It could not be reached within the discovery timeout.
    Unreachable(String),
}

/// Asks every enabled instance of `settings` at once: `(index, answer)` in index order.
/// Run it on an actix system (it uses awc).
pub async fn instances(settings: &Settings) -> Vec<(usize, Answer)> {
    let client = proxy::client(&settings.upstream);
    let asks = (0..settings.ollama.base_urls.len())
        .filter(|&idx| settings.ollama.connection(idx).enabled())
        .map(|idx| {
            let client = &client;
            async move { (idx, ask(client, settings, idx).await) }
        });
    join_all(asks).await
}

async fn ask(client: &awc::Client, settings: &Settings, idx: usize) -> Answer {
    let Some(base) = settings.ollama.base_urls.get(idx) else {
        return Answer::Unreachable("no such instance".to_owned());
    };
    let timeout = secs(settings.upstream.discovery_timeout).unwrap_or(Duration::from_secs(3));
    let key = settings.ollama.connection(idx).bearer();
    let mut req = client
        .get(format!("{}/api/tags", base.trim_end_matches('/')))
        .timeout(timeout);
    if let Some(key) = &key {
        req = req.insert_header(("Authorization", format!("Bearer {key}")));
    }
    let mut resp = match tokio::time::timeout(timeout, req.send()).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Answer::Unreachable(e.to_string()),
        Err(_) => return Answer::Unreachable(format!("no answer within {timeout:?}")),
    };
    let status = resp.status().as_u16();
    if status == 401 || status == 403 {
        return Answer::Refused {
            status,
            keyed: key.is_some(),
        };
    }
    let clock = resp
        .headers()
        .get(actix_web::http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
        .map(|d| d.timestamp());
    let body = match proxy::read_all(&mut resp, 16 * 1024 * 1024).await {
        Ok(body) => body,
        Err(e) => return Answer::Odd(format!("status {status}, unreadable body: {e}")),
    };
    if status != 200 {
        return Answer::Odd(format!("status {status}"));
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) if v["models"].is_array() => Answer::Listed {
            models: v["models"].as_array().map_or(0, Vec::len),
            clock,
        },
        _ => Answer::Odd("the answer to /api/tags is not a model listing: is this an Ollama?".to_owned()),
    }
}

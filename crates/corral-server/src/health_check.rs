//! Active health checks: every `balance.health_interval` seconds each enabled instance is
//! asked for `/api/version`. Failures count toward ejection like request failures, and a
//! good answer brings a half-open instance back. Only changes of state are logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_balance::{HealthPolicy, HealthState};
use corral_config::Settings;
use futures_util::future::join_all;

use crate::proxy::{self, secs};
use crate::state::Shared;

/// The health policy the settings describe.
pub fn policy(settings: &Settings) -> HealthPolicy {
    HealthPolicy {
        failures_to_eject: settings.balance.failures_to_eject,
        ejection: Duration::from_secs_f64(settings.balance.ejection_time),
        max_ejection: Duration::from_secs(120),
    }
}

/// Starts the checker on the current actix system.
pub fn spawn(shared: Arc<Shared>) {
    actix_rt::spawn(async move {
        let client = proxy::client(&shared.settings().upstream);
        loop {
            let settings = shared.settings();
            let Some(interval) = secs(settings.balance.health_interval) else {
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            };
            tokio::time::sleep(interval).await;
            // The settings as they are now: a connection disabled during the wait is not asked.
            let settings = shared.settings();
            let checks = (0..settings.ollama.base_urls.len())
                .filter(|&idx| settings.ollama.connection(idx).enabled())
                .map(|idx| {
                    let client = &client;
                    let settings = &settings;
                    async move { (idx, answers(client, settings, idx).await) }
                });
            let health = policy(&settings);
            for (idx, ok) in join_all(checks).await {
                let Some(url) = settings.ollama.base_urls.get(idx) else {
                    continue;
                };
                let (before, after) =
                    shared
                        .instances
                        .get(url.trim_end_matches('/'))
                        .checked(ok, &health, Instant::now());
                match (before, after) {
                    (HealthState::Healthy, HealthState::Ejected { .. }) => {
                        shared.metrics.ejected(idx);
                        tracing::warn!(instance = idx, url = %corral_config::loggable_url(url), "instance failed its health checks; taken out of rotation")
                    }
                    (HealthState::HalfOpen { .. }, HealthState::Healthy) => {
                        tracing::info!(instance = idx, url = %corral_config::loggable_url(url), "instance passed its health check; back in rotation")
                    }
                    _ => {}
                }
            }
        }
    });
}

/// Whether instance `idx` answers `/api/version` within the discovery timeout.
async fn answers(client: &awc::Client, settings: &Settings, idx: usize) -> bool {
    let Some(base) = settings.ollama.base_urls.get(idx) else {
        return false;
    };
    let timeout = secs(settings.upstream.discovery_timeout).unwrap_or(Duration::from_secs(3));
    let url = format!("{}/api/version", base.trim_end_matches('/'));
    let key = settings.ollama.connection(idx).bearer();
    let request = |client: &awc::Client| {
        let mut req = client.get(url.as_str()).timeout(timeout);
        if let Some(key) = &key {
            req = req.insert_header(("Authorization", format!("Bearer {key}")));
        }
        req
    };
    let sent = proxy::send_again_if_closed(client, &settings.upstream, request, None);
    match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(mut resp)) => resp.status().is_success() && proxy::read_all(&mut resp, 64 * 1024).await.is_ok(),
        _ => false,
    }
}

//! `GET /ready`: readiness, for load balancers and Kubernetes. `/health` stays liveness (the
//! process answers); `/ready` says whether this replica should be sent traffic now.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::Shared;

/// How long the database may stay silent before the replica stops calling itself ready.
/// The watcher asks it every half second, so this is many missed polls in a row.
pub const DATABASE_SILENCE: Duration = Duration::from_secs(10);

/// `GET|HEAD /ready`: 200 when the configuration is loaded, the database (if any) answered
/// within [`DATABASE_SILENCE`], at least one enabled instance is in rotation, and no stop
/// signal came; otherwise 503 with the reason. Both answers carry every check.
pub async fn ready(shared: web::Data<Shared>) -> HttpResponse {
    let settings = shared.settings();
    let mut problems = Vec::new();

    let draining = shared.lifecycle.draining();
    if draining {
        problems.push("the gateway is shutting down".to_owned());
    }

    let configuration = match shared.store() {
        Some(_) if shared.config_revision() < 0 => {
            problems.push("the configuration is not loaded yet".to_owned());
            "not loaded".to_owned()
        }
        Some(_) => format!("loaded (revision {})", shared.config_revision()),
        None => "loaded".to_owned(),
    };

    let database = match (shared.store(), shared.lifecycle.database_silent_for()) {
        (None, _) => "none".to_owned(),
        (Some(_), Some(silent)) if silent <= DATABASE_SILENCE => "answering".to_owned(),
        (Some(store), silent) => {
            let when = silent.map_or_else(|| "never".to_owned(), |s| format!("{}s ago", s.as_secs()));
            problems.push(format!("the database {} last answered {when}", store.name()));
            format!("silent since {when}")
        }
    };

    let enabled: Vec<usize> = if settings.ollama.enable {
        (0..settings.ollama.base_urls.len())
            .filter(|&idx| settings.ollama.connection(idx).enabled())
            .collect()
    } else {
        Vec::new()
    };
    // Healthy: answered something (a health check, a listing, a request) and not ejected now.
    // An instance never heard from is not counted: its health is only a default.
    let in_rotation = enabled
        .iter()
        .filter(|&&idx| {
            let url = settings.ollama.base_urls[idx].trim_end_matches('/');
            shared.instances.get(url).seen() && !shared.is_ejected(idx)
        })
        .count();
    if in_rotation == 0 {
        problems.push(if enabled.is_empty() {
            "no Ollama instance is enabled".to_owned()
        } else {
            format!(
                "none of the {} enabled instances is healthy (answered a health check or listing, and not ejected)",
                enabled.len()
            )
        });
    }

    let checks = json!({
        "draining": draining,
        "configuration": configuration,
        "database": database,
        "instances": { "enabled": enabled.len(), "healthy": in_rotation },
    });
    if problems.is_empty() {
        HttpResponse::Ok().json(json!({ "ready": true, "checks": checks }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "ready": false,
            "reason": problems.join("; "),
            "checks": checks,
        }))
    }
}

//! Routes that answer from the gateway itself: liveness and Open WebUI's status probe.

use actix_web::HttpResponse;
use serde_json::json;

/// `GET|HEAD /`: what Ollama answers, so clients' heartbeats work through Corral.
pub async fn root() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("Ollama is running")
}

/// `GET|HEAD /ollama/`: Open WebUI's status answer.
pub async fn owui_status() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": true }))
}

/// `GET /health`: the gateway is up.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": true }))
}

/// Any path the gateway does not serve.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    let message = format!("no route for {} {}", req.method(), req.path());
    HttpResponse::NotFound().json(json!({ "error": message, "detail": "Not Found" }))
}

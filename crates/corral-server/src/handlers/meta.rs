//! Routes that answer from the gateway itself: liveness and Open WebUI's status probe.

use actix_web::http::StatusCode;
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

/// `GET /openapi.json`: the OpenAPI 3.1 document of every route, made from the route table.
pub async fn openapi() -> HttpResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| crate::routes::openapi().to_string());
    HttpResponse::Ok().content_type("application/json").body(doc.as_str())
}

/// The OpenAI routes Corral serves at the root, for telling a wrong method from a wrong path.
const OPENAI_ROUTES: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
];

/// A served path asked with a method it does not take: a JSON 405 naming the methods it does
/// take in `Allow`, in OpenAI's shape under the OpenAI routes.
pub fn method_not_allowed(req: &actix_web::HttpRequest, allow: &str) -> HttpResponse {
    let (method, path) = (req.method(), req.path());
    let message = format!("Method {method} is not allowed on {path}; allowed: {allow}");
    let mut resp = HttpResponse::MethodNotAllowed();
    resp.insert_header((actix_web::http::header::ALLOW, allow));
    if crate::routes::is_openai(path) {
        let body = corral_convert::openai::ErrorResponse::new(StatusCode::METHOD_NOT_ALLOWED.as_u16(), message);
        return resp.json(body);
    }
    resp.json(crate::error::AppError::MethodNotAllowed(message).body())
}

/// Any path the gateway does not serve. Under `/v1/` (the base URL OpenAI clients are given)
/// the answer is in OpenAI's error shape: 405 for a served path with another method, else
/// 404, as OpenAI answers an invalid URL.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    let (method, path) = (req.method(), req.path());
    if path.starts_with("/v1/") {
        let known = OPENAI_ROUTES.contains(&path) || path.strip_prefix("/v1/models/").is_some_and(|id| !id.is_empty());
        let (status, message) = if known {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                format!("Method {method} is not allowed on {path}"),
            )
        } else {
            (StatusCode::NOT_FOUND, format!("Invalid URL ({method} {path})"))
        };
        let body = corral_convert::openai::ErrorResponse::new(status.as_u16(), message);
        return HttpResponse::build(status).json(body);
    }
    let message = format!("no route for {method} {path}");
    HttpResponse::NotFound().json(crate::error::AppError::NotFound(message).body())
}

/// `GET /metrics`: the gateway's metrics in Prometheus' text format (docs/metrics.md); 404
/// when `metrics.enable` is false.
pub async fn metrics(
    shared: actix_web::web::Data<crate::state::Shared>,
) -> Result<HttpResponse, crate::error::AppError> {
    if !shared.metrics.enabled() {
        return Err(crate::error::AppError::NotFound(
            "metrics are disabled (metrics.enable)".to_owned(),
        ));
    }
    Ok(HttpResponse::Ok()
        .content_type(prometheus_client::encoding::prometheus_text::CONTENT_TYPE)
        .body(shared.metrics.render(&shared)))
}

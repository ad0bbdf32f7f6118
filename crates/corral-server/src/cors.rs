//! CORS as Open WebUI has it: `CORS_ALLOW_ORIGIN` (default `*`), any method and header,
//! credentials allowed, preflight answered by the gateway.

use actix_cors::Cors;

/// The CORS middleware for the configured origins.
pub fn cors(origins: &[String]) -> Cors {
    let base = Cors::default()
        .allow_any_method()
        .allow_any_header()
        .expose_any_header()
        .supports_credentials()
        .max_age(43_200);
    if origins.iter().any(|o| o == "*") {
        // Reflects the caller's origin, which works with credentials where a literal `*` would not.
        base.allow_any_origin()
    } else {
        origins.iter().fold(base, |cors, origin| cors.allowed_origin(origin))
    }
}

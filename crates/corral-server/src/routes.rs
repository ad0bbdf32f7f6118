//! Every route the gateway serves, wired in one place.

use actix_web::http::Method;
use actix_web::{web, HttpRequest};

use crate::handlers::native::{self, Quirk, Routing, Spec};
use crate::handlers::{accounts, config, fleet, meta, models, openai, ready};
use crate::state::Shared;

/// Registers every route on `cfg`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(meta::health));
    cfg.service(
        web::resource("/ready")
            .route(web::get().to(ready::ready))
            .route(web::head().to(ready::ready)),
    );
    cfg.service(
        web::resource(["/", ""])
            .route(web::get().to(meta::root))
            .route(web::head().to(meta::root)),
    );
    cfg.service(web::scope("/ollama").configure(owui_routes));
    cfg.service(web::scope("/api/v1").configure(accounts::configure));
    openai_routes(cfg);
    root_routes(cfg);
    cfg.default_service(web::to(meta::not_found));
}

/// Ollama's native API at the root, for plain Ollama clients.
fn root_routes(cfg: &mut web::ServiceConfig) {
    listings(cfg, "");
    for path in [
        "/api/show",
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
    ] {
        forward(cfg, path, &[Method::POST], Spec::post(path), false);
    }
    forward(
        cfg,
        "/api/pull",
        &[Method::POST],
        Spec::post("/api/pull").routed(Routing::Default).admin(),
        false,
    );
    forward(
        cfg,
        "/api/create",
        &[Method::POST],
        Spec::post("/api/create").routed(Routing::Default).admin(),
        false,
    );
    forward(
        cfg,
        "/api/push",
        &[Method::POST],
        Spec::post("/api/push").routed(Routing::FirstHolder).admin(),
        false,
    );
    forward(
        cfg,
        "/api/copy",
        &[Method::POST],
        Spec::post("/api/copy").routed(Routing::FirstHolder).admin(),
        false,
    );
    let delete = Spec::post("/api/delete")
        .method("DELETE")
        .routed(Routing::FirstHolder)
        .admin();
    forward(cfg, "/api/delete", &[Method::DELETE], delete, false);
    cfg.service(
        web::resource("/api/blobs/{digest}")
            .route(web::head().to(native::blob))
            .route(web::post().to(native::blob)),
    );
}

/// The OpenAI-compatible API, converted by Corral: at the root (the base URL OpenAI clients
/// are given) and Open WebUI's `/api/chat/completions` and `/api/models` aliases.
fn openai_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/chat/completions", web::post().to(openai::chat))
        .route("/api/chat/completions", web::post().to(openai::chat))
        .route("/v1/completions", web::post().to(openai::completions))
        .route("/v1/embeddings", web::post().to(openai::embeddings))
        .route("/v1/models", web::get().to(openai::models))
        .route("/api/models", web::get().to(openai::models))
        .route("/v1/models/{model:.+}", web::get().to(openai::model));
}

/// Open WebUI's `/ollama` router: `/{url_idx}` variants, push as DELETE, `true` answers for
/// copy and delete, forced `insecure` pulls, Open WebUI's texts for unknown models.
fn owui_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(["", "/"])
            .route(web::get().to(meta::owui_status))
            .route(web::head().to(meta::owui_status)),
    );
    listings(cfg, "");
    cfg.route("/status", web::get().to(fleet::status));
    cfg.route("/config", web::get().to(config::get))
        .route("/config/update", web::post().to(config::update))
        .route("/verify", web::post().to(config::verify));
    cfg.service(web::resource(["/models/upload", "/models/upload/{url_idx}"]).route(web::post().to(models::upload)))
        .service(
            web::resource(["/models/download", "/models/download/{url_idx}"]).route(web::post().to(models::download)),
        );
    let get_head = [Method::GET, Method::HEAD];
    forward_idx_only(cfg, "/api/tags", &get_head, Spec::get("/api/tags"));
    // One instance's version is not everyone's to probe (the reference's §8.1 item 3).
    forward_idx_only(cfg, "/api/version", &get_head, Spec::get("/api/version"));
    forward_idx_only(cfg, "/v1/models", &[Method::GET], Spec::get("/v1/models"));
    cfg.route("/v1/models", web::get().to(fleet::v1_models));
    cfg.route("/api/unload", web::post().to(fleet::unload));
    cfg.route("/api/pull/all", web::post().to(fleet::pull_all));
    // Clients pointed at `/ollama` upload blobs there before a create.
    cfg.service(
        web::resource(["/api/blobs/{digest}", "/api/blobs/{digest}/{url_idx}"])
            .route(web::head().to(native::blob))
            .route(web::post().to(native::blob)),
    );
    cfg.route("/api/delete/all", web::delete().to(fleet::delete_all));

    let owui = |spec: Spec| spec.owui(true);
    forward(cfg, "/api/show", &[Method::POST], owui(Spec::post("/api/show")), false);
    for path in [
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/v1/completions",
        "/v1/chat/completions",
    ] {
        forward(cfg, path, &[Method::POST], owui(Spec::post(path)), true);
    }
    let pull = Spec::post("/api/pull")
        .with(Quirk::OwuiPull)
        .routed(Routing::Default)
        .admin();
    forward(cfg, "/api/pull", &[Method::POST], owui(pull), true);
    forward(
        cfg,
        "/api/create",
        &[Method::POST],
        owui(Spec::post("/api/create").routed(Routing::Default).admin()),
        true,
    );
    // Open WebUI exposes push as DELETE; POST is accepted too, as Ollama's clients send it.
    let push = Spec::post("/api/push").routed(Routing::FirstHolder).admin();
    forward(cfg, "/api/push", &[Method::DELETE, Method::POST], owui(push), true);
    let copy = Spec::post("/api/copy")
        .with(Quirk::OwuiTrue)
        .routed(Routing::FirstHolder)
        .admin();
    forward(cfg, "/api/copy", &[Method::POST], owui(copy), true);
    let delete = Spec::post("/api/delete")
        .method("DELETE")
        .with(Quirk::OwuiTrue)
        .routed(Routing::FirstHolder)
        .admin();
    forward(cfg, "/api/delete", &[Method::DELETE], owui(delete), true);
}

/// The merged listings: tags, ps and version.
fn listings(cfg: &mut web::ServiceConfig, prefix: &str) {
    cfg.service(
        web::resource(format!("{prefix}/api/tags"))
            .route(web::get().to(fleet::tags))
            .route(web::head().to(fleet::tags)),
    )
    .route(&format!("{prefix}/api/ps"), web::get().to(fleet::ps))
    .service(
        web::resource(format!("{prefix}/api/version"))
            .route(web::get().to(fleet::version))
            .route(web::head().to(fleet::version)),
    );
}

/// Registers `spec` on `path` (and `path/{url_idx}` if `with_idx`) for each method.
fn forward(cfg: &mut web::ServiceConfig, path: &str, methods: &[Method], spec: Spec, with_idx: bool) {
    let mut patterns = vec![path.to_owned()];
    if with_idx {
        patterns.push(format!("{path}/{{url_idx}}"));
    }
    register(cfg, patterns, methods, spec);
}

/// Registers `spec` on `path/{url_idx}` only (the bare path is served by another handler).
fn forward_idx_only(cfg: &mut web::ServiceConfig, path: &str, methods: &[Method], spec: Spec) {
    register(cfg, vec![format!("{path}/{{url_idx}}")], methods, spec);
}

fn register(cfg: &mut web::ServiceConfig, patterns: Vec<String>, methods: &[Method], spec: Spec) {
    let mut resource = web::resource(patterns);
    for method in methods {
        resource = resource.route(web::method(method.clone()).to(
            move |req: HttpRequest,
                  payload: web::Payload,
                  shared: web::Data<Shared>,
                  client: web::Data<awc::Client>| { native::forward(req, payload, shared, client, spec) },
        ));
    }
    cfg.service(resource);
}

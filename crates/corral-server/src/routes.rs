//! Every route the gateway serves, wired in one place.

use actix_web::http::Method;
use actix_web::{web, HttpRequest};

use crate::handlers::meta;
use crate::handlers::native::{self, Quirk, Spec};
use crate::state::Shared;

/// Registers every route on `cfg`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(meta::health));
    cfg.service(
        web::resource(["/", ""])
            .route(web::get().to(meta::root))
            .route(web::head().to(meta::root)),
    );
    cfg.service(owui_scope());
    native_routes(cfg, "", false);
    cfg.default_service(web::to(meta::not_found));
}

/// Open WebUI's `/ollama` router.
fn owui_scope() -> actix_web::Scope {
    web::scope("/ollama")
        .service(
            web::resource(["", "/"])
                .route(web::get().to(meta::owui_status))
                .route(web::head().to(meta::owui_status)),
        )
        .configure(|cfg| {
            native_routes(cfg, "", true);
            // The OpenAI-compatible layer of the instance itself, passed through.
            forward(
                cfg,
                &["/v1/completions"],
                &[Method::POST],
                Spec::post("/v1/completions"),
                true,
            );
            forward(
                cfg,
                &["/v1/chat/completions"],
                &[Method::POST],
                Spec::post("/v1/chat/completions"),
                true,
            );
            forward(
                cfg,
                &["/v1/models"],
                &[Method::GET],
                Spec::get("/v1/models"),
                true,
            );
        })
}

/// The native `/api/*` routes. Under `/ollama` (`owui`), the Open WebUI variants apply:
/// `/{url_idx}` paths, push as DELETE, `true` answers for copy and delete, forced
/// `insecure` pulls.
fn native_routes(cfg: &mut web::ServiceConfig, prefix: &str, owui: bool) {
    let p = |s: &str| format!("{prefix}{s}");
    let get_head = [Method::GET, Method::HEAD];
    forward(
        cfg,
        &[&p("/api/version")],
        &get_head,
        Spec::get("/api/version"),
        owui,
    );
    forward(
        cfg,
        &[&p("/api/tags")],
        &get_head,
        Spec::get("/api/tags"),
        owui,
    );
    forward(
        cfg,
        &[&p("/api/ps")],
        &[Method::GET],
        Spec::get("/api/ps"),
        false,
    );
    forward(
        cfg,
        &[&p("/api/show")],
        &[Method::POST],
        Spec::post("/api/show"),
        false,
    );
    for path in [
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/api/create",
    ] {
        forward(cfg, &[&p(path)], &[Method::POST], Spec::post(path), owui);
    }
    if owui {
        forward(
            cfg,
            &[&p("/api/pull")],
            &[Method::POST],
            Spec::post("/api/pull").with(Quirk::OwuiPull),
            true,
        );
        // Open WebUI exposes push as DELETE; POST is accepted too, as Ollama's clients send it.
        forward(
            cfg,
            &[&p("/api/push")],
            &[Method::DELETE, Method::POST],
            Spec::post("/api/push"),
            true,
        );
        forward(
            cfg,
            &[&p("/api/copy")],
            &[Method::POST],
            Spec::post("/api/copy").with(Quirk::OwuiTrue),
            true,
        );
        let delete = Spec::post("/api/delete")
            .method("DELETE")
            .with(Quirk::OwuiTrue);
        forward(cfg, &[&p("/api/delete")], &[Method::DELETE], delete, true);
    } else {
        forward(
            cfg,
            &[&p("/api/pull")],
            &[Method::POST],
            Spec::post("/api/pull"),
            false,
        );
        forward(
            cfg,
            &[&p("/api/push")],
            &[Method::POST],
            Spec::post("/api/push"),
            false,
        );
        forward(
            cfg,
            &[&p("/api/copy")],
            &[Method::POST],
            Spec::post("/api/copy"),
            false,
        );
        forward(
            cfg,
            &[&p("/api/delete")],
            &[Method::DELETE],
            Spec::post("/api/delete").method("DELETE"),
            false,
        );
        cfg.service(
            web::resource(p("/api/blobs/{digest}"))
                .route(web::head().to(native::blob))
                .route(web::post().to(native::blob)),
        );
        // Until the OpenAI layer lands, root `/v1/*` reaches the instance's own `/v1`.
        forward(
            cfg,
            &["/v1/completions"],
            &[Method::POST],
            Spec::post("/v1/completions"),
            false,
        );
        forward(
            cfg,
            &["/v1/chat/completions"],
            &[Method::POST],
            Spec::post("/v1/chat/completions"),
            false,
        );
        forward(
            cfg,
            &["/v1/embeddings"],
            &[Method::POST],
            Spec::post("/v1/embeddings"),
            false,
        );
        forward(
            cfg,
            &["/v1/models"],
            &[Method::GET],
            Spec::get("/v1/models"),
            false,
        );
    }
}

/// Registers `spec` on each path for each method, plus the `/{url_idx}` variant if asked.
fn forward(
    cfg: &mut web::ServiceConfig,
    paths: &[&str],
    methods: &[Method],
    spec: Spec,
    with_idx: bool,
) {
    let mut patterns: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
    if with_idx {
        patterns.extend(paths.iter().map(|p| format!("{p}/{{url_idx}}")));
    }
    let mut resource = web::resource(patterns);
    for method in methods {
        resource = resource.route(web::method(method.clone()).to(
            move |req: HttpRequest,
                  payload: web::Payload,
                  shared: web::Data<Shared>,
                  client: web::Data<awc::Client>| {
                native::forward(req, payload, shared, client, spec)
            },
        ));
    }
    cfg.service(resource);
}

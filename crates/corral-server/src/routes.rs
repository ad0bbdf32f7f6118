//! Every route the gateway serves, wired in one place, each with the callers it admits.
//!
//! Routes are registered only through [`Routes::add`], which takes the route's [`Level`]:
//! a route cannot be added without saying who may call it, and the level is enforced in
//! front of the handler (a handler's own extractor may only be stricter). The table of what
//! was registered ([`table`]) drives the route-protection test and `/openapi.json`, so the
//! three cannot drift apart. `cargo xtask tidy` refuses actix registrations anywhere else.

mod table;

use std::rc::Rc;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, Handler, HttpRequest, Responder};

pub use table::{openapi, table, RouteInfo};

use crate::auth::Level;
use crate::handlers::native::{self, Quirk, Routing, Spec};
use crate::handlers::{accounts, config, fleet, limits, meta, models, openai, ready, usage};
use crate::state::Shared;

/// One method's route on a path, with the callers it admits.
type LevelledRoute = (Method, Level, actix_web::Route);

/// The paths nearly every request takes (the model-running routes, without parameters), tried
/// first: actix tries resources in order, and each try costs (a pattern with parameters runs a
/// regular expression; every try sets up an array of sixteen path segments and drops it), about
/// 4,000 instructions for a chat behind the probes, the listings and OpenAI's routes. A path
/// without parameters is matched by its own resource only (no two resources here match the
/// same path), so trying it earlier changes no answer.
const HOT: [&str; 14] = [
    "/api/chat",
    "/v1/chat/completions",
    "/api/generate",
    "/ollama/api/chat",
    "/ollama/api/generate",
    "/api/chat/completions",
    "/api/embed",
    "/v1/embeddings",
    "/ollama/api/embed",
    "/v1/completions",
    "/api/embeddings",
    "/ollama/api/embeddings",
    "/ollama/v1/chat/completions",
    "/ollama/v1/completions",
];

/// Routes being registered: each path's routes are gathered so that one actix resource
/// serves every method of a path (a second resource for the same path would never match).
#[derive(Default)]
pub struct Routes {
    resources: Vec<(String, Vec<LevelledRoute>)>,
    infos: Vec<RouteInfo>,
}

impl Routes {
    /// Adds `handler` for `method` on `path`, admitting the callers of `level`.
    pub fn add<F, Args>(
        &mut self,
        method: Method,
        path: &str,
        level: Level,
        summary: &'static str,
        handler: F,
    ) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let route = web::method(method.clone()).to(handler);
        self.infos.push(RouteInfo {
            method: method.clone(),
            path: path.to_owned(),
            level,
            summary,
        });
        match self.resources.iter_mut().find(|(p, _)| p == path) {
            Some((_, routes)) => routes.push((method, level, route)),
            None => self.resources.push((path.to_owned(), vec![(method, level, route)])),
        }
        self
    }

    /// Adds the same handler for several methods.
    fn add_each<F, Args>(&mut self, methods: &[Method], path: &str, level: Level, summary: &'static str, handler: F)
    where
        F: Handler<Args> + Clone,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        for method in methods {
            self.add(method.clone(), path, level, summary, handler.clone());
        }
    }

    /// What was registered.
    pub fn infos(&self) -> &[RouteInfo] {
        &self.infos
    }

    /// Registers every gathered resource on `cfg`, each behind its level check.
    pub fn finish(self, cfg: &mut web::ServiceConfig) {
        let mut resources = self.resources;
        // Stable: every other resource keeps its place.
        resources.sort_by_key(|(path, _)| HOT.iter().position(|hot| hot == path).unwrap_or(HOT.len()));
        for (path, routes) in resources {
            let levels: Rc<[(Method, Level)]> = routes.iter().map(|(m, l, _)| (m.clone(), *l)).collect();
            let allow: Vec<String> = routes.iter().map(|(m, _, _)| m.to_string()).collect();
            let allow = allow.join(", ");
            let mut resource = web::resource(path).default_service(web::to(move |req: HttpRequest| {
                let allow = allow.clone();
                async move { meta::method_not_allowed(&req, &allow) }
            }));
            for (_, _, route) in routes {
                resource = resource.route(route);
            }
            let resource = resource.wrap(actix_web::middleware::from_fn(
                move |req: ServiceRequest, next: Next<BoxBody>| {
                    let level = levels.iter().find(|(m, _)| m == req.method()).map(|(_, l)| *l);
                    admit(level, req, next)
                },
            ));
            cfg.service(resource);
        }
    }
}

/// Checks the caller against the route's level before its handler runs. A method the
/// resource does not serve falls through to actix's 405.
async fn admit(
    level: Option<Level>,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if let Some(level) = level {
        if let Err(err) = crate::auth::require(req.request(), level) {
            // A browser without a session is sent to the console's sign-in page.
            if let Some(to) = crate::console::signin_redirect(req.request(), &err) {
                return Ok(req.into_response(to));
            }
            return Err(if is_openai(req.path()) {
                openai::OpenAiError::from(err).into()
            } else {
                err.into()
            });
        }
    }
    next.call(req).await
}

/// Whether `path` answers in OpenAI's error shape.
pub fn is_openai(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/api/chat/completions" || path == "/api/models"
}

/// Registers every route on `cfg`, with the web console at `console` when it is served.
pub fn configure(cfg: &mut web::ServiceConfig, console: Option<&str>) {
    let mut routes = Routes::default();
    register_with(&mut routes, console);
    routes.finish(cfg);
    cfg.default_service(web::to(meta::not_found));
}

/// Every route, in registration order (the order of the table and of `/openapi.json`; actix
/// tries the `HOT` paths first, then the rest in this order), with the console at its default
/// path.
pub fn register(r: &mut Routes) {
    register_with(r, Some(crate::console::DEFAULT_PATH));
}

/// Every route, in registration order (see [`register`]), with the console at `console` when it
/// is served.
pub fn register_with(r: &mut Routes, console: Option<&str>) {
    use Level::{Public, Verified};
    r.add(
        Method::GET,
        "/health",
        Public,
        "Liveness: the gateway is up",
        meta::health,
    );
    r.add(
        Method::GET,
        "/openapi.json",
        Public,
        "This API's OpenAPI 3.1 document",
        meta::openapi,
    );
    r.add_each(
        &[Method::GET, Method::HEAD],
        "/ready",
        Public,
        "Readiness: configuration loaded, database answering, an instance healthy, not draining",
        ready::ready,
    );
    r.add(
        Method::GET,
        "/metrics",
        Level::Metrics,
        "Prometheus metrics (metrics.token, loopback, or an admin)",
        meta::metrics,
    );
    for path in ["/", ""] {
        r.add_each(
            &[Method::GET, Method::HEAD],
            path,
            Public,
            "Ollama's heartbeat answer",
            meta::root,
        );
    }
    for path in ["/ollama", "/ollama/"] {
        r.add_each(
            &[Method::GET, Method::HEAD],
            path,
            Public,
            "Open WebUI's status answer",
            meta::owui_status,
        );
    }
    // After the `HOT` paths, actix tries resources in this order, a pattern with parameters
    // by a regular expression: OpenAI's routes come before the console's and Open WebUI's (whose
    // expressions took a seventh of the gateway's CPU when they came first). No two routes here
    // match the same path, so the order changes nothing else.
    r.add(
        Method::POST,
        "/v1/chat/completions",
        Verified,
        "OpenAI chat completions",
        openai::chat,
    )
    .add(
        Method::POST,
        "/api/chat/completions",
        Verified,
        "OpenAI chat completions (Open WebUI's alias)",
        openai::chat,
    )
    .add(
        Method::POST,
        "/v1/completions",
        Verified,
        "OpenAI legacy completions",
        openai::completions,
    )
    .add(
        Method::POST,
        "/v1/embeddings",
        Verified,
        "OpenAI embeddings",
        openai::embeddings,
    )
    .add(Method::GET, "/v1/models", Verified, "OpenAI model list", openai::models)
    .add(
        Method::GET,
        "/api/models",
        Verified,
        "OpenAI model list (Open WebUI's alias)",
        openai::models,
    )
    .add(
        Method::GET,
        "/v1/models/{model:.+}",
        Verified,
        "One OpenAI model",
        openai::model,
    );
    root_routes(r);
    owui_routes(r);
    accounts::register(r);
    usage::register(r);
    limits::register(r);
    if let Some(prefix) = console {
        crate::console::register(r, prefix);
    }
}

/// Ollama's native API at the root, for plain Ollama clients.
fn root_routes(r: &mut Routes) {
    listings(r, "");
    for (path, summary) in [
        ("/api/show", "Ollama: show a model"),
        ("/api/chat", "Ollama: chat"),
        ("/api/generate", "Ollama: generate"),
        ("/api/embed", "Ollama: embed"),
        ("/api/embeddings", "Ollama: embeddings (legacy)"),
    ] {
        forward(r, path, &[Method::POST], Spec::post(path), false, summary);
    }
    let pull = Spec::post("/api/pull").routed(Routing::Default).admin();
    forward(
        r,
        "/api/pull",
        &[Method::POST],
        pull,
        false,
        "Ollama: pull a model to the first instance",
    );
    let create = Spec::post("/api/create").routed(Routing::Default).admin();
    forward(
        r,
        "/api/create",
        &[Method::POST],
        create,
        false,
        "Ollama: create a model on the first instance",
    );
    let push = Spec::post("/api/push").routed(Routing::FirstHolder).admin();
    forward(
        r,
        "/api/push",
        &[Method::POST],
        push,
        false,
        "Ollama: push a model from its first holder",
    );
    let copy = Spec::post("/api/copy").routed(Routing::FirstHolder).admin();
    forward(
        r,
        "/api/copy",
        &[Method::POST],
        copy,
        false,
        "Ollama: copy a model on its first holder",
    );
    // From every holder, not the first only (see `fleet::delete_root`).
    r.add(
        Method::DELETE,
        "/api/delete",
        Level::Admin,
        "Ollama: delete a model from every holder",
        fleet::delete_root,
    );
    r.add_each(
        &[Method::HEAD, Method::POST],
        "/api/blobs/{digest}",
        Level::Admin,
        "Ollama: check for or upload a blob",
        native::blob,
    );
}

/// Open WebUI's `/ollama` router: `/{url_idx}` variants, push as DELETE, `true` answers for
/// copy and delete, forced `insecure` pulls, Open WebUI's texts for unknown models.
fn owui_routes(r: &mut Routes) {
    use Level::{Admin, Verified};
    listings(r, "/ollama");
    r.add(
        Method::GET,
        "/ollama/status",
        Admin,
        "Fleet status: instances, health, queues",
        fleet::status,
    )
    .add(Method::GET, "/ollama/config", Admin, "Ollama connections", config::get)
    .add(
        Method::POST,
        "/ollama/config/update",
        Admin,
        "Change the Ollama connections",
        config::update,
    )
    .add(
        Method::POST,
        "/ollama/verify",
        Admin,
        "Check an Ollama connection",
        config::verify,
    );
    for path in ["/ollama/models/upload", "/ollama/models/upload/{url_idx}"] {
        r.add(Method::POST, path, Admin, "Upload a model file", models::upload);
    }
    for path in ["/ollama/models/download", "/ollama/models/download/{url_idx}"] {
        r.add(
            Method::POST,
            path,
            Admin,
            "Download a model file from a URL",
            models::download,
        );
    }
    let get_head = [Method::GET, Method::HEAD];
    forward_idx_only(
        r,
        "/ollama/api/tags",
        &get_head,
        Spec::get("/api/tags"),
        "One instance's models",
    );
    // One instance's version is not everyone's to probe (the reference's §8.1 item 3).
    forward_idx_only(
        r,
        "/ollama/api/version",
        &get_head,
        Spec::get("/api/version"),
        "One instance's version",
    );
    forward_idx_only(
        r,
        "/ollama/v1/models",
        &[Method::GET],
        Spec::get("/v1/models"),
        "One instance's OpenAI models",
    );
    r.add(
        Method::GET,
        "/ollama/v1/models",
        Verified,
        "The fleet's OpenAI models",
        fleet::v1_models,
    )
    .add(
        Method::POST,
        "/ollama/api/unload",
        Admin,
        "Unload a model everywhere",
        fleet::unload,
    )
    .add(
        Method::POST,
        "/ollama/api/pull/all",
        Admin,
        "Pull a model to every instance",
        fleet::pull_all,
    );
    // Clients pointed at `/ollama` upload blobs there before a create.
    for path in ["/ollama/api/blobs/{digest}", "/ollama/api/blobs/{digest}/{url_idx}"] {
        r.add_each(
            &[Method::HEAD, Method::POST],
            path,
            Admin,
            "Check for or upload a blob",
            native::blob,
        );
    }
    r.add(
        Method::DELETE,
        "/ollama/api/delete/all",
        Admin,
        "Delete a model from every instance",
        fleet::delete_all,
    );

    let owui = |spec: Spec| spec.owui(true);
    forward(
        r,
        "/ollama/api/show",
        &[Method::POST],
        owui(Spec::post("/api/show")),
        false,
        "Show a model",
    );
    for (path, summary) in [
        ("/api/chat", "Chat"),
        ("/api/generate", "Generate"),
        ("/api/embed", "Embed"),
        ("/api/embeddings", "Embeddings (legacy)"),
        ("/v1/completions", "OpenAI completions, passed through"),
        ("/v1/chat/completions", "OpenAI chat completions, passed through"),
    ] {
        let spec = owui(Spec::post(path));
        forward(r, &format!("/ollama{path}"), &[Method::POST], spec, true, summary);
    }
    let pull = Spec::post("/api/pull")
        .with(Quirk::OwuiPull)
        .routed(Routing::Default)
        .admin();
    forward(r, "/ollama/api/pull", &[Method::POST], owui(pull), true, "Pull a model");
    let create = Spec::post("/api/create").routed(Routing::Default).admin();
    forward(
        r,
        "/ollama/api/create",
        &[Method::POST],
        owui(create),
        true,
        "Create a model",
    );
    // Open WebUI exposes push as DELETE; POST is accepted too, as Ollama's clients send it.
    let push = Spec::post("/api/push").routed(Routing::FirstHolder).admin();
    forward(
        r,
        "/ollama/api/push",
        &[Method::DELETE, Method::POST],
        owui(push),
        true,
        "Push a model",
    );
    let copy = Spec::post("/api/copy")
        .with(Quirk::OwuiTrue)
        .routed(Routing::FirstHolder)
        .admin();
    forward(r, "/ollama/api/copy", &[Method::POST], owui(copy), true, "Copy a model");
    let delete = Spec::post("/api/delete")
        .method("DELETE")
        .with(Quirk::OwuiTrue)
        .routed(Routing::FirstHolder)
        .admin();
    forward(
        r,
        "/ollama/api/delete",
        &[Method::DELETE],
        owui(delete),
        true,
        "Delete a model",
    );
}

/// The merged listings: tags, ps and version.
fn listings(r: &mut Routes, prefix: &str) {
    let get_head = [Method::GET, Method::HEAD];
    r.add_each(
        &get_head,
        &format!("{prefix}/api/tags"),
        Level::Verified,
        "The models of every instance, merged",
        fleet::tags,
    );
    r.add(
        Method::GET,
        &format!("{prefix}/api/ps"),
        Level::Admin,
        "The models loaded on every instance",
        fleet::ps,
    );
    // Public, as the reference has it; a credential that is presented is still checked.
    r.add_each(
        &get_head,
        &format!("{prefix}/api/version"),
        Level::Checked,
        "The lowest Ollama version in the fleet",
        fleet::version,
    );
}

/// Registers `spec` on `path` (and `path/{url_idx}` if `with_idx`) for each method.
fn forward(r: &mut Routes, path: &str, methods: &[Method], spec: Spec, with_idx: bool, summary: &'static str) {
    native_routes(r, path, methods, spec, summary);
    if with_idx {
        native_routes(r, &format!("{path}/{{url_idx}}"), methods, spec, summary);
    }
}

/// Registers `spec` on `path/{url_idx}` only (the bare path is served by another handler).
fn forward_idx_only(r: &mut Routes, path: &str, methods: &[Method], spec: Spec, summary: &'static str) {
    native_routes(r, &format!("{path}/{{url_idx}}"), methods, spec, summary);
}

fn native_routes(r: &mut Routes, path: &str, methods: &[Method], spec: Spec, summary: &'static str) {
    for method in methods {
        r.add(
            method.clone(),
            path,
            spec.level,
            summary,
            move |req: HttpRequest,
                  payload: web::Payload,
                  shared: web::Data<Shared>,
                  client: web::Data<awc::Client>| async move {
                let answer = native::forward(req, payload, shared, client, spec).await;
                // The instance's own OpenAI layer (`/ollama/v1/*`): a limit's refusal comes in
                // OpenAI's shape, as the client expects on that route.
                answer.map_err(|err| match err {
                    err @ crate::error::AppError::LimitReached(_) if spec.path.starts_with("/v1/") => {
                        actix_web::Error::from(openai::OpenAiError::from(err))
                    }
                    other => actix_web::Error::from(other),
                })
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{table::table, HOT};

    /// Trying a path first only pays off if it is one the gateway serves, and only changes no
    /// answer if it has no parameters (a pattern with parameters could take another's path).
    #[test]
    fn the_paths_tried_first_are_model_running_routes_without_parameters() {
        for hot in HOT {
            assert!(!hot.contains('{'), "{hot} has parameters");
            let methods: Vec<_> = table()
                .iter()
                .filter(|r| r.path == hot)
                .map(|r| r.method.clone())
                .collect();
            assert_eq!(methods, [actix_web::http::Method::POST], "{hot} is not a POST route");
        }
    }
}

//! The table of registered routes, and the OpenAPI document made from it.

use std::sync::OnceLock;

use actix_web::http::Method;
use serde_json::{json, Map, Value};

use super::Routes;
use crate::auth::Level;

/// One registered route.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// Its method.
    pub method: Method,
    /// Its actix path pattern, e.g. `/ollama/api/chat/{url_idx}`.
    pub path: String,
    /// Who may call it.
    pub level: Level,
    /// One line on what it does.
    pub summary: &'static str,
}

/// Every route the gateway registers, in registration order.
pub fn table() -> &'static [RouteInfo] {
    static TABLE: OnceLock<Vec<RouteInfo>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut routes = Routes::default();
        super::register(&mut routes);
        routes.infos().to_vec()
    })
}

/// An actix pattern as an OpenAPI path: `{model:.+}` becomes `{model}`; the empty root `/`.
fn openapi_path(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else { break };
        let inner = &rest[open + 1..open + close];
        let name = inner.split(':').next().unwrap_or(inner);
        out.push('{');
        out.push_str(name);
        out.push('}');
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn params(path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { break };
        let name = &rest[open + 1..open + close];
        let schema = if name == "url_idx" {
            json!({"type": "integer", "minimum": 0})
        } else {
            json!({"type": "string", "minLength": 1})
        };
        out.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
        rest = &rest[open + close + 1..];
    }
    out
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

/// The OpenAPI 3.1 document of every registered route: methods, parameters, who may call it
/// (`security`), and every status the gateway itself answers with, in its error shape.
pub fn openapi() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in table() {
        // The console's pages are HTML for browsers, not part of the API.
        if crate::console::is_console_path(&route.path) {
            continue;
        }
        // `""` and `"/"` are one path to OpenAPI.
        let path = openapi_path(&route.path);
        let method = route.method.as_str().to_lowercase();
        let mut responses = Map::new();
        responses.insert(
            "200".to_owned(),
            json!({
                "description": "Success: JSON, an NDJSON or server-sent-event stream, or the instance's own answer",
                "content": {
                    "application/json": {},
                    "application/x-ndjson": {},
                    "text/event-stream": {},
                    "text/plain": {},
                },
            }),
        );
        let head = route.method == Method::HEAD;
        let error_response = |what: &str| {
            if head {
                // A HEAD answer has headers only.
                json!({ "description": what })
            } else {
                error_response(what)
            }
        };
        if head {
            responses.insert("200".to_owned(), json!({"description": "Success (headers only)"}));
        }
        for (code, what) in [
            ("400", "The request is malformed"),
            ("404", "No such model, instance or route"),
            ("405", "The path does not take this method"),
            ("408", "The request body did not arrive in time"),
            ("413", "The request body is too large"),
            ("429", "Too many attempts or requests; see Retry-After"),
            ("500", "A fault of the instance, passed through"),
            ("502", "An instance could not be reached"),
            ("503", "Busy, or the model's instances are down; see Retry-After"),
            ("504", "An instance did not answer in time"),
        ] {
            responses.insert(code.to_owned(), error_response(what));
        }
        if route.level != Level::Public {
            responses.insert("401".to_owned(), error_response("No valid credential"));
        }
        if matches!(route.level, Level::Verified | Level::Admin) {
            responses.insert("403".to_owned(), error_response("The caller's role may not use this"));
        }
        let mut op = json!({
            "summary": route.summary,
            "operationId": format!("{method}{}", route.path.replace(['/', '{', '}', ':', '.', '+'], "_")),
            "x-corral-level": format!("{:?}", route.level).to_lowercase(),
            "responses": responses,
        });
        let parameters = params(&path);
        if !parameters.is_empty() {
            op["parameters"] = Value::Array(parameters);
        }
        match route.level {
            Level::Public => {}
            // A credential is optional, but checked when presented.
            Level::Checked => op["security"] = json!([{}, {"bearer": []}, {"cookie": []}]),
            _ => op["security"] = json!([{"bearer": []}, {"cookie": []}]),
        }
        if matches!(route.method, Method::POST | Method::PUT | Method::DELETE) {
            op["requestBody"] = json!({
                "required": false,
                "content": {"application/json": {"schema": {"type": "object"}}},
            });
        }
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        if entry.get(&method).is_none() {
            entry[&method] = op;
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Corral",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "One authenticated, load-balanced front door for a fleet of Ollama servers: Ollama's API at the root and under /ollama, the OpenAI API under /v1, accounts and keys under /api/v1.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A session token or an sk- API key"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "token"},
            },
            "schemas": {
                "Error": {
                    "description": "Corral's own errors carry `error` (Ollama's clients) and `detail` (Open WebUI); OpenAI routes answer OpenAI's error object",
                    "type": "object",
                    "anyOf": [
                        {"required": ["error"]},
                        {"required": ["detail"]},
                    ],
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::{openapi, openapi_path, table};

    #[test]
    fn patterns_become_openapi_paths() {
        assert_eq!(openapi_path("/v1/models/{model:.+}"), "/v1/models/{model}");
        assert_eq!(openapi_path("/ollama/api/chat/{url_idx}"), "/ollama/api/chat/{url_idx}");
        assert_eq!(openapi_path(""), "/");
    }

    #[test]
    fn every_route_is_in_the_document_with_its_level() {
        let doc = openapi();
        for route in table().iter().filter(|r| !crate::console::is_console_path(&r.path)) {
            let op = &doc["paths"][openapi_path(&route.path)][route.method.as_str().to_lowercase()];
            assert!(op.is_object(), "{} {} missing", route.method, route.path);
        }
    }

    /// The committed document is what the code generates (`docs/openapi.json`); run the test
    /// with `UPDATE_OPENAPI=1` to rewrite it.
    #[test]
    fn docs_openapi_json_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let want = format!("{:#}\n", openapi());
        let have = std::fs::read_to_string(path).unwrap_or_default();
        if have != want {
            if std::env::var_os("UPDATE_OPENAPI").is_some() {
                std::fs::write(path, &want).unwrap_or_else(|e| panic!("writing {path}: {e}"));
            } else {
                panic!("docs/openapi.json is stale: rerun with UPDATE_OPENAPI=1 and commit it");
            }
        }
    }
}

//! Accounts, tokens, API keys, the route-protection matrix and per-model access control,
//! driven over HTTP against a gateway on a real database, in front of a simulator.

use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use corral_sim::{SimConfig, SimHandle, SimModel};
use corral_store::test_support::TestDb;
use serde_json::{json, Value};

use crate::support::{client, settings_for, Gateway};

/// One HTTP exchange: status, `Retry-After`, and the body as JSON (or a string).
struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

async fn call(method: Method, url: &str, bearer: Option<&str>, body: Option<&Value>) -> Reply {
    let mut req = client().request(method, url);
    if let Some(token) = bearer {
        req = req.insert_header(("Authorization", format!("Bearer {token}")));
    }
    let sent = match body {
        Some(b) => req.send_json(b).await,
        None => req.send().await,
    };
    let mut resp = sent.unwrap();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.body().limit(64 * 1024 * 1024).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply {
        status,
        retry_after,
        body,
    }
}

async fn post(gw: &Gateway, path: &str, bearer: Option<&str>, body: Value) -> Reply {
    call(Method::POST, &gw.at(path), bearer, Some(&body)).await
}

async fn get(gw: &Gateway, path: &str, bearer: Option<&str>) -> Reply {
    call(Method::GET, &gw.at(path), bearer, None).await
}

/// Signs up and returns the session token.
async fn signup(gw: &Gateway, email: &str) -> String {
    let r = post(
        gw,
        "/api/v1/auths/signup",
        None,
        json!({"email": email, "password": "correct horse", "name": email}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["token"].as_str().unwrap().to_owned()
}

/// Signs up the first account, which becomes admin and closes sign-up behind it, and opens
/// sign-up again for the accounts a test makes next.
async fn first_admin(gw: &Gateway, email: &str) -> String {
    let admin = signup(gw, email).await;
    let r = get(gw, "/api/v1/auths/admin/config", Some(&admin)).await;
    assert_eq!(r.body["ENABLE_SIGNUP"], false, "{}", r.body);
    let r = post(
        gw,
        "/api/v1/auths/admin/config",
        Some(&admin),
        json!({"ENABLE_SIGNUP": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["ENABLE_SIGNUP"], true, "{}", r.body);
    admin
}

async fn user_id(gw: &Gateway, token: &str) -> String {
    let r = get(gw, "/api/v1/auths/", Some(token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn set_role(gw: &Gateway, admin: &str, id: &str, role: &str) {
    let r = post(
        gw,
        "/api/v1/users/update/role",
        Some(admin),
        json!({"id": id, "role": role}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn new_key(gw: &Gateway, token: &str) -> (String, String) {
    let r = post(gw, "/api/v1/auths/api_key", Some(token), json!({"name": "test"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (
        r.body["api_key"].as_str().unwrap().to_owned(),
        r.body["id"].as_str().unwrap().to_owned(),
    )
}

async fn sim_with(models: &[&str]) -> SimHandle {
    SimHandle::start(SimConfig {
        models: models.iter().map(|m| SimModel::chat(m)).collect(),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": false, "options": {"num_predict": 2}})
}

fn openai_chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
}

/// Who is calling, for the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    BadToken,
    Pending,
    User,
    Admin,
    UserKey,
    RevokedKey,
}

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    None,
    /// Public, but a credential that is presented must verify.
    Checked,
    /// Any signed-in user, pending ones included.
    Any,
    Verified,
    Admin,
}

fn admitted(who: Who, need: Need) -> bool {
    match need {
        Need::None => true,
        Need::Checked => !matches!(who, Who::BadToken | Who::RevokedKey),
        Need::Any => !matches!(who, Who::Nobody | Who::BadToken | Who::RevokedKey),
        Need::Verified => matches!(who, Who::User | Who::Admin | Who::UserKey),
        Need::Admin => who == Who::Admin,
    }
}

/// A route pattern with its parameters filled in.
fn concrete(pattern: &str) -> String {
    let path = pattern
        .replace("{url_idx}", "0")
        .replace("{model:.+}", "llama3.2:latest")
        .replace("{digest}", "sha256:00")
        .replace("{scope}", "key")
        .replace("{id}", "no-such-id")
        .replace("{idx}", "0");
    if path.is_empty() {
        "/".to_owned()
    } else {
        path
    }
}

/// What a registered level means for the matrix.
fn need_of(level: corral_server::auth::Level) -> Need {
    use corral_server::auth::Level;
    match level {
        Level::Public => Need::None,
        Level::Checked => Need::Checked,
        // Pending users are signed in: for the matrix they are refused like strangers (401).
        Level::Any => Need::Any,
        Level::Verified => Need::Verified,
        Level::Admin => Need::Admin,
        // `/metrics`: open while the gateway listens on loopback with no metrics.token set,
        // as this matrix's gateway does (`metrics_need_the_token_or_an_admin_off_loopback`
        // covers the rest).
        Level::Metrics => Need::None,
    }
}

#[actix_web::test]
async fn every_registered_route_answers_each_caller_as_its_level_says() {
    let db = TestDb::sqlite();
    let sim = sim_with(&["llama3.2", "all-minilm"]).await;
    let gw = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    let admin = first_admin(&gw, "admin@example.com").await;
    let user = signup(&gw, "user@example.com").await;
    let pending = signup(&gw, "pending@example.com").await;
    let user_id = user_id(&gw, &user).await;
    set_role(&gw, &admin, &user_id, "user").await;
    // Users may read the models the matrix exercises.
    for id in ["llama3.2:latest", "all-minilm:latest"] {
        let r = post(
            &gw,
            "/api/v1/models/create",
            Some(&admin),
            json!({"id": id, "access_control": null}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let (user_key, _) = new_key(&gw, &user).await;
    let (revoked_key, revoked_id) = new_key(&gw, &user).await;
    let r = call(
        Method::DELETE,
        &gw.at(&format!("/api/v1/auths/api_keys/{revoked_id}")),
        Some(&user),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let embed = json!({"model": "all-minilm", "input": "x"});
    // Example bodies for routes whose admitted callers should get past body checks.
    let examples: Vec<(Method, &str, Option<Value>, Need)> = vec![
        (Method::GET, "/health", None, Need::None),
        (Method::GET, "/ollama/", None, Need::None),
        (Method::GET, "/api/version", None, Need::Checked),
        (Method::GET, "/ollama/api/version", None, Need::Checked),
        (Method::GET, "/ollama/api/version/0", None, Need::Verified),
        (Method::GET, "/api/tags", None, Need::Verified),
        (Method::GET, "/ollama/api/tags", None, Need::Verified),
        (Method::GET, "/ollama/api/tags/0", None, Need::Verified),
        (Method::GET, "/ollama/v1/models", None, Need::Verified),
        (Method::GET, "/ollama/v1/models/0", None, Need::Verified),
        (Method::POST, "/api/chat", Some(chat("llama3.2")), Need::Verified),
        (Method::POST, "/ollama/api/chat", Some(chat("llama3.2")), Need::Verified),
        (
            Method::POST,
            "/ollama/api/chat/0",
            Some(chat("llama3.2")),
            Need::Verified,
        ),
        (
            Method::POST,
            "/api/generate",
            Some(json!({"model": "llama3.2", "prompt": "hi", "stream": false})),
            Need::Verified,
        ),
        (
            Method::POST,
            "/ollama/api/generate",
            Some(json!({"model": "llama3.2", "prompt": "hi", "stream": false})),
            Need::Verified,
        ),
        (Method::POST, "/api/embed", Some(embed.clone()), Need::Verified),
        (Method::POST, "/ollama/api/embed", Some(embed.clone()), Need::Verified),
        (
            Method::POST,
            "/api/embeddings",
            Some(json!({"model": "all-minilm", "prompt": "x"})),
            Need::Verified,
        ),
        (
            Method::POST,
            "/ollama/api/embeddings",
            Some(json!({"model": "all-minilm", "prompt": "x"})),
            Need::Verified,
        ),
        (
            Method::POST,
            "/api/show",
            Some(json!({"model": "llama3.2"})),
            Need::Verified,
        ),
        (
            Method::POST,
            "/ollama/api/show",
            Some(json!({"model": "llama3.2"})),
            Need::Verified,
        ),
        (
            Method::POST,
            "/ollama/v1/chat/completions",
            Some(openai_chat("llama3.2")),
            Need::Verified,
        ),
        (
            Method::POST,
            "/ollama/v1/completions",
            Some(json!({"model": "llama3.2", "prompt": "hi", "max_tokens": 2})),
            Need::Verified,
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            Some(openai_chat("llama3.2")),
            Need::Verified,
        ),
        (
            Method::POST,
            "/api/chat/completions",
            Some(openai_chat("llama3.2")),
            Need::Verified,
        ),
        (
            Method::POST,
            "/v1/completions",
            Some(json!({"model": "llama3.2", "prompt": "hi", "max_tokens": 2})),
            Need::Verified,
        ),
        (
            Method::POST,
            "/v1/embeddings",
            Some(json!({"model": "all-minilm", "input": ["a", "b"]})),
            Need::Verified,
        ),
        (Method::GET, "/v1/models", None, Need::Verified),
        (Method::GET, "/v1/models/llama3.2:latest", None, Need::Verified),
        (Method::GET, "/api/models", None, Need::Verified),
        (Method::GET, "/api/ps", None, Need::Admin),
        (Method::GET, "/ollama/api/ps", None, Need::Admin),
        (Method::GET, "/ollama/status", None, Need::Admin),
        (Method::GET, "/ollama/config", None, Need::Admin),
        (Method::POST, "/ollama/config/update", Some(json!({})), Need::Admin),
        (
            Method::POST,
            "/ollama/verify",
            Some(json!({"url": sim.url()})),
            Need::Admin,
        ),
        (
            Method::POST,
            "/ollama/api/unload",
            Some(json!({"model": "llama3.2"})),
            Need::Admin,
        ),
        (
            Method::POST,
            "/api/pull",
            Some(json!({"model": "mistral", "stream": false})),
            Need::Admin,
        ),
        (
            Method::POST,
            "/ollama/api/pull",
            Some(json!({"model": "mistral", "stream": false})),
            Need::Admin,
        ),
        (
            Method::POST,
            "/ollama/api/pull/all",
            Some(json!({"model": "mistral"})),
            Need::Admin,
        ),
        (
            Method::POST,
            "/api/create",
            Some(json!({"model": "mine", "from": "llama3.2", "stream": false})),
            Need::Admin,
        ),
        (
            Method::POST,
            "/ollama/api/create",
            Some(json!({"model": "mine", "from": "llama3.2", "stream": false})),
            Need::Admin,
        ),
        (
            Method::POST,
            "/api/copy",
            Some(json!({"source": "nope", "destination": "x"})),
            Need::Admin,
        ),
        (
            Method::POST,
            "/ollama/api/copy",
            Some(json!({"source": "nope", "destination": "x"})),
            Need::Admin,
        ),
        (
            Method::DELETE,
            "/api/delete",
            Some(json!({"model": "nope"})),
            Need::Admin,
        ),
        (
            Method::DELETE,
            "/ollama/api/delete",
            Some(json!({"model": "nope"})),
            Need::Admin,
        ),
        (
            Method::DELETE,
            "/ollama/api/delete/all",
            Some(json!({"model": "nope"})),
            Need::Admin,
        ),
        (
            Method::POST,
            "/api/push",
            Some(json!({"model": "nope", "stream": false})),
            Need::Admin,
        ),
        (
            Method::DELETE,
            "/ollama/api/push",
            Some(json!({"model": "nope", "stream": false})),
            Need::Admin,
        ),
        (Method::POST, "/api/blobs/sha256:00", None, Need::Admin),
        (
            Method::POST,
            "/ollama/models/download",
            Some(json!({"url": "not a url"})),
            Need::Admin,
        ),
        (Method::POST, "/ollama/models/upload", None, Need::Admin),
        (Method::GET, "/api/v1/users/", None, Need::Admin),
        (Method::GET, "/api/v1/groups/", None, Need::Admin),
        (Method::GET, "/api/v1/models/", None, Need::Admin),
    ];
    let callers = [
        (Who::Nobody, None),
        (Who::BadToken, Some("not-a-token".to_owned())),
        (Who::Pending, Some(pending.clone())),
        (Who::User, Some(user.clone())),
        (Who::Admin, Some(admin.clone())),
        (Who::UserKey, Some(user_key.clone())),
        (Who::RevokedKey, Some(revoked_key.clone())),
    ];
    // The routes are the gateway's own table, each with the level it was registered with; a
    // route added without one cannot exist, and one added is tested here without more ado.
    let table = corral_server::routes::table();
    assert!(table.len() > 100, "only {} routes registered", table.len());
    for (method, path, _, need) in &examples {
        // The table says what the reference's matrix says for the routes listed by hand.
        let registered = table.iter().find(|r| r.method == *method && concrete(&r.path) == *path);
        if let Some(r) = registered {
            assert_eq!(need_of(r.level), *need, "{method} {path}");
        }
    }
    let mut wrong = Vec::new();
    let mut checked = 0;
    for route in table {
        let (method, path) = (route.method.clone(), concrete(&route.path));
        // Signing out and revoking one's own keys end the caller's credential: their own tests
        // cover them; here only the refusals are checked.
        let ends_credential = path.ends_with("/signout") || (method == Method::DELETE && path.contains("/api_key"));
        let need = need_of(route.level);
        let body = examples
            .iter()
            .find(|(m, p, _, _)| *m == method && *p == path)
            .and_then(|(_, _, b, _)| b.clone())
            .or_else(|| matches!(method, Method::POST | Method::DELETE).then(|| json!({})));
        for (who, token) in &callers {
            if ends_credential && admitted(*who, need) {
                continue;
            }
            checked += 1;
            let r = call(method.clone(), &gw.at(&path), token.as_deref(), body.as_ref()).await;
            let refused = matches!(r.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
            let console = corral_server::console::is_console_path(&route.path);
            let ok = if admitted(*who, need) {
                !refused && !r.status.is_server_error()
                    || (r.status == StatusCode::BAD_GATEWAY && path == "/ollama/verify")
                    // The console's forms need their CSRF token besides the credential
                    // (tests/it/console.rs sends it).
                    || (console
                        && method == Method::POST
                        && r.status == StatusCode::FORBIDDEN
                        && (r.body.to_string().contains("CSRF")
                            || r.body.to_string().contains("The form expired")))
            } else if console && method == Method::GET && matches!(who, Who::Nobody | Who::BadToken | Who::RevokedKey) {
                // A browser without a session is sent to the console's sign-in page (which
                // this client follows).
                r.status == StatusCode::OK && r.body.to_string().contains("<title>Sign in")
            } else {
                // Signed-in users without the role are forbidden; everyone else is unauthenticated.
                let status = if matches!(who, Who::User | Who::UserKey) {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::UNAUTHORIZED
                };
                let explained = if corral_server::routes::is_openai(&path) {
                    r.body["error"]["message"].is_string()
                } else {
                    r.body["detail"].is_string()
                };
                // HEAD answers carry no body.
                r.status == status && (explained || method == Method::HEAD)
            };
            if !ok {
                wrong.push(format!("{method} {path} as {who:?}: {} {}", r.status, r.body));
            }
        }
    }
    assert!(checked > 700, "only {checked} answers checked");
    assert!(wrong.is_empty(), "{} wrong answers:\n{}", wrong.len(), wrong.join("\n"));
    gw.stop().await;
}

#[actix_web::test]
async fn refusals_carry_the_reference_texts_and_odd_headers_get_401() {
    let db = TestDb::sqlite();
    let sim = sim_with(&["llama3.2"]).await;
    let gw = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    let admin = first_admin(&gw, "admin@example.com").await;
    let pending = signup(&gw, "p@example.com").await;
    let r = get(&gw, "/api/tags", None).await;
    assert_eq!(
        (r.status, r.body["detail"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Not authenticated"))
    );
    let r = get(&gw, "/api/tags", Some(&pending)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body["detail"]
        .as_str()
        .unwrap()
        .starts_with("You do not have permission"));
    // The reference answers a plain 500 to these; each is a JSON 401 here.
    for header in [
        "Bearer",
        "Bearer  two  spaces",
        "Bearer a b",
        "sk-nospace",
        "Basic",
        " ",
        "Bearer sk-",
    ] {
        let resp = client()
            .get(gw.at("/api/tags"))
            .insert_header(("Authorization", header))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "Authorization: {header:?}");
    }
    let resp = client()
        .get(gw.at("/api/tags"))
        .insert_header((
            "Authorization",
            actix_web::http::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "non-UTF-8 header");
    // A token signed with another secret.
    let forged = corral_auth::issue_token(b"another secret", "someone", chrono::Utc::now(), None).unwrap();
    let r = get(&gw, "/api/tags", Some(&forged.token)).await;
    assert_eq!(
        (r.status, r.body["detail"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("401 Unauthorized"))
    );
    // Bad bodies on the account routes are JSON 4xx.
    for body in [
        json!({}),
        json!({"email": "nope", "password": "x"}),
        json!({"email": "a@b.c", "password": ""}),
    ] {
        let r = post(&gw, "/api/v1/auths/signup", None, body.clone()).await;
        assert!(
            r.status.is_client_error() && r.body["detail"].is_string(),
            "{body}: {} {}",
            r.status,
            r.body
        );
    }
    let r = post(
        &gw,
        "/api/v1/auths/signup",
        None,
        json!({"email": "P@example.com", "password": "pw"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["detail"].as_str().unwrap().contains("already registered"),
        "{}",
        r.body
    );
    // On the OpenAI routes a refusal comes in OpenAI's shape, which typed clients parse.
    for (method, path) in [(Method::GET, "/v1/models"), (Method::POST, "/v1/chat/completions")] {
        for bearer in [
            None,
            Some("sk-0123456789abcdef0123456789abcdef"),
            Some(pending.as_str()),
        ] {
            let body = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]});
            let r = call(method.clone(), &gw.at(path), bearer, Some(&body)).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} {bearer:?}: {}", r.body);
            assert!(
                r.body["error"]["message"].is_string() && r.body["error"]["type"].is_string(),
                "{path} {bearer:?}: {}",
                r.body
            );
        }
    }
    // Not JSON, too big, a query string that does not parse: JSON 4xx all the same.
    let raw = |path: &str, body: Vec<u8>| {
        client()
            .post(gw.at(path))
            .insert_header(("Authorization", format!("Bearer {admin}")))
            .insert_header(("Content-Type", "application/json"))
            .send_body(body)
    };
    let cases: [(&str, Vec<u8>, StatusCode); 4] = [
        ("/api/v1/auths/signin", b"{not json".to_vec(), StatusCode::BAD_REQUEST),
        ("/api/v1/auths/signin", Vec::new(), StatusCode::BAD_REQUEST),
        (
            "/api/v1/models/create",
            vec![b' '; 2 * 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        ("/api/v1/models/model/update", b"{}".to_vec(), StatusCode::BAD_REQUEST),
    ];
    for (path, body, status) in cases {
        let mut resp = raw(path, body).await.unwrap();
        let bytes = resp.body().await.unwrap();
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(resp.status(), status, "{path}: {}", String::from_utf8_lossy(&bytes));
        assert!(
            json["detail"].is_string(),
            "{path}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    gw.stop().await;
}

#[actix_web::test]
async fn sign_in_sign_out_and_the_rate_limit() {
    let db = TestDb::sqlite();
    let sim = sim_with(&["llama3.2"]).await;
    let gw = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    let first = post(
        &gw,
        "/api/v1/auths/signup",
        None,
        json!({"email": "Boss@Example.com", "password": "correct horse", "name": "Boss"}),
    )
    .await;
    assert_eq!(first.body["role"], "admin", "the first account is the admin");
    assert_eq!(first.body["email"], "boss@example.com");
    let boss = first.body["token"].as_str().unwrap().to_owned();
    let later = json!({"email": "later@example.com", "password": "pw"});
    // As in the reference, the first sign-up closes sign-up until an admin opens it.
    let closed = post(&gw, "/api/v1/auths/signup", None, later.clone()).await;
    assert_eq!(closed.status, StatusCode::FORBIDDEN, "{}", closed.body);
    let open = json!({"ENABLE_SIGNUP": true, "DEFAULT_USER_ROLE": "pending"});
    let r = post(&gw, "/api/v1/auths/admin/config", None, open.clone()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "admins only: {}", r.body);
    let r = post(&gw, "/api/v1/auths/admin/config", Some(&boss), open).await;
    assert_eq!(r.body["ENABLE_SIGNUP"], true, "{}", r.body);
    let second = post(&gw, "/api/v1/auths/signup", None, later).await;
    assert_eq!(second.body["role"], "pending", "later ones get DEFAULT_USER_ROLE");
    let r = post(
        &gw,
        "/api/v1/auths/admin/config",
        Some(&boss),
        json!({"DEFAULT_USER_ROLE": "user"}),
    )
    .await;
    assert_eq!(
        (r.body["ENABLE_SIGNUP"].clone(), r.body["DEFAULT_USER_ROLE"].clone()),
        (json!(true), json!("user"))
    );
    let third = post(
        &gw,
        "/api/v1/auths/signup",
        None,
        json!({"email": "third@example.com", "password": "pw"}),
    )
    .await;
    assert_eq!(third.body["role"], "user", "the role an admin saved: {}", third.body);
    let bad = post(
        &gw,
        "/api/v1/auths/admin/config",
        Some(&boss),
        json!({"DEFAULT_USER_ROLE": "root"}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let bad = post(
        &gw,
        "/api/v1/auths/admin/config",
        Some(&boss),
        json!({"ENABLE_SIGNUP": "yes"}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    // Sign-ups are limited too: the same email over and over gets 429.
    let mut statuses = Vec::new();
    for _ in 0..16 {
        let again = json!({"email": "third@example.com", "password": "pw"});
        statuses.push(post(&gw, "/api/v1/auths/signup", None, again).await.status.as_u16());
    }
    assert_eq!(statuses[..14], [400; 14], "{statuses:?}");
    assert_eq!(statuses[14..], [429; 2], "{statuses:?}");

    let r = post(
        &gw,
        "/api/v1/auths/signin",
        None,
        json!({"email": "boss@example.com", "password": "wrong"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["detail"]
        .as_str()
        .unwrap()
        .starts_with("The email or password provided is incorrect"));
    let r = post(
        &gw,
        "/api/v1/auths/signin",
        None,
        json!({"email": "BOSS@example.com", "password": "correct horse"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["token_type"], "Bearer");
    assert!(r.body["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp() + 27 * 86_400);
    let token = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(get(&gw, "/api/tags", Some(&token)).await.status, StatusCode::OK);
    // The cookie works as the header does.
    let resp = client()
        .get(gw.at("/api/tags"))
        .insert_header(("Cookie", format!("token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The current user's answer echoes the token that was checked, and a key holder gets none.
    let mut resp = client()
        .get(gw.at("/api/v1/auths/"))
        .insert_header(("Cookie", format!("token={token}")))
        .send()
        .await
        .unwrap();
    let me: Value = resp.json().await.unwrap();
    assert_eq!(me["token"], token.as_str());
    let (key, _) = new_key(&gw, &token).await;
    let r = get(&gw, "/api/v1/auths/", Some(&key)).await;
    assert_eq!(
        (r.status, &r.body["token"]),
        (StatusCode::OK, &Value::Null),
        "{}",
        r.body
    );
    let r = get(&gw, "/api/v1/auths/signout", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&gw, "/api/tags", Some(&token)).await;
    assert_eq!(
        (r.status, r.body["detail"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Invalid token"))
    );

    // Every attempt counts; over 15 in the window is a 429 with Retry-After, even with the
    // right password.
    let mut statuses = Vec::new();
    for i in 0..16 {
        let password = if i == 15 { "pw" } else { "wrong" };
        let r = post(
            &gw,
            "/api/v1/auths/signin",
            None,
            json!({"email": "later@example.com", "password": password}),
        )
        .await;
        statuses.push(r.status.as_u16());
        if i == 15 {
            assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
            assert_eq!(r.body["detail"], "API rate limit exceeded");
            assert!(r.retry_after.unwrap().parse::<u64>().unwrap() >= 1);
        }
    }
    assert!(statuses[..15].iter().all(|s| *s == 400), "{statuses:?}");
    // Another account from the same address is not locked out by this one.
    let r = post(
        &gw,
        "/api/v1/auths/signin",
        None,
        json!({"email": "boss@example.com", "password": "correct horse"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    gw.stop().await;
}

#[actix_web::test]
async fn single_user_mode_signs_in_the_local_admin() {
    let db = TestDb::sqlite();
    let sim = sim_with(&["llama3.2"]).await;
    let mut settings = settings_for(&[&sim.url()]);
    settings.auth.webui_auth = false;
    let gw = Gateway::with_auth(settings, &db.url).await;
    // Every route still needs a token; sign-in ignores what is sent.
    assert_eq!(get(&gw, "/api/tags", None).await.status, StatusCode::UNAUTHORIZED);
    let r = post(&gw, "/api/v1/auths/signin", None, json!({"email": "", "password": ""})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["email"].as_str(), r.body["role"].as_str()),
        (Some("admin@localhost"), Some("admin"))
    );
    let token = r.body["token"].as_str().unwrap();
    assert_eq!(get(&gw, "/api/ps", Some(token)).await.status, StatusCode::OK);
    let again = post(&gw, "/api/v1/auths/signin", None, json!({})).await;
    assert_eq!(again.body["id"], r.body["id"]);
    let r = post(
        &gw,
        "/api/v1/auths/signup",
        None,
        json!({"email": "x@example.com", "password": "pw"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    gw.stop().await;
}

/// Rights: `llama3.2` readable through a group, `qwen3` by one user directly, `all-minilm`
/// with no record (hidden from users), `mistral` public.
#[actix_web::test]
async fn users_see_and_use_only_the_models_they_may_read() {
    let db = TestDb::sqlite();
    let sim = SimHandle::start(SimConfig {
        models: vec![
            SimModel::chat("llama3.2"),
            SimModel::chat("qwen3"),
            SimModel::embedding("all-minilm"),
            SimModel::chat("mistral"),
        ],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    let admin = first_admin(&gw, "admin@example.com").await;
    let alice = signup(&gw, "alice@example.com").await;
    let bob = signup(&gw, "bob@example.com").await;
    let (alice_id, bob_id) = (user_id(&gw, &alice).await, user_id(&gw, &bob).await);
    set_role(&gw, &admin, &alice_id, "user").await;
    set_role(&gw, &admin, &bob_id, "user").await;
    let r = post(
        &gw,
        "/api/v1/groups/create",
        Some(&admin),
        json!({"name": "team", "user_ids": [alice_id]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let group = r.body["id"].as_str().unwrap().to_owned();
    for record in [
        json!({"id": "llama3.2:latest", "access_control": {"read": {"group_ids": [group], "user_ids": []}, "write": {"group_ids": [], "user_ids": []}}}),
        json!({"id": "qwen3:latest", "access_control": {"read": {"group_ids": [], "user_ids": [bob_id]}, "write": {"group_ids": [], "user_ids": []}}}),
        json!({"id": "mistral:latest", "access_control": null}),
    ] {
        let r = post(&gw, "/api/v1/models/create", Some(&admin), record).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let names = |v: &Value, key: &str, field: &str| -> Vec<String> {
        let mut n: Vec<String> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[field].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    // Interleaved, so a shared listing cache would leak one view into the other.
    for _ in 0..3 {
        for (token, expected) in [
            (&alice, vec!["llama3.2:latest", "mistral:latest"]),
            (&bob, vec!["mistral:latest", "qwen3:latest"]),
            (
                &admin,
                vec!["all-minilm:latest", "llama3.2:latest", "mistral:latest", "qwen3:latest"],
            ),
        ] {
            for path in ["/api/tags", "/ollama/api/tags", "/ollama/api/tags/0"] {
                assert_eq!(
                    names(&get(&gw, path, Some(token)).await.body, "models", "model"),
                    expected,
                    "{path}"
                );
            }
            for path in ["/v1/models", "/api/models", "/ollama/v1/models"] {
                assert_eq!(
                    names(&get(&gw, path, Some(token)).await.body, "data", "id"),
                    expected,
                    "{path}"
                );
            }
            for path in ["/api/tags", "/ollama/api/tags", "/ollama/api/tags/0"] {
                let r = call(Method::HEAD, &gw.at(path), Some(token), None).await;
                assert_eq!(r.status, StatusCode::OK, "HEAD {path}");
            }
        }
    }
    // Use: every model route, with and without the reference's bypass parameter.
    let uses = |model: &str| -> Vec<(&'static str, Value)> {
        vec![
            ("/api/chat", chat(model)),
            ("/ollama/api/chat", chat(model)),
            ("/ollama/api/chat/0", chat(model)),
            ("/api/generate", json!({"model": model, "prompt": "x", "stream": false})),
            (
                "/ollama/api/generate",
                json!({"model": model, "prompt": "x", "stream": false}),
            ),
            ("/api/show", json!({"model": model})),
            ("/ollama/api/show", json!({"model": model})),
            ("/api/embed", json!({"model": model, "input": "x"})),
            ("/api/embeddings", json!({"model": model, "prompt": "x"})),
            ("/v1/chat/completions", openai_chat(model)),
            ("/api/chat/completions", openai_chat(model)),
            (
                "/v1/completions",
                json!({"model": model, "prompt": "x", "max_tokens": 2}),
            ),
            ("/v1/embeddings", json!({"model": model, "input": "x"})),
        ]
    };
    let mut wrong = Vec::new();
    for (who, token, allowed, refused) in [
        ("alice", &alice, "llama3.2", ["qwen3", "all-minilm"]),
        ("bob", &bob, "qwen3", ["llama3.2", "all-minilm"]),
    ] {
        for (path, body) in uses(allowed) {
            let r = post(&gw, path, Some(token), body).await;
            if matches!(r.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                wrong.push(format!("{who} refused {allowed} on {path}: {} {}", r.status, r.body));
            }
        }
        for model in refused {
            for suffix in ["", "?bypass_filter=true"] {
                for (path, body) in uses(model) {
                    let path = format!("{path}{suffix}");
                    let r = post(&gw, &path, Some(token), body).await;
                    if r.status != StatusCode::FORBIDDEN {
                        wrong.push(format!("{who} got {model} on {path}: {} {}", r.status, r.body));
                    }
                }
            }
        }
        let r = get(&gw, "/v1/models/all-minilm:latest", Some(token)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "a hidden model looks absent");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The bypass setting is configuration, not a parameter.
    gw.stop().await;
    let mut settings = settings_for(&[&sim.url()]);
    settings.auth.bypass_model_access_control = true;
    let gw = Gateway::with_auth(settings, &db.url).await;
    assert_eq!(
        names(&get(&gw, "/api/tags", Some(&alice)).await.body, "models", "model").len(),
        4
    );
    assert_eq!(
        post(&gw, "/api/chat", Some(&alice), chat("qwen3")).await.status,
        StatusCode::OK
    );
    gw.stop().await;
}

#[actix_web::test]
async fn model_params_system_prompt_and_user_headers_reach_the_upstream() {
    let db = TestDb::sqlite();
    let sim = sim_with(&["llama3.2"]).await;
    let mut settings = settings_for(&[&sim.url()]);
    settings.auth.forward_user_info_headers = true;
    // No background listing within the test: the pinned listing below is the last on its path.
    settings.ollama.models_cache_ttl = 300;
    let gw = Gateway::with_auth(settings, &db.url).await;
    let admin = first_admin(&gw, "admin@example.com").await;
    let user = signup(&gw, "jose@example.com").await;
    let uid = user_id(&gw, &user).await;
    set_role(&gw, &admin, &uid, "user").await;
    let r = post(
        &gw,
        &format!("/api/v1/users/{uid}/update"),
        Some(&admin),
        json!({"name": "José O'Neil"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let record = json!({
        "id": "llama3.2:latest",
        "access_control": null,
        "params": {"system": "You are Corral, speaking to {{USER_NAME}}.", "temperature": 0.25, "num_ctx": 1024, "max_tokens": 7, "keep_alive": "300", "top_k": "7"},
    });
    assert_eq!(
        post(&gw, "/api/v1/models/create", Some(&admin), record).await.status,
        StatusCode::OK
    );
    // The last request on a path: the gateway's own listings and health checks do not displace it.
    let last = |path: &str| serde_json::to_value(sim.last_request_to(path)).unwrap();

    // Native chat: model params override the client's options; the system prompt leads.
    let mut body = chat("llama3.2");
    body["options"] = json!({"temperature": 0.9, "seed": 3});
    body["metadata"] = json!({"chat_id": "chat-42"});
    let r = post(&gw, "/api/chat", Some(&user), body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = last("/api/chat");
    let sent = seen["json"].clone();
    assert_eq!(sent["options"]["temperature"], 0.25);
    assert_eq!(sent["options"]["num_ctx"], 1024);
    assert_eq!(sent["options"]["num_predict"], 7);
    assert_eq!(sent["options"]["seed"], 3);
    assert_eq!(sent["options"]["top_k"], 7, "cast as the reference casts: {sent}");
    assert_eq!(sent["keep_alive"], 300, "JSON-parsed and lifted to the root: {sent}");
    assert!(
        sent.get("metadata").is_none(),
        "metadata is the gateway's, not the instance's: {sent}"
    );
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "You are Corral, speaking to José O'Neil."})
    );
    assert_eq!(sent["messages"][1]["content"], "hi");
    assert_eq!(
        header(&seen, "x-openwebui-user-name").as_deref(),
        Some("Jos%C3%A9 O%27Neil")
    );
    assert_eq!(header(&seen, "x-openwebui-user-id"), Some(uid.clone()));
    assert_eq!(header(&seen, "x-openwebui-user-role").as_deref(), Some("user"));
    assert_eq!(header(&seen, "x-openwebui-chat-id").as_deref(), Some("chat-42"));
    assert_eq!(
        header(&seen, "authorization"),
        None,
        "the caller's token stays at the gateway"
    );

    // The OpenAI route: params at the top level, converted to Ollama's options.
    let mut body = openai_chat("llama3.2");
    body["temperature"] = json!(1.5);
    body["messages"] = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]);
    let r = post(&gw, "/v1/chat/completions", Some(&user), body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = last("/api/chat");
    assert_eq!(seen["path"], "/api/chat");
    let sent = seen["json"].clone();
    assert_eq!(sent["options"]["temperature"], 0.25);
    assert_eq!(sent["options"]["num_predict"], 7);
    assert_eq!(sent["options"]["top_k"], 7, "the same casts as on /api/chat: {sent}");
    assert_eq!(sent["keep_alive"], 300, "{sent}");
    assert_eq!(
        sent["messages"][0]["content"],
        "You are Corral, speaking to José O'Neil.\nBe brief."
    );
    assert_eq!(
        header(&seen, "x-openwebui-user-email").as_deref(),
        Some("jose@example.com")
    );

    // The instance's own `/v1` through `/ollama`: params and prompt on chat, params on completions.
    let mut body = openai_chat("llama3.2");
    body["temperature"] = json!(1.5);
    body["metadata"] = json!({"chat_id": "chat-43"});
    let r = post(&gw, "/ollama/v1/chat/completions", Some(&user), body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = last("/v1/chat/completions");
    assert_eq!(seen["path"], "/v1/chat/completions");
    assert_eq!(header(&seen, "x-openwebui-chat-id").as_deref(), Some("chat-43"));
    let sent = seen["json"].clone();
    assert_eq!(sent["temperature"], 0.25, "{sent}");
    assert_eq!(sent["max_tokens"], 7, "{sent}");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "You are Corral, speaking to José O'Neil."})
    );
    assert!(sent.get("metadata").is_none(), "{sent}");
    let r = post(
        &gw,
        "/ollama/v1/completions",
        Some(&user),
        json!({"model": "llama3.2", "prompt": "x", "temperature": 1.5}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let sent = last("/v1/completions")["json"].clone();
    assert_eq!(sent["temperature"], 0.25, "{sent}");
    assert!(sent.get("messages").is_none() && sent.get("system").is_none(), "{sent}");

    // The root completions route converts to /api/generate and applies the params there.
    let r = post(
        &gw,
        "/v1/completions",
        Some(&user),
        json!({"model": "llama3.2", "prompt": "x", "temperature": 1.5}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = last("/api/generate");
    assert_eq!(seen["path"], "/api/generate");
    let sent = seen["json"].clone();
    assert_eq!(sent["options"]["temperature"], 0.25, "{sent}");
    assert_eq!(sent["keep_alive"], 300, "{sent}");

    // A pinned listing carries the user's headers too.
    assert_eq!(get(&gw, "/ollama/api/tags/0", Some(&user)).await.status, StatusCode::OK);
    let seen = last("/api/tags");
    assert_eq!(seen["path"], "/api/tags");
    assert_eq!(header(&seen, "x-openwebui-user-id"), Some(uid.clone()));

    // Generate gets neither params nor a system prompt (as the reference).
    let r = post(
        &gw,
        "/api/generate",
        Some(&user),
        json!({"model": "llama3.2", "prompt": "x", "stream": false}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let sent = last("/api/generate")["json"].clone();
    assert!(sent.get("system").is_none() && sent.get("options").is_none(), "{sent}");
    gw.stop().await;

    // Without the setting, no user header goes upstream.
    let gw = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    assert_eq!(
        post(&gw, "/api/chat", Some(&user), chat("llama3.2")).await.status,
        StatusCode::OK
    );
    let seen = last("/api/chat");
    let leaked: Vec<&Value> = seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str().unwrap().starts_with("x-openwebui"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    gw.stop().await;
}

/// A header of a request the simulator recorded.
fn header(seen: &Value, name: &str) -> Option<String> {
    seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap().to_owned())
}

/// Keys and users on `db`, through two replicas: what one revokes or deletes, the other
/// refuses within two seconds; on this replica, at once.
async fn key_lifecycle_across_replicas(db: &TestDb) {
    let sim = sim_with(&["llama3.2"]).await;
    let a = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    let b = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    let admin = first_admin(&a, "admin@example.com").await;
    let user = signup(&a, "user@example.com").await;
    let uid = user_id(&a, &user).await;
    set_role(&a, &admin, &uid, "user").await;
    assert_eq!(
        post(
            &a,
            "/api/v1/models/create",
            Some(&admin),
            json!({"id": "llama3.2:latest"})
        )
        .await
        .status,
        StatusCode::OK
    );
    let (key1, id1) = new_key(&a, &user).await;
    let (key2, _) = new_key(&a, &user).await;
    assert!(key1.starts_with("sk-") && key1.len() >= 35, "{key1}");
    // Shown once: the listing has prefixes and use times, never a key.
    let before = Instant::now();
    let wait_for = |gw: &Gateway, key: String, want: StatusCode| {
        let url = gw.at("/api/tags");
        async move {
            loop {
                let s = call(Method::GET, &url, Some(&key), None).await.status;
                if s == want {
                    return true;
                }
                if before.elapsed() > Duration::from_secs(10) {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        wait_for(&b, key1.clone(), StatusCode::OK).await,
        "replica B accepts a key made on A"
    );
    assert_eq!(
        post(&b, "/api/chat", Some(&key1), chat("llama3.2")).await.status,
        StatusCode::OK
    );
    let list = get(&a, "/api/v1/auths/api_keys", Some(&user)).await;
    assert_eq!(list.body.as_array().unwrap().len(), 2);
    let text = list.body.to_string();
    assert!(!text.contains(&key1[3..]) && !text.contains(&key2[3..]), "{text}");
    let got = get(&a, "/api/v1/auths/api_key", Some(&user)).await;
    assert!(!got.body.to_string().contains(&key1[3..]));

    // Revoked on A: refused on A at once, on B within two seconds.
    let r = call(
        Method::DELETE,
        &a.at(&format!("/api/v1/auths/api_keys/{id1}")),
        Some(&user),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(get(&a, "/api/tags", Some(&key1)).await.status, StatusCode::UNAUTHORIZED);
    let revoked = Instant::now();
    assert!(wait_for(&b, key1.clone(), StatusCode::UNAUTHORIZED).await);
    assert!(
        revoked.elapsed() < Duration::from_secs(2),
        "B took {:?}",
        revoked.elapsed()
    );
    assert_eq!(
        get(&b, "/api/tags", Some(&key2)).await.status,
        StatusCode::OK,
        "the other key still works"
    );

    // The user deleted on B: the key and the session stop on A within two seconds.
    let r = call(
        Method::DELETE,
        &b.at(&format!("/api/v1/users/{uid}")),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(get(&b, "/api/tags", Some(&key2)).await.status, StatusCode::UNAUTHORIZED);
    let deleted = Instant::now();
    assert!(wait_for(&a, key2.clone(), StatusCode::UNAUTHORIZED).await);
    assert!(wait_for(&a, user.clone(), StatusCode::UNAUTHORIZED).await);
    assert!(
        deleted.elapsed() < Duration::from_secs(2),
        "A took {:?}",
        deleted.elapsed()
    );
    a.stop().await;
    b.stop().await;
}

#[actix_web::test]
async fn key_lifecycle_and_user_deletion_across_replicas_on_sqlite() {
    key_lifecycle_across_replicas(&TestDb::sqlite()).await;
}

#[actix_web::test]
async fn key_lifecycle_and_user_deletion_across_replicas_on_postgres() {
    let Some(db) = TestDb::postgres() else { return };
    key_lifecycle_across_replicas(&db).await;
}

#[actix_web::test]
async fn sessions_survive_a_restart_and_the_secret_is_kept_in_the_store() {
    let db = TestDb::sqlite();
    let sim = sim_with(&["llama3.2"]).await;
    let gw = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    let admin = first_admin(&gw, "admin@example.com").await;
    gw.stop().await;
    let gw = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    assert_eq!(get(&gw, "/api/ps", Some(&admin)).await.status, StatusCode::OK);
    gw.stop().await;
    // A configured secret replaces the stored one: old tokens no longer verify.
    let mut settings = settings_for(&[&sim.url()]);
    settings.auth.secret_key = "configured-secret".to_owned();
    let gw = Gateway::with_auth(settings, &db.url).await;
    assert_eq!(get(&gw, "/api/ps", Some(&admin)).await.status, StatusCode::UNAUTHORIZED);
    gw.stop().await;
}

#[actix_web::test]
async fn a_preset_runs_on_its_base_model_with_its_own_access_and_settings() {
    let db = TestDb::sqlite();
    let sim = sim_with(&["llama3.2", "qwen3"]).await;
    let gw = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    let admin = first_admin(&gw, "admin@example.com").await;
    let user = signup(&gw, "user@example.com").await;
    let uid = user_id(&gw, &user).await;
    set_role(&gw, &admin, &uid, "user").await;
    let other = signup(&gw, "other@example.com").await;
    let oid = user_id(&gw, &other).await;
    set_role(&gw, &admin, &oid, "user").await;
    let private = json!({"read": {"group_ids": [], "user_ids": []}, "write": {"group_ids": [], "user_ids": []}});
    let records = [
        // The base model is nobody's but the admins'; the other model is everyone's.
        json!({"id": "llama3.2:latest", "access_control": private}),
        json!({"id": "qwen3:latest", "access_control": null}),
        // The preset on it is the user's.
        json!({
            "id": "support-bot",
            "base_model_id": "llama3.2:latest",
            "name": "Support bot",
            "params": {"system": "You answer questions about Corral.", "temperature": 0.1},
            "access_control": {"read": {"group_ids": [], "user_ids": [uid]}},
        }),
        // A preset on a model no instance has.
        json!({"id": "ghost", "base_model_id": "nowhere:7b", "access_control": null}),
    ];
    for record in records {
        let r = post(&gw, "/api/v1/models/create", Some(&admin), record).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let last = |path: &str| serde_json::to_value(sim.last_request_to(path)).unwrap();

    // Native chat: routed and sent as the base model, with the preset's settings.
    let r = post(&gw, "/api/chat", Some(&user), chat("support-bot")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = last("/api/chat");
    assert_eq!(seen["path"], "/api/chat");
    assert_eq!(seen["json"]["model"], "llama3.2:latest");
    assert_eq!(seen["json"]["options"]["temperature"], 0.1);
    assert_eq!(
        seen["json"]["messages"][0],
        json!({"role": "system", "content": "You answer questions about Corral."})
    );
    // A model with no settings: `metadata` alone is still not sent on.
    let mut body = chat("qwen3");
    body["metadata"] = json!({"chat_id": "c1", "variables": {"{{X}}": "y"}});
    let r = post(&gw, "/api/chat", Some(&user), body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = last("/api/chat");
    assert_eq!(seen["json"]["model"], "qwen3");
    assert!(seen["json"].get("metadata").is_none(), "{}", seen["json"]);
    // A body Ollama would read as another model than the one checked is refused.
    let mut smuggled = chat("llama3.2");
    smuggled["source"] = json!("qwen3");
    let r = post(&gw, "/api/chat", Some(&user), smuggled).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    for (path, body) in [
        ("/api/chat", r#"{"model":"qwen3","Model":"llama3.2","messages":[]}"#),
        ("/ollama/api/chat/0", r#"{"MODEL":"llama3.2","messages":[]}"#),
        ("/api/generate", r#"{"model":"qwen3","prompt":"x","model":"llama3.2"}"#),
        ("/api/show", r#"{"name":"qwen3","Name":"llama3.2"}"#),
    ] {
        let mut resp = client()
            .post(gw.at(path))
            .insert_header(("Authorization", format!("Bearer {user}")))
            .insert_header(("Content-Type", "application/json"))
            .send_body(body)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&resp.body().await.unwrap()).into_owned();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path} {body}: {text}");
        assert!(text.contains("\"detail\""), "{text}");
    }
    // The base model itself stays closed to the user.
    let r = post(&gw, "/api/chat", Some(&user), chat("llama3.2")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // Generate and embed reach the base model too, without the chat settings.
    let r = post(
        &gw,
        "/api/generate",
        Some(&user),
        json!({"model": "support-bot", "prompt": "x", "stream": false}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = last("/api/generate");
    assert_eq!(seen["json"]["model"], "llama3.2:latest");
    assert!(seen["json"].get("options").is_none(), "{}", seen["json"]);

    // The OpenAI route: the answer names the preset the client asked for.
    let r = post(&gw, "/v1/chat/completions", Some(&user), openai_chat("support-bot")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["model"], "support-bot");
    let seen = last("/api/chat");
    assert_eq!(seen["json"]["model"], "llama3.2:latest");
    assert_eq!(seen["json"]["messages"][0]["role"], "system");

    // Listings: the user sees the preset and not its base; another user sees neither.
    let ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let r = get(&gw, "/v1/models", Some(&user)).await;
    assert_eq!(ids(&r.body), ["qwen3:latest", "support-bot"]);
    let r = get(&gw, "/v1/models", Some(&other)).await;
    assert_eq!(ids(&r.body), ["qwen3:latest"]);
    let r = get(&gw, "/v1/models", Some(&admin)).await;
    assert_eq!(ids(&r.body), ["llama3.2:latest", "qwen3:latest", "support-bot"]);
    assert_eq!(
        get(&gw, "/v1/models/support-bot", Some(&user)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&gw, "/v1/models/support-bot", Some(&other)).await.status,
        StatusCode::NOT_FOUND
    );
    let r = post(&gw, "/api/chat", Some(&other), chat("support-bot")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    // A preset on a model nobody has is answered as that model's absence.
    let r = post(&gw, "/api/chat", Some(&user), chat("ghost")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert!(r.body.to_string().contains("nowhere:7b"), "{}", r.body);

    // A deactivated preset is the admins' alone.
    let r = post(
        &gw,
        "/api/v1/models/model/update?id=support-bot",
        Some(&admin),
        json!({"id": "support-bot", "base_model_id": "llama3.2:latest", "is_active": false,
               "access_control": {"read": {"group_ids": [], "user_ids": [uid]}}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = post(&gw, "/api/chat", Some(&user), chat("support-bot")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = post(&gw, "/api/chat", Some(&admin), chat("support-bot")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // An update changes only what it sends: reactivated, the preset keeps its base, its
    // access list and its prompt.
    let r = post(
        &gw,
        "/api/v1/models/model/update?id=support-bot",
        Some(&admin),
        json!({"is_active": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["base_model_id"], "llama3.2:latest");
    assert_eq!(r.body["access_control"]["read"]["user_ids"], json!([uid]));
    assert_eq!(r.body["params"]["system"], "You answer questions about Corral.");
    assert_eq!(
        post(&gw, "/api/chat", Some(&user), chat("support-bot")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        post(&gw, "/api/chat", Some(&other), chat("support-bot")).await.status,
        StatusCode::FORBIDDEN
    );
    // An explicit null opens it to everyone; another id in the body is refused.
    let r = post(
        &gw,
        "/api/v1/models/model/update?id=support-bot",
        Some(&admin),
        json!({"access_control": null}),
    )
    .await;
    assert_eq!((r.status, &r.body["access_control"]), (StatusCode::OK, &Value::Null));
    assert_eq!(
        post(&gw, "/api/chat", Some(&other), chat("support-bot")).await.status,
        StatusCode::OK
    );
    let r = post(
        &gw,
        "/api/v1/models/model/update?id=support-bot",
        Some(&admin),
        json!({"id": "other-bot"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    gw.stop().await;
}

#[actix_web::test]
async fn an_outage_does_not_tell_private_models_from_missing_ones() {
    let db = TestDb::sqlite();
    let sim = sim_with(&["llama3.2"]).await;
    let dead = crate::support::dead_url();
    let gw = Gateway::with_auth(settings_for(&[&sim.url(), &dead]), &db.url).await;
    let admin = first_admin(&gw, "admin@example.com").await;
    let user = signup(&gw, "user@example.com").await;
    let uid = user_id(&gw, &user).await;
    set_role(&gw, &admin, &uid, "user").await;
    for record in [
        json!({"id": "llama3.2:latest", "access_control": {}}),
        json!({"id": "phi4:latest", "access_control": null}),
    ] {
        let r = post(&gw, "/api/v1/models/create", Some(&admin), record).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    // Instance 1 is down. A private model and a missing one get the same answer.
    for model in ["llama3.2", "nothing-here"] {
        let r = post(&gw, "/api/chat", Some(&user), chat(model)).await;
        assert_eq!(
            (r.status, r.body["detail"].as_str()),
            (StatusCode::FORBIDDEN, Some("Model not found")),
            "{model}"
        );
        let r = get(&gw, &format!("/v1/models/{model}"), Some(&user)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{model}: {}", r.body);
    }
    // A model the user may read that no instance ever listed is unknown, outage or not.
    let r = post(&gw, "/api/chat", Some(&user), chat("phi4")).await;
    assert_eq!(
        (r.status, r.body["detail"].as_str()),
        (StatusCode::FORBIDDEN, Some("Model not found")),
        "{}",
        r.body
    );
    // Admins get Ollama's 404 for a model no instance ever listed.
    let r = post(&gw, "/api/chat", Some(&admin), chat("nothing-here")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    gw.stop().await;
}

#[actix_web::test]
async fn the_first_admin_stays_and_tokens_are_picked_as_the_reference_picks_them() {
    let db = TestDb::sqlite();
    let sim = sim_with(&["llama3.2"]).await;
    let gw = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    let first = first_admin(&gw, "admin@example.com").await;
    let first_id = user_id(&gw, &first).await;
    let second = signup(&gw, "second@example.com").await;
    let second_id = user_id(&gw, &second).await;
    set_role(&gw, &first, &second_id, "admin").await;
    // Another admin can neither demote nor delete the first one.
    let r = post(
        &gw,
        "/api/v1/users/update/role",
        Some(&second),
        json!({"id": first_id, "role": "user"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    for change in [
        json!({"password": "Hijacked1!"}),
        json!({"email": "takeover@example.com"}),
        json!({"name": "pwned"}),
    ] {
        let r = post(&gw, &format!("/api/v1/users/{first_id}/update"), Some(&second), change).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    // Read back: the first admin is as it was, and its password is still its own.
    let read_first = || async {
        let r = get(&gw, &format!("/api/v1/users/{first_id}"), Some(&first)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        (
            r.body["email"].as_str().unwrap().to_owned(),
            r.body["name"].as_str().unwrap().to_owned(),
            r.body["role"].as_str().unwrap().to_owned(),
        )
    };
    let unchanged = (
        "admin@example.com".to_owned(),
        "admin@example.com".to_owned(),
        "admin".to_owned(),
    );
    assert_eq!(read_first().await, unchanged);
    let signin = |password: &'static str| {
        post(
            &gw,
            "/api/v1/auths/signin",
            None,
            json!({"email": "admin@example.com", "password": password}),
        )
    };
    assert!(
        signin("Hijacked1!").await.status.is_client_error(),
        "the password was changed"
    );
    assert_eq!(signin("correct horse").await.status, StatusCode::OK);
    let r = post(
        &gw,
        &format!("/api/v1/users/{first_id}/update"),
        Some(&first),
        json!({"name": "Owner"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "the first admin changes itself: {}", r.body);
    assert_eq!(
        read_first().await,
        ("admin@example.com".to_owned(), "Owner".to_owned(), "admin".to_owned()),
        "the change was saved"
    );
    let r = call(
        Method::DELETE,
        &gw.at(&format!("/api/v1/users/{first_id}")),
        Some(&second),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(read_first().await.2, "admin", "still there, still admin");
    assert_eq!(
        get(&gw, "/api/ps", Some(&first)).await.status,
        StatusCode::OK,
        "still admin"
    );

    let tags = |auth: Option<&'static str>, cookie: String| {
        let url = gw.at("/api/tags");
        async move {
            let mut req = client().get(url).insert_header(("Cookie", cookie));
            if let Some(auth) = auth {
                req = req.insert_header(("Authorization", auth));
            }
            req.send().await.unwrap().status()
        }
    };
    // An Authorization header with no credential is no usable Bearer header: the cookie counts.
    for auth in ["Bearer", "Bearer ", "Basic abc", ""] {
        assert_eq!(
            tags(Some(auth), format!("token={first}")).await,
            StatusCode::OK,
            "{auth:?}"
        );
    }
    // A bearer value that cannot be a token is refused, cookie or not.
    assert_eq!(
        tags(Some("Bearer a b"), format!("token={first}")).await,
        StatusCode::UNAUTHORIZED
    );
    // Of two `token` cookies the last counts (a stale one with a longer path comes first).
    assert_eq!(tags(None, format!("token=stale; token={first}")).await, StatusCode::OK);
    assert_eq!(
        tags(None, format!("token={first}; token=stale")).await,
        StatusCode::UNAUTHORIZED
    );
    gw.stop().await;
}

#[actix_web::test]
async fn of_two_simultaneous_first_sign_ups_only_one_gets_in() {
    let db = TestDb::sqlite();
    let sim = sim_with(&["llama3.2"]).await;
    let gw = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    let form = |email: &str| json!({"email": email, "password": "correct horse", "name": email});
    let (a, b) = futures_util::join!(
        post(&gw, "/api/v1/auths/signup", None, form("owner@example.com")),
        post(&gw, "/api/v1/auths/signup", None, form("intruder@example.com")),
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 403], "{} / {}", a.body, b.body);
    let winner = if a.status == StatusCode::OK { &a } else { &b };
    assert_eq!(winner.body["role"], "admin");
    gw.stop().await;
}

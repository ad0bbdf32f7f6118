//! The web console over real HTTP: every admin page and fragment refused to a user's session
//! (walked from the registered routes), CSRF on every form, the security headers, a key shown
//! once, and the console switched off. The browser suite (`tests/console`) drives the pages.

use actix_web::http::{Method, StatusCode};
use corral_server::auth::Level;
use corral_store::test_support::TestDb;
use serde_json::{json, Value};

use crate::support::{client, settings_for, sim, Gateway};

/// An answer: status, `Location`, `Content-Security-Policy`, body text.
struct Page {
    status: StatusCode,
    location: Option<String>,
    csp: Option<String>,
    body: String,
}

async fn send(method: Method, url: &str, session: Option<&str>, form: Option<&str>, csrf_header: Option<&str>) -> Page {
    // Redirects are seen, not followed.
    let browser = awc::Client::builder().disable_redirects().finish();
    let mut req = browser.request(method, url);
    if let Some(token) = session {
        req = req.insert_header(("Cookie", format!("token={token}")));
    }
    if let Some(csrf) = csrf_header {
        req = req.insert_header(("x-csrf-token", csrf.to_owned()));
    }
    let mut resp = match form {
        Some(body) => req
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .send_body(body.to_owned())
            .await
            .unwrap(),
        None => req.send().await.unwrap(),
    };
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (location, csp) = (header("location"), header("content-security-policy"));
    let bytes = resp.body().limit(16 * 1024 * 1024).await.unwrap();
    Page {
        status: resp.status(),
        location,
        csp,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn api(gw: &Gateway, method: Method, path: &str, bearer: Option<&str>, body: Value) -> Value {
    let mut req = client().request(method, gw.at(path));
    if let Some(token) = bearer {
        req = req.insert_header(("Authorization", format!("Bearer {token}")));
    }
    let mut resp = req.send_json(&body).await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().limit(16 * 1024 * 1024).await.unwrap()
}

async fn sign_in(gw: &Gateway, email: &str, password: &str) -> String {
    let r = api(
        gw,
        Method::POST,
        "/api/v1/auths/signin",
        None,
        json!({"email": email, "password": password}),
    )
    .await;
    r["token"].as_str().unwrap().to_owned()
}

/// The CSRF token a page carries (`<body data-csrf=…>`).
fn csrf_of(page: &Page) -> String {
    let at = page.body.find("data-csrf=\"").expect("the page carries a CSRF token") + "data-csrf=\"".len();
    page.body[at..].split('"').next().unwrap().to_owned()
}

fn concrete(pattern: &str) -> String {
    pattern.replace("{idx}", "0").replace("{id}", "no-such-id")
}

/// A gateway with accounts, an admin and a user (both with a session), in front of a simulator.
async fn setup(db: &TestDb, upstream: &str) -> (Gateway, String, String) {
    let gw = Gateway::with_auth(settings_for(&[upstream]), &db.url).await;
    let signup = json!({"email": "admin@example.com", "password": "correct horse", "name": "Admin"});
    let admin = api(&gw, Method::POST, "/api/v1/auths/signup", None, signup).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let add = json!({"email": "user@example.com", "password": "battery staple", "role": "user"});
    api(&gw, Method::POST, "/api/v1/auths/add", Some(&admin), add).await;
    let user = sign_in(&gw, "user@example.com", "battery staple").await;
    (gw, admin, user)
}

#[actix_web::test]
async fn a_users_session_gets_403_from_every_admin_page_and_fragment() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let (gw, admin, user) = setup(&db, &sim.url()).await;
    // The user's own pages work, and give the user's CSRF token.
    let keys = send(Method::GET, &gw.at("/console/keys"), Some(&user), None, None).await;
    assert_eq!(keys.status, StatusCode::OK, "{}", keys.body);
    let user_csrf = csrf_of(&keys);
    let form = format!("csrf={user_csrf}&name=x&model=llama3.2&url=http%3A%2F%2F127.0.0.1%3A1");

    let console: Vec<_> = corral_server::routes::table()
        .iter()
        .filter(|r| corral_server::console::is_console_path(&r.path))
        .collect();
    let admin_routes: Vec<_> = console.iter().filter(|r| r.level == Level::Admin).collect();
    assert!(
        admin_routes.len() >= 20,
        "only {} admin console routes",
        admin_routes.len()
    );
    let mut wrong = Vec::new();
    for route in &admin_routes {
        let url = gw.at(&concrete(&route.path));
        let body = (route.method == Method::POST).then_some(form.as_str());
        let as_user = send(route.method.clone(), &url, Some(&user), body, Some(&user_csrf)).await;
        if as_user.status != StatusCode::FORBIDDEN || as_user.body.contains("admin@example.com") {
            wrong.push(format!("{} {} as a user: {}", route.method, route.path, as_user.status));
        }
        // An admin's session is let in to every GET page.
        if route.method == Method::GET {
            let as_admin = send(Method::GET, &url, Some(&admin), None, None).await;
            let fine = as_admin.status == StatusCode::OK
                || (route.path.ends_with("/record") && as_admin.status == StatusCode::BAD_REQUEST);
            if !fine {
                wrong.push(format!("GET {} as the admin: {}", route.path, as_admin.status));
            }
        }
    }
    println!(
        "{} console routes, {} of them admin-only: each refused to a user's session",
        console.len(),
        admin_routes.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Nothing was changed by the user's attempts.
    let groups = api(&gw, Method::GET, "/api/v1/groups/", Some(&admin), json!(null)).await;
    assert_eq!(groups, json!([]));
    let config = api(&gw, Method::GET, "/ollama/config", Some(&admin), json!(null)).await;
    assert_eq!(config["OLLAMA_BASE_URLS"].as_array().unwrap().len(), 1);
    gw.stop().await;
}

#[actix_web::test]
async fn every_form_needs_the_sessions_csrf_token() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let (gw, admin, user) = setup(&db, &sim.url()).await;
    let people = send(Method::GET, &gw.at("/console/people"), Some(&admin), None, None).await;
    let csrf = csrf_of(&people);
    let user_csrf = csrf_of(&send(Method::GET, &gw.at("/console/keys"), Some(&user), None, None).await);
    assert_ne!(csrf, user_csrf);
    let url = gw.at("/console/people/groups");
    for (what, body) in [
        ("no token", "name=g1".to_owned()),
        ("a wrong token", format!("name=g1&csrf={}", "0".repeat(64))),
        ("another session's token", format!("name=g1&csrf={user_csrf}")),
    ] {
        let r = send(Method::POST, &url, Some(&admin), Some(&body), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.body);
        assert!(r.body.contains("CSRF"), "{what}: {}", r.body);
    }
    let groups = api(&gw, Method::GET, "/api/v1/groups/", Some(&admin), json!(null)).await;
    assert_eq!(groups, json!([]), "nothing is saved without the token");
    let r = send(
        Method::POST,
        &url,
        Some(&admin),
        Some(&format!("name=g1&csrf={csrf}")),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let groups = api(&gw, Method::GET, "/api/v1/groups/", Some(&admin), json!(null)).await;
    assert_eq!(groups[0]["name"], "g1");
    // The pull takes its token as a header.
    let pull = gw.at("/console/models/pull");
    let r = send(Method::POST, &pull, Some(&admin), Some("{}"), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The sign-in form's token is the random cookie it was served with.
    let r = send(
        Method::POST,
        &gw.at("/console/signin"),
        None,
        Some("email=admin%40example.com&password=correct+horse&csrf=abc"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.body.contains("data-csrf"), "no session was made");
    gw.stop().await;
}

#[actix_web::test]
async fn pages_are_locked_down_and_a_key_is_shown_once() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let (gw, _admin, user) = setup(&db, &sim.url()).await;
    // Without a session a page sends the browser to the sign-in page.
    let r = send(Method::GET, &gw.at("/console/fleet"), None, None, None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location.as_deref(), Some("/console/signin"));
    let signin = send(Method::GET, &gw.at("/console/signin"), None, None, None).await;
    let csp = signin.csp.unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(!signin.body.contains("<script>") && !signin.body.contains("style="));
    // Everything is escaped: a key name with markup comes back as text.
    let keys = send(Method::GET, &gw.at("/console/keys"), Some(&user), None, None).await;
    let csrf = csrf_of(&keys);
    let body = format!("csrf={csrf}&name=%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    let created = send(Method::POST, &gw.at("/console/keys"), Some(&user), Some(&body), None).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert!(created.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!created.body.contains("<script>alert"));
    let at = created.body.find("id=\"new-key\">").unwrap() + "id=\"new-key\">".len();
    let key: String = created.body[at..].chars().take_while(|c| *c != '<').collect();
    assert!(key.starts_with("sk-"), "{key}");
    // The key works, and no later page shows it.
    let tags = client()
        .get(gw.at("/api/tags"))
        .insert_header(("Authorization", format!("Bearer {key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(tags.status(), StatusCode::OK);
    let later = send(Method::GET, &gw.at("/console/keys"), Some(&user), None, None).await;
    assert!(!later.body.contains(&key));
    gw.stop().await;
}

#[actix_web::test]
async fn the_console_can_be_switched_off_or_moved() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let mut settings = settings_for(&[&sim.url()]);
    settings.server.console = false;
    let gw = Gateway::with_auth(settings, &db.url).await;
    let r = send(Method::GET, &gw.at("/console/signin"), None, None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    gw.stop().await;
    let db = TestDb::sqlite();
    let mut settings = settings_for(&[&sim.url()]);
    settings.server.console_path = "/admin/ui".to_owned();
    let gw = Gateway::with_auth(settings, &db.url).await;
    let r = send(Method::GET, &gw.at("/admin/ui/fleet"), None, None, None).await;
    assert_eq!(r.location.as_deref(), Some("/admin/ui/signin"));
    let r = send(Method::GET, &gw.at("/admin/ui/signin"), None, None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("action=\"/admin/ui/signin\""));
    gw.stop().await;
}

/// Where a form sent the browser back to, and whether with a note (`msg`) or an error (`err`).
fn outcome(page: &Page) -> (&str, &str) {
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let location = page.location.as_deref().unwrap();
    let kind = if location.contains("?msg=") {
        "msg"
    } else if location.contains("?err=") {
        "err"
    } else {
        ""
    };
    (location.split('?').next().unwrap(), kind)
}

#[actix_web::test]
async fn the_admin_forms_do_what_the_api_does() {
    let db = TestDb::sqlite();
    let sim_a = sim().await;
    let sim_b = sim().await;
    let (gw, admin, _user) = setup(&db, &sim_a.url()).await;
    let csrf = csrf_of(&send(Method::GET, &gw.at("/console/people"), Some(&admin), None, None).await);
    let post = |path: &str, form: String| {
        let (url, admin) = (gw.at(path), admin.clone());
        async move { send(Method::POST, &url, Some(&admin), Some(&form), None).await }
    };
    let config = || api(&gw, Method::GET, "/ollama/config", Some(&admin), json!(null));

    // Connections: a bad field is refused at that field and nothing is saved.
    let b = sim_b.url();
    let bad = post(
        "/console/connections",
        format!("csrf={csrf}&url={b}&weight=x&enable=on"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("id=\"error-weight\""), "{}", bad.body);
    assert_eq!(config().await["OLLAMA_BASE_URLS"].as_array().unwrap().len(), 1);
    let added = post(
        "/console/connections",
        format!("csrf={csrf}&url={b}&key=sk-k&tags=a,b&enable=on"),
    )
    .await;
    assert_eq!(outcome(&added), ("/console/connections", "msg"));
    let c = config().await;
    assert_eq!(c["OLLAMA_BASE_URLS"][1], json!(b));
    assert_eq!(c["OLLAMA_API_CONFIGS"]["1"]["key"], "********");
    assert_eq!(c["OLLAMA_API_CONFIGS"]["1"]["tags"], json!(["a", "b"]));
    let page = send(Method::GET, &gw.at("/console/connections"), Some(&admin), None, None).await;
    assert!(!page.body.contains("sk-k"), "a connection key is shown masked only");
    // Edited with the mask sent back: the saved key is kept.
    let edited = post(
        "/console/connections/1",
        format!("csrf={csrf}&url={b}&key=********&weight=3&enable=on"),
    )
    .await;
    assert_eq!(outcome(&edited), ("/console/connections", "msg"));
    let verified = post("/console/connections/1/verify", format!("csrf={csrf}")).await;
    assert_eq!(outcome(&verified), ("/console/connections", "msg"));
    let toggled = post("/console/connections/1/toggle", format!("csrf={csrf}")).await;
    assert_eq!(outcome(&toggled).1, "msg");
    let c = config().await;
    assert_eq!(c["OLLAMA_API_CONFIGS"]["1"]["enable"], false);
    assert_eq!(c["OLLAMA_API_CONFIGS"]["1"]["weight"], 3);
    assert_eq!(c["OLLAMA_API_CONFIGS"]["1"]["key"], "********");
    // Removing the first moves the second down with its settings.
    let removed = post("/console/connections/0/delete", format!("csrf={csrf}")).await;
    assert_eq!(outcome(&removed).1, "msg");
    let c = config().await;
    assert_eq!(c["OLLAMA_BASE_URLS"], json!([b]));
    assert_eq!(c["OLLAMA_API_CONFIGS"]["0"]["weight"], 3);
    let back_on = post("/console/connections/0/toggle", format!("csrf={csrf}")).await;
    assert_eq!(outcome(&back_on).1, "msg");

    // People: the first admin is protected as the API protects it.
    let users = api(&gw, Method::GET, "/api/v1/users/", Some(&admin), json!(null)).await;
    let id_of = |email: &str| {
        users.as_array().unwrap().iter().find(|u| u["email"] == email).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (first, user) = (id_of("admin@example.com"), id_of("user@example.com"));
    let refused = post(&format!("/console/people/users/{first}/delete"), format!("csrf={csrf}")).await;
    assert_eq!(outcome(&refused), ("/console/people", "err"));
    let refused = post(
        &format!("/console/people/users/{first}/role"),
        format!("csrf={csrf}&role=user"),
    )
    .await;
    assert_eq!(outcome(&refused).1, "err");
    let pending = post(
        &format!("/console/people/users/{user}/role"),
        format!("csrf={csrf}&role=pending"),
    )
    .await;
    assert_eq!(outcome(&pending).1, "msg");
    let people = send(Method::GET, &gw.at("/console/people"), Some(&admin), None, None).await;
    assert!(people.body.contains(">Approve<"));
    let approved = post(
        &format!("/console/people/users/{user}/role"),
        format!("csrf={csrf}&role=user"),
    )
    .await;
    assert_eq!(outcome(&approved).1, "msg");
    let signup = post("/console/people/signup", format!("csrf={csrf}&open=on&role=user")).await;
    assert_eq!(outcome(&signup).1, "msg");
    let cfg = api(
        &gw,
        Method::GET,
        "/api/v1/auths/admin/config",
        Some(&admin),
        json!(null),
    )
    .await;
    assert_eq!(
        (cfg["ENABLE_SIGNUP"].clone(), cfg["DEFAULT_USER_ROLE"].clone()),
        (json!(true), json!("user"))
    );
    let group = post(
        "/console/people/groups",
        format!("csrf={csrf}&name=team&user_ids={user}"),
    )
    .await;
    assert_eq!(outcome(&group).1, "msg");
    let groups = api(&gw, Method::GET, "/api/v1/groups/", Some(&admin), json!(null)).await;
    assert_eq!(groups[0]["user_ids"], json!([user]));
    let group_id = groups[0]["id"].as_str().unwrap().to_owned();

    // Model records: bad parameters are refused at their field; access goes to the record.
    let model = "llama3.2:latest";
    let bad = post(
        "/console/models/record",
        format!("csrf={csrf}&id={model}&params=%5B1%5D&access=public&active=on"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("id=\"error-params\""));
    let records = api(&gw, Method::GET, "/api/v1/models/", Some(&admin), json!(null)).await;
    assert_eq!(records, json!([]));
    let saved = post(
        "/console/models/record",
        format!(
            "csrf={csrf}&id={model}&name=Llama&system=Be+brief.&params=%7B%22temperature%22%3A0.1%7D&access=restricted&group_ids={group_id}&active=on"
        ),
    )
    .await;
    assert_eq!(outcome(&saved), ("/console/models", "msg"));
    let records = api(&gw, Method::GET, "/api/v1/models/", Some(&admin), json!(null)).await;
    assert_eq!(records[0]["access_control"]["read"]["group_ids"], json!([group_id]));
    assert_eq!(records[0]["params"], json!({"temperature": 0.1, "system": "Be brief."}));
    // Unload and delete go to every holder.
    let unloaded = post("/console/models/unload", format!("csrf={csrf}&model={model}")).await;
    assert_eq!(outcome(&unloaded), ("/console/models", "msg"));
    let deleted = post("/console/models/delete", format!("csrf={csrf}&model=all-minilm:latest")).await;
    assert_eq!(outcome(&deleted), ("/console/models", "msg"));
    let tags = api(&gw, Method::GET, "/api/tags", Some(&admin), json!(null)).await;
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"all-minilm:latest"), "{names:?}");
    let deleted = post(&format!("/console/people/users/{user}/delete"), format!("csrf={csrf}")).await;
    assert_eq!(outcome(&deleted).1, "msg");
    gw.stop().await;
}

//! Layering, validation and docs tests for the settings.

use std::collections::HashMap;

use crate::{load, ConfigError, Settings, SETTINGS};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn key_err(result: Result<Settings, ConfigError>) -> String {
    match result {
        Err(ConfigError::Key { key, .. }) => key,
        Err(ConfigError::Env { var, .. }) => var,
        other => panic!("expected a key error, got {other:?}"),
    }
}

#[test]
fn defaults_are_valid() {
    let s = load(None, &env(&[])).unwrap();
    assert_eq!(s, Settings::default());
    assert_eq!(s.server.port, 8080);
    assert_eq!(s.ollama.base_urls, vec!["http://127.0.0.1:11434"]);
}

#[test]
fn precedence_default_file_env_key_by_key() {
    let file = "[server]\nport = 9000\nhost = \"0.0.0.0\"\n[upstream]\nidle_timeout = 12\n";
    let s = load(Some(file), &env(&[("PORT", "9100")])).unwrap();
    assert_eq!(s.server.port, 9100, "env beats file");
    assert_eq!(s.server.host, "0.0.0.0", "file beats default");
    assert_eq!(s.upstream.idle_timeout, 12.0);
    assert_eq!(s.upstream.connect_timeout, 5.0, "default kept");
    let s = load(Some(file), &env(&[("CORRAL_SERVER__PORT", "9200"), ("PORT", "9100")])).unwrap();
    assert_eq!(s.server.port, 9200, "CORRAL_ name beats the Open WebUI name");
}

#[test]
fn open_webui_names() {
    let s = load(
        None,
        &env(&[
            ("OLLAMA_BASE_URLS", "http://a:11434; http://b:11434/"),
            ("ENABLE_OLLAMA_API", "false"),
            ("AIOHTTP_CLIENT_TIMEOUT", "30"),
            ("MODELS_CACHE_TTL", ""),
            ("WEBUI_AUTH", "False"),
            ("WEBUI_SECRET_KEY", "s3cret"),
        ]),
    )
    .unwrap();
    assert_eq!(s.ollama.base_urls, vec!["http://a:11434", "http://b:11434"]);
    assert!(!s.ollama.enable);
    assert_eq!(s.upstream.first_byte_timeout, 30.0);
    assert_eq!(s.upstream.idle_timeout, 30.0);
    assert_eq!(s.ollama.models_cache_ttl, u64::from(u32::MAX));
    assert!(!s.auth.webui_auth);
    assert_eq!(s.auth.secret_key, "s3cret");
    assert!(!format!("{s:?}").contains("s3cret"), "secrets are redacted in Debug");
    let s = load(None, &env(&[("OLLAMA_BASE_URL", "http://one:11434/")])).unwrap();
    assert_eq!(s.ollama.base_urls, vec!["http://one:11434"]);
    let s = load(None, &env(&[("AIOHTTP_CLIENT_TIMEOUT", "")])).unwrap();
    assert_eq!(s.upstream.first_byte_timeout, 0.0, "empty means no limit");
}

#[test]
fn bad_input_names_the_key() {
    assert_eq!(key_err(load(Some("[server]\nprot = 1\n"), &env(&[]))), "server.prot");
    assert_eq!(
        key_err(load(Some("[server]\nport = \"x\"\n"), &env(&[]))),
        "server.port"
    );
    assert_eq!(key_err(load(None, &env(&[("PORT", "eighty")]))), "PORT");
    // A policy name nobody knows is refused where it is written, not taken for the default.
    assert_eq!(
        key_err(load(
            Some("[balance.per_model]\n\"llama3.2:latest\" = \"least_outstandin\"\n"),
            &env(&[])
        )),
        "balance.per_model.llama3.2:latest"
    );
    assert_eq!(
        key_err(load(None, &env(&[("CORRAL_BALANCE__POLICY", "fastest")]))),
        "balance.policy"
    );
    for weight in ["0", "101", "-1", "\"x\""] {
        assert_eq!(
            key_err(load(
                Some(&format!("[balance.queue_weights]\nresearch = {weight}\n")),
                &env(&[])
            )),
            "balance.queue_weights.research",
            "{weight}"
        );
    }
    assert_eq!(
        key_err(load(None, &env(&[("FORWARDED_ALLOW_IPS", "10.0.0.0/8;proxy.local")]))),
        "server.forwarded_allow_ips[1]"
    );
    assert_eq!(
        key_err(load(None, &env(&[("CORRAL_SERVER__PROT", "1")]))),
        "CORRAL_SERVER__PROT"
    );
    assert_eq!(
        key_err(load(None, &env(&[("ENABLE_OLLAMA_API", "maybe")]))),
        "ENABLE_OLLAMA_API"
    );
    assert_eq!(
        key_err(load(None, &env(&[("OLLAMA_BASE_URLS", "http://ok:1;ftp://bad")]))),
        "ollama.base_urls[1]"
    );
    assert_eq!(
        key_err(load(Some("[upstream]\nconnect_timeout = -1\n"), &env(&[]))),
        "upstream.connect_timeout"
    );
    // A duration too long for time arithmetic is refused, not a panic later.
    assert_eq!(
        key_err(load(None, &env(&[("AIOHTTP_CLIENT_TIMEOUT", "1e19")]))),
        "upstream.first_byte_timeout"
    );
    assert_eq!(
        key_err(load(Some("[balance]\nqueue_timeout = 1e300\n"), &env(&[]))),
        "balance.queue_timeout"
    );
    assert_eq!(
        key_err(load(Some("[auth]\ndefault_user_role = \"root\"\n"), &env(&[]))),
        "auth.default_user_role"
    );
    let cfg = "[ollama]\nbase_urls = [\"http://a:1\"]\n[ollama.api_configs.3]\nkey = \"k\"\n";
    assert_eq!(key_err(load(Some(cfg), &env(&[]))), "ollama.api_configs.3");
    assert!(matches!(load(Some("[server"), &env(&[])), Err(ConfigError::File(_))));
}

#[test]
fn every_setting_is_documented_in_the_table() {
    let value = serde_json::to_value(Settings::default()).unwrap();
    let mut leaves = Vec::new();
    for (section, fields) in value.as_object().unwrap() {
        for field in fields.as_object().unwrap().keys() {
            leaves.push(format!("{section}.{field}"));
        }
    }
    let documented: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
    for leaf in &leaves {
        assert!(documented.contains(&leaf.as_str()), "{leaf} is not in SETTINGS");
    }
    assert_eq!(leaves.len(), documented.len(), "SETTINGS lists keys that do not exist");
}

/// `docs/configuration.md` holds the generated reference between markers; a stale copy is
/// rewritten and the test fails, so CI catches a change that did not update the docs.
#[test]
fn docs_configuration_md_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let text = std::fs::read_to_string(path).expect("docs/configuration.md exists");
    let (start, end) = ("<!-- settings:start -->\n", "<!-- settings:end -->");
    let (Some(a), Some(b)) = (text.find(start), text.find(end)) else {
        panic!("docs/configuration.md lacks the settings markers");
    };
    let fresh = format!("{}{start}{}{}", &text[..a], crate::reference_markdown(), &text[b..]);
    if fresh != text {
        std::fs::write(path, &fresh).unwrap();
        panic!("docs/configuration.md was stale and has been regenerated; commit it");
    }
    for s in SETTINGS {
        assert!(
            text.contains(&format!("`{}`", s.key)),
            "docs/configuration.md misses `{}`",
            s.key
        );
    }
}

#[test]
fn loggable_urls_hide_credentials() {
    use crate::loggable_url;
    assert_eq!(loggable_url("http://gpu:11434"), "http://gpu:11434");
    assert_eq!(
        loggable_url("https://me:s3cret@gpu:11434/x@y"),
        "https://***@gpu:11434/x@y"
    );
    assert_eq!(loggable_url("http://token@gpu"), "http://***@gpu");
    assert_eq!(loggable_url("not a url"), "not a url");
    assert_eq!(
        crate::loggable_database_url("postgres://corral:hunter2@db/corral?sslmode=require&password=x2&a=b"),
        "postgres://***@db/corral?sslmode=require&password=***&a=b"
    );
    let mut s = crate::Settings::default();
    s.database.url = "postgres://corral:hunter2@db/corral".to_owned();
    s.ollama.base_urls = vec!["https://me:s3cret@gpu:11434".to_owned()];
    let shown = format!("{s:#?}");
    assert!(!shown.contains("hunter2") && !shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("postgres://***@db/corral") && shown.contains("https://***@gpu:11434"));
}

#[test]
fn slots_are_auto_by_default_a_number_fixes_them_and_anything_else_is_refused_by_name() {
    use crate::Slots;
    assert_eq!(Settings::default().balance.slots, Slots::Auto);
    let s = load(Some("[balance]\nslots = 4\n"), &env(&[])).unwrap();
    assert_eq!(s.balance.slots, Slots::Fixed(4));
    let s = load(
        Some("[balance]\nslots = 2\n"),
        &env(&[("CORRAL_BALANCE__SLOTS", "auto")]),
    )
    .unwrap();
    assert_eq!(s.balance.slots, Slots::Auto, "the environment wins");
    let s = load(None, &env(&[("CORRAL_BALANCE__SLOTS", "8")])).unwrap();
    assert_eq!(s.balance.slots, Slots::Fixed(8));
    let s = load(Some("[balance]\nslots = \"AUTO\"\n"), &env(&[])).unwrap();
    assert_eq!(s.balance.slots, Slots::Auto);
    for bad in ["0", "-1", "2.5", "\"many\"", "true", "\"\""] {
        let result = load(Some(&format!("[balance]\nslots = {bad}\n")), &env(&[]));
        let Err(ConfigError::Key { key, problem }) = result else {
            panic!("slots = {bad} was accepted: {result:?}");
        };
        assert_eq!(key, "balance.slots", "slots = {bad}");
        assert!(problem.contains("auto"), "the message says what is accepted: {problem}");
    }
    assert_eq!(
        key_err(load(None, &env(&[("CORRAL_BALANCE__SLOTS", "lots")]))),
        "balance.slots"
    );
    let cfg = "[ollama]\nbase_urls = [\"http://a:1\"]\n[ollama.api_configs.0]\nslots = \"auto\"\n";
    let s = load(Some(cfg), &env(&[])).unwrap();
    assert_eq!(s.ollama.connection(0).slots, Some(Slots::Auto));
    let cfg = "[ollama]\nbase_urls = [\"http://a:1\"]\n[ollama.api_configs.0]\nslots = 0\n";
    assert_eq!(key_err(load(Some(cfg), &env(&[]))), "ollama.api_configs.0.slots");
    // A number round-trips as a number, `auto` as the word (the admin API shows both).
    assert_eq!(serde_json::to_value(Slots::Fixed(3)).unwrap(), serde_json::json!(3));
    assert_eq!(serde_json::to_value(Slots::Auto).unwrap(), serde_json::json!("auto"));
}

//! Loading Corral's settings from layers: defaults, then a TOML file, then environment
//! variables (passed in as a map, so nothing here reads the process environment), validated
//! into one value; and a bad value named by its key.
//!
//! Run with `cargo run -p corral-config --example layers`.

#![allow(clippy::print_stdout)] // An example shows its results.

use std::collections::HashMap;

fn main() -> Result<(), corral_config::ConfigError> {
    let file = r#"
[server]
port = 9000

[ollama]
base_urls = ["http://gpu-1:11434", "http://gpu-2:11434"]

[ollama.api_configs."1"]
prefix_id = "big"
weight = 2
"#;
    let env: HashMap<String, String> = [("CORRAL_BALANCE__POLICY", "least_outstanding"), ("PORT", "9100")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let settings = corral_config::load(Some(file), &env)?;
    println!("port {} (the environment wins over the file)", settings.server.port);
    println!("instances {:?}", settings.ollama.base_urls);
    println!("policy {}", settings.balance.policy);

    let bad: HashMap<String, String> = [("CORRAL_BALANCE__QUEUE_TIMEOUT".to_owned(), "soon".to_owned())].into();
    match corral_config::load(None, &bad) {
        Ok(_) => println!("unexpectedly valid"),
        Err(e) => println!("refused: {e}"),
    }
    Ok(())
}

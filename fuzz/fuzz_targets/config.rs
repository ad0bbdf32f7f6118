//! Configuration layering and validation in `corral-config`: any TOML file and environment values load
//! or are refused with an error, never a panic, and settings that load describe themselves: written
//! back as a file and loaded again, they are the same settings.
//!
//! Input: the TOML text, a line `--env--`, then one `NAME=VALUE` per line.
#![no_main]

use std::collections::BTreeMap;

use corral_config::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (file, env_text) = text.split_once("\n--env--\n").unwrap_or((text, ""));
    let env: BTreeMap<String, String> = env_text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let file = (!file.trim().is_empty()).then_some(file);
    let Ok(settings) = corral_config::load(file, &env) else {
        return;
    };
    assert!(
        settings.validate().is_ok(),
        "load returned settings that do not validate"
    );

    // What loaded can be written back as a file and loads as the same settings.
    let written = toml::to_string(&settings).unwrap_or_else(|e| panic!("settings that loaded do not serialise: {e}"));
    let again: Settings = corral_config::load(Some(&written), &BTreeMap::new())
        .unwrap_or_else(|e| panic!("settings that loaded do not load again ({e}):\n{written}"));
    assert_eq!(
        again, settings,
        "written back and loaded again, the settings changed:\n{written}"
    );
});

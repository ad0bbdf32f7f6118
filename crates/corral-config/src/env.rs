//! Environment variables as a configuration layer.
//!
//! The environment is passed in through [`Env`], so this module never reads the process.

use std::collections::{BTreeMap, HashMap};

use config::Value;

use crate::keys::{find, EnvKind, SETTINGS};
use crate::ConfigError;

/// A source of environment variables.
pub trait Env {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
    /// Every variable's name.
    fn names(&self) -> Vec<String>;
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
    fn names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
    fn names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

/// Environment variables that start with this prefix must name a known setting.
const PREFIX: &str = "CORRAL_";

/// `CORRAL_*` variables that are not settings keys.
const NON_KEYS: &[&str] = &["CORRAL_CONFIG", "CORRAL_SECRET_KEY", "CORRAL_LOG_FORMAT"];

/// The `(dotted key, value)` overrides the environment asks for.
///
/// For each setting the first of its variables that is set wins. An unknown `CORRAL_*`
/// variable, or a value that cannot be read, is an error naming the variable.
pub fn env_overrides(env: &dyn Env) -> Result<Vec<(String, Value)>, ConfigError> {
    let mut names = env.names();
    names.sort();
    for name in names.iter().filter(|n| n.starts_with(PREFIX)) {
        if NON_KEYS.contains(&name.as_str()) {
            continue;
        }
        let key = key_of(name);
        if find(&key).is_none_or(|s| !s.env.contains(&name.as_str())) {
            return Err(ConfigError::Env {
                var: name.clone(),
                problem: format!("unknown setting `{key}` (see docs/configuration.md)"),
            });
        }
    }
    let mut out = Vec::new();
    for setting in SETTINGS {
        let Some((var, raw)) = setting.env.iter().find_map(|v| env.var(v).map(|x| (*v, x))) else {
            continue;
        };
        // OLLAMA_BASE_URL loses a trailing slash, as Open WebUI strips it.
        let raw = if var == "OLLAMA_BASE_URL" {
            raw.trim_end_matches('/').to_owned()
        } else {
            raw
        };
        let problem = |p: String| ConfigError::Env {
            var: var.to_owned(),
            problem: p,
        };
        let value = match setting.kind {
            EnvKind::Text => Value::from(raw),
            EnvKind::Bool => Value::from(parse_bool(&raw).map_err(problem)?),
            EnvKind::Int => Value::from(
                raw.trim()
                    .parse::<i64>()
                    .map_err(|_| problem(format!("{raw:?} is not a whole number")))?,
            ),
            EnvKind::Seconds => Value::from(parse_seconds(&raw).map_err(problem)?),
            EnvKind::OptionalSeconds => {
                if raw.trim().is_empty() {
                    Value::from(0.0)
                } else {
                    Value::from(parse_seconds(&raw).map_err(problem)?)
                }
            }
            EnvKind::CacheTtl => {
                if raw.trim().is_empty() {
                    Value::from(i64::from(u32::MAX))
                } else {
                    let secs = raw.trim().parse::<i64>().ok().filter(|s| *s >= 0);
                    Value::from(secs.ok_or_else(|| problem(format!("{raw:?} is not a whole number of seconds")))?)
                }
            }
            EnvKind::List => {
                let items: Vec<Value> = raw
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::from(s.trim_end_matches('/').to_owned()))
                    .collect();
                Value::from(items)
            }
        };
        out.push((setting.key.to_owned(), value));
    }
    Ok(out)
}

/// `CORRAL_SERVER__DATA_DIR` → `server.data_dir`.
fn key_of(var: &str) -> String {
    var.trim_start_matches(PREFIX).to_ascii_lowercase().replace("__", ".")
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{raw:?} is not true or false")),
    }
}

fn parse_seconds(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!("{raw:?} is not a number of seconds")),
    }
}

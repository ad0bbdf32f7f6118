//! System prompt templating and injection, as in the reference's section 4.2.

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use serde_json::Value;

use crate::UserInfo;

#[cfg(test)]
mod tests;

/// What a missing profile field renders as when there is a user (Python's `str(None)`, kept for compatibility).
const MISSING_FIELD: &str = "None";
/// What user placeholders render as when there is no user.
const NO_USER: &str = "Unknown";

/// Renders a model's system prompt template.
///
/// First each key of `variables` (the request's `metadata.variables`, when an object) is replaced literally by
/// its value; keys are placeholders such as `{{USER_LOCATION}}`. String values are used as they are, numbers and
/// booleans as JSON text; empty keys and other values are skipped.
/// Then `{{CURRENT_DATE}}` (`2025-01-31`), `{{CURRENT_TIME}}` (`01:02:03 PM`), `{{CURRENT_DATETIME}}`,
/// `{{CURRENT_WEEKDAY}}` (`Friday`), `{{USER_NAME}}`, `{{USER_BIO}}`, `{{USER_GENDER}}`, `{{USER_BIRTH_DATE}}`
/// (`1990-05-01`), `{{USER_AGE}}` and `{{USER_LOCATION}}` are replaced.
/// `now_local` is the server's local time. With a user, missing fields render as `None`; with no user, the user
/// placeholders render as `Unknown`.
pub fn render_system_template(
    template: &str,
    variables: Option<&Value>,
    user: Option<&UserInfo>,
    now_local: NaiveDateTime,
) -> String {
    let mut out = template.to_owned();
    if let Some(Value::Object(vars)) = variables {
        for (key, value) in vars {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                _ => continue,
            };
            if !key.is_empty() {
                out = out.replace(key.as_str(), &value);
            }
        }
    }
    let date = now_local.format("%Y-%m-%d").to_string();
    let time = now_local.format("%I:%M:%S %p").to_string();
    let weekday = now_local.format("%A").to_string();
    let user_fields = match user {
        Some(u) => {
            let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| MISSING_FIELD.to_owned());
            [
                u.name.clone(),
                opt(&u.bio),
                opt(&u.gender),
                u.date_of_birth
                    .map_or_else(|| MISSING_FIELD.to_owned(), |d| d.format("%Y-%m-%d").to_string()),
                u.date_of_birth
                    .map_or_else(|| MISSING_FIELD.to_owned(), |d| age_on(d, now_local.date()).to_string()),
                opt(&u.location),
            ]
        }
        None => std::array::from_fn(|_| NO_USER.to_owned()),
    };
    let [name, bio, gender, birth_date, age, location] = user_fields;
    let replacements = [
        ("{{CURRENT_DATE}}", date.clone()),
        ("{{CURRENT_TIME}}", time.clone()),
        ("{{CURRENT_DATETIME}}", format!("{date} {time}")),
        ("{{CURRENT_WEEKDAY}}", weekday),
        ("{{USER_NAME}}", name),
        ("{{USER_BIO}}", bio),
        ("{{USER_GENDER}}", gender),
        ("{{USER_BIRTH_DATE}}", birth_date),
        ("{{USER_AGE}}", age),
        ("{{USER_LOCATION}}", location),
    ];
    for (placeholder, value) in replacements {
        out = out.replace(placeholder, &value);
    }
    out
}

/// Whole years from `birth` to `today`, as the reference computes it (negative for a future date).
fn age_on(birth: NaiveDate, today: NaiveDate) -> i32 {
    let before_birthday = (today.month(), today.day()) < (birth.month(), birth.day());
    today.year() - birth.year() - i32::from(before_birthday)
}

/// Renders `system` and adds it to a chat's `messages`; does nothing when `system` is empty.
///
/// When the first message is an object with role `system`, the prompt is prepended to it with a newline
/// (`"<system>\n<existing>"`): to a string content, or to every `text` part of a list content. A first system
/// message with no or null content gets the prompt as its content. Otherwise a new
/// `{"role": "system", "content": <system>}` is inserted at the front.
pub fn apply_system_prompt(
    system: &str,
    messages: &mut Vec<Value>,
    variables: Option<&Value>,
    user: Option<&UserInfo>,
    now_local: NaiveDateTime,
) {
    if system.is_empty() {
        return;
    }
    let system = render_system_template(system, variables, user, now_local);
    let first_is_system = messages.first().and_then(|m| m.get("role")).and_then(Value::as_str) == Some("system");
    if !first_is_system {
        messages.insert(0, serde_json::json!({"role": "system", "content": system}));
        return;
    }
    let Some(Value::Object(first)) = messages.first_mut() else {
        return;
    };
    match first.get_mut("content") {
        Some(Value::String(content)) => *content = format!("{system}\n{content}"),
        Some(Value::Array(parts)) => {
            for part in parts.iter_mut() {
                if part.get("type").and_then(Value::as_str) != Some("text") {
                    continue;
                }
                if let Some(Value::String(text)) = part.get_mut("text") {
                    *text = format!("{system}\n{text}");
                }
            }
        }
        None | Some(Value::Null) => {
            first.insert("content".to_owned(), Value::String(system));
        }
        // Other shapes are invalid for every upstream; leave them for the upstream to reject.
        Some(_) => {}
    }
}

//! Tests for system prompt templating and insertion.

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{json, Value};

use super::*;
use crate::Role;

fn now() -> NaiveDateTime {
    // A Friday afternoon.
    NaiveDate::from_ymd_opt(2025, 1, 31)
        .unwrap()
        .and_hms_opt(13, 2, 3)
        .unwrap()
}

fn full_user() -> UserInfo {
    UserInfo {
        bio: Some("Likes Rust".to_owned()),
        gender: Some("female".to_owned()),
        date_of_birth: NaiveDate::from_ymd_opt(1990, 2, 1),
        location: Some("Lisbon".to_owned()),
        ..UserInfo::new("u1", "Ann", "ann@example.com", Role::User)
    }
}

fn render(template: &str, variables: Option<&Value>, user: Option<&UserInfo>) -> String {
    render_system_template(template, variables, user, now())
}

#[test]
fn time_placeholders() {
    let cases = [
        ("{{CURRENT_DATE}}", "2025-01-31"),
        ("{{CURRENT_TIME}}", "01:02:03 PM"),
        ("{{CURRENT_DATETIME}}", "2025-01-31 01:02:03 PM"),
        ("{{CURRENT_WEEKDAY}}", "Friday"),
        (
            "Today is {{CURRENT_WEEKDAY}}, {{CURRENT_DATE}}.",
            "Today is Friday, 2025-01-31.",
        ),
        ("{{CURRENT_DATE}}{{CURRENT_DATE}}", "2025-01-312025-01-31"),
        ("{{current_date}}", "{{current_date}}"),
        ("{{UNKNOWN}}", "{{UNKNOWN}}"),
    ];
    for (template, want) in cases {
        assert_eq!(render(template, None, None), want, "{template}");
    }
    let morning = NaiveDate::from_ymd_opt(2024, 2, 29)
        .unwrap()
        .and_hms_opt(0, 5, 9)
        .unwrap();
    assert_eq!(
        render_system_template("{{CURRENT_DATETIME}} {{CURRENT_WEEKDAY}}", None, None, morning),
        "2024-02-29 12:05:09 AM Thursday"
    );
}

#[test]
fn user_placeholders() {
    let template = "{{USER_NAME}}|{{USER_BIO}}|{{USER_GENDER}}|{{USER_BIRTH_DATE}}|{{USER_AGE}}|{{USER_LOCATION}}";
    assert_eq!(
        render(template, None, Some(&full_user())),
        "Ann|Likes Rust|female|1990-02-01|34|Lisbon"
    );
    let bare = UserInfo::new("u1", "Ann", "a@b.c", Role::Admin);
    assert_eq!(render(template, None, Some(&bare)), "Ann|None|None|None|None|None");
    assert_eq!(
        render(template, None, None),
        "Unknown|Unknown|Unknown|Unknown|Unknown|Unknown"
    );
}

#[test]
fn ages() {
    let on = |birth: (i32, u32, u32), today: (i32, u32, u32)| {
        age_on(
            NaiveDate::from_ymd_opt(birth.0, birth.1, birth.2).unwrap(),
            NaiveDate::from_ymd_opt(today.0, today.1, today.2).unwrap(),
        )
    };
    assert_eq!(on((1990, 2, 1), (2025, 1, 31)), 34);
    assert_eq!(on((1990, 1, 31), (2025, 1, 31)), 35);
    assert_eq!(on((2000, 2, 29), (2025, 2, 28)), 24);
    assert_eq!(on((2000, 2, 29), (2025, 3, 1)), 25);
    assert_eq!(on((2030, 1, 1), (2025, 1, 1)), -5);
}

#[test]
fn variables_are_replaced_first_and_literally() {
    let vars = json!({
        "{{USER_LOCATION}}": "Porto",
        "{{N}}": 3,
        "{{FLAG}}": true,
        "{{SKIP}}": null,
        "{{OBJ}}": {"a": 1},
        "": "never",
        "{{CHAIN}}": "{{CURRENT_DATE}}",
        "a.*": "regex-free",
    });
    let got = render(
        "{{USER_LOCATION}} {{N}} {{FLAG}} {{SKIP}} {{OBJ}} {{CHAIN}} a.* ab",
        Some(&vars),
        Some(&full_user()),
    );
    assert_eq!(got, "Porto 3 true {{SKIP}} {{OBJ}} 2025-01-31 regex-free ab");
    // Non-object variables are ignored.
    assert_eq!(render("{{X}}", Some(&json!(["{{X}}"])), None), "{{X}}");
}

fn apply(system: &str, messages: Value) -> Value {
    let Value::Array(mut messages) = messages else {
        panic!("test messages must be an array")
    };
    apply_system_prompt(system, &mut messages, None, None, now());
    Value::Array(messages)
}

#[test]
fn insertion_rules() {
    let cases = [
        (
            json!([{"role": "user", "content": "hi"}]),
            json!([{"role": "system", "content": "S 2025-01-31"}, {"role": "user", "content": "hi"}]),
        ),
        (json!([]), json!([{"role": "system", "content": "S 2025-01-31"}])),
        (
            json!([{"role": "system", "content": "existing"}, {"role": "user", "content": "hi"}]),
            json!([{"role": "system", "content": "S 2025-01-31\nexisting"}, {"role": "user", "content": "hi"}]),
        ),
        (
            json!([{"role": "system", "content": ""}]),
            json!([{"role": "system", "content": "S 2025-01-31\n"}]),
        ),
        (
            json!([{"role": "system", "content": [
                {"type": "text", "text": "one"},
                {"type": "image_url", "image_url": {"url": "x"}},
                {"type": "text", "text": "two"},
                {"type": "text"}
            ]}]),
            json!([{"role": "system", "content": [
                {"type": "text", "text": "S 2025-01-31\none"},
                {"type": "image_url", "image_url": {"url": "x"}},
                {"type": "text", "text": "S 2025-01-31\ntwo"},
                {"type": "text"}
            ]}]),
        ),
        (
            json!([{"role": "system"}]),
            json!([{"role": "system", "content": "S 2025-01-31"}]),
        ),
        (
            json!([{"role": "system", "content": null}]),
            json!([{"role": "system", "content": "S 2025-01-31"}]),
        ),
        (
            json!([{"role": "system", "content": 5}]),
            json!([{"role": "system", "content": 5}]),
        ),
        // A system message that is not first is not merged into.
        (
            json!([{"role": "user", "content": "hi"}, {"role": "system", "content": "late"}]),
            json!([
                {"role": "system", "content": "S 2025-01-31"},
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "late"}
            ]),
        ),
        (
            json!(["odd"]),
            json!([{"role": "system", "content": "S 2025-01-31"}, "odd"]),
        ),
    ];
    for (messages, want) in cases {
        assert_eq!(apply("S {{CURRENT_DATE}}", messages.clone()), want, "{messages}");
    }
}

#[test]
fn empty_system_does_nothing() {
    let messages = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(apply("", messages.clone()), messages);
}

#[test]
fn variables_and_user_flow_through_apply() {
    let mut messages = vec![json!({"role": "user", "content": "hi"})];
    let vars = json!({"{{TOPIC}}": "tides"});
    apply_system_prompt(
        "You help {{USER_NAME}} with {{TOPIC}}.",
        &mut messages,
        Some(&vars),
        Some(&full_user()),
        now(),
    );
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "You help Ann with tides."})
    );
}

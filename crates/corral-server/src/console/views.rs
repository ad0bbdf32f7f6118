//! The console's pages, as `maud` templates: every interpolated value is HTML-escaped.

use maud::{html, Markup, DOCTYPE};

use super::limits::{LimitForm, LimitsPage};
use super::{
    human_size, Choices, ConnForm, Ctx, FieldErrors, Flash, InstanceRow, ModelRow, People, RecordForm, UsageTables,
};

fn layout(ctx: Option<&Ctx>, title: &str, prefix: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Corral" }
                link rel="stylesheet" href={ (prefix) "/assets/console.css" };
                script src={ (prefix) "/assets/console.js" } defer {}
            }
            body data-csrf=[ctx.map(|c| c.csrf.as_str())] {
                header.top {
                    a.brand href=(prefix) { "Corral" }
                    @if let Some(ctx) = ctx { (nav(ctx)) }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn nav(ctx: &Ctx) -> Markup {
    let p = &ctx.prefix;
    html! {
        nav {
            @if ctx.admin {
                a href={ (p) "/fleet" } { "Fleet" }
                a href={ (p) "/connections" } { "Connections" }
                a href={ (p) "/models" } { "Models" }
                a href={ (p) "/people" } { "People" }
            }
            a href={ (p) "/keys" } { "Keys" }
            a href={ (p) "/my-models" } { "My models" }
            @if ctx.admin {
                a href={ (p) "/limits" } { "Limits" }
                a href={ (p) "/usage" } { "Usage" }
            }
            a href={ (p) "/my-usage" } { "My usage" }
            form.inline method="post" action={ (p) "/signout" } {
                (csrf(ctx))
                span.who { (ctx.email) }
                button.link type="submit" { "Sign out" }
            }
        }
    }
}

fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

fn flash(f: &Flash) -> Markup {
    html! {
        @if let Some(msg) = &f.msg { p.note role="status" { (msg) } }
        @if let Some(err) = &f.err { p.error role="alert" { (err) } }
    }
}

fn field_error(errors: &FieldErrors, field: &str) -> Markup {
    html! {
        @if let Some(message) = errors.of(field) {
            p.field-error id={ "error-" (field) } role="alert" { (message) }
        }
    }
}

fn when(at: Option<i64>) -> String {
    at.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map_or_else(|| "never".to_owned(), |d| d.format("%Y-%m-%d %H:%M UTC").to_string())
}

pub(crate) fn signin(prefix: &str, token: &str, error: Option<&str>, email: &str) -> Markup {
    layout(
        None,
        "Sign in",
        prefix,
        html! {
            form.card method="post" action={ (prefix) "/signin" } {
                input type="hidden" name="csrf" value=(token);
                @if let Some(error) = error { p.error role="alert" { (error) } }
                label { "Email" input type="email" name="email" value=(email) required autocomplete="username"; }
                label { "Password" input type="password" name="password" required autocomplete="current-password"; }
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub(crate) fn pending(ctx: &Ctx) -> Markup {
    layout(
        Some(ctx),
        "Waiting for approval",
        &ctx.prefix,
        html! { p { "An admin has to approve your account before you can use Corral." } },
    )
}

/// How often the fleet table refreshes, in milliseconds: every two seconds, or every health
/// interval when that is shorter (at least half a second), so a change shows within one.
fn refresh_ms(health_interval: f64) -> u64 {
    if health_interval > 0.0 && health_interval < 2.0 {
        (health_interval * 1000.0).max(500.0) as u64
    } else {
        2000
    }
}

pub(crate) fn fleet(ctx: &Ctx, rows: &[InstanceRow], health_interval: f64) -> Markup {
    layout(
        Some(ctx),
        "Fleet",
        &ctx.prefix,
        html! {
            p.hint data-health-interval=(health_interval) { "Updated every " (refresh_ms(health_interval) as f64 / 1000.0) " s, each instance asked at every update; health is checked every " (health_interval) " s." }
            div.scroll {
                table #fleet {
                    thead { tr {
                        th { "Instance" } th { "Health" } th { "Version" } th { "Loaded models" }
                        th { "In flight" } th { "Queued" } th { "TTFT" }
                    } }
                    tbody data-poll={ (ctx.prefix) "/fleet/rows" } data-interval=(refresh_ms(health_interval)) { (fleet_rows(rows)) }
                }
            }
        },
    )
}

pub(crate) fn fleet_rows(rows: &[InstanceRow]) -> Markup {
    html! {
        @for r in rows {
            tr data-instance=(r.idx) class=[(!r.enabled).then_some("off")] {
                td { "#" (r.idx) " " span.url { (r.url) } }
                td { span class={ "health health-" (r.health) } data-health=(r.health) { (r.health) } }
                td { (r.version.as_deref().unwrap_or("–")) }
                td { @if r.loaded.is_empty() { "none" } @else { (r.loaded.join(", ")) } }
                td.num { (r.in_flight) }
                td.num { (r.queued) }
                td.num { @if let Some(ms) = r.ttft_ms { (format!("{ms:.0} ms")) } @else { "–" } }
            }
        }
        @if rows.is_empty() { tr { td colspan="7" { "No instance is configured." } } }
    }
}

fn connection_fields(c: &ConnForm, errors: &FieldErrors) -> Markup {
    html! {
        @if let Some(general) = errors.of("") { p.error role="alert" { (general) } }
        label { "URL" input type="text" name="url" value=(c.url) placeholder="http://gpu-box:11434"; (field_error(errors, "url")) }
        label { "Key" input type="password" name="key" value=(c.key) autocomplete="off" placeholder="none"; (field_error(errors, "key")) }
        label { "Prefix" input type="text" name="prefix_id" value=(c.prefix_id); (field_error(errors, "prefix_id")) }
        label { "Tags (comma-separated)" input type="text" name="tags" value=(c.tags); (field_error(errors, "tags")) }
        label { "Model filter (comma-separated ids)" input type="text" name="model_ids" value=(c.model_ids); (field_error(errors, "model_ids")) }
        div.row {
            label { "Weight" input type="text" inputmode="numeric" name="weight" value=(c.weight) placeholder="1"; (field_error(errors, "weight")) }
            label { "Priority" input type="text" inputmode="numeric" name="priority" value=(c.priority) placeholder="0"; (field_error(errors, "priority")) }
            label { "Slots" input type="text" name="slots" value=(c.slots) placeholder="default"; (field_error(errors, "slots")) }
        }
        label.check { input type="checkbox" name="enable" value="on" checked[c.enable]; "Enabled" }
    }
}

pub(crate) fn connections(
    ctx: &Ctx,
    f: &Flash,
    list: &[(usize, ConnForm)],
    fresh: &ConnForm,
    errors: &FieldErrors,
) -> Markup {
    let p = &ctx.prefix;
    layout(
        Some(ctx),
        "Connections",
        p,
        html! {
            (flash(f))
            div.scroll {
                table #connections {
                    thead { tr {
                        th { "#" } th { "URL" } th { "Key" } th { "Prefix" } th { "Tags" } th { "Models" }
                        th { "Weight" } th { "Priority" } th { "Slots" } th { "State" } th { "" }
                    } }
                    tbody {
                        @for (i, c) in list {
                            tr data-url=(c.url) {
                                td { (i) } td.url { (c.url) }
                                td { @if c.key.is_empty() { "none" } @else { (c.key) } }
                                td { (c.prefix_id) } td { (c.tags) } td { (c.model_ids) }
                                td { (c.weight) } td { (c.priority) } td { (c.slots) }
                                td { @if c.enable { "enabled" } @else { "disabled" } }
                                td.actions {
                                    a href={ (p) "/connections/" (i) } { "Edit" }
                                    form.inline method="post" action={ (p) "/connections/" (i) "/verify" } { (csrf(ctx)) button type="submit" { "Verify" } }
                                    form.inline method="post" action={ (p) "/connections/" (i) "/toggle" } {
                                        (csrf(ctx)) button type="submit" { @if c.enable { "Disable" } @else { "Enable" } }
                                    }
                                    form.inline method="post" action={ (p) "/connections/" (i) "/delete" } { (csrf(ctx)) button.danger type="submit" { "Remove" } }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Add a connection" }
            form.card #add-connection method="post" action={ (p) "/connections" } novalidate {
                (csrf(ctx))
                (connection_fields(fresh, errors))
                button type="submit" { "Add connection" }
            }
        },
    )
}

pub(crate) fn connection_edit(ctx: &Ctx, idx: usize, c: &ConnForm, errors: &FieldErrors) -> Markup {
    let p = &ctx.prefix;
    layout(
        Some(ctx),
        &format!("Connection {idx}"),
        p,
        html! {
            form.card method="post" action={ (p) "/connections/" (idx) } novalidate {
                (csrf(ctx))
                (connection_fields(c, errors))
                p.hint { "The key is shown masked; leave it as it is to keep the saved key." }
                button type="submit" { "Save" }
                " " a href={ (p) "/connections" } { "Cancel" }
            }
        },
    )
}

fn access_summary(ac: Option<&serde_json::Value>, choices_groups: &[(String, String)]) -> String {
    let Some(ac) = ac else { return "public".to_owned() };
    let names = |kind: &str| -> Vec<String> {
        ac["read"][kind]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .map(|id| {
                        choices_groups
                            .iter()
                            .find(|(g, _)| g == id)
                            .map_or_else(|| id.to_owned(), |(_, n)| n.clone())
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (groups, users) = (names("group_ids"), names("user_ids"));
    if groups.is_empty() && users.is_empty() {
        "admins only".to_owned()
    } else {
        format!("groups: {}; users: {}", groups.join(", "), users.len())
    }
}

pub(crate) fn models(
    ctx: &Ctx,
    f: &Flash,
    rows: &[ModelRow],
    records: &[corral_store::Model],
    groups: &[(String, String)],
    instances: &[(usize, String, bool)],
) -> Markup {
    let p = &ctx.prefix;
    layout(
        Some(ctx),
        "Models",
        p,
        html! {
            (flash(f))
            h2 { "Pull a model" }
            form.card #pull method="post" action={ (p) "/models/pull" } {
                div.row {
                    label { "Model" input type="text" name="model" required placeholder="llama3.2"; }
                    label { "To"
                        select name="target" {
                            option value="all" { "the whole fleet" }
                            @for (i, url, enabled) in instances {
                                @if *enabled { option value=(i) { "#" (i) " " (url) } }
                            }
                        }
                    }
                }
                button type="submit" { "Pull" }
                div #pull-progress hidden {
                    progress max="100" value="0" {}
                    p #pull-status role="status" {}
                    ul #pull-instances {}
                }
            }
            h2 { "Catalogue" }
            div.scroll {
                table #catalogue {
                    thead { tr { th { "Model" } th { "Size" } th { "Where" } th { "Loaded" } th { "" } } }
                    tbody {
                        @for m in rows {
                            tr data-model=(m.id) {
                                td { (m.id) }
                                td.num { (m.size.map(human_size).unwrap_or_default()) }
                                td { @for (i, url) in &m.holders { span.tag title=(url) { "#" (i) } " " } }
                                td { @if m.loaded.is_empty() { "no" } @else { "on " @for i in &m.loaded { "#" (i) " " } } }
                                td.actions {
                                    a href={ (p) "/models/record?id=" (urlencode(&m.id)) } { "Access & params" }
                                    form.inline method="post" action={ (p) "/models/unload" } {
                                        (csrf(ctx)) input type="hidden" name="model" value=(m.id); button type="submit" { "Unload" }
                                    }
                                    form.inline method="post" action={ (p) "/models/delete" } {
                                        (csrf(ctx)) input type="hidden" name="model" value=(m.id); button.danger type="submit" { "Delete" }
                                    }
                                }
                            }
                        }
                        @if rows.is_empty() { tr { td colspan="5" { "No model on any instance." } } }
                    }
                }
            }
            h2 { "Model records and presets" }
            div.scroll {
                table #records {
                    thead { tr { th { "Id" } th { "Name" } th { "Preset of" } th { "Access" } th { "Active" } th { "" } } }
                    tbody {
                        @for r in records {
                            tr data-record=(r.id) {
                                td { (r.id) } td { (r.name) } td { (r.base_model_id.as_deref().unwrap_or("")) }
                                td { (access_summary(r.access_control.as_ref(), groups)) }
                                td { @if r.is_active { "yes" } @else { "no" } }
                                td.actions { a href={ (p) "/models/record?id=" (urlencode(&r.id)) } { "Edit" } }
                            }
                        }
                    }
                }
            }
            h2 { "New preset" }
            form.card method="get" action={ (p) "/models/record" } {
                div.row {
                    label { "Preset id" input type="text" name="id" required placeholder="helpful-llama"; }
                    label { "Base model" select name="base" { @for m in rows { option value=(m.id) { (m.id) } } } }
                }
                button type="submit" { "Continue" }
            }
        },
    )
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub(crate) fn record(ctx: &Ctx, r: &RecordForm, choices: &Choices, errors: &FieldErrors) -> Markup {
    let p = &ctx.prefix;
    layout(
        Some(ctx),
        &format!("Model record: {}", r.id),
        p,
        html! {
            @if let Some(general) = errors.of("") { p.error role="alert" { (general) } }
            form.card #record method="post" action={ (p) "/models/record" } novalidate {
                (csrf(ctx))
                input type="hidden" name="id" value=(r.id);
                (field_error(errors, "id"))
                label { "Display name" input type="text" name="name" value=(r.name); }
                label { "Preset of (base model; empty for a model of the fleet)" input type="text" name="base_model_id" value=(r.base_model_id); }
                label { "System prompt" textarea name="system" rows="4" { (r.system) } }
                label { "Parameters (JSON)" textarea name="params" rows="4" { (r.params) } (field_error(errors, "params")) }
                fieldset {
                    legend { "Who may use it" }
                    label.check { input type="radio" name="access" value="public" checked[r.public]; "Everyone" }
                    label.check { input type="radio" name="access" value="restricted" checked[!r.public]; "Only these groups and users (admins always)" }
                    (field_error(errors, "access"))
                    div.choices {
                        @for (id, name) in &choices.groups {
                            label.check { input type="checkbox" name="group_ids" value=(id) checked[r.group_ids.contains(id)]; "group " (name) }
                        }
                        @for (id, email) in &choices.users {
                            label.check { input type="checkbox" name="user_ids" value=(id) checked[r.user_ids.contains(id)]; (email) }
                        }
                    }
                }
                label.check { input type="checkbox" name="active" value="on" checked[r.active]; "Active" }
                button type="submit" { "Save record" }
                " " a href={ (p) "/models" } { "Cancel" }
            }
            @if r.exists {
                form.inline method="post" action={ (p) "/models/record/delete" } {
                    (csrf(ctx)) input type="hidden" name="id" value=(r.id);
                    button.danger type="submit" { "Delete record" }
                }
            }
        },
    )
}

pub(crate) fn people(ctx: &Ctx, f: &Flash, people: &People, me: &str) -> Markup {
    let p = &ctx.prefix;
    layout(
        Some(ctx),
        "People",
        p,
        html! {
            (flash(f))
            h2 { "Users" }
            div.scroll {
                table #users {
                    thead { tr { th { "Email" } th { "Name" } th { "Role" } th { "" } } }
                    tbody {
                        @for u in &people.users {
                            @let first = people.first.as_deref() == Some(u.id.as_str());
                            tr data-email=(u.email) {
                                td { (u.email) @if first { " " span.tag { "first admin" } } }
                                td { (u.name) }
                                td {
                                    @if first || u.id == me { (u.role.as_str()) } @else {
                                        form.inline method="post" action={ (p) "/people/users/" (u.id) "/role" } {
                                            (csrf(ctx))
                                            select name="role" aria-label="Role" {
                                                @for role in ["pending", "user", "admin"] {
                                                    option value=(role) selected[u.role.as_str() == role] { (role) }
                                                }
                                            }
                                            button type="submit" { "Set" }
                                        }
                                    }
                                }
                                td.actions {
                                    @if u.role == corral_auth::Role::Pending {
                                        form.inline method="post" action={ (p) "/people/users/" (u.id) "/role" } {
                                            (csrf(ctx)) input type="hidden" name="role" value="user"; button type="submit" { "Approve" }
                                        }
                                    }
                                    @if !first && u.id != me {
                                        form.inline method="post" action={ (p) "/people/users/" (u.id) "/delete" } {
                                            (csrf(ctx)) button.danger type="submit" { "Delete" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Create a user" }
            form.card #add-user method="post" action={ (p) "/people/users" } {
                (csrf(ctx))
                div.row {
                    label { "Email" input type="email" name="email" required; }
                    label { "Name" input type="text" name="name"; }
                }
                div.row {
                    label { "Password" input type="password" name="password" required autocomplete="new-password"; }
                    label { "Role" select name="role" { option value="user" { "user" } option value="admin" { "admin" } option value="pending" { "pending" } } }
                }
                button type="submit" { "Create user" }
            }
            h2 { "Groups" }
            @for (g, members) in &people.groups {
                form.card.group method="post" action={ (p) "/people/groups/" (g.id) } data-group=(g.name) {
                    (csrf(ctx))
                    div.row {
                        label { "Name" input type="text" name="name" value=(g.name); }
                        label { "Description" input type="text" name="description" value=(g.description); }
                    }
                    div.choices {
                        @for u in &people.users {
                            label.check { input type="checkbox" name="user_ids" value=(u.id) checked[members.contains(&u.id)]; (u.email) }
                        }
                    }
                    button type="submit" { "Save group" }
                }
                form.inline method="post" action={ (p) "/people/groups/" (g.id) "/delete" } {
                    (csrf(ctx)) button.danger type="submit" { "Delete group " (g.name) }
                }
            }
            form.card #add-group method="post" action={ (p) "/people/groups" } {
                (csrf(ctx))
                div.row {
                    label { "New group" input type="text" name="name" required; }
                    label { "Description" input type="text" name="description"; }
                }
                button type="submit" { "Create group" }
            }
            h2 { "Sign-up" }
            form.card #signup method="post" action={ (p) "/people/signup" } {
                (csrf(ctx))
                label.check { input type="checkbox" name="open" value="on" checked[people.signup_open]; "Anyone may sign up" }
                label { "Role of new sign-ups"
                    select name="role" {
                        @for role in ["pending", "user", "admin"] {
                            option value=(role) selected[people.signup_role.as_str() == role] { (role) }
                        }
                    }
                }
                button type="submit" { "Save" }
            }
        },
    )
}

pub(crate) fn keys(
    ctx: &Ctx,
    f: &Flash,
    keys: &[corral_store::ApiKey],
    created: Option<(&str, &str)>,
    now: i64,
) -> Markup {
    let p = &ctx.prefix;
    layout(
        Some(ctx),
        "API keys",
        p,
        html! {
            (flash(f))
            @if let Some((name, key)) = created {
                div.card.new-key role="status" {
                    p { "Your new key " strong { (name) } ". It is shown this once: copy it now." }
                    code #new-key { (key) }
                    " " button type="button" data-copy="#new-key" { "Copy" }
                    span.copied hidden { " copied" }
                }
            }
            form.card #create-key method="post" action={ (p) "/keys" } {
                (csrf(ctx))
                div.row {
                    label { "Name" input type="text" name="name" placeholder="laptop"; }
                    label { "Expires in (days, empty: never)" input type="text" inputmode="numeric" name="expires_days"; }
                }
                button type="submit" { "Create key" }
            }
            div.scroll {
                table #keys {
                    thead { tr { th { "Name" } th { "Key" } th { "Created" } th { "Last used" } th { "Expires" } th { "State" } th { "" } } }
                    tbody {
                        @for k in keys {
                            @let active = k.is_active(now);
                            tr data-key=(k.name) {
                                td { (k.name) } td { code { (k.prefix) "…" } }
                                td { (when(Some(k.created_at))) } td { (when(k.last_used_at)) }
                                td { @if k.expires_at.is_some() { (when(k.expires_at)) } @else { "never" } }
                                td.state { @if active { "active" } @else if k.revoked_at.is_some() { "revoked" } @else { "expired" } }
                                td.actions {
                                    @if active {
                                        form.inline method="post" action={ (p) "/keys/" (k.id) "/revoke" } {
                                            (csrf(ctx)) button.danger type="submit" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                        @if keys.is_empty() { tr { td colspan="7" { "No key yet." } } }
                    }
                }
            }
        },
    )
}

pub(crate) fn my_models(ctx: &Ctx, rows: &[ModelRow], presets: &[(String, String)]) -> Markup {
    layout(
        Some(ctx),
        "My models",
        &ctx.prefix,
        html! {
            p.hint { "The models your account and keys may use." }
            div.scroll {
                table #my-models {
                    thead { tr { th { "Model" } th { "Size" } th { "Loaded" } } }
                    tbody {
                        @for m in rows {
                            tr data-model=(m.id) {
                                td { (m.id) }
                                td.num { (m.size.map(human_size).unwrap_or_default()) }
                                td { @if m.loaded.is_empty() { "no" } @else { "yes" } }
                            }
                        }
                        @for (id, base) in presets {
                            tr data-model=(id) { td { (id) } td { "preset of " (base) } td { "" } }
                        }
                        @if rows.is_empty() && presets.is_empty() { tr { td colspan="3" { "No model is open to you yet." } } }
                    }
                }
            }
        },
    )
}

/// The usage tables: per day with a bar (a `meter`, no inline style), then per model, user
/// and key, most tokens first.
fn usage_tables(t: &UsageTables) -> Markup {
    html! {
        @for (name, lines) in &t.tables {
            @let most = lines.iter().map(|l| l.prompt + l.completion).max().unwrap_or(0).max(1);
            h2 { "By " (name) }
            div.scroll {
                table.usage data-usage=(name) {
                    thead { tr {
                        th { (name[..1].to_uppercase()) (name[1..]) }
                        th.num { "Requests" }
                        th.num { "Prompt tokens" }
                        th.num { "Completion tokens" }
                        th.num { "Total" }
                        @if *name == "day" { th { "" } }
                    } }
                    tbody {
                        @for l in lines {
                            tr {
                                td { (l.label) }
                                td.num { (l.requests) }
                                td.num { (l.prompt) }
                                td.num { (l.completion) }
                                td.num { (l.prompt + l.completion) }
                                @if *name == "day" {
                                    td { meter min="0" max=(most) value=(l.prompt + l.completion) title={ (l.prompt + l.completion) " tokens" } {} }
                                }
                            }
                        }
                        @if lines.is_empty() { tr { td colspan="5" { "No usage in these " (t.days) " days." } } }
                    }
                }
            }
        }
    }
}

pub(crate) fn usage(ctx: &Ctx, t: &UsageTables) -> Markup {
    let p = &ctx.prefix;
    layout(
        Some(ctx),
        "Usage",
        &ctx.prefix,
        html! {
            p.hint {
                "Requests and tokens of the last " (t.days) " days, as the instances counted them. "
                "Records reach the database within the metering's flush interval. "
                a href={ (p) "/usage?days=7" } { "7 days" } " · "
                a href={ (p) "/usage?days=30" } { "30 days" } " · "
                a href={ (p) "/usage?days=365" } { "a year" }
                ". The same figures as CSV: " code { "/api/v1/usage?group_by=day&format=csv" } "."
            }
            (usage_tables(t))
        },
    )
}

pub(crate) fn my_usage(ctx: &Ctx, t: &UsageTables, remaining: &serde_json::Value) -> Markup {
    let limits = remaining
        .get("limits")
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default();
    let figure = |v: &serde_json::Value, key: &str| -> String {
        match v.get(key) {
            Some(serde_json::Value::Null) | None => String::new(),
            Some(x) => x.to_string(),
        }
    };
    layout(
        Some(ctx),
        "My usage",
        &ctx.prefix,
        html! {
            h2 { "What is left" }
            @if limits.is_empty() {
                p.hint #no-limits { "No limit applies to your account." }
            } @else {
                div.scroll {
                    table #my-limits {
                        thead { tr { th { "Set on" } th { "Limit" } th.num { "Of" } th.num { "Left" } } }
                        tbody {
                            @for l in &limits {
                                @let whose = format!("{} {}", figure(l, "scope").trim_matches('"'), figure(l, "id").trim_matches('"'));
                                @for (name, key) in [("requests a minute", "requests"), ("tokens a minute", "tokens")] {
                                    @if let Some(a) = l.get(key).filter(|a| !a.is_null()) {
                                        tr { td { (whose) } td { (name) } td.num { (figure(a, "limit")) } td.num { (figure(a, "remaining")) } }
                                    }
                                }
                                @if let Some(c) = l.get("concurrent_requests").filter(|a| !a.is_null()) {
                                    tr { td { (whose) } td { "requests at once" } td.num { (figure(c, "limit")) } td.num { (figure(c, "in_flight")) " running" } }
                                }
                                @if let Some(b) = l.get("budget").filter(|a| !a.is_null()) {
                                    tr { td { (whose) } td { "token budget" } td.num { (figure(b, "tokens")) } td.num { (figure(b, "remaining")) } }
                                }
                            }
                        }
                    }
                }
            }
            (usage_tables(t))
        },
    )
}

fn limit_cell(v: Option<u64>) -> String {
    v.map_or_else(|| "—".to_owned(), |n| n.to_string())
}

pub(crate) fn limits(ctx: &Ctx, f: &Flash, page: &LimitsPage, form: &LimitForm, errors: &FieldErrors) -> Markup {
    let p = &ctx.prefix;
    layout(
        Some(ctx),
        "Limits",
        p,
        html! {
            (flash(f))
            p.hint { "A request is refused (429) when any limit of its key, its user or one of its groups is reached. Empty is no limit." }
            div.scroll {
                table #limits {
                    thead { tr {
                        th { "Whose" } th { "Requests/min" } th { "Tokens/min" } th { "At once" } th { "Budget" } th { "" }
                    } }
                    tbody {
                        @for (value, label, l) in &page.rows {
                            tr data-subject=(value) {
                                td { (label) }
                                td { (limit_cell(l.requests_per_minute)) }
                                td { (limit_cell(l.tokens_per_minute)) }
                                td { (limit_cell(l.concurrent_requests)) }
                                td {
                                    @if let Some(b) = &l.budget {
                                        (b.tokens) " tokens a " (b.period.as_str()) " (" (b.reset.as_str()) ")"
                                        @if !b.models.is_empty() { ", for " (b.models.join(", ")) }
                                    } @else { "—" }
                                }
                                td.actions {
                                    a href={ (p) "/limits?edit=" (value) } { "Edit" }
                                    @if let Some((scope, id)) = value.split_once(':') {
                                        form.inline method="post" action={ (p) "/limits/" (scope) "/" (id) "/delete" } {
                                            (csrf(ctx)) button.danger type="submit" { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                        @if page.rows.is_empty() { tr { td colspan="6" { "No limit is set." } } }
                    }
                }
            }
            h2 { "Set limits" }
            form.card #set-limits method="post" action={ (p) "/limits" } novalidate {
                (csrf(ctx))
                (field_error(errors, ""))
                label { "Key, user or group"
                    select name="subject" {
                        option value="" { "Choose…" }
                        @for (value, label) in &page.subjects {
                            option value=(value) selected[*value == form.subject] { (label) }
                        }
                    }
                    (field_error(errors, "subject"))
                }
                div.row {
                    label { "Requests per minute" input type="text" inputmode="numeric" name="requests_per_minute" value=(form.requests_per_minute); (field_error(errors, "requests_per_minute")) }
                    label { "Tokens per minute" input type="text" inputmode="numeric" name="tokens_per_minute" value=(form.tokens_per_minute); (field_error(errors, "tokens_per_minute")) }
                    label { "Requests at once" input type="text" inputmode="numeric" name="concurrent_requests" value=(form.concurrent_requests); (field_error(errors, "concurrent_requests")) }
                }
                div.row {
                    label { "Budget (tokens)" input type="text" inputmode="numeric" name="budget_tokens" value=(form.budget_tokens); (field_error(errors, "budget_tokens")) }
                    label { "Per"
                        select name="budget_period" {
                            option value="" { "—" }
                            @for period in ["day", "week", "month"] {
                                option value=(period) selected[form.budget_period == period] { (period) }
                            }
                        }
                        (field_error(errors, "budget_period"))
                    }
                    label { "Reset"
                        select name="budget_reset" {
                            @for reset in ["calendar", "rolling"] {
                                option value=(reset) selected[form.budget_reset == reset] { (reset) }
                            }
                        }
                        (field_error(errors, "budget_reset"))
                    }
                }
                label { "Budget only for these models (comma-separated; empty: all)" input type="text" name="budget_models" value=(form.budget_models); (field_error(errors, "budget_models")) }
                button type="submit" { "Save limits" }
            }
        },
    )
}

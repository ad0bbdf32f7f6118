//! The console's Limits page (admin): the limits and budgets set on keys, users and groups,
//! a form to set them and a button to remove them. It saves through the same store call and
//! the same validation ([`Limits::from_json`]) as `PUT /api/v1/limits/{scope}/{id}`, and a
//! refused field is shown at the field with nothing saved.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use corral_auth::limits::{Limits, Scope};
use serde_json::{json, Map, Value};

use super::{back, ctx, flash, form, html, ok, views, FieldErrors, Flash, Form};
use crate::auth::{unix_now, Admin};
use crate::error::AppError;
use crate::handlers::accounts;
use crate::state::Shared;

/// What the page lists: the limits set, each with whose they are, and every key, user and
/// group limits may be set on.
pub(crate) struct LimitsPage {
    /// `(subject value, label, limits)` of every limit set.
    pub rows: Vec<(String, String, Limits)>,
    /// `(subject value, label)` of every key, user and group, in that order.
    pub subjects: Vec<(String, String)>,
}

/// The form's fields as typed (kept on a refusal).
#[derive(Default)]
pub(crate) struct LimitForm {
    /// `scope:id`, as the subject list's values.
    pub subject: String,
    pub requests_per_minute: String,
    pub tokens_per_minute: String,
    pub concurrent_requests: String,
    pub budget_tokens: String,
    pub budget_period: String,
    pub budget_reset: String,
    pub budget_models: String,
}

fn text(v: Option<u64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_default()
}

impl LimitForm {
    fn from_limits(subject: String, l: &Limits) -> LimitForm {
        let b = l.budget.as_ref();
        LimitForm {
            subject,
            requests_per_minute: text(l.requests_per_minute),
            tokens_per_minute: text(l.tokens_per_minute),
            concurrent_requests: text(l.concurrent_requests),
            budget_tokens: text(b.map(|b| b.tokens)),
            budget_period: b.map(|b| b.period.as_str().to_owned()).unwrap_or_default(),
            budget_reset: b.map(|b| b.reset.as_str().to_owned()).unwrap_or_default(),
            budget_models: b.map(|b| b.models.join(", ")).unwrap_or_default(),
        }
    }

    fn from_form(form: &Form) -> LimitForm {
        LimitForm {
            subject: form.get("subject").to_owned(),
            requests_per_minute: form.get("requests_per_minute").to_owned(),
            tokens_per_minute: form.get("tokens_per_minute").to_owned(),
            concurrent_requests: form.get("concurrent_requests").to_owned(),
            budget_tokens: form.get("budget_tokens").to_owned(),
            budget_period: form.get("budget_period").to_owned(),
            budget_reset: form.get("budget_reset").to_owned(),
            budget_models: form.get("budget_models").to_owned(),
        }
    }

    /// The subject the form names.
    fn subject(&self) -> Result<(Scope, String), FieldErrors> {
        self.subject
            .split_once(':')
            .and_then(|(scope, id)| Some((Scope::parse(scope)?, id.to_owned())))
            .filter(|(_, id)| !id.is_empty())
            .ok_or_else(|| {
                FieldErrors(vec![(
                    "subject".to_owned(),
                    "choose a key, a user or a group".to_owned(),
                )])
            })
    }

    /// The limits, read by the API's own parser; a refusal at the form field it names.
    fn limits(&self) -> Result<Limits, FieldErrors> {
        // A field as JSON: empty is no limit; a number as typed; anything else is passed on
        // as text so the parser names the field and what is wrong.
        let figure = |s: &str| -> Value {
            if s.is_empty() {
                Value::Null
            } else {
                serde_json::from_str::<serde_json::Number>(s)
                    .map_or_else(|_| Value::String(s.to_owned()), Value::Number)
            }
        };
        let mut obj = Map::new();
        obj.insert("requests_per_minute".into(), figure(&self.requests_per_minute));
        obj.insert("tokens_per_minute".into(), figure(&self.tokens_per_minute));
        obj.insert("concurrent_requests".into(), figure(&self.concurrent_requests));
        let budget_given =
            !(self.budget_tokens.is_empty() && self.budget_period.is_empty() && self.budget_models.is_empty());
        if budget_given {
            let models: Vec<&str> = self
                .budget_models
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .collect();
            let mut budget = json!({
                "tokens": figure(&self.budget_tokens),
                "period": Some(&self.budget_period).filter(|p| !p.is_empty()),
                "models": models,
            });
            if !self.budget_reset.is_empty() {
                budget["reset"] = json!(self.budget_reset);
            }
            obj.insert("budget".into(), budget);
        }
        // Each part on its own first, so every wrong field is named at once.
        let errors: Vec<(String, String)> = obj
            .iter()
            .filter_map(|(k, v)| Limits::from_json(&json!({ k: v })).err())
            .map(|e| {
                (
                    e.field.split('[').next().unwrap_or_default().replace('.', "_"),
                    e.message,
                )
            })
            .collect();
        if !errors.is_empty() {
            return Err(FieldErrors(errors));
        }
        Limits::from_json(&Value::Object(obj)).map_err(|e| FieldErrors(vec![(String::new(), e.to_string())]))
    }
}

/// `scope:id` as the subject list's values.
fn subject_value(scope: Scope, id: &str) -> String {
    format!("{}:{id}", scope.as_str())
}

async fn load(shared: &web::Data<Shared>) -> Result<LimitsPage, AppError> {
    accounts::read(shared, |store| {
        let now = unix_now();
        let mut subjects = Vec::new();
        for k in store.active_api_keys(now)? {
            let label = format!("key {} ({}…) of {}", k.key.name, k.key.prefix, k.user.email);
            subjects.push((subject_value(Scope::Key, &k.key.id), label));
        }
        for u in store.list_users()? {
            subjects.push((subject_value(Scope::User, &u.id), format!("user {}", u.email)));
        }
        for g in store.list_groups()? {
            subjects.push((subject_value(Scope::Group, &g.id), format!("group {}", g.name)));
        }
        let rows = store
            .list_limits()?
            .into_iter()
            .map(|stored| {
                let value = subject_value(stored.scope, &stored.subject_id);
                let label = subjects.iter().find(|(v, _)| *v == value).map_or_else(
                    || format!("{} {} (gone)", stored.scope.as_str(), stored.subject_id),
                    |(_, l)| l.clone(),
                );
                (value, label, stored.limits)
            })
            .collect();
        Ok(LimitsPage { rows, subjects })
    })
    .await
}

/// `GET /console/limits[?edit=scope:id]`: every limit set, and the form (filled with one
/// subject's limits when `edit` names it).
pub(crate) async fn page(req: HttpRequest, shared: web::Data<Shared>, admin: Admin) -> Result<HttpResponse, AppError> {
    let ctx = ctx(&shared, &admin.0);
    let page = load(&shared).await?;
    let edit = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("edit").cloned())
        .unwrap_or_default();
    let filled = page
        .rows
        .iter()
        .find(|(v, _, _)| *v == edit)
        .map_or_else(LimitForm::default, |(v, _, l)| LimitForm::from_limits(v.clone(), l));
    Ok(ok(views::limits(
        &ctx,
        &flash(&req),
        &page,
        &filled,
        &FieldErrors::default(),
    )))
}

/// `POST /console/limits`: sets one subject's limits (replacing them whole, as `PUT` does).
pub(crate) async fn save(
    shared: web::Data<Shared>,
    admin: Admin,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let typed = LimitForm::from_form(&form);
    let checked = typed.subject().and_then(|s| Ok((s, typed.limits()?)));
    let ((scope, id), limits) = match checked {
        Ok(ok) => ok,
        Err(errors) => {
            let page = load(&shared).await?;
            return Ok(html(
                StatusCode::BAD_REQUEST,
                views::limits(&ctx, &Flash::default(), &page, &typed, &errors),
            ));
        }
    };
    let outcome = crate::handlers::limits::set(&shared, scope, id, limits)
        .await
        .map(|_| "Limits saved.".to_owned());
    Ok(back(&ctx, "/limits", outcome))
}

/// `POST /console/limits/{scope}/{id}/delete`: removes one subject's limits.
pub(crate) async fn remove(
    shared: web::Data<Shared>,
    admin: Admin,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let (scope, id) = path.into_inner();
    let outcome = match Scope::parse(&scope) {
        None => Err(AppError::BadRequest(format!("unknown scope {scope:?}"))),
        Some(scope) => crate::handlers::limits::remove(&shared, scope, id)
            .await
            .map(|()| "Limits removed.".to_owned()),
    };
    Ok(back(&ctx, "/limits", outcome))
}

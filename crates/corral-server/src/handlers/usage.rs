//! `/api/v1/usage`: usage reports in JSON or CSV (admins see everyone, users their own), the
//! caller's own summary, and the metering buffer's counters. Reports read the database off the
//! executor; records reach it within `usage.flush_interval`.

use actix_web::http::header::{ACCEPT, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Datelike, TimeZone, Utc};
use corral_store::{Store, UsageDimension, UsageQuery, UsageRow};
use serde_json::{json, Value};

use crate::auth::{Admin, Caller, Level};
use crate::error::AppError;
use crate::state::Shared;

/// Registers the usage routes.
pub fn register(r: &mut crate::routes::Routes) {
    use actix_web::http::Method;
    r.add(
        Method::GET,
        "/api/v1/usage",
        Level::Verified,
        "Usage report: requests and tokens grouped by user, key, group, model, instance or day (admins: everyone; users: their own)",
        report,
    )
    .add(
        Method::GET,
        "/api/v1/usage/me",
        Level::Verified,
        "The caller's own usage today, this month and in all",
        me,
    )
    .add(
        Method::GET,
        "/api/v1/usage/status",
        Level::Admin,
        "Usage metering: records waiting, written and dropped",
        status,
    );
}

/// `GET /api/v1/usage?from&to&group_by&user&key&model&instance&group&format`.
async fn report(req: HttpRequest, shared: web::Data<Shared>, caller: Caller) -> Result<HttpResponse, AppError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| AppError::BadRequest(format!("invalid query string: {e}")))?
        .into_inner();
    let mut query = UsageQuery::from_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| AppError::BadRequest(e.to_string()))?;
    let csv = match pairs.iter().rev().find(|(k, _)| k == "format").map(|(_, v)| v.as_str()) {
        Some("csv") => true,
        Some("json") => false,
        Some(other) => {
            return Err(AppError::BadRequest(format!(
                "format: {other:?} is neither json nor csv"
            )))
        }
        None => req
            .headers()
            .get(ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("text/csv")),
    };
    if !caller.is_admin() {
        if let Some(user) = &caller.user {
            if query.user.as_ref().is_some_and(|u| u != &user.id) {
                return Err(AppError::Forbidden("user: you may see only your own usage".to_owned()));
            }
            query.user = Some(user.id.clone());
        }
    }
    let dims = query.group_by.clone();
    let rows = read(&shared, {
        let query = query.clone();
        move |store| Ok(store.usage_report(&query)?)
    })
    .await?;
    if csv {
        return Ok(HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, "text/csv; charset=utf-8"))
            .body(corral_store::usage_csv(&dims, &rows)));
    }
    Ok(HttpResponse::Ok().json(json!({
        "from": time_json(query.from_ms, 0),
        "to": time_json(query.to_ms, i64::MAX),
        "group_by": dims.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        "rows": rows.iter().map(|r| r.to_json(&dims)).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/usage/me`: the caller's totals today and this month (UTC) and in all, and this
/// month's per model.
async fn me(shared: web::Data<Shared>, caller: Caller) -> Result<HttpResponse, AppError> {
    let user = caller
        .user
        .clone()
        .ok_or_else(|| AppError::Forbidden("this gateway authenticates nobody: there are no accounts".to_owned()))?;
    let now = Utc::now();
    let day = Utc
        .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
        .single()
        .map_or(0, |t| t.timestamp_millis());
    let month = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .map_or(0, |t| t.timestamp_millis());
    let user_id = user.id.clone();
    let (today, this_month, all, models) = read(&shared, move |store| {
        let q = |from_ms: i64, group_by: Vec<UsageDimension>| UsageQuery {
            from_ms,
            to_ms: i64::MAX,
            group_by,
            user: Some(user_id.clone()),
            ..UsageQuery::default()
        };
        let total = |store: &Store, from| -> Result<Option<UsageRow>, AppError> {
            Ok(store.usage_report(&q(from, Vec::new()))?.into_iter().next())
        };
        Ok((
            total(store, day)?,
            total(store, month)?,
            total(store, 0)?,
            store.usage_report(&q(month, vec![UsageDimension::Model]))?,
        ))
    })
    .await?;
    let row = |r: Option<UsageRow>| r.map_or(Value::Null, |r| r.to_json(&[]));
    Ok(HttpResponse::Ok().json(json!({
        "user_id": user.id,
        "today": row(today),
        "month": row(this_month),
        "total": row(all),
        "month_by_model": models.iter().map(|r| r.to_json(&[UsageDimension::Model])).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/usage/status`: the buffer's counters.
async fn status(shared: web::Data<Shared>, _admin: Admin) -> HttpResponse {
    let mut body = serde_json::to_value(shared.usage.status()).unwrap_or_default();
    body["flush_interval"] = json!(shared.settings().usage.flush_interval);
    HttpResponse::Ok().json(body)
}

/// A report bound as RFC 3339, or null when it is the open end `open`.
fn time_json(ms: i64, open: i64) -> Value {
    if ms == open {
        return Value::Null;
    }
    Utc.timestamp_millis_opt(ms).single().map_or(Value::Null, |t| {
        json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    })
}

/// Runs a read on the store off the executor.
pub(crate) async fn read<T: Send + 'static>(
    shared: &web::Data<Shared>,
    f: impl FnOnce(&Store) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let shared = shared.clone().into_inner();
    web::block(move || {
        let store = shared
            .store()
            .ok_or_else(|| AppError::StoreUnavailable("no database is configured: usage is not recorded".to_owned()))?;
        f(&store)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?
}

//! `corral limits`: limits per API key, user and group, straight in the database (the same
//! checks as `PUT /api/v1/limits/{scope}/{id}`).

use std::io::Write;

use corral_auth::limits::{Limits, Scope};
use corral_config::Settings;
use corral_store::Store;
use serde_json::json;

use crate::cli::{LimitSubject, LimitsAction};
use crate::setup::{migrated_store, unix_now};

/// The scope and the id of `subject`, a user's email and a group's name read as their ids.
fn resolve(store: &Store, subject: &LimitSubject) -> anyhow::Result<(Scope, String)> {
    let scope = Scope::parse(&subject.scope)
        .ok_or_else(|| anyhow::anyhow!("scope: unknown scope {:?}; expected key, user or group", subject.scope))?;
    let id = match scope {
        Scope::User if subject.id.contains('@') => store
            .get_user_by_email(&corral_auth::normalize_email(&subject.id))?
            .map_or_else(|| subject.id.clone(), |u| u.id),
        Scope::Group => store
            .get_group_by_name(&subject.id)?
            .map_or_else(|| subject.id.clone(), |g| g.id),
        _ => subject.id.clone(),
    };
    Ok((scope, id))
}

pub fn run(settings: &Settings, action: LimitsAction) -> anyhow::Result<()> {
    let store = migrated_store(settings)?;
    let mut out = std::io::stdout().lock();
    match action {
        LimitsAction::List => {
            for l in store.list_limits()? {
                writeln!(out, "{}\t{}\t{}", l.scope.as_str(), l.subject_id, l.limits.to_json())?;
            }
        }
        LimitsAction::Show(subject) => {
            let (scope, id) = resolve(&store, &subject)?;
            let found = store
                .get_limits(scope, &id)?
                .ok_or_else(|| anyhow::anyhow!("id: no limits are set for {} {id}", scope.as_str()))?;
            writeln!(out, "{}", found.limits.to_json())?;
        }
        LimitsAction::Set {
            subject,
            rpm,
            tpm,
            concurrent,
            budget,
            period,
            rolling,
            models,
        } => {
            let (scope, id) = resolve(&store, &subject)?;
            let value = json!({
                "requests_per_minute": rpm,
                "tokens_per_minute": tpm,
                "concurrent_requests": concurrent,
                "budget": budget.map(|tokens| json!({
                    "tokens": tokens,
                    "period": period,
                    "reset": if rolling { "rolling" } else { "calendar" },
                    "models": models,
                })),
            });
            let limits = Limits::from_json(&value).map_err(|e| anyhow::anyhow!("{e}"))?;
            match store.put_limits(scope, &id, &limits, unix_now()) {
                Err(corral_store::StoreError::NotFound) => {
                    anyhow::bail!("id: no {} {id}", scope.as_str())
                }
                other => other?,
            };
            eprintln!("limits of {} {id} set", scope.as_str());
            writeln!(out, "{}", limits.to_json())?;
        }
        LimitsAction::Remove(subject) => {
            let (scope, id) = resolve(&store, &subject)?;
            match store.delete_limits(scope, &id) {
                Err(corral_store::StoreError::NotFound) => {
                    anyhow::bail!("id: no limits are set for {} {id}", scope.as_str())
                }
                other => other?,
            }
            eprintln!("limits of {} {id} removed", scope.as_str());
        }
    }
    Ok(())
}

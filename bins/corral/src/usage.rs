//! `corral usage`: the usage report, read from the database, as a table, CSV or JSON.

use std::io::Write;

use anyhow::Context;
use corral_config::Settings;
use corral_store::UsageQuery;

use crate::cli::UsageArgs;
use crate::setup::migrated_store;

pub fn run(settings: &Settings, args: UsageArgs) -> anyhow::Result<()> {
    let store = migrated_store(settings)?;
    // An email names its account's id, which records carry.
    let user = match args.user {
        Some(u) if u.contains('@') => {
            let email = corral_auth::normalize_email(&u);
            let owner = store
                .get_user_by_email(&email)?
                .with_context(|| format!("no account with the email {email}"))?;
            Some(owner.id)
        }
        other => other,
    };
    let group_by = args.group_by.join(",");
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let named = [
        ("from", args.from.as_deref()),
        ("to", args.to.as_deref()),
        ("user", user.as_deref()),
        ("key", args.key.as_deref()),
        ("model", args.model.as_deref()),
        ("instance", args.instance.as_deref()),
        ("group", args.group.as_deref()),
        ("group_by", Some(group_by.as_str())),
    ];
    for (name, value) in named {
        if let Some(v) = value {
            pairs.push((name, v));
        }
    }
    let query = UsageQuery::from_params(pairs)
        .map_err(|e| anyhow::anyhow!("--{}: {}", e.field.replace('_', "-"), e.problem))?;
    let rows = store.usage_report(&query)?;
    let dims = &query.group_by;
    let text = match args.format.as_str() {
        "table" => corral_store::usage_table(dims, &rows),
        "csv" => corral_store::usage_csv(dims, &rows),
        "json" => {
            let rows: Vec<_> = rows.iter().map(|r| r.to_json(dims)).collect();
            format!("{}\n", serde_json::to_string_pretty(&rows)?)
        }
        other => anyhow::bail!("--format: {other:?} is not table, csv or json"),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

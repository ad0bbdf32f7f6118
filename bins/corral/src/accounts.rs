//! `corral user` and `corral key`: accounts and API keys from the command line.

use std::io::Write;

use anyhow::Context;
use corral_config::Settings;

use crate::cli::{KeyAction, UserAction};
use crate::setup::{migrated_store, unix_now};

pub fn user(settings: &Settings, action: UserAction) -> anyhow::Result<()> {
    let store = migrated_store(settings)?;
    match action {
        UserAction::List => {
            let mut out = std::io::stdout().lock();
            for u in store.list_users()? {
                writeln!(out, "{}\t{}\t{}\t{}", u.id, u.email, u.role.as_str(), u.name)?;
            }
            Ok(())
        }
        UserAction::Create {
            email,
            name,
            admin,
            role,
        } => {
            let role: corral_auth::Role = match (admin, role.as_deref()) {
                (true, _) => corral_auth::Role::Admin,
                (false, Some(r)) => r
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--role must be admin, user or pending"))?,
                (false, None) => corral_auth::Role::User,
            };
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            // Checked, hashed and stored as HTTP sign-up does; an admin made into an empty table
            // is recorded as the first account.
            let first_user_role = (role == corral_auth::Role::Admin).then_some(role);
            let new = corral_store::check_account(
                &email,
                name.as_deref().unwrap_or(""),
                password,
                role,
                first_user_role,
                String::new(),
            )
            .map_err(|e| anyhow::anyhow!("{email}: {e}"))?;
            let email = new.email.clone();
            let created = store
                .insert_account(new, password, None, unix_now())
                .map_err(|e| anyhow::anyhow!("{email}: {e}"))?;
            // As a first sign-up does, the first account closes sign-up until an admin opens it.
            if store.first_user_id()?.as_deref() == Some(created.id.as_str())
                && store.get_setting(corral_store::SIGNUP_SETTING)?.is_none()
            {
                store.put_setting(corral_store::SIGNUP_SETTING, &false.into(), unix_now())?;
            }
            eprintln!(
                "created {} ({}), id {}",
                created.email,
                created.role.as_str(),
                created.id
            );
            Ok(())
        }
    }
}

pub fn key(settings: &Settings, action: KeyAction) -> anyhow::Result<()> {
    let store = migrated_store(settings)?;
    match action {
        KeyAction::Create { user, name, expires_in } => {
            let email = corral_auth::normalize_email(&user);
            let owner = store
                .get_user_by_email(&email)?
                .with_context(|| format!("no account with the email {email}"))?;
            anyhow::ensure!(expires_in.is_none_or(|s| s > 0), "--expires-in must be positive");
            let (plain, hash, prefix) = corral_auth::generate_api_key();
            let now = unix_now();
            let new = corral_store::NewApiKey {
                user_id: owner.id,
                name,
                prefix,
                hash,
                expires_at: expires_in.map(|s| now.saturating_add(s)),
            };
            let key = store.create_api_key(&new, now)?;
            eprintln!("created API key {} for {email}; it is shown only now:", key.id);
            // The key is the command's output, on standard output alone, for scripts.
            writeln!(std::io::stdout().lock(), "{}", plain.expose())?;
            Ok(())
        }
    }
}

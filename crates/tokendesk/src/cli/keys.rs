//! `tokendesk admin keys create|list|revoke`: service keys for automation (an audit export, a
//! help-desk script). A key acts on the JSON API with exactly its role, as `key:NAME`; its value
//! is printed once and stored only as a hash.

use std::sync::Arc;

use super::CliError;
use super::service::ConfigArg;
use crate::app::{App, AppError, Ctx, KEY_ROLES, SystemClock, parse_duration};

#[derive(Debug, clap::Subcommand)]
pub(super) enum AdminCommand {
    /// Service keys for the JSON API.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum KeysCommand {
    /// Make a key; prints its value once (send it as `Authorization: Bearer VALUE`).
    Create {
        /// `auditor` (read and export the audit trail) or `helpdesk` (look up, revoke, re-send).
        #[arg(long, value_name = "ROLE")]
        role: String,
        /// A name for the key: what it is for (`a-z 0-9 . _ -`); it acts as `key:NAME`.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// How long it lasts: `90d`, `12h`, `30m` (at most 366 days).
        #[arg(long, value_name = "DURATION", default_value = "90d")]
        expires_in: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the keys (never their values).
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke a key by its id (from `list`): it stops working at once.
    Revoke {
        /// The key's id.
        #[arg(value_name = "ID")]
        id: i64,
        #[command(flatten)]
        config: ConfigArg,
    },
}

async fn app_for(config: &ConfigArg) -> Result<App, CliError> {
    let config = config.load()?;
    Ok(App::from_config(&config, Arc::new(SystemClock)).await?)
}

fn usage(e: AppError) -> CliError {
    match e {
        AppError::Domain(crate::domain::DomainError::Invalid(fields)) => CliError::Usage(
            fields
                .iter()
                .map(|f| format!("--{}: {}", f.field.replace('_', "-"), f.message))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        AppError::Domain(crate::domain::DomainError::Conflict { message, .. }) => {
            CliError::Usage(message)
        }
        AppError::Domain(crate::domain::DomainError::NotFound) => {
            CliError::Usage("there is no key with that id (see `tokendesk admin keys list`)".into())
        }
        other => CliError::Failed(other.into()),
    }
}

pub(super) async fn run(command: AdminCommand) -> Result<(), CliError> {
    let AdminCommand::Keys(command) = command;
    match command {
        KeysCommand::Create {
            role,
            name,
            expires_in,
            config,
        } => {
            let valid_for = parse_duration(&expires_in)
                .map_err(|e| CliError::Usage(format!("--expires-in: {e}")))?;
            if !KEY_ROLES.contains(&role.as_str()) {
                return Err(CliError::Usage(format!(
                    "--role: `{role}` is not a role a key can have; use one of {}",
                    KEY_ROLES.join(", ")
                )));
            }
            let app = app_for(&config).await?;
            let made = app
                .create_key(&name, &role, valid_for, &Ctx::system())
                .await
                .map_err(usage);
            app.close().await;
            let made = made?;
            println!("{}", made.value);
            eprintln!(
                "key {} `{}` ({}) made; it expires on {}. The value above is shown only now: store it in your password manager or secret store.",
                made.id,
                made.key.name,
                made.key.role,
                made.key.expires_at.date()
            );
            Ok(())
        }
        KeysCommand::List { config } => {
            let app = app_for(&config).await?;
            let keys = app.keys().await;
            app.close().await;
            let keys = keys.map_err(usage)?;
            let now = time::OffsetDateTime::now_utc();
            println!(
                "{:>5}  {:<32} {:<9} {:<10} {:<10} state",
                "id", "name", "role", "created", "expires"
            );
            for k in keys {
                let state = match (k.revoked_at, k.expires_at <= now) {
                    (Some(at), _) => format!("revoked {}", at.date()),
                    (None, true) => "expired".to_owned(),
                    (None, false) => match k.last_used_at {
                        Some(t) => format!("active, last used {}", t.date()),
                        None => "active, never used".to_owned(),
                    },
                };
                println!(
                    "{:>5}  {:<32} {:<9} {:<10} {:<10} {state}",
                    k.id,
                    k.name,
                    k.role,
                    k.created_at.date(),
                    k.expires_at.date()
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { id, config } => {
            let app = app_for(&config).await?;
            let revoked = app.revoke_key(id, &Ctx::system()).await;
            app.close().await;
            if revoked.map_err(usage)? {
                println!("key {id} revoked");
            } else {
                println!("key {id} was already revoked");
            }
            Ok(())
        }
    }
}

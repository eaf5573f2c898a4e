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
    /// Revoke tokens in bulk: a person's (off-boarding), by date, by purpose, or all of them.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["owner", "issued_before", "purpose", "all"])))]
pub(super) struct RevokeArgs {
    /// Every live token of this person.
    #[arg(long, value_name = "LOGIN")]
    owner: Option<String>,
    /// Every live token issued before this day (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    issued_before: Option<String>,
    /// Every live token whose purpose contains this text (any case).
    #[arg(long, value_name = "TEXT")]
    purpose: Option<String>,
    /// Every live token tokendesk issued (the emergency switch).
    #[arg(long)]
    all: bool,
    /// Why: the owners read it.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    config: ConfigArg,
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
    let command = match command {
        AdminCommand::Keys(command) => command,
        AdminCommand::Revoke(args) => return revoke(args).await,
    };
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

/// `tokendesk admin revoke`: previews, confirms, starts the run, works its jobs here with a
/// progress bar, and sums up. Exit 1 when some tokens could not be revoked (they are listed).
async fn revoke(args: RevokeArgs) -> Result<(), CliError> {
    use std::io::IsTerminal as _;

    use crate::domain::request::{REVOKE_ALL_CONFIRMATION, RevokeFilter};
    let filter = RevokeFilter::parse(
        args.owner.as_deref(),
        args.issued_before.as_deref(),
        args.purpose.as_deref(),
        args.all,
    )
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let app = app_for(&args.config).await?;
    let result = revoke_with(&app, filter, &args).await;
    app.close().await;
    return result;

    async fn revoke_with(
        app: &App,
        filter: RevokeFilter,
        args: &RevokeArgs,
    ) -> Result<(), CliError> {
        let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
        let actor = crate::domain::Actor {
            login: crate::domain::Login::from_stored(&format!("cli:{user}")),
            roles: crate::domain::Roles {
                admin: true,
                helpdesk: true,
                ..Default::default()
            },
        };
        let preview = app
            .revoke_preview(&actor, filter.clone())
            .await
            .map_err(usage)?;
        eprintln!(
            "{}: {} live token(s) of {} person(s){}",
            preview.filter.describe(),
            preview.count,
            preview.owners.len(),
            if preview.owners.len() == 50 {
                " or more"
            } else {
                ""
            }
        );
        for (login, n) in preview.owners.iter().take(10) {
            eprintln!("  {login}: {n}");
        }
        if preview.count == 0 {
            println!("nothing to revoke");
            return Ok(());
        }
        let all = filter == RevokeFilter::All;
        if !args.yes {
            if !std::io::stdin().is_terminal() {
                return Err(CliError::Usage(
                    "there is no terminal to confirm on: add --yes to revoke without asking".into(),
                ));
            }
            let wanted = if all { REVOKE_ALL_CONFIRMATION } else { "yes" };
            eprint!("Type {wanted} to revoke them: ");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| CliError::Failed(e.into()))?;
            if line.trim() != wanted {
                return Err(CliError::Usage("not confirmed: nothing was revoked".into()));
            }
        }
        let confirmation = all.then_some(REVOKE_ALL_CONFIRMATION);
        let run = app
            .start_revocation(&actor, filter, &args.reason, confirmation, &Ctx::system())
            .await
            .map_err(usage)?;
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(run.total.unsigned_abs())
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "revoking [{bar:40}] {pos}/{len} tokens ({per_sec}, {eta} left) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let status = loop {
            crate::jobs::drain_jobs_concurrently(app, crate::jobs::REVOKE_RUNNERS)
                .await
                .map_err(|e| CliError::Failed(e.into()))?;
            // The owners' emails (and anything else due).
            crate::jobs::drain(app)
                .await
                .map_err(|e| CliError::Failed(e.into()))?;
            let status = app.revocation(&actor, run.id).await.map_err(usage)?;
            bar.set_position((status.done + status.failed).unsigned_abs());
            if status.failed > 0 {
                bar.set_message(format!("{} failed", status.failed));
            }
            if status.finished_at.is_some() {
                break status;
            }
            // Work waiting to be retried (Canvas throttling or down): look again shortly.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        bar.finish_and_clear();
        println!(
            "revocation {}: {} revoked, {} failed, of {} token(s)",
            status.id, status.done, status.failed, status.total
        );
        if status.failed > 0 {
            for (request, owner, why) in &status.failures {
                println!("  failed: request #{request} of {owner}: {why}");
            }
            return Err(CliError::Failed(anyhow::anyhow!(
                "{} token(s) could not be revoked (listed above); run the same command again to retry them",
                status.failed
            )));
        }
        Ok(())
    }
}

//! `tokendesk db copy`: move everything from one database to another (SQLite → PostgreSQL).
//! `tokendesk db backup`: a consistent copy of a running SQLite database, its chain verified.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::CliError;
use crate::app::connection_string;
use crate::config::DatabaseUrl;
use crate::store::{CopyError, CopyProgress, Store, StoreOptions, copy_database};

#[derive(Debug, clap::Subcommand)]
pub(super) enum DbCommand {
    /// Copy every table (ids, audit chain and queued work included) from one database to
    /// another, e.g. from SQLite to PostgreSQL; stop tokendesk first. The target's schema is
    /// created; a target holding data is refused unless --force.
    Copy(CopyArgs),
    /// Copy the configured SQLite database to FILE while tokendesk runs (a consistent snapshot,
    /// `VACUUM INTO`), then verify the copy's audit chain and report its size. PostgreSQL:
    /// use pg_dump (docs/deploy.md, Backups).
    Backup(BackupArgs),
}

#[derive(Debug, clap::Args)]
pub(super) struct BackupArgs {
    #[command(flatten)]
    config: super::service::ConfigArg,
    /// Where to write the copy; must not exist yet.
    #[arg(long, value_name = "FILE")]
    to: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
pub(super) struct CopyArgs {
    /// The database to read: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, value_name = "URL")]
    from: String,
    /// The database to write: postgres://USER@HOST/DB (or sqlite://PATH).
    #[arg(long, value_name = "URL")]
    to: String,
    /// Replace whatever the target holds.
    #[arg(long)]
    force: bool,
    /// Rows per insert statement.
    #[arg(long, value_name = "ROWS", default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
    batch: u16,
}

pub(super) async fn run(command: DbCommand) -> Result<(), CliError> {
    match command {
        DbCommand::Copy(args) => copy(args).await,
        DbCommand::Backup(args) => backup(args).await,
    }
}

async fn backup(args: BackupArgs) -> Result<(), CliError> {
    let config = args.config.load()?;
    let DatabaseUrl::Sqlite(source) = &config.database else {
        return Err(CliError::Usage(format!(
            "the database is {}: back it up with pg_dump (docs/deploy.md, Backups); db backup copies SQLite databases",
            config.database.kind()
        )));
    };
    if args.to.exists() {
        return Err(CliError::Usage(format!(
            "--to: {} exists already; name a new file (a backup never overwrites)",
            args.to.display()
        )));
    }
    if !source.is_file() {
        return Err(CliError::Usage(format!(
            "there is no SQLite database at {} (database_url)",
            source.display()
        )));
    }
    let target = std::path::absolute(&args.to)
        .with_context(|| format!("--to: cannot resolve {}", args.to.display()))?;
    let options = StoreOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(30),
        ..StoreOptions::default()
    };
    let store = Store::open(&format!("sqlite://{}", source.display()), &options)
        .await
        .with_context(|| format!("cannot open {}", source.display()))?;
    let started = std::time::Instant::now();
    let copied = store.backup_into(&target).await;
    store.close().await;
    copied.with_context(|| format!("cannot write the copy {}", target.display()))?;
    // The copy must stand on its own: open it and walk its chain.
    let copy = Store::open(&format!("sqlite://{}", target.display()), &options)
        .await
        .with_context(|| format!("cannot open the copy {}", target.display()))?;
    let verified = async {
        let mut conn = copy.pool().acquire().await?;
        crate::store::verify_chain(&mut conn).await
    }
    .await;
    copy.close().await;
    let size = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    match verified.context("cannot read the copy's audit trail")? {
        Ok(events) => {
            println!(
                "backup written: {} ({size} bytes, {events} audit events, chain intact) in {:.1} s",
                target.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(broken) => Err(CliError::Failed(anyhow::anyhow!(
            "the copy {} was written but its audit chain is broken: {broken}; the source is likely broken too (tokendesk audit verify)",
            target.display()
        ))),
    }
}

fn parse_url(flag: &str, value: &str) -> Result<DatabaseUrl, CliError> {
    let cwd = std::path::absolute(".").unwrap_or_default();
    let url = DatabaseUrl::parse(value, &cwd)
        .map_err(|message| CliError::Usage(format!("{flag}: {message}")))?;
    if url == DatabaseUrl::SqliteMemory {
        return Err(CliError::Usage(format!(
            "{flag}: an in-memory database cannot be copied; give a file or a server"
        )));
    }
    Ok(url)
}

async fn copy(args: CopyArgs) -> Result<(), CliError> {
    let from = parse_url("--from", &args.from)?;
    let to = parse_url("--to", &args.to)?;
    if from == to {
        return Err(CliError::Usage(
            "--from and --to are the same database".into(),
        ));
    }
    let source_url = match &from {
        // The source must exist: open it without creating it.
        DatabaseUrl::Sqlite(path) => {
            if !path.is_file() {
                return Err(CliError::Usage(format!(
                    "--from: there is no SQLite database at {}",
                    path.display()
                )));
            }
            format!("sqlite://{}", path.display())
        }
        other => connection_string(other),
    };
    let options = StoreOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(30),
        ..StoreOptions::default()
    };
    let source = Store::open(&source_url, &options)
        .await
        .with_context(|| format!("cannot open the source database {from}"))?;
    let target = Store::open(&connection_string(&to), &options)
        .await
        .with_context(|| format!("cannot open the target database {to}"))?;

    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{bar:40}] {pos}/{len} rows ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut on_progress = |p: CopyProgress<'_>| match p {
        CopyProgress::Total(n) => bar.set_length(n),
        CopyProgress::Table { name, .. } => bar.set_prefix(name.to_owned()),
        CopyProgress::Rows(n) => bar.inc(n),
        CopyProgress::Verifying => bar.set_prefix("verifying"),
    };
    let result = copy_database(
        &source,
        &target,
        args.force,
        usize::from(args.batch),
        &mut on_progress,
    )
    .await;
    bar.finish_and_clear();
    source.close().await;
    target.close().await;
    let report = match result {
        Ok(report) => report,
        Err(e @ (CopyError::NotEmpty { .. } | CopyError::Schema(_))) => {
            return Err(CliError::Usage(e.to_string()));
        }
        Err(e) => return Err(CliError::Failed(anyhow::Error::new(e))),
    };
    println!("copied {from} -> {to}");
    for t in &report.tables {
        println!("  {:<14} {:>9} rows", t.name, t.rows);
    }
    if report.replaced_rows > 0 {
        println!(
            "  (replaced {} rows the target held, --force)",
            report.replaced_rows
        );
    }
    println!(
        "{} rows in {:.1}s; row counts match; audit chain intact on the target: {} events",
        report.total_rows(),
        report.elapsed.as_secs_f64(),
        report.audit_events_verified
    );
    Ok(())
}

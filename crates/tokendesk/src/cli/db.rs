//! `tokendesk db copy`: move everything from one database to another (SQLite → PostgreSQL).

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

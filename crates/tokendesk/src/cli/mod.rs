//! The command line: one binary, one subcommand per task.

mod canvas_sim;
mod checks;
mod db;
mod keys;
mod service;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a usage or input error (bad flag, bad file), as clap uses.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "tokendesk",
    version,
    about = "Canvas API access tokens: request, approve, deliver, revoke."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run tokendesk (the web pages, the JSON API and the workers).
    Serve(service::ServeArgs),
    /// Try tokendesk on this machine: SQLite in a local folder, the Canvas simulator, demo
    /// sign-in and a mailbox instead of email.
    Demo(service::DemoArgs),
    /// Create or update the database schema.
    Migrate(service::ConfigArg),
    /// Check a configuration file and name every problem in it (--online: and connect).
    CheckConfig(service::CheckConfigArgs),
    /// A health summary: the database and its schema, Canvas (the admin token's permissions
    /// used), SMTP, the queues, the audit chain. Exit 1 naming each problem.
    Status(service::StatusArgs),
    /// Database maintenance: copy a database to another (SQLite to PostgreSQL).
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Verify or export the audit trail.
    #[command(subcommand)]
    Audit(service::AuditCommand),
    /// Run the Canvas simulator (token API, users, throttling, activation) on loopback.
    CanvasSim(canvas_sim::Args),
    /// Administration: service keys for automation.
    #[command(subcommand)]
    Admin(keys::AdminCommand),
}

/// Runs a parsed command line and returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    // Commands that read a configuration start logging in its `log.format` once it is loaded;
    // the others log text.
    if !matches!(
        cli.command,
        Command::Serve(_)
            | Command::Migrate(_)
            | Command::Audit(_)
            | Command::Admin(_)
            | Command::Status(_)
    ) {
        crate::logging::init(crate::config::LogFormat::Text, None);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::CanvasSim(args) => canvas_sim::run(args).await,
            Command::Serve(args) => service::serve(args).await,
            Command::Demo(args) => service::demo(args).await,
            Command::Migrate(args) => service::migrate(args).await,
            Command::CheckConfig(args) => service::check_config(args).await,
            Command::Status(args) => service::status(args).await,
            Command::Audit(command) => service::audit(command).await,
            Command::Db(command) => db::run(command).await,
            Command::Admin(command) => keys::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(CliError::Failed(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command stopped.
#[derive(Debug)]
pub enum CliError {
    /// The input was wrong (flag values, files): exit code 2.
    Usage(String),
    /// Something failed while running: exit code 1.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Failed(e)
    }
}

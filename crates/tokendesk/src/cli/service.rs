//! `serve`, `demo`, `migrate`, `check-config` and `audit`: the service's commands.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use secrecy::SecretString;
use tokendesk_canvas_sim::{DEFAULT_ADMIN_TOKEN, Seed, SimConfig};

use super::CliError;
use crate::app::{App, AuditQuery, SystemClock};
use crate::config::Config;
use crate::domain::Login;
use crate::server;

#[derive(Debug, clap::Args)]
pub(super) struct ConfigArg {
    /// The configuration file (TOML); see docs/configuration.md.
    #[arg(long, value_name = "FILE", env = "TOKENDESK_CONFIG")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    pub(super) fn load(&self) -> Result<Config, CliError> {
        let config = Config::load_from_process(self.config.as_deref()).map_err(|e| {
            crate::logging::init(crate::config::LogFormat::Text, None);
            CliError::Usage(format!(
                "the configuration has problems:\n{e}\n(check it with `tokendesk check-config FILE`)"
            ))
        })?;
        crate::logging::init(config.log.format, config.log.filter.as_deref());
        Ok(config)
    }
}

#[derive(Debug, clap::Args)]
pub(super) struct DemoArgs {
    /// Folder for the demo's database and the simulator's state.
    #[arg(long, value_name = "DIR", default_value = "demo-data")]
    dir: PathBuf,
    /// Where tokendesk listens (loopback only in the demo).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the built-in Canvas simulator listens (port 0 picks one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    canvas_listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum AuditCommand {
    /// Walk the hash chain; exit 1 and name the first broken event if any.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// A head recorded earlier (`tokendesk audit head`, or the log's `audit.head`): fail
        /// when the chain is shorter than that or differs there (events removed or rewritten).
        #[arg(long, value_name = "SEQ:HASH", value_parser = parse_head)]
        expect_head: Option<(i64, String)>,
    },
    /// Print the chain's newest event as SEQ:HASH, to keep outside the database.
    Head(ConfigArg),
    /// Write the audit trail as JSON lines or CSV.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

pub(super) async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let ServeArgs {
        config: args,
        no_migrate,
    } = args;
    let mut config = args.load()?;
    if no_migrate {
        config.pool.auto_migrate = false;
    }
    for warning in &config.warnings {
        tracing::warn!("configuration: {warning}");
    }
    let app = App::from_config(&config, Arc::new(SystemClock)).await?;
    let signals = Signals::register();
    let listener = server::Listener::bind(&config.listen, config.listen_mode).await?;
    let running = server::start(&config, app, Vec::new(), listener).await?;
    println!(
        "tokendesk listening on {} (public URL {})",
        running.described, config.public_url
    );
    if let Some(at) = running.metrics_addr {
        println!("metrics on http://{at}/metrics");
    }
    tracing::info!(listen = %running.described, public_url = %config.public_url, "serving");
    serve_until_stopped(signals, &args, &running.app).await;
    tracing::info!("stopping: finishing the requests and work in hand");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The signals `serve` answers, registered before it says it listens (a signal sent right
/// after that line must not kill it unhandled).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let take = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}");
                    None
                }
            };
            Signals {
                term: take(SignalKind::terminate(), "SIGTERM"),
                int: take(SignalKind::interrupt(), "SIGINT"),
                hup: take(SignalKind::hangup(), "SIGHUP (reloads need a restart)"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }
}

#[cfg(unix)]
async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Waits for SIGTERM or Ctrl-C; on each SIGHUP re-reads the configuration.
async fn serve_until_stopped(mut signals: Signals, args: &ConfigArg, app: &App) {
    #[cfg(unix)]
    loop {
        tokio::select! {
            _ = next(&mut signals.term) => return,
            _ = next(&mut signals.int) => return,
            _ = next(&mut signals.hup) => reload(args, app),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (&mut signals, args, app);
        server::stop_signal().await;
    }
}

/// SIGHUP: the configuration file again. Valid, its roles, policy and log filter are put in
/// force at once (the rest needs a restart, and says so); invalid, the running configuration
/// stays and the problems are logged. Never stops the service.
fn reload(args: &ConfigArg, app: &App) {
    let config = match Config::load_from_process(args.config.as_deref()) {
        Ok(config) => config,
        Err(problems) => {
            tracing::warn!(
                "SIGHUP: the configuration has problems; the running configuration stays in force:\n{problems}"
            );
            return;
        }
    };
    app.reload_rules(
        config.policy,
        crate::app::RoleBook::from_config(&config.roles),
    );
    if let Err(problem) = crate::logging::apply_filter(config.log.filter.as_deref()) {
        tracing::warn!("SIGHUP: the log filter stays as it was: {problem}");
    }
    tracing::info!(
        "SIGHUP: configuration reloaded: [roles], [policy] and the log filter are in force; other keys (addresses, database, Canvas, email, sign-in) take effect at the next restart"
    );
}

pub(super) async fn migrate(args: ConfigArg) -> Result<(), CliError> {
    let config = args.load()?;
    let store = crate::app::connect_store(&config).await?;
    let applied = store.migrate().await;
    store.close().await;
    let applied = applied.context("cannot migrate the database")?;
    if applied.is_empty() {
        println!(
            "database ({}) was already up to date",
            config.database.kind()
        );
    } else {
        for m in &applied {
            println!("applied migration {} ({})", m.version, m.description);
        }
        println!(
            "database ({}) is up to date: {} migration(s) applied",
            config.database.kind(),
            applied.len()
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(super) struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Do not migrate the database at start (as `database.auto_migrate = false`): a database
    /// with migrations still to apply is refused; run `tokendesk migrate` first.
    #[arg(long)]
    no_migrate: bool,
}

#[derive(Debug, clap::Args)]
pub(super) struct CheckConfigArgs {
    /// The configuration file (as `--config`; either form).
    #[arg(value_name = "FILE", conflicts_with = "config")]
    file: Option<PathBuf>,
    /// The configuration file (TOML); see docs/configuration.md.
    #[arg(long, value_name = "FILE", env = "TOKENDESK_CONFIG")]
    config: Option<PathBuf>,
    /// Also connect: the database, Canvas (the admin token creates, views and deletes a
    /// token) and SMTP (greeting and authentication).
    #[arg(long)]
    online: bool,
    /// With --online: make Canvas's token check on this person (a pending token, deleted at
    /// once) instead of the admin's own user.
    #[arg(long, value_name = "LOGIN", requires = "online")]
    check_user: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Make Canvas's token check on this person (a pending token, deleted at once) instead of
    /// the admin's own user.
    #[arg(long, value_name = "LOGIN")]
    check_user: Option<String>,
}

fn check_user(raw: Option<&str>) -> Result<Option<Login>, CliError> {
    raw.map(|raw| {
        Login::parse(raw).map_err(|e| CliError::Usage(format!("--check-user: {}", e.message)))
    })
    .transpose()
}

pub(super) async fn check_config(args: CheckConfigArgs) -> Result<(), CliError> {
    let Some(file) = args.file.or(args.config) else {
        return Err(CliError::Usage(
            "name the configuration file: tokendesk check-config --config FILE (or TOKENDESK_CONFIG)"
                .to_owned(),
        ));
    };
    let check_user = check_user(args.check_user.as_deref())?;
    let config = match Config::load_from_process(Some(&file)) {
        Ok(config) => config,
        Err(errors) => {
            return Err(CliError::Usage(format!(
                "{} has problems:\n{errors}",
                file.display()
            )));
        }
    };
    println!("{}", crate::config::summary(&config));
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
    if args.online {
        let (db, store) = super::checks::database(&config).await;
        if let Some(store) = store {
            store.close().await;
        }
        let checks = [
            db,
            super::checks::canvas(&config, check_user.as_ref()).await,
            super::checks::smtp(&config).await,
        ];
        let (text, failed) = super::checks::report(&checks);
        print!("{text}");
        if !failed.is_empty() {
            return Err(CliError::Failed(anyhow::anyhow!(
                "the configuration is valid, but {} of its connections failed (above)",
                failed.len()
            )));
        }
    }
    println!("configuration OK");
    Ok(())
}

/// `tokendesk status`: a health summary for an operator.
pub(super) async fn status(args: StatusArgs) -> Result<(), CliError> {
    let check_user = check_user(args.check_user.as_deref())?;
    let config = args.config.load()?;
    let (db, store) = super::checks::database(&config).await;
    let mut checks = vec![db];
    checks.push(super::checks::canvas(&config, check_user.as_ref()).await);
    checks.push(super::checks::smtp(&config).await);
    if let Some(store) = store {
        checks.extend(super::checks::queues_and_audit(&store).await);
        store.close().await;
    }
    let (text, failed) = super::checks::report(&checks);
    print!("{text}");
    if !failed.is_empty() {
        return Err(CliError::Failed(anyhow::anyhow!(
            "{} problem(s): {}",
            failed.len(),
            failed.join(", ")
        )));
    }
    println!("all well");
    Ok(())
}

/// `SEQ:HASH`, as `audit head` prints it.
fn parse_head(raw: &str) -> Result<(i64, String), String> {
    let (seq, hash) = raw
        .split_once(':')
        .ok_or_else(|| "write it as SEQ:HASH, as `tokendesk audit head` prints it".to_owned())?;
    let seq: i64 = seq
        .trim()
        .parse()
        .map_err(|_| format!("`{seq}` is not a sequence number"))?;
    let hash = hash.trim();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the hash is 64 hexadecimal digits".to_owned());
    }
    Ok((seq, hash.to_ascii_lowercase()))
}

async fn app_for(args: &ConfigArg) -> Result<App, CliError> {
    let config = args.load()?;
    Ok(App::from_config(&config, Arc::new(SystemClock)).await?)
}

pub(super) async fn audit(command: AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::Verify {
            config,
            expect_head,
        } => {
            let app = app_for(&config).await?;
            let count = match app.verify_audit().await.map_err(anyhow::Error::from)? {
                Ok(count) => count,
                Err(broken) => return Err(CliError::Failed(anyhow::anyhow!("{broken}"))),
            };
            if let Some((seq, hash)) = expect_head {
                if let Err(why) = app
                    .audit_matches_head(seq, &hash)
                    .await
                    .map_err(anyhow::Error::from)?
                {
                    return Err(CliError::Failed(anyhow::anyhow!(
                        "audit chain does not reach the expected head {seq}: {why}"
                    )));
                }
                println!("audit chain intact: {count} events, through the expected head {seq}");
            } else {
                println!("audit chain intact: {count} events");
            }
            Ok(())
        }
        AuditCommand::Head(config) => {
            let app = app_for(&config).await?;
            match app.audit_head().await.map_err(anyhow::Error::from)? {
                Some((seq, hash)) => println!("{seq}:{hash}"),
                None => println!("0:"),
            }
            Ok(())
        }
        AuditCommand::Export {
            config,
            format,
            output,
        } => {
            let app = app_for(&config).await?;
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let system = app.actor(Login::parse("system").map_err(|e| anyhow::anyhow!(e.message))?);
            let system = crate::domain::Actor {
                roles: crate::domain::Roles {
                    admin: true,
                    ..system.roles
                },
                ..system
            };
            if format == ExportFormat::Csv {
                writeln!(out, "{}", crate::store::AuditEvent::CSV_HEADER).context("write")?;
            }
            let mut after = 0;
            let mut count = 0u64;
            loop {
                let page = app
                    .audit_events(
                        &system,
                        &AuditQuery {
                            after_seq: Some(after),
                            limit: Some(5000),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(anyhow::Error::from)?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for e in &page {
                    match format {
                        ExportFormat::Jsonl => {
                            serde_json::to_writer(&mut out, e).context("write")?;
                            writeln!(out).context("write")?;
                        }
                        ExportFormat::Csv => {
                            writeln!(out, "{}", e.csv_row()).context("write")?;
                        }
                    }
                    count += 1;
                }
            }
            out.flush().context("write")?;
            if output.is_some() {
                eprintln!("exported {count} events");
            }
            Ok(())
        }
    }
}

pub(super) async fn demo(args: DemoArgs) -> Result<(), CliError> {
    if !args.listen.ip().is_loopback() || !args.canvas_listen.ip().is_loopback() {
        return Err(CliError::Usage(
            "the demo signs anyone in without a password: --listen and --canvas-listen must be loopback addresses".into(),
        ));
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create the demo folder {}", args.dir.display()))?;
    let seed = Seed::default();
    let sim = tokendesk_canvas_sim::start(
        SimConfig {
            seed: seed.clone(),
            state_file: Some(args.dir.join("canvas-sim.json")),
            ..SimConfig::default()
        },
        args.canvas_listen,
    )
    .await?;
    let canvas_url = format!("{}/", sim.base_url())
        .parse()
        .context("simulator URL")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another tokendesk running? try --listen 127.0.0.1:0)",
                args.listen
            )
        })?;
    // Links in emails must name the port actually bound (e.g. with --listen 127.0.0.1:0).
    let listen = listener.local_addr().context("bound address")?;
    let mut config = Config::demo(
        &args.dir,
        listen,
        canvas_url,
        SecretString::from(DEFAULT_ADMIN_TOKEN),
    );
    let logins = |names: &[&str]| -> Vec<Login> {
        names.iter().filter_map(|n| Login::parse(n).ok()).collect()
    };
    config.roles.approvers = logins(&["ada.admin"]);
    config.roles.helpdesk = logins(&["theo.teacher"]);
    config.roles.auditors = logins(&["ada.admin"]);
    config.roles.admins = logins(&["ada.admin"]);
    let people: Vec<(Login, String)> = seed
        .users
        .iter()
        .filter_map(|u| Login::parse(&u.login_id).ok().map(|l| (l, u.name.clone())))
        .collect();
    let app = App::from_config(&config, Arc::new(SystemClock)).await?;
    let running = server::start(&config, app, people.clone(), listener).await?;
    println!("tokendesk demo running at http://{}/", running.addr);
    println!("  sign in:            http://{}/demo/login", running.addr);
    println!(
        "  Canvas simulator:   {}/login (activate tokens under /profile/settings)",
        sim.base_url()
    );
    println!(
        "  data:               {} (SQLite; email goes to the mailbox at /mailbox)",
        args.dir.display()
    );
    println!("  people:");
    for (login, name) in &people {
        let roles = running.app.actor(login.clone()).roles.names().join(", ");
        println!("    {:<18} {name:<18} {roles}", login.as_str());
    }
    println!("Ctrl-C stops everything.");
    server::stop_signal().await;
    eprintln!("stopping…");
    running.shutdown().await;
    sim.shutdown().await;
    Ok(())
}

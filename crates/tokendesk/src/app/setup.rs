//! Building the service from its configuration.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokendesk_canvas::CanvasClient;

use super::{App, AppParts, Clock, Mailer, RoleBook, WorkerSettings};
use crate::config::{Config, DatabaseUrl, EmailTransport, PoolConfig, SmtpTls};
use crate::delivery::email::{self, SmtpSender, SmtpSettings};
use crate::domain::Login;
use crate::store::{Store, StoreOptions, ViewCacheOptions};

/// The connection string for a database URL (SQLite files are created when missing).
pub fn connection_string(database: &DatabaseUrl) -> String {
    match database {
        DatabaseUrl::Sqlite(path) => format!("sqlite://{}?mode=rwc", path.display()),
        DatabaseUrl::SqliteMemory => "sqlite::memory:".to_owned(),
        DatabaseUrl::Postgres(url) => url.expose_url().to_owned(),
    }
}

/// The pool settings of `[database]`.
pub fn store_options(pool: &PoolConfig) -> StoreOptions {
    StoreOptions {
        max_connections: pool.max_connections,
        acquire_timeout: Duration::from_secs(pool.acquire_timeout_secs),
        idle_timeout: (pool.idle_timeout_secs > 0)
            .then(|| Duration::from_secs(pool.idle_timeout_secs)),
        view_cache: ViewCacheOptions {
            entries: usize::try_from(pool.view_cache_entries).unwrap_or(usize::MAX),
            ttl: Duration::from_secs(pool.view_cache_secs),
        },
    }
}

/// The defaults of `[database]`.
impl Default for StoreOptions {
    fn default() -> Self {
        store_options(&PoolConfig::default())
    }
}

/// The connection string and pool settings for the configured database.
pub fn database_url(config: &Config) -> (String, StoreOptions) {
    let mut options = store_options(&config.pool);
    if config.database == DatabaseUrl::SqliteMemory {
        // Every connection to :memory: is a database of its own: keep to one.
        options.max_connections = 1;
    }
    (connection_string(&config.database), options)
}

/// Opens (and migrates) the configured database.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = connect_store(config).await?;
    let schema = store.schema().await.with_context(|| {
        format!(
            "cannot read the {} database's schema",
            config.database.kind()
        )
    })?;
    schema.refuse_newer()?;
    if !config.pool.auto_migrate {
        if !schema.pending.is_empty() {
            anyhow::bail!(
                "the database has {} migration(s) to apply ({:?}) and database.auto_migrate is false: run `tokendesk migrate` first",
                schema.pending.len(),
                schema.pending
            );
        }
        return Ok(store);
    }
    store
        .migrate()
        .await
        .with_context(|| format!("cannot migrate the {} database", config.database.kind()))?;
    Ok(store)
}

/// Connects to the configured database without migrating it (an SQLite file is created).
pub async fn connect_store(config: &Config) -> anyhow::Result<Store> {
    let (url, options) = database_url(config);
    if let DatabaseUrl::Sqlite(path) = &config.database
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the database folder {}", dir.display()))?;
    }
    Store::connect(&url, &options)
        .await
        .with_context(|| format!("cannot open the {} database", config.database.kind()))
}

fn logins(list: &[Login]) -> HashSet<Login> {
    list.iter().cloned().collect()
}

impl RoleBook {
    /// The role lists of `[roles]`.
    pub fn from_config(roles: &crate::config::RolesConfig) -> RoleBook {
        RoleBook {
            approvers: logins(&roles.approvers),
            helpdesk: logins(&roles.helpdesk),
            auditors: logins(&roles.auditors),
            admins: logins(&roles.admins),
        }
    }
}

/// The Canvas client the configuration describes.
pub fn canvas_client(config: &Config) -> anyhow::Result<CanvasClient> {
    CanvasClient::builder(
        config.canvas.url.as_str(),
        config.canvas.admin_token.clone(),
    )
    .timeout(config.canvas.timeout())
    .max_retries(config.canvas.max_retries)
    .build()
    .context("cannot set up the Canvas client")
}

/// Where email goes: the mailbox, or the SMTP server the configuration describes.
pub fn mailer(config: &Config) -> anyhow::Result<Mailer> {
    Ok(match config.email.transport {
        EmailTransport::Mailbox => Mailer::Mailbox,
        EmailTransport::Smtp => {
            let smtp = config
                .email
                .smtp
                .as_ref()
                .context("email.transport is smtp but no smtp settings are given")?;
            let settings = SmtpSettings {
                host: smtp.host.clone(),
                port: smtp.port,
                tls: match smtp.tls {
                    SmtpTls::None => email::SmtpTls::None,
                    SmtpTls::StartTls => email::SmtpTls::Starttls,
                    SmtpTls::Tls => email::SmtpTls::Tls,
                },
                username: smtp.credentials.as_ref().map(|c| c.user.clone()),
                password: smtp.credentials.as_ref().map(|c| c.password.clone()),
                from: config.email.from.to_string(),
                timeout: std::time::Duration::from_secs(30),
            };
            Mailer::Smtp(SmtpSender::new(&settings).context("cannot set up SMTP")?)
        }
    })
}

impl App {
    /// Builds the service from a checked configuration.
    pub async fn from_config(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
        let store = open_store(config).await?;
        let canvas = canvas_client(config)?;
        let mailer = mailer(config)?;
        let roles = RoleBook::from_config(&config.roles);
        let workers = WorkerSettings {
            lease: time::Duration::seconds(
                i64::try_from(config.workers.lease_secs).unwrap_or(i64::MAX),
            ),
            sweep_every: Duration::from_secs(config.workers.sweep_every_secs),
            reconcile_every: Duration::from_secs(config.workers.reconcile_every_secs),
        };
        Ok(App::with_workers(
            AppParts {
                store,
                policy: config.policy,
                roles,
                canvas,
                canvas_url: config.canvas.url.clone(),
                canvas_user_pattern: config.canvas.user_id_pattern,
                public_url: config.public_url.clone(),
                mailer,
                outbox_key: config.email.outbox_key.as_ref().map(|k| k.key().clone()),
                product_name: "tokendesk".to_owned(),
                notify: config.notify,
                sessions: super::SessionRules::from_config(&config.auth),
                fingerprint_key: config.fingerprint_key.as_ref().map(|k| k.key().clone()),
                clock,
            },
            workers,
        ))
    }
}

//! Database access: one `Store` over SQLite (the embedded default) or PostgreSQL, with portable
//! SQL and small query functions that take the transaction they run in. Every state change is
//! written together with its audit event and its follow-up work, in one transaction.

mod audit;
mod copy;
mod envelopes;
mod health;
mod incidents;
mod lifecycle;
mod migrate;
mod people;
mod periodic;
mod queue;
mod reports;
mod requests;
mod sessions;
mod sql;
mod stats;
mod tokens;
mod tx;
mod views;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Connection as _, Executor};

pub(crate) use audit::csv_cell;
pub use audit::{
    AuditEvent, AuditFilter, ChainBreak, append_audit, audit_hash_at, audit_head, audit_query,
    list_audit, verify_chain,
};
pub use copy::{CopyError, CopyProgress, CopyReport, TableCopy, copied_tables, copy_database};
pub use envelopes::{
    StoredEnvelope, close_envelopes_of, envelope_for_request, expire_envelopes, get_envelope,
    insert_envelope, request_view, update_envelope,
};
pub use incidents::{
    ItemState, RevokeRun, create_run, finish_item, insert_report, live_tokens_with_hint,
    queued_item, revoke_preview, revoke_run, run_owners, run_tokens_of, set_token_fingerprint,
};
pub use lifecycle::{
    Orphan, SeenOrphan, WithToken, calendar_owner, calendar_secret, delete_orphan, drop_calendar,
    expiring_by, forget_orphans_except, get_orphan, list_orphans, note_once, noticed_at,
    pending_deliveries, renewal_chain, renewals_of, renewals_query, replaceable, saw_orphan,
    set_calendar, submitted_since, unused_since,
};
pub use migrate::{AppliedMigration, SchemaStatus};
pub use people::{Person, people_in_canvas, person, search_people, upsert_person};
pub use periodic::{PeriodicRun, claim_period, periodic_run};
pub use queue::{
    ClaimedEmail, ClaimedJob, JobKind, MailboxMessage, QueuedEmail, claim_email, claim_job,
    claim_job_by, email_done, email_retry, email_seal, enqueue_email, enqueue_job, enqueue_notices,
    job_done, job_retry, mailbox, mailbox_query,
};
pub use reports::{
    Span, activations_in, approvals_in, live_tokens_at, purposes_in, requests_made_in,
    tokens_expiring_in, unopened_links_in,
};
pub use requests::{
    RequestFilter, RequestPosition, Whose, expiring_requests, get_request, holdings,
    insert_request, list_requests, requests_query, update_request,
};
pub use sessions::{
    NewSession, OidcFlow, StoredKey, StoredSession, end_session_by_hash, end_session_of,
    end_sessions_of, insert_flow, insert_key, insert_session, key_by_hash, list_keys,
    live_sessions_of, purge_sessions, revoke_key, session_by_hash, take_flow, touch_key,
    touch_session,
};
pub use sql::{Arg, ListQuery, query_plan};
pub use stats::{QueueStats, Stats, stats};
pub use tokens::{
    StoredToken, due_activation_checks, get_token, insert_token, list_tokens, move_token,
    record_canvas_view, schedule_check, set_token_expiry, set_token_hint, set_token_state,
    token_for_request, tokens_of_canvas_users, tokens_query,
};
use tx::Writers;
pub use tx::{LoggedEvent, Tx};
use views::ViewCache;
pub use views::{RequestViewRow, ViewCacheOptions, ViewCacheStats};

use crate::domain::RequestId;
pub use crate::domain::TokenState;

/// The database kinds tokendesk runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Config(
                "database_url must start with sqlite: or postgres://".into(),
            ))
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The row changed under us (another approver, another instance): the caller reports 409.
    #[error("the record was changed by someone else at the same time; reload and try again")]
    Conflict,
    #[error("not found")]
    NotFound,
    /// A stored value that cannot be read back (a bug or a hand-edited database).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The schema cannot be brought up to date by this release (an edited migration, a
    /// database migrated by a newer release).
    #[error("{0}")]
    Schema(String),
    /// The database does not answer (known since an earlier attempt): refused at once.
    #[error("the database does not answer: {0}")]
    Unreachable(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A pooled connection idle this long is tested (pinged) before it is handed out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(30);

/// PostgreSQL: a caller waiting this long for a connection has the server asked directly
/// whether it is there (see [`Store::acquire`]).
const SUSPECT_AFTER: Duration = Duration::from_millis(500);

/// Pool settings (their defaults are those of `[database]`: see `app::store_options`).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// How long to wait for a connection, including opening a new one (the connect timeout).
    pub acquire_timeout: Duration,
    /// Close connections idle this long; `None` keeps them.
    pub idle_timeout: Option<Duration>,
    /// The status look-up cache.
    pub view_cache: ViewCacheOptions,
}

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// What the pool connects with, for asking the server directly whether it is there.
    connect_options: AnyConnectOptions,
    /// Where writers take their turn (see [`tx`]).
    writers: Writers,
    backend: Backend,
    acquire_timeout: Duration,
    /// Recently read request views ([`views`]).
    views: Arc<ViewCache>,
    /// PostgreSQL: hears other instances' changes for `views`; stops with the last clone.
    listener: Option<Arc<views::ListenerGuard>>,
    /// Whether the database answers ([`health`]).
    health: Arc<health::Health>,
}

impl Store {
    /// Connects (creating an SQLite file if needed) without migrating.
    pub async fn connect(url: &str, options: &StoreOptions) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut connect = AnyConnectOptions::from_str(url)?;
        connect = connect.log_statements(tracing::log::LevelFilter::Trace);
        let refused = tx::Refused::default();
        let pool_options = |max_connections: u32| {
            let refused = refused.clone();
            let pool = AnyPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(options.acquire_timeout)
                .idle_timeout(options.idle_timeout)
                // Test a connection before use only after it sat idle (a server restart or a
                // firewall may have dropped it): a ping is one more round trip per request.
                .test_before_acquire(false)
                .before_acquire(move |conn, meta| {
                    // Opened before the database last refused a write for its file's sake: it
                    // may be read-only for good (see `tx::Refused`), so it is closed.
                    let stale = refused.predates(meta.age);
                    Box::pin(async move {
                        if stale {
                            return Ok(false);
                        }
                        if meta.idle_for >= PING_WHEN_IDLE_FOR {
                            conn.ping().await?;
                        }
                        Ok(true)
                    })
                });
            match backend {
                Backend::Postgres => pool,
                // WAL for readers beside the writer, durable commits, foreign keys, and waiting
                // (not failing) while another process holds the write lock. Temporary data in
                // memory: the record of changed requests (see `tx`), and the journal of each
                // group member's savepoint, which SQLite would otherwise write to a temporary
                // file once it passes 64 KiB, created and deleted again for every shared commit.
                Backend::Sqlite => pool.after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(sqlx::raw_sql(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                             PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;",
                        ))
                        .await?;
                        Ok(())
                    })
                }),
            }
        };
        let pool = pool_options(options.max_connections)
            .connect_with(connect.clone())
            .await?;
        let connect_options = connect.clone();
        // Each connection to an in-memory SQLite database is a database of its own: writers
        // share the (one) pool connection there, and take turns without sharing commits.
        let in_memory =
            backend == Backend::Sqlite && (url.contains(":memory:") || url.contains("mode=memory"));
        let writers_pool = if in_memory {
            pool.clone()
        } else {
            pool_options(2).connect_with(connect).await?
        };
        let writers = Writers::new(backend, writers_pool, !in_memory, refused.clone());
        // SQLite: this process is the database's only writer (see `views`), so the cache serves
        // at once. PostgreSQL: it serves once the listener hears the other instances' changes.
        let views = Arc::new(ViewCache::new(
            options.view_cache,
            backend == Backend::Sqlite,
        ));
        let listener = if backend == Backend::Postgres && options.view_cache.entries > 0 {
            let listen = sqlx::postgres::PgConnectOptions::from_str(url)?
                .application_name("tokendesk-listener");
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(options.acquire_timeout)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_lazy_with(listen);
            Some(Arc::new(views::spawn_listener(pool, views.clone())))
        } else {
            None
        };
        Ok(Store {
            pool,
            connect_options,
            writers,
            backend,
            acquire_timeout: options.acquire_timeout,
            views,
            listener,
            health: Default::default(),
        })
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &str, options: &StoreOptions) -> StoreResult<Store> {
        let store = Store::connect(url, options).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies the embedded migrations that have not run yet; returns those that ran.
    pub async fn migrate(&self) -> StoreResult<Vec<AppliedMigration>> {
        migrate::run(self).await
    }

    /// SQLite: writes a consistent copy of the database to `path` (`VACUUM INTO`, which reads
    /// one snapshot while writers go on), then makes the copy durable.
    pub async fn backup_into(&self, path: &std::path::Path) -> StoreResult<()> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::Schema(
                "only an SQLite database is copied with VACUUM INTO; use pg_dump".to_owned(),
            ));
        }
        let target = path.to_string_lossy().into_owned();
        sqlx::query("VACUUM INTO $1")
            .bind(&target)
            .execute(&self.pool)
            .await?;
        if let Ok(file) = std::fs::File::open(path) {
            let _ = file.sync_all();
        }
        Ok(())
    }

    /// Where the schema stands against this build's migrations (changes nothing).
    pub async fn schema(&self) -> StoreResult<SchemaStatus> {
        migrate::status(self).await
    }

    /// Whether the database answers, within `within` (readiness, and the probe while it is
    /// down); an answer after an outage is logged once.
    pub async fn ping(&self, within: Duration) -> StoreResult<()> {
        let answer = tokio::time::timeout(within, sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))
            .and_then(|r| r.map(|_| ()).map_err(StoreError::from));
        self.health.note(self.backend, answer)
    }

    /// While the database is known to be down: one short ping, to learn that it is back.
    pub async fn probe(&self) {
        if self.health.is_down() {
            let _ = self.ping(Duration::from_secs(1)).await;
        }
    }

    /// Whether the database is known not to answer (no waiting: what the last attempt found).
    pub fn is_down(&self) -> bool {
        self.health.is_down()
    }

    /// A connection for reads: refused at once while the database is known to be down.
    pub async fn read(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Any>> {
        self.acquire().await
    }

    /// A pool connection, refused at once while the database is known to be down. sqlx keeps
    /// retrying a refused connection (a stopped server, one restarting) until
    /// `acquire_timeout`, so on PostgreSQL a caller that has waited [`SUSPECT_AFTER`] asks the
    /// server directly (one caller at a time); when it is not there the database is marked
    /// down, and this caller and every other one waiting are answered at once instead of
    /// hanging until their time-out.
    async fn acquire(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Any>> {
        self.acquire_from(&self.pool).await
    }

    /// [`Store::acquire`] from `pool` (the readers' or the writers').
    async fn acquire_from(
        &self,
        pool: &AnyPool,
    ) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Any>> {
        let acquire = async {
            let acquire = pool.acquire();
            tokio::pin!(acquire);
            let suspect = tokio::time::sleep(SUSPECT_AFTER);
            tokio::pin!(suspect);
            let mut asked = self.backend != Backend::Postgres;
            loop {
                tokio::select! {
                    conn = &mut acquire => break conn.map_err(StoreError::from),
                    () = &mut suspect, if !asked => {
                        asked = true;
                        if let Some(Err(e)) = self.health.ask(self.reachable()).await {
                            // Marks it down, which wakes every waiting caller (this one too).
                            let _ = self.health.note(self.backend, Err::<(), _>(e));
                        }
                    }
                }
            }
        };
        let conn = self.unless_down(acquire).await;
        self.health.note(self.backend, conn)
    }

    /// `wait`'s answer, or a refusal at once when the database is (or goes) down meanwhile: a
    /// writer waiting for its turn behind one stuck on a lost connection is answered as soon
    /// as the database is known to be gone.
    async fn unless_down<T>(
        &self,
        wait: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.health.check()?;
        let went_down = self.health.went_down();
        tokio::pin!(went_down);
        went_down.as_mut().enable();
        // Marked down between the first check and listening: no wake-up would come.
        self.health.check()?;
        tokio::select! {
            answer = wait => answer,
            () = &mut went_down => Err(self.health.check().err().unwrap_or_else(|| {
                StoreError::Unreachable("the database went away".to_owned())
            })),
        }
    }

    /// Whether a new connection to the server can be opened, within a second.
    async fn reachable(&self) -> StoreResult<()> {
        match tokio::time::timeout(
            Duration::from_secs(1),
            sqlx::AnyConnection::connect_with(&self.connect_options),
        )
        .await
        {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(e)) => Err(StoreError::from(e)),
            Err(_) => Err(StoreError::Database(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Starts a write transaction: it waits for its turn among this process's writers (and may
    /// share its commit with the writers around it: see [`tx`]). Refused at once while the
    /// database is known to be down, and when it goes down during the wait.
    pub async fn write(&self) -> StoreResult<Tx> {
        let writers = &self.writers;
        // The turn first, then a connection: a writer waiting for its turn holds no
        // connection, so the writer whose turn it is can always get one.
        let turn = self
            .unless_down(writers.turn(self.acquire_timeout, &self.views))
            .await?;
        Tx::begin_turn(turn, writers, self.views.clone(), || {
            self.acquire_from(&writers.pool)
        })
        .await
    }

    /// The status look-up: a request with its token and newest envelope, from the cache when
    /// it holds a fresh view, else from the database (and then kept).
    pub async fn request_view(&self, id: RequestId) -> StoreResult<Option<Arc<RequestViewRow>>> {
        if let Some(view) = self.views.get(id.0) {
            return Ok(Some(view));
        }
        let ticket = self.views.ticket();
        let mut conn = self.read().await?;
        let Some(view) = envelopes::request_view(&mut conn, id).await? else {
            return Ok(None);
        };
        let view = Arc::new(view);
        self.views.keep(ticket, id.0, view.clone());
        Ok(Some(view))
    }

    /// How the status look-up cache has done.
    pub fn view_cache_stats(&self) -> ViewCacheStats {
        self.views.stats()
    }

    pub async fn close(&self) {
        let stats = self.views.stats();
        if stats.hits + stats.misses > 0 {
            tracing::info!(
                hits = stats.hits,
                misses = stats.misses,
                "status look-up cache"
            );
        }
        if let Some(listener) = &self.listener {
            listener.stop();
        }
        self.writers.release_kept().await;
        self.writers.pool.close().await;
        self.pool.close().await;
    }
}

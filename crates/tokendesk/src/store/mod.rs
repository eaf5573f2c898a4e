//! Database access: one `Store` over SQLite (the embedded default) or PostgreSQL, with portable
//! SQL and small query functions that take the transaction they run in. Every state change is
//! written together with its audit event and its follow-up work, in one transaction.

mod audit;
mod copy;
mod migrate;
mod periodic;
mod queue;
mod rows;
mod views;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{
    AnyConnection, AnyPool, ConnectOptions, Connection as _, Executor, Row, SqlSafeStr as _,
};
use time::OffsetDateTime;
use tokio::sync::OwnedMutexGuard;

pub use audit::{AuditEvent, AuditFilter, ChainBreak, verify_chain};
pub use copy::{CopyError, CopyProgress, CopyReport, TableCopy, copied_tables, copy_database};
pub use periodic::{PeriodicRun, claim_period, periodic_run};
pub use queue::MailboxMessage;
pub use queue::{ClaimedEmail, ClaimedJob, JobKind, QueuedEmail};
pub use rows::{StoredEnvelope, StoredToken, TokenState};
use views::ViewCache;
pub use views::{RequestViewRow, ViewCacheOptions, ViewCacheStats};

use crate::domain::envelope::Envelope;
use crate::domain::request::{Holdings, NewRequest, Request, RequestState};
use crate::domain::{Login, RequestId, TokenId};

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
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A pooled connection idle this long is tested (pinged) before it is handed out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(30);

/// Pool settings.
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

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
            view_cache: ViewCacheOptions::default(),
        }
    }
}

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite: where writers take their turn. `None` on PostgreSQL.
    writers: Option<SqliteWriters>,
    backend: Backend,
    acquire_timeout: Duration,
    /// Recently read request views ([`views`]).
    views: Arc<ViewCache>,
    /// PostgreSQL: hears other instances' changes for `views`; stops with the last clone.
    listener: Option<Arc<views::ListenerGuard>>,
}

/// SQLite lets one transaction write at a time. Writers queue here, in-process and first come
/// first served, instead of each sleeping in `busy_timeout` (1, 2, 5, 10 … ms) until the file
/// lock happens to be free. They write on connections of their own, so that readers never wait
/// behind queued writers; two of them, so that the next writer holds its connection, ready,
/// when the turn passes (handing a connection back to the pool costs a round trip).
#[derive(Debug, Clone)]
struct SqliteWriters {
    pool: AnyPool,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction: derefs to the connection; `commit` or `rollback` it. Dropped, it rolls
/// back (sqlx sends the rollback at once, before the turn passes on).
#[derive(Debug)]
pub struct Tx {
    // Fields drop in order: the transaction (its rollback), then the turn.
    tx: sqlx::Transaction<'static, sqlx::Any>,
    /// SQLite: the writer's turn, held until the transaction has ended.
    turn: Option<OwnedMutexGuard<()>>,
    /// Requests whose view this transaction changes, and the cache to tell once it committed.
    changed: Vec<i64>,
    views: Arc<ViewCache>,
}

impl Tx {
    /// Notes that this transaction changes what a status look-up of `id` shows.
    fn changes(&mut self, id: RequestId) {
        if !self.changed.contains(&id.0) {
            self.changed.push(id.0);
        }
    }

    /// Commits, then forgets the views of the requests it changed. It runs to the end even if
    /// the caller stops waiting (a client hung up): the commit may reach the database anyway,
    /// and the views must go after it, whatever happened.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Tx {
            tx,
            turn,
            changed,
            views,
        } = self;
        tokio::spawn(async move {
            let done = tx.commit().await;
            // Even a failed commit may have committed: forget the views either way, and before
            // the next writer's turn, so that no one reads a view older than a write they saw.
            views.changed(&changed);
            drop(turn);
            done
        })
        .await
        .unwrap_or(Err(sqlx::Error::WorkerCrashed))
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        let Tx { tx, turn, .. } = self;
        let done = tx.rollback().await;
        drop(turn);
        done
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl Store {
    /// Connects (creating an SQLite file if needed) without migrating.
    pub async fn connect(url: &str, options: &StoreOptions) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut connect = AnyConnectOptions::from_str(url)?;
        connect = connect.log_statements(tracing::log::LevelFilter::Trace);
        let pool_options = |max_connections: u32| {
            let pool = AnyPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(options.acquire_timeout)
                .idle_timeout(options.idle_timeout)
                // Test a connection before use only after it sat idle (a server restart or a
                // firewall may have dropped it): a ping is one more round trip per request.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_WHEN_IDLE_FOR {
                            conn.ping().await?;
                        }
                        Ok(true)
                    })
                });
            match backend {
                Backend::Postgres => pool,
                // WAL for readers beside the writer, durable commits, foreign keys, and waiting
                // (not failing) while another process holds the write lock.
                Backend::Sqlite => pool.after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(sqlx::raw_sql(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
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
        let writers = match backend {
            Backend::Postgres => None,
            Backend::Sqlite => {
                // Each connection to an in-memory database is a database of its own: writers
                // share the (one) pool connection there.
                let in_memory = url.contains(":memory:") || url.contains("mode=memory");
                let pool = if in_memory {
                    pool.clone()
                } else {
                    pool_options(2).connect_with(connect).await?
                };
                Some(SqliteWriters {
                    pool,
                    turn: Arc::new(tokio::sync::Mutex::new(())),
                })
            }
        };
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
            writers,
            backend,
            acquire_timeout: options.acquire_timeout,
            views,
            listener,
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

    /// Applies the embedded migrations that have not run yet; returns how many ran.
    pub async fn migrate(&self) -> StoreResult<usize> {
        migrate::run(self).await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Starts a write transaction. On SQLite it waits for its turn among this process's
    /// writers, then takes the write lock at once, so that a read-then-write transaction never
    /// fails half-way on lock upgrade.
    pub async fn write(&self) -> StoreResult<Tx> {
        let Some(writers) = &self.writers else {
            let mut tx = self.pool.begin().await?;
            // Keep the transaction from waiting forever on a row another instance locked.
            sqlx::query("SET LOCAL lock_timeout = '10s'")
                .execute(&mut *tx)
                .await?;
            return Ok(Tx {
                tx,
                turn: None,
                changed: Vec::new(),
                views: self.views.clone(),
            });
        };
        let conn = writers.pool.acquire().await?;
        let turn = tokio::time::timeout(self.acquire_timeout, writers.turn.clone().lock_owned())
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))?;
        let tx = sqlx::Transaction::begin(conn, Some("BEGIN IMMEDIATE".into_sql_str())).await?;
        Ok(Tx {
            tx,
            turn: Some(turn),
            changed: Vec::new(),
            views: self.views.clone(),
        })
    }

    /// The status look-up: a request with its token and newest envelope, from the cache when
    /// it holds a fresh view, else from the database (and then kept).
    pub async fn request_view(&self, id: RequestId) -> StoreResult<Option<Arc<RequestViewRow>>> {
        if let Some(view) = self.views.get(id.0) {
            return Ok(Some(view));
        }
        let ticket = self.views.ticket();
        let mut conn = self.pool.acquire().await?;
        let Some(view) = request_view(&mut conn, id).await? else {
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
        if let Some(writers) = &self.writers {
            writers.pool.close().await;
        }
        self.pool.close().await;
    }
}

pub(crate) fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

pub(crate) fn from_ts(secs: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| StoreError::Corrupt(format!("time {secs} out of range")))
}

// ---- people ------------------------------------------------------------------------------

/// A person as tokendesk knows them (from sign-in and from Canvas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub login: Login,
    pub name: Option<String>,
    pub email: Option<String>,
    pub canvas_user_id: Option<i64>,
}

/// Makes sure the person exists; fills in what is known (never erases known details).
pub async fn upsert_person(
    conn: &mut AnyConnection,
    person: &Person,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO people (login, name, email, canvas_user_id, first_seen_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (login) DO UPDATE SET \
           name = COALESCE(excluded.name, people.name), \
           email = COALESCE(excluded.email, people.email), \
           canvas_user_id = COALESCE(excluded.canvas_user_id, people.canvas_user_id), \
           updated_at = excluded.updated_at",
    )
    .bind(person.login.as_str())
    .bind(person.name.as_deref())
    .bind(person.email.as_deref())
    .bind(person.canvas_user_id)
    .bind(ts(now))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn person(conn: &mut AnyConnection, login: &Login) -> StoreResult<Option<Person>> {
    let row = sqlx::query("SELECT login, name, email, canvas_user_id FROM people WHERE login = $1")
        .bind(login.as_str())
        .fetch_optional(conn)
        .await?;
    row.map(|r| rows::person(&r)).transpose()
}

/// People whose login or name contains `term` (case-insensitive), for the help desk.
pub async fn search_people(
    conn: &mut AnyConnection,
    term: &str,
    limit: i64,
) -> StoreResult<Vec<Person>> {
    let pattern = format!("%{}%", term.to_lowercase().replace(['%', '_'], ""));
    let rows = sqlx::query(
        "SELECT login, name, email, canvas_user_id FROM people \
         WHERE login LIKE $1 OR LOWER(COALESCE(name, '')) LIKE $1 ORDER BY login LIMIT $2",
    )
    .bind(pattern)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(rows::person).collect()
}

// ---- requests ----------------------------------------------------------------------------

const REQUEST_COLUMNS: &str = "id, requester, purpose, application, requested_expires_on, \
     expires_on, state, decided_by, reason, created_at, updated_at";

pub async fn insert_request(
    tx: &mut Tx,
    requester: &Login,
    new: &NewRequest,
    now: OffsetDateTime,
) -> StoreResult<Request> {
    let sql = format!(
        "INSERT INTO requests (requester, purpose, application, requested_expires_on, expires_on, \
         state, created_at, updated_at) VALUES ($1, $2, $3, $4, $4, 'submitted', $5, $5) \
         RETURNING {REQUEST_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(requester.as_str())
        .bind(new.purpose.as_str())
        .bind(new.application.as_deref())
        .bind(new.expires_on.to_string())
        .bind(ts(now))
        .fetch_one(&mut **tx)
        .await?;
    let request = rows::request(&row)?;
    tx.changes(request.id);
    Ok(request)
}

pub async fn get_request(conn: &mut AnyConnection, id: RequestId) -> StoreResult<Option<Request>> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(conn)
        .await?;
    row.map(|r| rows::request(&r)).transpose()
}

/// Writes a transition's new state if the request is still in the state it was read in;
/// otherwise someone else moved it first and this is a `Conflict`.
pub async fn update_request(tx: &mut Tx, from: RequestState, next: &Request) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE requests SET state = $1, expires_on = $2, decided_by = $3, reason = $4, \
         updated_at = $5 WHERE id = $6 AND state = $7",
    )
    .bind(next.state.as_str())
    .bind(next.expires_on.to_string())
    .bind(next.decided_by.as_ref().map(Login::as_str))
    .bind(next.reason.as_deref())
    .bind(ts(next.updated_at))
    .bind(next.id.0)
    .bind(from.as_str())
    .execute(&mut **tx)
    .await?;
    tx.changes(next.id);
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict)
    }
}

/// What a person holds now, for the per-person limits.
pub async fn holdings(conn: &mut AnyConnection, login: &Login) -> StoreResult<Holdings> {
    let row = sqlx::query(
        "SELECT \
           COALESCE(SUM(CASE WHEN state IN ('submitted','approved','failed') THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN state IN ('issued','activated') THEN 1 ELSE 0 END), 0) \
         FROM requests WHERE requester = $1",
    )
    .bind(login.as_str())
    .fetch_one(conn)
    .await?;
    let count = |i: usize| -> StoreResult<u32> {
        let n: i64 = row.try_get(i)?;
        u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("count {n}")))
    };
    Ok(Holdings {
        open_requests: count(0)?,
        live_tokens: count(1)?,
    })
}

/// Filters for request lists.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub requester: Option<Login>,
    pub state: Option<RequestState>,
    /// Oldest first (the approvers' queue) instead of newest first.
    pub oldest_first: bool,
    pub limit: i64,
}

pub async fn list_requests(
    conn: &mut AnyConnection,
    filter: &RequestFilter,
) -> StoreResult<Vec<Request>> {
    let order = if filter.oldest_first { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM requests \
         WHERE ($1 IS NULL OR requester = $1) AND ($2 IS NULL OR state = $2) \
         ORDER BY created_at {order}, id {order} LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(filter.requester.as_ref().map(Login::as_str))
        .bind(filter.state.map(RequestState::as_str))
        .bind(if filter.limit > 0 { filter.limit } else { 100 })
        .fetch_all(conn)
        .await?;
    rows.iter().map(rows::request).collect()
}

// ---- tokens ------------------------------------------------------------------------------

const TOKEN_COLUMNS: &str = "id, request_id, owner, canvas_user_id, canvas_token_id, hint, state, \
     expires_at, created_at, updated_at";

/// Records a token created in Canvas.
#[allow(clippy::too_many_arguments)]
pub async fn insert_token(
    tx: &mut Tx,
    request_id: RequestId,
    owner: &Login,
    canvas_user_id: i64,
    canvas_token_id: i64,
    hint: &str,
    state: TokenState,
    expires_at: OffsetDateTime,
    now: OffsetDateTime,
) -> StoreResult<TokenId> {
    let row = sqlx::query(
        "INSERT INTO tokens (request_id, owner, canvas_user_id, canvas_token_id, hint, state, \
         expires_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id",
    )
    .bind(request_id.0)
    .bind(owner.as_str())
    .bind(canvas_user_id)
    .bind(canvas_token_id)
    .bind(hint)
    .bind(state.as_str())
    .bind(ts(expires_at))
    .bind(ts(now))
    .fetch_one(&mut **tx)
    .await?;
    tx.changes(request_id);
    Ok(TokenId(row.try_get::<i64, _>(0)?))
}

pub async fn get_token(conn: &mut AnyConnection, id: TokenId) -> StoreResult<Option<StoredToken>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(conn)
        .await?;
    row.map(|r| rows::token(&r)).transpose()
}

pub async fn token_for_request(
    conn: &mut AnyConnection,
    id: RequestId,
) -> StoreResult<Option<StoredToken>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE request_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(conn)
        .await?;
    row.map(|r| rows::token(&r)).transpose()
}

pub async fn list_tokens(
    conn: &mut AnyConnection,
    owner: Option<&Login>,
    limit: i64,
) -> StoreResult<Vec<StoredToken>> {
    let sql = format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE ($1 IS NULL OR owner = $1) ORDER BY id DESC LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(owner.map(Login::as_str))
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(rows::token).collect()
}

pub async fn set_token_state(
    tx: &mut Tx,
    id: TokenId,
    state: TokenState,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let changed = sqlx::query(
        "UPDATE tokens SET state = $1, updated_at = $2 WHERE id = $3 RETURNING request_id",
    )
    .bind(state.as_str())
    .bind(ts(now))
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await?;
    token_changed(tx, changed)
}

/// A regenerated token has a new hint.
pub async fn set_token_hint(
    tx: &mut Tx,
    id: TokenId,
    hint: &str,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let changed = sqlx::query(
        "UPDATE tokens SET hint = $1, updated_at = $2 WHERE id = $3 RETURNING request_id",
    )
    .bind(hint)
    .bind(ts(now))
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await?;
    token_changed(tx, changed)
}

/// Notes the request of an updated token (the row `RETURNING request_id`, if there was one).
fn token_changed(tx: &mut Tx, row: Option<sqlx::any::AnyRow>) -> StoreResult<()> {
    if let Some(row) = row {
        tx.changes(RequestId(row.try_get::<i64, _>(0)?));
    }
    Ok(())
}

/// Tokens tokendesk believes are pending in Canvas for a request that is still issued.
pub async fn pending_tokens(conn: &mut AnyConnection, limit: i64) -> StoreResult<Vec<StoredToken>> {
    let sql = format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE state IN ('pending','active') AND request_id IN \
         (SELECT id FROM requests WHERE state = 'issued') ORDER BY id LIMIT $1"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(rows::token).collect()
}

/// Requests holding a token whose expiry date is before `today`.
pub async fn expiring_requests(
    conn: &mut AnyConnection,
    today: time::Date,
    limit: i64,
) -> StoreResult<Vec<Request>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM requests WHERE state IN ('issued','activated') \
         AND expires_on < $1 ORDER BY id LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(today.to_string())
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(rows::request).collect()
}

// ---- envelopes ---------------------------------------------------------------------------

pub async fn insert_envelope(
    tx: &mut Tx,
    envelope: &Envelope,
    nonce: &[u8],
    ciphertext: &[u8],
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO envelopes (id, request_id, owner, state, reveals, nonce, ciphertext, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(envelope.id.as_str())
    .bind(envelope.request_id.0)
    .bind(envelope.owner.as_str())
    .bind(envelope.state.as_str())
    .bind(i64::from(envelope.reveals))
    .bind(nonce)
    .bind(ciphertext)
    .bind(ts(envelope.created_at))
    .bind(ts(envelope.expires_at))
    .execute(&mut **tx)
    .await?;
    tx.changes(envelope.request_id);
    Ok(())
}

pub async fn get_envelope(
    conn: &mut AnyConnection,
    id: &str,
) -> StoreResult<Option<StoredEnvelope>> {
    let row = sqlx::query(
        "SELECT id, request_id, owner, state, reveals, nonce, ciphertext, created_at, expires_at \
         FROM envelopes WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| rows::envelope(&r)).transpose()
}

/// A request with its token and its newest envelope (without the sealed content), in one
/// query: the status look-up.
pub async fn request_view(
    conn: &mut AnyConnection,
    id: RequestId,
) -> StoreResult<Option<(Request, Option<StoredToken>, Option<Envelope>)>> {
    let row = sqlx::query(
        "SELECT r.id, r.requester, r.purpose, r.application, r.requested_expires_on, \
           r.expires_on, r.state, r.decided_by, r.reason, r.created_at, r.updated_at, \
           t.id AS t_id, t.request_id AS t_request_id, t.owner AS t_owner, \
           t.canvas_user_id AS t_canvas_user_id, t.canvas_token_id AS t_canvas_token_id, \
           t.hint AS t_hint, t.state AS t_state, t.expires_at AS t_expires_at, \
           t.created_at AS t_created_at, t.updated_at AS t_updated_at, \
           e.id AS e_id, e.request_id AS e_request_id, e.owner AS e_owner, e.state AS e_state, \
           e.reveals AS e_reveals, e.created_at AS e_created_at, e.expires_at AS e_expires_at \
         FROM requests r \
         LEFT JOIN tokens t ON t.request_id = r.id \
         LEFT JOIN envelopes e ON e.id = (SELECT id FROM envelopes WHERE request_id = r.id \
           ORDER BY created_at DESC LIMIT 1) \
         WHERE r.id = $1",
    )
    .bind(id.0)
    .fetch_optional(conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let token = match r.try_get::<Option<i64>, _>("t_id")? {
        Some(_) => Some(rows::token_in(&r, "t_")?),
        None => None,
    };
    let envelope = match r.try_get::<Option<String>, _>("e_id")? {
        Some(_) => Some(rows::envelope_in(&r, "e_")?),
        None => None,
    };
    Ok(Some((rows::request(&r)?, token, envelope)))
}

pub async fn envelope_for_request(
    conn: &mut AnyConnection,
    id: RequestId,
) -> StoreResult<Option<StoredEnvelope>> {
    let row = sqlx::query(
        "SELECT id, request_id, owner, state, reveals, nonce, ciphertext, created_at, expires_at \
         FROM envelopes WHERE request_id = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(id.0)
    .fetch_optional(conn)
    .await?;
    row.map(|r| rows::envelope(&r)).transpose()
}

/// Writes an envelope's new state if it is unchanged since it was read (same reveal count);
/// closed envelopes lose their ciphertext in the same statement.
pub async fn update_envelope(tx: &mut Tx, before: &Envelope, next: &Envelope) -> StoreResult<()> {
    let erase = !next.state.is_open();
    let done = sqlx::query(
        "UPDATE envelopes SET state = $1, reveals = $2, \
           nonce = CASE WHEN $3 THEN NULL ELSE nonce END, \
           ciphertext = CASE WHEN $3 THEN NULL ELSE ciphertext END \
         WHERE id = $4 AND reveals = $5 AND state = $6",
    )
    .bind(next.state.as_str())
    .bind(i64::from(next.reveals))
    .bind(erase)
    .bind(next.id.as_str())
    .bind(i64::from(before.reveals))
    .bind(before.state.as_str())
    .execute(&mut **tx)
    .await?;
    tx.changes(next.request_id);
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict)
    }
}

/// Erases the ciphertext of every open envelope of a request (token activated or revoked).
pub async fn close_envelopes_of(tx: &mut Tx, id: RequestId, state: &str) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE envelopes SET state = $1, nonce = NULL, ciphertext = NULL \
         WHERE request_id = $2 AND state IN ('sealed','revealed')",
    )
    .bind(state)
    .bind(id.0)
    .execute(&mut **tx)
    .await?;
    tx.changes(id);
    Ok(done.rows_affected())
}

/// Expires open envelopes whose time has passed and erases their ciphertext.
pub async fn expire_envelopes(tx: &mut Tx, now: OffsetDateTime) -> StoreResult<Vec<String>> {
    let rows = sqlx::query(
        "UPDATE envelopes SET state = 'expired', nonce = NULL, ciphertext = NULL \
         WHERE state IN ('sealed','revealed') AND expires_at <= $1 RETURNING id, request_id",
    )
    .bind(ts(now))
    .fetch_all(&mut **tx)
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    for r in &rows {
        ids.push(r.try_get::<String, _>(0)?);
        tx.changes(RequestId(r.try_get::<i64, _>(1)?));
    }
    Ok(ids)
}

pub use audit::{append_audit, list_audit};
pub use queue::{
    claim_email, claim_job, claim_job_by, email_done, email_retry, email_seal, enqueue_email,
    enqueue_job, job_done, job_retry, mailbox,
};

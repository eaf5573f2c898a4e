//! Write transactions. Every write goes through a [`Tx`]; when it commits, the requests it
//! changed leave the status look-up cache. Which requests those are, the database itself
//! records while the transaction runs, so no write function has to remember to say so:
//! - **SQLite:** temporary triggers on `requests`, `tokens` and `envelopes` (created on each
//!   writer connection) note the request id of every changed row in a temporary table, which
//!   the commit empties.
//! - **PostgreSQL:** the change triggers of migration 3 (which also announce the change to the
//!   other instances) append the request id to the transaction-local setting
//!   `tokendesk.changed`, which the commit reads.

use std::sync::Arc;

use sqlx::{AnyConnection, AnyPool, Executor, Row, SqlSafeStr as _};
use tokio::sync::OwnedMutexGuard;

use super::views::ViewCache;
use super::{Backend, StoreError, StoreResult};

/// SQLite lets one transaction write at a time. Writers queue here, in-process and first come
/// first served, instead of each sleeping in `busy_timeout` (1, 2, 5, 10 … ms) until the file
/// lock happens to be free. They write on connections of their own, so that readers never wait
/// behind queued writers; two of them, so that the next writer holds its connection, ready,
/// when the turn passes (handing a connection back to the pool costs a round trip).
#[derive(Debug, Clone)]
pub(super) struct SqliteWriters {
    pub(super) pool: AnyPool,
    pub(super) turn: Arc<tokio::sync::Mutex<()>>,
}

/// The temporary table and triggers that note changed requests on an SQLite connection.
const SQLITE_CAPTURE: &str = "\
CREATE TEMP TABLE IF NOT EXISTS tokendesk_changed (request_id INTEGER NOT NULL);
CREATE TEMP TRIGGER IF NOT EXISTS tokendesk_requests_u AFTER UPDATE ON main.requests BEGIN INSERT INTO tokendesk_changed VALUES (NEW.id); END;
CREATE TEMP TRIGGER IF NOT EXISTS tokendesk_requests_d AFTER DELETE ON main.requests BEGIN INSERT INTO tokendesk_changed VALUES (OLD.id); END;
CREATE TEMP TRIGGER IF NOT EXISTS tokendesk_tokens_i AFTER INSERT ON main.tokens BEGIN INSERT INTO tokendesk_changed VALUES (NEW.request_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS tokendesk_tokens_u AFTER UPDATE ON main.tokens BEGIN INSERT INTO tokendesk_changed VALUES (NEW.request_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS tokendesk_tokens_d AFTER DELETE ON main.tokens BEGIN INSERT INTO tokendesk_changed VALUES (OLD.request_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS tokendesk_envelopes_i AFTER INSERT ON main.envelopes BEGIN INSERT INTO tokendesk_changed VALUES (NEW.request_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS tokendesk_envelopes_u AFTER UPDATE ON main.envelopes BEGIN INSERT INTO tokendesk_changed VALUES (NEW.request_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS tokendesk_envelopes_d AFTER DELETE ON main.envelopes BEGIN INSERT INTO tokendesk_changed VALUES (OLD.request_id); END;
";

/// Makes sure an SQLite writer connection notes changed requests (once per connection).
/// Returns whether it does: a database without the schema yet has nothing to note.
pub(super) async fn arm_sqlite(conn: &mut AnyConnection) -> StoreResult<bool> {
    let armed: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM temp.sqlite_master WHERE type = 'trigger' AND name = 'tokendesk_envelopes_d'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if armed.is_some() {
        return Ok(true);
    }
    let schema: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = 'envelopes'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if schema.is_none() {
        return Ok(false);
    }
    conn.execute(sqlx::raw_sql(SQLITE_CAPTURE)).await?;
    Ok(true)
}

/// The requests the transaction changed so far, as the database noted them.
async fn changed_requests(conn: &mut AnyConnection, capture: Capture) -> StoreResult<Vec<i64>> {
    let mut ids: Vec<i64> = match capture {
        Capture::Nothing => return Ok(Vec::new()),
        Capture::SqliteTable => {
            sqlx::query("DELETE FROM temp.tokendesk_changed RETURNING request_id")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| r.try_get::<i64, _>(0))
                .collect::<Result<_, _>>()?
        }
        Capture::PostgresSetting => {
            let noted: Option<String> =
                sqlx::query_scalar("SELECT current_setting('tokendesk.changed', true)")
                    .fetch_one(&mut *conn)
                    .await?;
            noted
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<i64>()
                        .map_err(|_| StoreError::Corrupt(format!("changed request id {s:?}")))
                })
                .collect::<Result<_, _>>()?
        }
    };
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Copies every WAL frame into the database file and truncates the WAL to nothing.
async fn checkpoint(writers: &AnyPool) -> Result<(), sqlx::Error> {
    let mut conn = writers.acquire().await?;
    let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut *conn)
        .await?;
    let busy: i64 = row.try_get(0)?;
    if busy != 0 {
        tracing::warn!(
            "the WAL checkpoint after an erasure was blocked by a reader; it completes at the next one"
        );
    }
    Ok(())
}

/// A write transaction: derefs to the connection; `commit` or `rollback` it. Dropped, it rolls
/// back (sqlx sends the rollback at once, before the turn passes on).
#[derive(Debug)]
pub struct Tx {
    // Fields drop in order: the transaction (its rollback), then the turn.
    tx: sqlx::Transaction<'static, sqlx::Any>,
    /// SQLite: the writer's turn, held until the transaction has ended.
    turn: Option<OwnedMutexGuard<()>>,
    capture: Capture,
    views: Arc<ViewCache>,
    /// SQLite: where to checkpoint the WAL from when this transaction erased a secret.
    writers: Option<AnyPool>,
    /// This transaction erased a secret (a ciphertext, a sealed email).
    erased: bool,
    /// The audit events it wrote, logged once it has committed (one line per event).
    events: Vec<LoggedEvent>,
}

/// An audit event as its log line names it: ids and names, never details.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub seq: i64,
    pub actor: String,
    pub action: &'static str,
    pub target: String,
    pub outcome: &'static str,
}

/// Where the database notes the requests a transaction changed.
#[derive(Debug, Clone, Copy)]
enum Capture {
    SqliteTable,
    PostgresSetting,
    /// A database without the schema yet.
    Nothing,
}

impl Tx {
    pub(super) async fn begin(
        conn: sqlx::pool::PoolConnection<sqlx::Any>,
        turn: Option<OwnedMutexGuard<()>>,
        writers: Option<AnyPool>,
        backend: Backend,
        views: Arc<ViewCache>,
    ) -> StoreResult<Tx> {
        let mut conn = conn;
        let (tx, capture) = match backend {
            Backend::Sqlite => {
                let capture = if arm_sqlite(&mut conn).await? {
                    Capture::SqliteTable
                } else {
                    Capture::Nothing
                };
                let tx =
                    sqlx::Transaction::begin(conn, Some("BEGIN IMMEDIATE".into_sql_str())).await?;
                (tx, capture)
            }
            Backend::Postgres => {
                let mut tx = sqlx::Transaction::begin(conn, None).await?;
                // Keep the transaction from waiting forever on a row another instance locked.
                sqlx::query("SET LOCAL lock_timeout = '10s'")
                    .execute(&mut *tx)
                    .await?;
                (tx, Capture::PostgresSetting)
            }
        };
        Ok(Tx {
            tx,
            turn,
            capture,
            views,
            writers,
            erased: false,
            events: Vec::new(),
        })
    }

    /// Logs `event` once this transaction has committed (never for one rolled back).
    pub fn log_event(&mut self, event: LoggedEvent) {
        self.events.push(event);
    }

    /// Notes that this transaction erases a secret: on SQLite, once it commits, the WAL is
    /// checkpointed and truncated, so that the erased bytes are left in no file (with
    /// `secure_delete`, the database's own pages are overwritten as the value is erased).
    pub(super) fn erases(&mut self) {
        self.erased = true;
    }

    /// Commits, then forgets the views of the requests it changed. It runs to the end even if
    /// the caller stops waiting (a client hung up): the commit may reach the database anyway,
    /// and the views must go after it, whatever happened.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Tx {
            mut tx,
            turn,
            capture,
            views,
            writers,
            erased,
            events,
        } = self;
        tokio::spawn(async move {
            let changed = match changed_requests(&mut tx, capture).await {
                Ok(changed) => changed,
                // Not knowing what changed, do not commit (the drop rolls back).
                Err(StoreError::Database(e)) => return Err(e),
                Err(e) => return Err(sqlx::Error::Protocol(e.to_string())),
            };
            let done = tx.commit().await;
            // Even a failed commit may have committed: forget the views either way, and before
            // the next writer's turn, so that no one reads a view older than a write they saw.
            views.changed(&changed);
            if let (true, Ok(()), Some(writers)) = (erased, &done, writers) {
                // Still this writer's turn: nobody writes between the erasure and this.
                if let Err(e) = checkpoint(&writers).await {
                    tracing::warn!(error = %e, "cannot checkpoint the WAL after erasing a secret");
                }
            }
            drop(turn);
            if done.is_ok() {
                for e in events {
                    tracing::info!(
                        audit.seq = e.seq,
                        actor = %e.actor,
                        action = %e.action,
                        target = %e.target,
                        outcome = %e.outcome,
                        "audit event"
                    );
                }
            }
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

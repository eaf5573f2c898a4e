//! Write transactions. Every write goes through a [`Tx`]; when it commits, the requests it
//! changed leave the status look-up cache. Which requests those are, the database itself
//! records while the transaction runs, so no write function has to remember to say so:
//! - **SQLite:** temporary triggers on `requests`, `tokens` and `envelopes` (created on each
//!   writer connection) note the request id of every changed row in a temporary table, which
//!   the commit empties.
//! - **PostgreSQL:** the change triggers of migration 3 (which also announce the change to the
//!   other instances) append the request id to the transaction-local setting
//!   `tokendesk.changed`, which the commit reads.
//!
//! **Group commit (both backends).** Writers take turns (see [`Writers`]), and a transaction
//! whose turn ends while others wait for theirs does not commit alone: it is a savepoint in a
//! transaction the next writer continues, and the last writer of the group (nobody waiting,
//! [`GROUP_MAX`] members, or the group [`GROUP_WAIT`] old) commits them all at once, one
//! `fsync` for all. Each caller's `commit` returns only after that commit, with its result:
//! nobody hears "done" before their change is durable (`synchronous = FULL` unchanged). A
//! change that fails, or is rolled back, is undone alone (`ROLLBACK TO` its savepoint). The
//! audit chain stays strictly ordered: members run one after another on one connection.
//!
//! **Few statements in a turn.** The turn is the one thing writers cannot share, so a member
//! does in it only its own work: its savepoint is never released (the next member's nests in
//! it, and `COMMIT` keeps them all), and its audit events, like the requests it changed, are
//! gathered for the whole group when it commits (one read of the chain's head and one `INSERT`
//! for every member's events, one read of the changed requests).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row, SqlSafeStr as _};
use tokio::sync::{OwnedMutexGuard, oneshot};

use time::OffsetDateTime;

use super::audit::{NewEvent, append_audits};
use super::views::ViewCache;
use super::{Backend, StoreError, StoreResult};
use crate::domain::AuditRecord;

/// Where this process's writers take turns. SQLite lets one transaction write at a time:
/// writers queue here, in-process and first come first served, instead of each sleeping in
/// `busy_timeout` (1, 2, 5, 10 … ms) until the file lock happens to be free. PostgreSQL would let
/// them write side by side, but every change appends to the one audit chain (an advisory lock
/// orders the appenders) and announces itself to the other instances (`NOTIFY`, whose queue
/// lock every notifying commit holds through its flush): their commits pass one at a time
/// anyway, each waiting for its own flush. Taking turns lets them share a commit instead.
/// Writers write on connections of their own, so that readers never wait behind queued
/// writers. A group's members share its connection; on SQLite the next group begins on the
/// same one (see [`Group::kept`]); the pool holds two, so that a second one is ready while
/// the first goes back to it (PostgreSQL), or is gone (closed after a failure).
#[derive(Debug, Clone)]
pub(super) struct Writers {
    pub(super) backend: Backend,
    pub(super) pool: AnyPool,
    pub(super) turn: Arc<tokio::sync::Mutex<Group>>,
    /// Writers waiting for their turn.
    pub(super) waiting: Arc<AtomicUsize>,
    /// At most this many transactions share a commit (1: none share; an in-memory database,
    /// whose one connection the readers need too).
    pub(super) group_max: usize,
    /// When a write was last refused for the file's sake (read-only, full): connections opened
    /// before then are closed, not reused (see [`Refused`]).
    pub(super) refused: Refused,
    /// Whether the connection of a commit stays with the turn (SQLite, sharing commits: see
    /// [`Group::kept`]).
    keep: bool,
}

/// When the database last refused a write because of its file: made read-only, or its disk
/// full. SQLite opens a file it may not write read-only without a word, and in WAL mode every
/// connection of the process shares one index of the WAL (`-shm`), opened read-only as well
/// then: such connections would keep refusing every write after the file is writable again.
/// So every connection, the readers' too, opened before the last refusal is closed when it is
/// next taken from its pool (`before_acquire`), and the service recovers by itself, without a
/// restart, once the file can be written again.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refused(Arc<std::sync::Mutex<Option<Instant>>>);

impl Refused {
    /// Notes a refusal if `e` is one.
    pub(super) fn note(&self, e: &sqlx::Error) {
        if super::health::refuses_storage(e) {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    /// Whether a connection `age` old was opened before the last refusal.
    pub(crate) fn predates(&self, age: Duration) -> bool {
        let last = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|at| at.elapsed() <= age)
    }
}

impl Writers {
    pub(super) fn new(backend: Backend, pool: AnyPool, share: bool, refused: Refused) -> Self {
        Self {
            backend,
            pool,
            turn: Arc::new(tokio::sync::Mutex::new(Group::default())),
            waiting: Arc::new(AtomicUsize::new(0)),
            group_max: if share { GROUP_MAX } else { 1 },
            refused,
            keep: share && backend == Backend::Sqlite,
        }
    }

    /// Gives the connection kept for the next group back to its pool (before the pool closes,
    /// which waits for every connection).
    pub(super) async fn release_kept(&self) {
        self.turn.lock().await.kept = None;
    }

    /// Waits for this writer's turn, at most `within`. A member that finished while this
    /// writer waited may have left the group open for it (see [`pass_or_finish`]): a writer
    /// that stops waiting (its time ran out, or its caller dropped the wait: the database went
    /// down) has the group committed after all, so that nobody waits on it forever.
    pub(super) async fn turn(
        &self,
        within: Duration,
        views: &Arc<ViewCache>,
    ) -> StoreResult<OwnedMutexGuard<Group>> {
        let mut waiting = Waiting {
            writers: self.clone(),
            views: views.clone(),
            served: false,
        };
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let turn = tokio::time::timeout(within, self.turn.clone().lock_owned()).await;
        waiting.served = turn.is_ok();
        drop(waiting);
        turn.map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))
    }
}

/// A writer waiting for its turn (counted in [`Writers::waiting`] while it lives).
struct Waiting {
    writers: Writers,
    views: Arc<ViewCache>,
    served: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.writers.waiting.fetch_sub(1, Ordering::SeqCst);
        if self.served {
            return;
        }
        // Left without its turn: a group left open for it is committed by a turn of its own.
        let (writers, views) = (self.writers.clone(), self.views.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut turn = writers.turn.clone().lock_owned().await;
                if let Some(conn) = turn.open.as_mut().and_then(|g| g.conn.take()) {
                    finish(conn, &mut turn, &writers, &views).await;
                }
            });
        }
    }
}

/// At most this many transactions share one commit.
pub const GROUP_MAX: usize = 64;

/// A group is committed once its first member has waited this long, whoever waits for a turn.
pub const GROUP_WAIT: Duration = Duration::from_millis(10);

/// How long the connection of the last commit stays with the turn for the next group (see
/// [`Group::kept`]); one kept longer goes back to its pool, whose checks it passes again.
const KEEP_FOR: Duration = Duration::from_secs(1);

/// The SQLite transaction writers share, between their turns.
#[derive(Debug, Default)]
pub(super) struct Group {
    open: Option<OpenGroup>,
    /// SQLite: the connection the last group committed on, and when, which the next group
    /// begins on. Each SQLite connection keeps its own page cache, and empties it when another
    /// connection has written: groups that took turns on the two writer connections would read
    /// every page they touch from the file again.
    kept: Option<(PoolConnection<Any>, Instant)>,
}

#[derive(Debug)]
struct OpenGroup {
    /// The connection, in `BEGIN IMMEDIATE`; with the member whose turn it is, else here.
    conn: Option<PoolConnection<Any>>,
    /// Members done with their work, waiting for the commit.
    members: Vec<Member>,
    /// When the first of them was done.
    since: Option<Instant>,
}

/// A transaction done with its work, waiting for its group's commit.
#[derive(Debug)]
struct Member {
    tell: oneshot::Sender<Result<(), sqlx::Error>>,
    done: Done,
}

/// What a member brings to its group's commit besides its changes.
#[derive(Debug)]
struct Done {
    erased: bool,
    /// Its audit events, appended to the chain as the group commits.
    audit: Vec<NewEvent>,
}

/// The savepoint each member of a group works in.
const SAVEPOINT: &str = "tokendesk_member";

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

/// The requests the transaction changed so far, as the database noted them (see the module's
/// description: a temporary table on SQLite, a transaction-local setting on PostgreSQL).
async fn changed_requests(conn: &mut AnyConnection, backend: Backend) -> StoreResult<Vec<i64>> {
    let mut ids: Vec<i64> = match backend {
        Backend::Sqlite => sqlx::query("DELETE FROM temp.tokendesk_changed RETURNING request_id")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?,
        Backend::Postgres => {
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

/// Copies every WAL frame into the database file and truncates the WAL to nothing (on the
/// connection that just committed).
async fn checkpoint(conn: &mut PoolConnection<Any>) -> Result<(), sqlx::Error> {
    let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut **conn)
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
/// back (its savepoint is rolled back before the turn passes on).
#[derive(Debug)]
pub struct Tx {
    inner: Inner,
    views: Arc<ViewCache>,
    /// This transaction erased a secret (a ciphertext, a sealed email).
    erased: bool,
    /// Its audit events, appended to the chain as it commits (see [`Tx::audit`]) and logged
    /// once committed (one line per event).
    audit: Vec<NewEvent>,
}

#[derive(Debug)]
enum Inner {
    /// SQLite before the schema exists (migrations), holding the writer's turn: a transaction
    /// of its own. Fields drop in order: the transaction (its rollback), then the turn.
    Alone(
        sqlx::Transaction<'static, sqlx::Any>,
        OwnedMutexGuard<Group>,
    ),
    /// A savepoint in its group's transaction, during its turn.
    Grouped(Turn),
}

/// A member's turn: the group's connection and the turn itself, handed on when it ends.
#[derive(Debug)]
struct Turn {
    conn: Option<PoolConnection<Any>>,
    turn: Option<OwnedMutexGuard<Group>>,
    writers: Writers,
    views: Arc<ViewCache>,
}

impl Turn {
    fn take(&mut self) -> Option<(PoolConnection<Any>, OwnedMutexGuard<Group>)> {
        Some((self.conn.take()?, self.turn.take()?))
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Neither committed nor rolled back (an error returned early): undo this member before
        // the turn passes on, which it does once the undoing is done.
        let Some((conn, turn)) = self.take() else {
            return;
        };
        let (writers, views) = (self.writers.clone(), self.views.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = undo_member(conn, turn, &writers, &views).await {
                        tracing::warn!(error = %e, "cannot roll back a dropped transaction");
                    }
                });
            }
            Err(_) => {
                // No runtime to roll back on: closing the connection rolls everything back,
                // and the group's waiting members hear that their commit failed.
                let mut conn = conn;
                conn.close_on_drop();
            }
        }
    }
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

impl LoggedEvent {
    fn of(seq: i64, record: &AuditRecord) -> LoggedEvent {
        LoggedEvent {
            seq,
            actor: record.actor.clone(),
            action: record.action,
            target: record.target.clone(),
            outcome: record.outcome,
        }
    }
}

impl Tx {
    /// During this writer's turn: a savepoint in the group's open transaction, or in a new one,
    /// begun on a connection from `fresh`. SQLite: `BEGIN IMMEDIATE`, the write lock at once, so
    /// that a read-then-write transaction never fails half-way on lock upgrade. PostgreSQL: a
    /// lock timeout, so that the group never waits forever on a row another instance locked.
    pub(super) async fn begin_turn<F>(
        mut turn: OwnedMutexGuard<Group>,
        writers: &Writers,
        views: Arc<ViewCache>,
        fresh: impl FnOnce() -> F,
    ) -> StoreResult<Tx>
    where
        F: std::future::Future<Output = StoreResult<PoolConnection<Any>>>,
    {
        // An old group is committed first (its members have waited long enough).
        let old = turn
            .open
            .as_ref()
            .and_then(|g| g.since)
            .is_some_and(|since| since.elapsed() >= GROUP_WAIT);
        if old && let Some(conn) = turn.open.as_mut().and_then(|g| g.conn.take()) {
            finish(conn, &mut turn, writers, &views).await;
        }
        let conn = match turn.open.as_mut().and_then(|g| g.conn.take()) {
            Some(conn) => conn,
            None => {
                // The last commit's connection if it is recent, and nothing was refused since
                // (see [`Refused`]); else one from the pool, whose checks it passes.
                let kept = turn.kept.take().and_then(|(conn, at)| {
                    (at.elapsed() < KEEP_FOR && !writers.refused.predates(at.elapsed()))
                        .then_some(conn)
                });
                let mut conn = match kept {
                    Some(conn) => conn,
                    None => fresh().await?,
                };
                if writers.backend == Backend::Sqlite && !arm_sqlite(&mut conn).await? {
                    // No schema yet (migrations): nothing to note, nothing to group.
                    let tx = sqlx::Transaction::begin(conn, Some("BEGIN IMMEDIATE".into_sql_str()))
                        .await?;
                    return Ok(Tx {
                        inner: Inner::Alone(tx, turn),
                        views,
                        erased: false,
                        audit: Vec::new(),
                    });
                }
                let begin = match writers.backend {
                    Backend::Sqlite => "BEGIN IMMEDIATE",
                    Backend::Postgres => "BEGIN; SET LOCAL lock_timeout = '10s'",
                };
                if let Err(e) = conn.execute(sqlx::raw_sql(begin)).await {
                    // A connection that cannot begin a write does not go back to the pool
                    // (see [`Refused`]).
                    writers.refused.note(&e);
                    conn.close_on_drop();
                    return Err(e.into());
                }
                turn.open = Some(OpenGroup {
                    conn: None,
                    members: Vec::new(),
                    since: None,
                });
                conn
            }
        };
        let mut member = Turn {
            conn: Some(conn),
            turn: Some(turn),
            writers: writers.clone(),
            views: views.clone(),
        };
        if let Some(conn) = member.conn.as_mut() {
            conn.execute(sqlx::AssertSqlSafe(format!("SAVEPOINT {SAVEPOINT}")))
                .await?;
        }
        Ok(Tx {
            inner: Inner::Grouped(member),
            views,
            erased: false,
            audit: Vec::new(),
        })
    }

    /// Appends `record` to the audit chain as part of this transaction: it commits with the
    /// change it records or not at all. The append happens as the transaction commits, after
    /// its work: a group's events go in together, after its last member (see the module's
    /// description), and on PostgreSQL the advisory lock that orders appenders across
    /// instances (the chain's next link needs the newest hash) is held only from that append to
    /// the commit. Nothing reads the trail inside a write transaction. The event is logged once
    /// committed.
    pub async fn audit(
        &mut self,
        record: &AuditRecord,
        at: OffsetDateTime,
        client_addr: Option<&str>,
    ) -> StoreResult<()> {
        self.audit.push(NewEvent {
            record: record.clone(),
            at,
            client_addr: client_addr.map(str::to_owned),
        });
        Ok(())
    }

    /// Notes that this transaction erases a secret: on SQLite, once it commits, the WAL is
    /// checkpointed and truncated, so that the erased bytes are left in no file (with
    /// `secure_delete`, the database's own pages are overwritten as the value is erased).
    pub(super) fn erases(&mut self) {
        self.erased = true;
    }

    /// Commits, then forgets the views of the requests it changed. It runs to the end even if
    /// the caller stops waiting (a client hung up): the commit may reach the database anyway,
    /// and the views must go after it, whatever happened. On SQLite it returns once the group
    /// it joined has committed (see the module's description).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Tx {
            inner,
            views,
            erased,
            audit,
        } = self;
        match inner {
            // Nothing to erase before the schema exists.
            Inner::Alone(tx, turn) => tokio::spawn(commit_alone(tx, turn, audit))
                .await
                .unwrap_or(Err(sqlx::Error::WorkerCrashed)),
            Inner::Grouped(mut member) => {
                let Some((conn, turn)) = member.take() else {
                    return Err(sqlx::Error::WorkerCrashed);
                };
                let writers = member.writers.clone();
                tokio::spawn(async move {
                    let done = Done { erased, audit };
                    commit_member(conn, turn, &writers, &views, done).await
                })
                .await
                .unwrap_or(Err(sqlx::Error::WorkerCrashed))
            }
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::Alone(tx, turn) => {
                let done = tx.rollback().await;
                drop(turn);
                done
            }
            Inner::Grouped(mut member) => {
                let Some((conn, turn)) = member.take() else {
                    return Ok(());
                };
                let (writers, views) = (member.writers.clone(), member.views.clone());
                tokio::spawn(async move { undo_member(conn, turn, &writers, &views).await })
                    .await
                    .unwrap_or(Err(sqlx::Error::WorkerCrashed))
            }
        }
    }
}

/// A transaction of its own (SQLite before the schema exists: no view to forget, nothing noted
/// of what changed): commits it before the turn passes on, and logs the audit events.
async fn commit_alone(
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    turn: OwnedMutexGuard<Group>,
    audit: Vec<NewEvent>,
) -> Result<(), sqlx::Error> {
    // The audit events last, just before the commit (a failure rolls everything back).
    let seqs = append_audits(&mut tx, Backend::Sqlite, &audit)
        .await
        .map_err(into_sqlx)?;
    let events = logged(&audit, &seqs);
    let done = tx.commit().await;
    drop(turn);
    if done.is_ok() {
        log_events(events);
    }
    done
}

fn into_sqlx(e: StoreError) -> sqlx::Error {
    match e {
        StoreError::Database(e) => e,
        e => sqlx::Error::Protocol(e.to_string()),
    }
}

/// The log lines of appended events (sequence numbers in the events' order).
fn logged(audit: &[NewEvent], seqs: &[i64]) -> Vec<LoggedEvent> {
    audit
        .iter()
        .zip(seqs)
        .map(|(e, seq)| LoggedEvent::of(*seq, &e.record))
        .collect()
}

fn log_events(events: Vec<LoggedEvent>) {
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

/// A member is done: it joins the group as it is (its savepoint stays, the next member's nests
/// in it), and either the turn passes on (someone waits, and the group may grow) or the group
/// commits. Returns the group's result. No statement runs here.
async fn commit_member(
    conn: PoolConnection<Any>,
    mut turn: OwnedMutexGuard<Group>,
    writers: &Writers,
    views: &Arc<ViewCache>,
    done: Done,
) -> Result<(), sqlx::Error> {
    let (tell, result) = oneshot::channel();
    let Some(group) = turn.open.as_mut() else {
        return Err(sqlx::Error::WorkerCrashed);
    };
    group.members.push(Member { tell, done });
    group.since.get_or_insert_with(Instant::now);
    pass_or_finish(conn, turn, writers, views).await;
    result.await.unwrap_or(Err(sqlx::Error::WorkerCrashed))
}

/// Undoes a member (its savepoint), then passes the turn on or commits the group without it.
async fn undo_member(
    mut conn: PoolConnection<Any>,
    mut turn: OwnedMutexGuard<Group>,
    writers: &Writers,
    views: &Arc<ViewCache>,
) -> Result<(), sqlx::Error> {
    // The innermost savepoint of that name is this member's: its changes go, and with them
    // what the capture triggers noted of them (the temporary table is in the transaction too).
    let mut undone = conn
        .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}"
        ))))
        .await
        .map(|_| ());
    if undone.is_ok() && writers.backend == Backend::Sqlite {
        undone = can_write(&mut conn).await;
    }
    if let Err(e) = undone {
        writers.refused.note(&e);
        // The transaction itself is gone (SQLite rolls a whole transaction back on some
        // errors, a full disk among them): every member waiting on it has failed, and none of
        // their changes is left.
        let _ = conn.execute("ROLLBACK").await;
        conn.close_on_drop();
        if let Some(group) = turn.open.take() {
            for m in group.members {
                let _ = m.tell.send(Err(replicate(&e)));
            }
        }
        return Err(e);
    }
    pass_or_finish(conn, turn, writers, views).await;
    Ok(())
}

/// Whether a writer connection can still write, asked after a member failed (its statement's
/// error is its caller's): a connection SQLite opened read-only (see [`Refused`]) is found here,
/// a page written and given back, which it refuses at once. Only on the path of a failure: a
/// write that succeeds needs no such question.
async fn can_write(conn: &mut PoolConnection<Any>) -> Result<(), sqlx::Error> {
    let probe = conn
        .execute(sqlx::raw_sql(
            "SAVEPOINT tokendesk_probe; \
             UPDATE _sqlx_migrations SET version = version \
             WHERE version = (SELECT MIN(version) FROM _sqlx_migrations)",
        ))
        .await;
    let undone = conn
        .execute(sqlx::raw_sql(
            "ROLLBACK TO tokendesk_probe; RELEASE tokendesk_probe",
        ))
        .await;
    probe.and(undone).map(|_| ())
}

/// Passes the turn on with the group open when someone waits for it and the group may still
/// grow; else commits the group.
async fn pass_or_finish(
    conn: PoolConnection<Any>,
    mut turn: OwnedMutexGuard<Group>,
    writers: &Writers,
    views: &Arc<ViewCache>,
) {
    let share = writers.waiting.load(Ordering::SeqCst) > 0
        && turn.open.as_ref().is_some_and(|g| {
            g.members.len() < writers.group_max
                && g.since.is_none_or(|since| since.elapsed() < GROUP_WAIT)
        });
    if share && let Some(group) = turn.open.as_mut() {
        group.conn = Some(conn);
        return;
    }
    finish(conn, &mut turn, writers, views).await;
}

/// Commits the group: appends its members' audit events, reads what they changed, commits,
/// forgets the views of what they changed (before the next writer's turn, so that no one reads
/// a view older than a write they saw), checkpoints the WAL after an erasure, tells each member
/// the result and logs their audit events.
async fn finish(
    mut conn: PoolConnection<Any>,
    turn: &mut OwnedMutexGuard<Group>,
    writers: &Writers,
    views: &Arc<ViewCache>,
) {
    let Some(mut group) = turn.open.take() else {
        return;
    };
    // Each member's events, in order, and how many are whose (for their log lines).
    let counts: Vec<usize> = group.members.iter().map(|m| m.done.audit.len()).collect();
    let audit: Vec<NewEvent> = group
        .members
        .iter_mut()
        .flat_map(|m| std::mem::take(&mut m.done.audit))
        .collect();
    let appended = append_audits(&mut conn, writers.backend, &audit).await;
    // Not knowing what changed (or without the audit records), nothing commits.
    let before = match appended {
        Ok(seqs) => match changed_requests(&mut conn, writers.backend).await {
            Ok(changed) => Ok((seqs, changed)),
            Err(e) => Err(into_sqlx(e)),
        },
        Err(e) => Err(into_sqlx(e)),
    };
    let done = match before {
        Ok((seqs, changed)) => {
            // Forgotten before the commit too, and again after it: the views cached before the
            // change are gone by the time it can be read from the database, even before this
            // task hears that the commit is done; one read in between is forgotten after.
            views.changed(&changed);
            match conn.execute("COMMIT").await {
                Ok(_) => Ok((seqs, changed)),
                Err(e) => {
                    // Even a failed commit may have committed: forget the views either way.
                    views.changed(&changed);
                    Err(e)
                }
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &done {
        writers.refused.note(e);
        // Whatever state the connection is in, it does not go back to the pool.
        let _ = conn.execute("ROLLBACK").await;
        conn.close_on_drop();
    }
    let erased = done.is_ok()
        && writers.backend == Backend::Sqlite
        && group.members.iter().any(|m| m.done.erased);
    if erased {
        // Still this writer's turn: nobody writes between the erasure and this.
        if let Err(e) = checkpoint(&mut conn).await {
            tracing::warn!(error = %e, "cannot checkpoint the WAL after erasing a secret");
        }
    }
    if done.is_ok() && writers.keep {
        turn.kept = Some((conn, Instant::now()));
    } else {
        drop(conn);
    }
    let mut events = match &done {
        Ok((seqs, changed)) => {
            views.changed(changed);
            logged(&audit, seqs).into_iter()
        }
        Err(_) => Vec::new().into_iter(),
    };
    if group.members.len() > 1 {
        tracing::trace!(members = group.members.len(), "group commit");
    }
    for (m, count) in group.members.into_iter().zip(counts) {
        match &done {
            Ok(_) => {
                log_events(events.by_ref().take(count).collect());
                let _ = m.tell.send(Ok(()));
            }
            Err(e) => {
                let _ = m.tell.send(Err(replicate(e)));
            }
        }
    }
}

/// The same failure for another member of a group: a database error keeps its message and
/// code (a full disk stays a full disk), anything else its kind.
fn replicate(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::Database(d) => sqlx::Error::Database(Box::new(GroupError {
            message: d.message().to_owned(),
            code: d.code().map(Cow::into_owned),
        })),
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// A database error another member of the group met: the commit they shared failed.
#[derive(Debug)]
struct GroupError {
    message: String,
    code: Option<String>,
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (the shared commit failed)", self.message)
    }
}

impl std::error::Error for GroupError {}

impl sqlx::error::DatabaseError for GroupError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        self.code.as_deref().map(Cow::Borrowed)
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match &self.inner {
            Inner::Alone(tx, _) => tx,
            Inner::Grouped(member) => match &member.conn {
                Some(conn) => conn,
                // The connection leaves a member only in `commit`, `rollback` and `drop`, which
                // consume it.
                None => unreachable!("a transaction's connection used after it ended"),
            },
        }
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.inner {
            Inner::Alone(tx, _) => tx,
            Inner::Grouped(member) => match &mut member.conn {
                Some(conn) => conn,
                None => unreachable!("a transaction's connection used after it ended"),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    /// On SQLite each group begins on the connection the last one committed on, whose page
    /// cache is still good, even when the pool holds another idle one; one kept longer than
    /// [`KEEP_FOR`] goes back to the pool, and closing the store does not wait for it.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_next_group_begins_on_the_connection_of_the_last_commit() {
        let dir = std::env::temp_dir().join(format!("tokendesk-kept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("kept.db").display());
        let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
        // Both writer connections open, and idle in their pool.
        let a = store.writers.pool.acquire().await.unwrap();
        let b = store.writers.pool.acquire().await.unwrap();
        drop((a, b));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.writers.pool.num_idle(), 2);
        // A mark on the connection the first write commits on (temporary tables are the
        // connection's own).
        let mut tx = store.write().await.unwrap();
        tx.execute("CREATE TEMP TABLE IF NOT EXISTS kept_probe (x INTEGER)")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        for n in 0..5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut tx = store.write().await.unwrap();
            let marked: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM temp.sqlite_master WHERE name = 'kept_probe'",
            )
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            assert_eq!(marked, 1, "write {n} began on another connection");
            tx.commit().await.unwrap();
        }
        // Kept too long: back to the pool, and the next write takes one from there.
        tokio::time::sleep(KEEP_FOR + Duration::from_millis(100)).await;
        let tx = store.write().await.unwrap();
        tx.commit().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), store.close())
            .await
            .expect("closing the store waited for the kept connection");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Counts for operators (`/metrics`, `tokendesk status`): requests, tokens and envelopes by
//! state, the work queues, and the audit chain's length.

use sqlx::AnyConnection;
use sqlx::Row as _;
use time::OffsetDateTime;

use super::StoreResult;
use super::queue::{Queue, QueueState};
use super::sql::from_ts;
use crate::domain::envelope::EnvelopeState;
use crate::domain::request::RequestState;
use crate::domain::{StateSet, TokenState};

/// A work queue (jobs or emails): what waits, what was given up, and since when the oldest
/// waiting item waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Queued or being worked on.
    pub waiting: i64,
    /// Given up after its last attempt (`dead`).
    pub dead: i64,
    /// When the oldest waiting item was queued.
    pub oldest: Option<OffsetDateTime>,
}

/// Everything counted, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Every request state with its count (zero included), in the state set's order.
    pub requests: Vec<(&'static str, i64)>,
    pub tokens: Vec<(&'static str, i64)>,
    pub envelopes: Vec<(&'static str, i64)>,
    pub jobs: QueueStats,
    pub emails: QueueStats,
    /// The newest audit event's sequence number (0 when there is none).
    pub audit_head: i64,
}

/// `table` is one of this module's fixed names, never input.
async fn by_state<S: StateSet>(
    conn: &mut AnyConnection,
    table: &str,
) -> StoreResult<Vec<(&'static str, i64)>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT state, COUNT(*) AS n FROM {table} GROUP BY state"
    )))
    .fetch_all(&mut *conn)
    .await?;
    let mut counts: Vec<(&'static str, i64)> = S::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for row in rows {
        let state: String = row.try_get("state")?;
        let n: i64 = row.try_get("n")?;
        if let Some(slot) = counts.iter_mut().find(|(name, _)| *name == state) {
            slot.1 = n;
        }
    }
    Ok(counts)
}

async fn queue(conn: &mut AnyConnection, queue: Queue) -> StoreResult<QueueStats> {
    let (table, queued, held, dead) = (
        queue.table(),
        queue.state(QueueState::Queued),
        queue.state(QueueState::Held),
        queue.state(QueueState::Dead),
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM {table} \
         WHERE state IN ('{queued}','{held}')"
    )))
    .fetch_one(&mut *conn)
    .await?;
    let waiting: i64 = row.try_get("n")?;
    let oldest: Option<i64> = row.try_get("oldest")?;
    let dead: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM {table} WHERE state = '{dead}'"
    )))
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    Ok(QueueStats {
        waiting,
        dead,
        oldest: oldest.map(from_ts).transpose()?,
    })
}

/// Counts everything [`Stats`] holds.
pub async fn stats(conn: &mut AnyConnection) -> StoreResult<Stats> {
    let requests = by_state::<RequestState>(conn, "requests").await?;
    let tokens = by_state::<TokenState>(conn, "tokens").await?;
    let envelopes = by_state::<EnvelopeState>(conn, "envelopes").await?;
    let jobs = queue(conn, Queue::Jobs).await?;
    let emails = queue(conn, Queue::Emails).await?;
    let audit_head: Option<i64> = sqlx::query("SELECT MAX(seq) AS head FROM audit_events")
        .fetch_one(&mut *conn)
        .await?
        .try_get("head")?;
    Ok(Stats {
        requests,
        tokens,
        envelopes,
        jobs,
        emails,
        audit_head: audit_head.unwrap_or(0),
    })
}

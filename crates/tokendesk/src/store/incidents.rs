//! When something goes wrong: token fingerprints and leak reports, and bulk revocation runs
//! (one queued job per token, so that a crash resumes a run and never loses its place).

use sqlx::{AnyConnection, Row as _};
use time::{OffsetDateTime, Time};

use super::sql::{from_ts, names_in, ts};
use super::tokens::{StoredToken, TOKEN_COLUMNS, token_in};
use super::{StoreResult, Tx};
use crate::domain::request::RevokeFilter;
use crate::domain::{RequestId, StateSet, TokenState};

/// Where one token of a revocation run is (`revoke_items.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    Queued,
    Done,
    Failed,
}

impl StateSet for ItemState {
    const ALL: &'static [ItemState] = &[ItemState::Queued, ItemState::Done, ItemState::Failed];

    fn as_str(self) -> &'static str {
        match self {
            ItemState::Queued => "queued",
            ItemState::Done => "done",
            ItemState::Failed => "failed",
        }
    }
}

const QUEUED: ItemState = ItemState::Queued;
const DONE: ItemState = ItemState::Done;
const FAILED: ItemState = ItemState::Failed;

/// Records the keyed fingerprint of the token of `request`.
pub async fn set_token_fingerprint(
    tx: &mut Tx,
    request: RequestId,
    fingerprint: &str,
) -> StoreResult<()> {
    sqlx::query("UPDATE tokens SET fingerprint = $1 WHERE request_id = $2")
        .bind(fingerprint)
        .bind(request.0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The live tokens with this hint, with their fingerprints (if recorded).
pub async fn live_tokens_with_hint(
    conn: &mut AnyConnection,
    hint: &str,
) -> StoreResult<Vec<(StoredToken, Option<String>)>> {
    let live = names_in::<TokenState>(TokenState::is_live);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TOKEN_COLUMNS}, fingerprint FROM tokens WHERE hint = $1 AND state IN ({live}) \
         ORDER BY id LIMIT 100"
    )))
    .bind(hint)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((token_in(r, "")?, r.try_get("fingerprint")?)))
        .collect()
}

/// Records a report (never the pasted value); its id.
pub async fn insert_report(
    tx: &mut Tx,
    reporter: &str,
    where_found: &str,
    by_hint: bool,
    matched: usize,
    now: OffsetDateTime,
) -> StoreResult<i64> {
    let row = sqlx::query(
        "INSERT INTO reports (reporter, where_found, by_hint, matched, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(reporter)
    .bind(where_found)
    .bind(i64::from(by_hint))
    .bind(i64::try_from(matched).unwrap_or(i64::MAX))
    .bind(ts(now))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get(0)?)
}

// ---- bulk revocation ---------------------------------------------------------------------------

/// The `WHERE` condition (over `tokens t JOIN requests r`) of a filter's live tokens that are
/// not already in an unfinished run, and its one bound value (`$1`), if any.
fn filter_sql(filter: &RevokeFilter) -> (String, Option<String>) {
    let live = names_in::<TokenState>(TokenState::is_live);
    let base = format!(
        "t.state IN ({live}) AND NOT EXISTS (SELECT 1 FROM revoke_items i \
         WHERE i.request_id = t.request_id AND i.state = '{}')",
        QUEUED.as_str()
    );
    match filter {
        RevokeFilter::Owner(login) => (
            format!("{base} AND t.owner = $1"),
            Some(login.as_str().to_owned()),
        ),
        RevokeFilter::IssuedBefore(day) => (
            format!("{base} AND t.created_at < $1"),
            Some(ts(day.with_time(Time::MIDNIGHT).assume_utc()).to_string()),
        ),
        RevokeFilter::PurposeContains(text) => {
            let escaped = text
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            (
                format!("{base} AND LOWER(r.purpose) LIKE $1 ESCAPE '\\'"),
                Some(format!("%{escaped}%")),
            )
        }
        RevokeFilter::All => (base, None),
    }
}

fn bind_filter<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    filter: &RevokeFilter,
    value: Option<String>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    match (filter, value) {
        // The day is a number of seconds.
        (RevokeFilter::IssuedBefore(_), Some(v)) => query.bind(v.parse::<i64>().unwrap_or(0)),
        (_, Some(v)) => query.bind(v),
        (_, None) => query,
    }
}

/// How many live tokens a filter takes, and whose (the 50 owners with most, most first).
pub async fn revoke_preview(
    conn: &mut AnyConnection,
    filter: &RevokeFilter,
) -> StoreResult<(i64, Vec<(String, i64)>)> {
    let (condition, value) = filter_sql(filter);
    let sql = format!(
        "SELECT t.owner, COUNT(*) FROM tokens t JOIN requests r ON r.id = t.request_id \
         WHERE {condition} GROUP BY t.owner ORDER BY COUNT(*) DESC, t.owner"
    );
    let rows = bind_filter(sqlx::query(sqlx::AssertSqlSafe(sql)), filter, value)
        .fetch_all(conn)
        .await?;
    let mut total = 0;
    let mut owners = Vec::new();
    for row in &rows {
        let n: i64 = row.try_get(1)?;
        total += n;
        if owners.len() < 50 {
            owners.push((row.try_get(0)?, n));
        }
    }
    Ok((total, owners))
}

/// Starts a run: records it, puts in it every live token the filter takes that no unfinished
/// run holds, and queues one `revoke_token` job per token. Its id and how many it holds.
pub async fn create_run(
    tx: &mut Tx,
    filter: &RevokeFilter,
    reason: &str,
    actor: &str,
    now: OffsetDateTime,
) -> StoreResult<(i64, i64)> {
    let row = sqlx::query(
        "INSERT INTO revoke_runs (filter, reason, actor, total, created_at) \
         VALUES ($1, $2, $3, 0, $4) RETURNING id",
    )
    .bind(filter.to_json().to_string())
    .bind(reason)
    .bind(actor)
    .bind(ts(now))
    .fetch_one(&mut **tx)
    .await?;
    let run: i64 = row.try_get(0)?;
    let (condition, value) = filter_sql(filter);
    let sql = format!(
        "INSERT INTO revoke_items (run_id, request_id, owner, state, updated_at) \
         SELECT {run}, t.request_id, t.owner, '{queued}', {now} \
         FROM tokens t JOIN requests r ON r.id = t.request_id WHERE {condition}",
        now = ts(now),
        queued = QUEUED.as_str()
    );
    let done = bind_filter(sqlx::query(sqlx::AssertSqlSafe(sql)), filter, value)
        .execute(&mut **tx)
        .await?;
    let total = i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO jobs (kind, request_id, state, attempts, run_after, created_at, updated_at) \
         SELECT '{kind}', request_id, '{queued}', 0, $1, $1, $1 FROM revoke_items \
         WHERE run_id = $2 ORDER BY id",
        kind = super::JobKind::RevokeToken.as_str(),
        queued = super::queue::Queue::Jobs.state(super::queue::QueueState::Queued)
    )))
    .bind(ts(now))
    .bind(run)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE revoke_runs SET total = $1, finished_at = $2 WHERE id = $3")
        .bind(total)
        .bind((total == 0).then(|| ts(now)))
        .bind(run)
        .execute(&mut **tx)
        .await?;
    Ok((run, total))
}

/// The queued item of a run that holds `request`: (item id, run id, the run's reason, actor).
pub async fn queued_item(
    conn: &mut AnyConnection,
    request: RequestId,
) -> StoreResult<Option<(i64, i64, String, String)>> {
    let row = sqlx::query(
        "SELECT i.id, i.run_id, r.reason, r.actor FROM revoke_items i \
         JOIN revoke_runs r ON r.id = i.run_id \
         WHERE i.request_id = $1 AND i.state = $2 ORDER BY i.id LIMIT 1",
    )
    .bind(request.0)
    .bind(QUEUED.as_str())
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .transpose()
}

/// Marks an item `done` or `failed` (with why); `true` when this made its run complete (then
/// the run is marked finished, once).
pub async fn finish_item(
    tx: &mut Tx,
    item: i64,
    run: i64,
    failed: Option<&str>,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    sqlx::query("UPDATE revoke_items SET state = $1, error = $2, updated_at = $3 WHERE id = $4")
        .bind(if failed.is_some() { FAILED } else { DONE }.as_str())
        .bind(failed)
        .bind(ts(now))
        .bind(item)
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query(
        "UPDATE revoke_runs SET finished_at = $1 WHERE id = $2 AND finished_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM revoke_items WHERE run_id = $2 AND state = $3)",
    )
    .bind(ts(now))
    .bind(run)
    .bind(QUEUED.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A run, as its progress page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeRun {
    pub id: i64,
    /// The filter, as stored (JSON).
    pub filter: String,
    pub reason: String,
    pub actor: String,
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    pub created_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    /// The failed items: (request, owner, why).
    pub failures: Vec<(i64, String, String)>,
}

impl RevokeRun {
    pub fn remaining(&self) -> i64 {
        (self.total - self.done - self.failed).max(0)
    }
}

pub async fn revoke_run(conn: &mut AnyConnection, id: i64) -> StoreResult<Option<RevokeRun>> {
    let Some(row) = sqlx::query(
        "SELECT id, filter, reason, actor, total, created_at, finished_at FROM revoke_runs \
         WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let counts =
        sqlx::query("SELECT state, COUNT(*) FROM revoke_items WHERE run_id = $1 GROUP BY state")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    let count = |name: &str| -> StoreResult<i64> {
        for c in &counts {
            if c.try_get::<String, _>(0)? == name {
                return Ok(c.try_get(1)?);
            }
        }
        Ok(0)
    };
    let failures = sqlx::query(
        "SELECT request_id, owner, COALESCE(error, '') FROM revoke_items \
         WHERE run_id = $1 AND state = $2 ORDER BY id LIMIT 500",
    )
    .bind(id)
    .bind(FAILED.as_str())
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
    .collect::<StoreResult<Vec<_>>>()?;
    Ok(Some(RevokeRun {
        id: row.try_get("id")?,
        filter: row.try_get("filter")?,
        reason: row.try_get("reason")?,
        actor: row.try_get("actor")?,
        total: row.try_get("total")?,
        done: count(DONE.as_str())?,
        failed: count(FAILED.as_str())?,
        created_at: from_ts(row.try_get("created_at")?)?,
        finished_at: row
            .try_get::<Option<i64>, _>("finished_at")?
            .map(from_ts)
            .transpose()?,
        failures,
    }))
}

/// The owners of a run's revoked tokens, each with one of their requests (their email names
/// the run through it).
pub async fn run_owners(conn: &mut AnyConnection, run: i64) -> StoreResult<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT owner, MIN(request_id) FROM revoke_items WHERE run_id = $1 AND state = $2 \
         GROUP BY owner ORDER BY owner",
    )
    .bind(run)
    .bind(DONE.as_str())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// The run an owner's email is about (by one of its requests), and the owner's revoked tokens
/// in it: (request id, hint), with the run's reason.
pub async fn run_tokens_of(
    conn: &mut AnyConnection,
    request: RequestId,
    owner: &str,
) -> StoreResult<Option<(String, Vec<(i64, String)>)>> {
    let Some(row) = sqlx::query(
        "SELECT r.id, r.reason FROM revoke_items i JOIN revoke_runs r ON r.id = i.run_id \
         WHERE i.request_id = $1 AND i.owner = $2 AND i.state = $3 ORDER BY r.id DESC LIMIT 1",
    )
    .bind(request.0)
    .bind(owner)
    .bind(DONE.as_str())
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let run: i64 = row.try_get(0)?;
    let reason: String = row.try_get(1)?;
    let tokens = sqlx::query(
        "SELECT i.request_id, t.hint FROM revoke_items i JOIN tokens t ON t.request_id = i.request_id \
         WHERE i.run_id = $1 AND i.owner = $2 AND i.state = $3 ORDER BY i.request_id",
    )
    .bind(run)
    .bind(owner)
    .bind(DONE.as_str())
    .fetch_all(conn)
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<StoreResult<Vec<_>>>()?;
    Ok(Some((reason, tokens)))
}

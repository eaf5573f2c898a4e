//! Periodic work (the sweep, purges) runs once per period across every instance sharing the
//! database: before running, an instance claims the period with a compare-and-set on
//! `periodic_runs.last_run_at_ms` (Unix milliseconds). The claim is one portable statement; on PostgreSQL a concurrent
//! claimer waits for the row and then sees the new `last_run_at`, on SQLite the write lock
//! serialises them.

use sqlx::{AnyConnection, Row};
use time::{Duration, OffsetDateTime};

use super::{Store, StoreError, StoreResult};

fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| StoreError::Corrupt(format!("time {ms} ms out of range")))
}

/// Claims the period of `name` for `owner` if the last run is at least `period` ago (or there
/// was none). Returns whether this caller should run the work now.
pub async fn claim_period(
    store: &Store,
    name: &str,
    owner: &str,
    now: OffsetDateTime,
    period: Duration,
) -> StoreResult<bool> {
    let mut tx = store.write().await?;
    let done = sqlx::query(
        "INSERT INTO periodic_runs (name, last_run_at_ms, owner, runs) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (name) DO UPDATE SET last_run_at_ms = excluded.last_run_at_ms, \
           owner = excluded.owner, runs = periodic_runs.runs + 1 \
         WHERE periodic_runs.last_run_at_ms <= $4",
    )
    .bind(name)
    .bind(ms(now))
    .bind(owner)
    .bind(ms(now - period))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// The last run of a piece of periodic work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodicRun {
    pub name: String,
    pub last_run_at: OffsetDateTime,
    /// The instance that ran it last.
    pub owner: String,
    /// How many periods have been claimed in all.
    pub runs: i64,
}

pub async fn periodic_run(
    conn: &mut AnyConnection,
    name: &str,
) -> StoreResult<Option<PeriodicRun>> {
    let row =
        sqlx::query("SELECT name, last_run_at_ms, owner, runs FROM periodic_runs WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    row.map(|r| {
        Ok::<_, StoreError>(PeriodicRun {
            name: r.try_get("name")?,
            last_run_at: from_ms(r.try_get("last_run_at_ms")?)?,
            owner: r.try_get("owner")?,
            runs: r.try_get("runs")?,
        })
    })
    .transpose()
}

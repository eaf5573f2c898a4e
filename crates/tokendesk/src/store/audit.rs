//! The audit trail: one event per state change, hash-chained so that an edited, removed or
//! inserted row is detected. `hash = SHA-256(prev_hash ‖ canonical content)`, hex; the first
//! event's `prev_hash` is 64 zeros.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use super::sql::{Conditions, ListQuery, from_ts, ts};
use super::{Backend, StoreError, StoreResult};
use crate::domain::AuditRecord;

/// The hash before the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A stored audit event.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub seq: i64,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub client_addr: Option<String>,
    /// What the event adds (never a secret).
    #[schema(value_type = Object)]
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEvent {
    /// The CSV header of [`AuditEvent::csv_row`].
    pub const CSV_HEADER: &'static str =
        "seq,at,actor,action,target,outcome,client_addr,details,prev_hash,hash";

    /// The event as one CSV row (RFC 4180, without the line ending). A cell that a spreadsheet
    /// would run as a formula gets a leading quote.
    pub fn csv_row(&self) -> String {
        let at = self
            .at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        [
            self.seq.to_string(),
            at,
            self.actor.clone(),
            self.action.clone(),
            self.target.clone(),
            self.outcome.clone(),
            self.client_addr.clone().unwrap_or_default(),
            self.details.to_string(),
            self.prev_hash.clone(),
            self.hash.clone(),
        ]
        .iter()
        .map(|cell| csv_cell(cell))
        .collect::<Vec<_>>()
        .join(",")
    }
}

/// One CSV cell (RFC 4180): quoted when it must be, and a leading quote on a cell that a
/// spreadsheet would run as a formula.
pub(crate) fn csv_cell(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// The hashed part of an event, in a fixed order (serde_json sorts object keys in `details`).
#[derive(Serialize)]
struct Canonical<'a> {
    at: i64,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    outcome: &'a str,
    client_addr: Option<&'a str>,
    details: &'a Value,
}

fn chain_hash(prev_hash: &str, content: &Canonical<'_>) -> StoreResult<String> {
    let canonical = serde_json::to_vec(content)
        .map_err(|e| StoreError::Corrupt(format!("audit content: {e}")))?;
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(&canonical);
    Ok(crate::domain::hex(&hasher.finalize()))
}

/// An event to append: what happened, when, and from where.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub record: AuditRecord,
    pub at: OffsetDateTime,
    pub client_addr: Option<String>,
}

/// At most this many events go into one `INSERT` (nine parameters each: far below both
/// databases' limits on parameters).
const INSERT_ROWS: usize = 256;

/// Appends one event to the chain, inside the caller's transaction (see [`append_audits`]).
pub async fn append_audit(
    conn: &mut AnyConnection,
    backend: Backend,
    record: &AuditRecord,
    at: OffsetDateTime,
    client_addr: Option<&str>,
) -> StoreResult<i64> {
    let event = NewEvent {
        record: record.clone(),
        at,
        client_addr: client_addr.map(str::to_owned),
    };
    let seqs = append_audits(conn, backend, std::slice::from_ref(&event)).await?;
    seqs.first()
        .copied()
        .ok_or_else(|| StoreError::Corrupt("the audit insert returned no row".to_owned()))
}

/// Appends events to the chain in their order, inside the caller's transaction, and returns
/// their sequence numbers. The newest hash is read once and the events go in as one `INSERT`
/// (per [`INSERT_ROWS`]): a group of SQLite writers, or a PostgreSQL transaction with several
/// events, pays two statements for all of them. On PostgreSQL an advisory lock orders concurrent
/// appenders (held to the commit); on SQLite the write transaction already holds the lock.
pub async fn append_audits(
    conn: &mut AnyConnection,
    backend: Backend,
    events: &[NewEvent],
) -> StoreResult<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(72202)")
            .execute(&mut *conn)
            .await?;
    }
    let head: Option<String> =
        sqlx::query_scalar("SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let mut prev = head.unwrap_or_else(|| GENESIS.to_owned());
    // (prev_hash, hash, details) of each event, chained in order.
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        let content = Canonical {
            at: ts(e.at),
            actor: &e.record.actor,
            action: e.record.action,
            target: &e.record.target,
            outcome: e.record.outcome,
            client_addr: e.client_addr.as_deref(),
            details: &e.record.details,
        };
        let hash = chain_hash(&prev, &content)?;
        let details = serde_json::to_string(&e.record.details)
            .map_err(|e| StoreError::Corrupt(format!("audit details: {e}")))?;
        rows.push((std::mem::replace(&mut prev, hash.clone()), hash, details));
    }
    let mut seqs = Vec::with_capacity(events.len());
    for (events, rows) in events.chunks(INSERT_ROWS).zip(rows.chunks(INSERT_ROWS)) {
        let values = (0..events.len())
            .map(|i| {
                let p = |k: usize| format!("${}", i * 9 + k);
                format!(
                    "({}, {}, {}, {}, {}, {}, {}, {}, {})",
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5),
                    p(6),
                    p(7),
                    p(8),
                    p(9)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO audit_events (at, actor, action, target, outcome, client_addr, details, \
             prev_hash, hash) VALUES {values} RETURNING seq, hash"
        );
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (e, (prev_hash, hash, details)) in events.iter().zip(rows) {
            insert = insert
                .bind(ts(e.at))
                .bind(e.record.actor.as_str())
                .bind(e.record.action)
                .bind(e.record.target.as_str())
                .bind(e.record.outcome)
                .bind(e.client_addr.as_deref())
                .bind(details.as_str())
                .bind(prev_hash.as_str())
                .bind(hash.as_str());
        }
        let returned = insert.fetch_all(&mut *conn).await?;
        // The order of RETURNING's rows is not promised: each event is known by its hash.
        let mut by_hash = std::collections::HashMap::with_capacity(returned.len());
        for r in &returned {
            by_hash.insert(r.try_get::<String, _>(1)?, r.try_get::<i64, _>(0)?);
        }
        for (_, hash, _) in rows {
            let seq = by_hash.get(hash).copied().ok_or_else(|| {
                StoreError::Corrupt("the audit insert did not return every event".to_owned())
            })?;
            seqs.push(seq);
        }
    }
    Ok(seqs)
}

fn event(r: &AnyRow) -> StoreResult<AuditEvent> {
    let details: String = r.try_get("details")?;
    Ok(AuditEvent {
        seq: r.try_get("seq")?,
        at: from_ts(r.try_get("at")?)?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        outcome: r.try_get("outcome")?,
        client_addr: r.try_get("client_addr")?,
        details: serde_json::from_str(&details)
            .map_err(|e| StoreError::Corrupt(format!("audit details: {e}")))?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// Filters for reading the trail.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Only events with a sequence number above this (for paging and export).
    pub after_seq: i64,
    pub limit: i64,
}

/// The query [`list_audit`] runs, served by the primary key (`seq`) or by `audit_by_actor`,
/// `audit_by_action`, `audit_by_target` or `audit_by_at`.
pub fn audit_query(filter: &AuditFilter) -> ListQuery {
    let mut q = Conditions::default();
    // Always a range of the key (from 0 at first): the pages continue by it.
    let p = q.arg(filter.after_seq.max(0));
    q.and(format!("seq > {p}"));
    if let Some(actor) = &filter.actor {
        q.equals("actor", actor.as_str());
    }
    if let Some(action) = &filter.action {
        q.equals("action", action.as_str());
    }
    if let Some(target) = &filter.target {
        q.equals("target", target.as_str());
    }
    if let Some(since) = filter.since {
        let p = q.arg(ts(since));
        q.and(format!("at >= {p}"));
    }
    if let Some(until) = filter.until {
        let p = q.arg(ts(until));
        q.and(format!("at < {p}"));
    }
    let limit = q.arg(if filter.limit > 0 { filter.limit } else { 1000 });
    q.build(
        "SELECT seq, at, actor, action, target, outcome, client_addr, details, prev_hash, hash \
         FROM audit_events",
        &format!("ORDER BY seq LIMIT {limit}"),
    )
}

/// Events in order, oldest first.
pub async fn list_audit(
    conn: &mut AnyConnection,
    filter: &AuditFilter,
) -> StoreResult<Vec<AuditEvent>> {
    let rows = audit_query(filter).fetch_all(conn).await?;
    rows.iter().map(event).collect()
}

/// Where the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at event {seq}: {reason}")]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// The chain's newest event: its sequence number and hash (none in an empty trail). Kept
/// outside the database (`tokendesk audit head`, the periodic log line), it shows whether the
/// newest events were later removed.
pub async fn audit_head(conn: &mut AnyConnection) -> StoreResult<Option<(i64, String)>> {
    let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => Some((r.try_get("seq")?, r.try_get("hash")?)),
        None => None,
    })
}

/// The hash of the event at `seq`, if it exists.
pub async fn audit_hash_at(conn: &mut AnyConnection, seq: i64) -> StoreResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// Walks the whole chain; returns the number of events, or the first broken link.
pub async fn verify_chain(conn: &mut AnyConnection) -> StoreResult<Result<u64, ChainBreak>> {
    let mut prev = GENESIS.to_owned();
    let mut after = 0;
    let mut count = 0u64;
    loop {
        let page = list_audit(
            &mut *conn,
            &AuditFilter {
                after_seq: after,
                limit: 1000,
                ..AuditFilter::default()
            },
        )
        .await?;
        let Some(last) = page.last() else {
            return Ok(Ok(count));
        };
        after = last.seq;
        for e in &page {
            if e.prev_hash != prev {
                return Ok(Err(ChainBreak {
                    seq: e.seq,
                    reason: "its prev_hash does not match the previous event's hash (an event before it was removed, inserted or altered)".into(),
                }));
            }
            let expected = chain_hash(
                &prev,
                &Canonical {
                    at: ts(e.at),
                    actor: &e.actor,
                    action: &e.action,
                    target: &e.target,
                    outcome: &e.outcome,
                    client_addr: e.client_addr.as_deref(),
                    details: &e.details,
                },
            )?;
            if expected != e.hash {
                return Ok(Err(ChainBreak {
                    seq: e.seq,
                    reason: "its content does not match its hash (the event was edited)".into(),
                }));
            }
            prev = e.hash.clone();
            count += 1;
        }
    }
}

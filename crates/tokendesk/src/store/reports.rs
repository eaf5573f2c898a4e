//! The numbers behind `/reports`: counts over spans of time, in portable SQL (the same
//! statements on SQLite and PostgreSQL).
//!
//! Every query is given its spans (weeks, days, months, ages) from the caller, which reads the
//! app's clock: the spans become a derived table `p(k, lo, hi)` (`SELECT $1 AS k, $2 AS lo,
//! $3 AS hi UNION ALL …`) that the counted rows are joined to, so that no backend's date
//! functions are needed. Times are Unix seconds, as stored.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Row};
use time::OffsetDateTime;

use super::StoreResult;
use super::sql::{from_ts, names_in, state, ts};
use crate::domain::TokenState;
use crate::domain::envelope::EnvelopeState;
use crate::domain::request::RequestState;

/// A span of time, `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
}

/// The derived table of `n` spans, parameters `$1 … $3n`, aliased `p`.
fn spans_table(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let (k, lo, hi) = (3 * i + 1, 3 * i + 2, 3 * i + 3);
            if i == 0 {
                format!("SELECT ${k} AS k, ${lo} AS lo, ${hi} AS hi")
            } else {
                format!("SELECT ${k}, ${lo}, ${hi}")
            }
        })
        .collect();
    format!("({}) p", rows.join(" UNION ALL "))
}

/// The query with the spans bound first, in the order of [`spans_table`].
fn with_spans<'q>(sql: String, spans: &[Span]) -> Query<'q, Any, AnyArguments> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (k, span) in spans.iter().enumerate() {
        query = query
            .bind(i64::try_from(k).unwrap_or(i64::MAX))
            .bind(ts(span.from))
            .bind(ts(span.to));
    }
    query
}

/// A value bound after the spans' parameters.
#[derive(Debug, Clone, Copy)]
enum Extra {
    Text(&'static str),
    Time(OffsetDateTime),
}

/// The one shape of these queries: nothing for no spans; otherwise `sql` (given the spans
/// table and the number of the first parameter after the spans') run with the spans and then
/// `extra` bound, each row read by `read`.
async fn per_span<T>(
    conn: &mut AnyConnection,
    spans: &[Span],
    sql: impl FnOnce(&str, usize) -> String,
    extra: &[Extra],
    read: impl Fn(&sqlx::any::AnyRow) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    if spans.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = with_spans(sql(&spans_table(spans.len()), spans.len() * 3 + 1), spans);
    for value in extra {
        query = match *value {
            Extra::Text(text) => query.bind(text),
            Extra::Time(at) => query.bind(ts(at)),
        };
    }
    query.fetch_all(conn).await?.iter().map(read).collect()
}

/// The index of a span, as selected.
fn span_index(row: &sqlx::any::AnyRow) -> StoreResult<usize> {
    let k: i64 = row.try_get("k")?;
    usize::try_from(k).map_err(|_| super::StoreError::Corrupt(format!("span {k}")))
}

/// How many requests were made in each span, by their state now: `(span, state, count)`, only
/// the non-zero ones.
pub async fn requests_made_in(
    conn: &mut AnyConnection,
    spans: &[Span],
) -> StoreResult<Vec<(usize, RequestState, i64)>> {
    per_span(
        conn,
        spans,
        |p, _| {
            format!(
                "SELECT p.k AS k, r.state AS state, COUNT(r.id) AS n FROM {p} \
                 JOIN requests r ON r.created_at >= p.lo AND r.created_at < p.hi \
                 GROUP BY p.k, r.state"
            )
        },
        &[],
        |r| {
            Ok((
                span_index(r)?,
                state("request state", &r.try_get::<String, _>("state")?)?,
                r.try_get("n")?,
            ))
        },
    )
    .await
}

/// How many requests were made in each span, by purpose (the text as given) and state now:
/// `(span, purpose, state, count)`, only the non-zero ones.
pub async fn purposes_in(
    conn: &mut AnyConnection,
    spans: &[Span],
) -> StoreResult<Vec<(usize, String, RequestState, i64)>> {
    per_span(
        conn,
        spans,
        |p, _| {
            format!(
                "SELECT p.k AS k, r.purpose AS purpose, r.state AS state, COUNT(r.id) AS n \
                 FROM {p} JOIN requests r ON r.created_at >= p.lo AND r.created_at < p.hi \
                 GROUP BY p.k, r.purpose, r.state"
            )
        },
        &[],
        |r| {
            Ok((
                span_index(r)?,
                r.try_get("purpose")?,
                state("request state", &r.try_get::<String, _>("state")?)?,
                r.try_get("n")?,
            ))
        },
    )
    .await
}

/// How many tokens were live at the end of each span (its `to`): created by then, not yet
/// past their expiry, and not deleted by then (a deleted token's row changes no more, so its
/// `updated_at` is when it was deleted). One count per span.
pub async fn live_tokens_at(conn: &mut AnyConnection, spans: &[Span]) -> StoreResult<Vec<i64>> {
    let rows = per_span(
        conn,
        spans,
        |p, deleted| {
            format!(
                "SELECT p.k AS k, COUNT(t.id) AS n FROM {p} \
                 LEFT JOIN tokens t ON t.created_at <= p.hi AND t.expires_at > p.hi \
                   AND NOT (t.state = ${deleted} AND t.updated_at <= p.hi) \
                 GROUP BY p.k"
            )
        },
        &[Extra::Text(TokenState::Deleted.as_str())],
        |r| Ok((span_index(r)?, r.try_get::<i64, _>("n")?)),
    )
    .await?;
    let mut counts = vec![0; spans.len()];
    for (k, n) in rows {
        if let Some(slot) = counts.get_mut(k) {
            *slot = n;
        }
    }
    Ok(counts)
}

/// Live tokens (not deleted, not yet expired at `now`) whose expiry instant falls in each span's
/// `(from, to]` (a token made for a day expires at the end of it): `(span, count)`, non-zero.
pub async fn tokens_expiring_in(
    conn: &mut AnyConnection,
    spans: &[Span],
    now: OffsetDateTime,
) -> StoreResult<Vec<(usize, i64)>> {
    per_span(
        conn,
        spans,
        |p, deleted| {
            let at = deleted + 1;
            format!(
                "SELECT p.k AS k, COUNT(t.id) AS n FROM {p} \
                 JOIN tokens t ON t.expires_at > p.lo AND t.expires_at <= p.hi \
                 WHERE t.state <> ${deleted} AND t.expires_at > ${at} \
                 GROUP BY p.k"
            )
        },
        &[Extra::Text(TokenState::Deleted.as_str()), Extra::Time(now)],
        |r| Ok((span_index(r)?, r.try_get("n")?)),
    )
    .await
}

/// Each request's first approval: `request_id, requested_at, approved_at`, from the audit
/// trail (the request's row keeps only its latest change).
const APPROVALS: &str = "SELECT r.id AS request_id, r.created_at AS requested_at, \
       MIN(a.at) AS approved_at \
     FROM requests r JOIN audit_events a ON a.target = 'request:' || CAST(r.id AS TEXT) \
     WHERE a.action = 'request.approve' AND a.outcome = 'ok' \
     GROUP BY r.id, r.created_at";

/// Requests first approved in each span: `(span, requested at, approved at)`.
pub async fn approvals_in(
    conn: &mut AnyConnection,
    spans: &[Span],
) -> StoreResult<Vec<(usize, OffsetDateTime, OffsetDateTime)>> {
    per_span(
        conn,
        spans,
        |p, _| {
            format!(
                "SELECT p.k AS k, x.requested_at AS requested_at, x.approved_at AS approved_at \
                 FROM {p} JOIN ({APPROVALS}) x ON x.approved_at >= p.lo AND x.approved_at < p.hi \
                 ORDER BY p.k, x.request_id"
            )
        },
        &[],
        |r| {
            Ok((
                span_index(r)?,
                from_ts(r.try_get("requested_at")?)?,
                from_ts(r.try_get("approved_at")?)?,
            ))
        },
    )
    .await
}

/// Tokens first seen active in Canvas in each span, with their request's first approval:
/// `(span, approved at, activated at)`. (A token carried over to a renewal was activated before
/// the renewal's approval: it is left out.)
pub async fn activations_in(
    conn: &mut AnyConnection,
    spans: &[Span],
) -> StoreResult<Vec<(usize, OffsetDateTime, OffsetDateTime)>> {
    per_span(
        conn,
        spans,
        |p, _| {
            format!(
                "SELECT p.k AS k, x.approved_at AS approved_at, t.activated_at AS activated_at \
                 FROM {p} JOIN tokens t ON t.activated_at >= p.lo AND t.activated_at < p.hi \
                 JOIN ({APPROVALS}) x ON x.request_id = t.request_id \
                 WHERE t.activated_at >= x.approved_at \
                 ORDER BY p.k, t.id"
            )
        },
        &[],
        |r| {
            Ok((
                span_index(r)?,
                from_ts(r.try_get("approved_at")?)?,
                from_ts(r.try_get("activated_at")?)?,
            ))
        },
    )
    .await
}

/// Delivery links never opened: envelopes never revealed nor burned whose time ran out in each
/// span (and by `now`): `(span, count)`, non-zero.
pub async fn unopened_links_in(
    conn: &mut AnyConnection,
    spans: &[Span],
    now: OffsetDateTime,
) -> StoreResult<Vec<(usize, i64)>> {
    let open = names_in::<EnvelopeState>(|s| s != EnvelopeState::Burned);
    per_span(
        conn,
        spans,
        |p, at| {
            format!(
                "SELECT p.k AS k, COUNT(e.id) AS n FROM {p} \
                 JOIN envelopes e ON e.expires_at >= p.lo AND e.expires_at < p.hi \
                 WHERE e.reveals = 0 AND e.state IN ({open}) AND e.expires_at <= ${at} \
                 GROUP BY p.k"
            )
        },
        &[Extra::Time(now)],
        |r| Ok((span_index(r)?, r.try_get("n")?)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_a_table_of_parameters() {
        assert_eq!(
            spans_table(2),
            "(SELECT $1 AS k, $2 AS lo, $3 AS hi UNION ALL SELECT $4, $5, $6) p"
        );
    }
}

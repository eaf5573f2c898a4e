//! Delivery envelopes: the sealed value while open, erased as they close.

use std::sync::LazyLock;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use super::people::login;
use super::requests::request_row;
use super::sql::{from_ts, names_in, one_row, select_list, state, ts};
use super::tokens::{StoredToken, token_in};
use super::{StoreError, StoreResult, Tx};
use crate::domain::RequestId;
use crate::domain::envelope::{Envelope, EnvelopeState};
use crate::domain::request::Request;

/// An envelope with its sealed content while it is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    pub envelope: Envelope,
    /// `(nonce, ciphertext with tag)`; `None` once erased.
    pub sealed: Option<(Vec<u8>, Vec<u8>)>,
}

fn envelope_row(r: &AnyRow) -> StoreResult<StoredEnvelope> {
    let nonce: Option<Vec<u8>> = r.try_get("nonce")?;
    let ciphertext: Option<Vec<u8>> = r.try_get("ciphertext")?;
    Ok(StoredEnvelope {
        envelope: envelope_in(r, "")?,
        sealed: nonce.zip(ciphertext),
    })
}

/// The envelope (without its sealed content) whose columns are named `{prefix}id`, … .
pub(super) fn envelope_in(r: &AnyRow, prefix: &str) -> StoreResult<Envelope> {
    let col = |name: &str| format!("{prefix}{name}");
    let reveals: i64 = r.try_get(col("reveals").as_str())?;
    Ok(Envelope {
        id: r.try_get(col("id").as_str())?,
        request_id: RequestId(r.try_get(col("request_id").as_str())?),
        owner: login(r.try_get(col("owner").as_str())?)?,
        state: state(
            "envelope state",
            &r.try_get::<String, _>(col("state").as_str())?,
        )?,
        reveals: u32::try_from(reveals)
            .map_err(|_| StoreError::Corrupt(format!("reveals {reveals}")))?,
        created_at: from_ts(r.try_get(col("created_at").as_str())?)?,
        expires_at: from_ts(r.try_get(col("expires_at").as_str())?)?,
    })
}

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
    Ok(())
}

const ENVELOPE_COLUMNS: &str =
    "id, request_id, owner, state, reveals, nonce, ciphertext, created_at, expires_at";
/// An envelope's columns without its sealed content.
pub(super) const ENVELOPE_VIEW_COLUMNS: &str =
    "id, request_id, owner, state, reveals, created_at, expires_at";

pub async fn get_envelope(
    conn: &mut AnyConnection,
    id: &str,
) -> StoreResult<Option<StoredEnvelope>> {
    let sql = format!("SELECT {ENVELOPE_COLUMNS} FROM envelopes WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| envelope_row(&r)).transpose()
}

/// A request's current envelope: its open one if any (a new link closes the old in the same
/// second), else its newest.
static CURRENT_ORDER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "ORDER BY CASE WHEN state IN ({}) THEN 0 ELSE 1 END, created_at DESC, id",
        names_in::<EnvelopeState>(EnvelopeState::is_open)
    )
});

pub async fn envelope_for_request(
    conn: &mut AnyConnection,
    id: RequestId,
) -> StoreResult<Option<StoredEnvelope>> {
    let sql = format!(
        "SELECT {ENVELOPE_COLUMNS} FROM envelopes WHERE request_id = $1 {} LIMIT 1",
        CURRENT_ORDER.as_str()
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(conn)
        .await?;
    row.map(|r| envelope_row(&r)).transpose()
}

/// A request with its token and its newest envelope (without the sealed content), in one
/// query: the status look-up.
pub async fn request_view(
    conn: &mut AnyConnection,
    id: RequestId,
) -> StoreResult<Option<(Request, Option<StoredToken>, Option<Envelope>)>> {
    let sql = format!(
        "SELECT {}, {}, {} \
         FROM requests r \
         LEFT JOIN tokens t ON t.request_id = r.id \
         LEFT JOIN envelopes e ON e.id = (SELECT id FROM envelopes WHERE request_id = r.id \
           {} LIMIT 1) \
         WHERE r.id = $1",
        select_list("r", super::requests::REQUEST_COLUMNS, ""),
        select_list("t", super::tokens::TOKEN_COLUMNS, "t_"),
        select_list("e", ENVELOPE_VIEW_COLUMNS, "e_"),
        CURRENT_ORDER.as_str()
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(conn)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let token = match r.try_get::<Option<i64>, _>("t_id")? {
        Some(_) => Some(token_in(&r, "t_")?),
        None => None,
    };
    let envelope = match r.try_get::<Option<String>, _>("e_id")? {
        Some(_) => Some(envelope_in(&r, "e_")?),
        None => None,
    };
    Ok(Some((request_row(&r)?, token, envelope)))
}

/// Writes an envelope's new state if it is unchanged since it was read (same reveal count);
/// closed envelopes lose their ciphertext in the same statement.
pub async fn update_envelope(tx: &mut Tx, before: &Envelope, next: &Envelope) -> StoreResult<()> {
    let erase = !next.state.is_open();
    if erase {
        tx.erases();
    }
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
    one_row(&done)
}

static CLOSE_OPEN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE envelopes SET state = $1, nonce = NULL, ciphertext = NULL \
         WHERE request_id = $2 AND state IN ({})",
        names_in::<EnvelopeState>(EnvelopeState::is_open)
    )
});

/// Closes every open envelope of a request as `state` and erases its ciphertext (token
/// activated, revoked or expired, or a new link sent).
pub async fn close_envelopes_of(
    tx: &mut Tx,
    id: RequestId,
    state: EnvelopeState,
) -> StoreResult<u64> {
    debug_assert!(!state.is_open(), "closing as an open state");
    tx.erases();
    let done = sqlx::query(sqlx::AssertSqlSafe(CLOSE_OPEN.as_str()))
        .bind(state.as_str())
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

static EXPIRE_DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE envelopes SET state = $1, nonce = NULL, ciphertext = NULL \
         WHERE state IN ({}) AND expires_at <= $2 RETURNING id",
        names_in::<EnvelopeState>(EnvelopeState::is_open)
    )
});

/// Expires open envelopes whose time has passed and erases their ciphertext; returns their ids.
pub async fn expire_envelopes(tx: &mut Tx, now: OffsetDateTime) -> StoreResult<Vec<String>> {
    tx.erases();
    let rows = sqlx::query(sqlx::AssertSqlSafe(EXPIRE_DUE.as_str()))
        .bind(EnvelopeState::Expired.as_str())
        .bind(ts(now))
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>(0)?))
        .collect()
}

//! What the token's life after delivery needs beyond requests and tokens: notices sent once,
//! calendar feeds, orphans found in Canvas, and the scans the sweep works from.

use std::sync::LazyLock;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::{Date, OffsetDateTime};

use super::envelopes::{ENVELOPE_VIEW_COLUMNS, envelope_in};
use super::people::login;
use super::requests::{REQUEST_COLUMNS, request_row};
use super::sql::{Conditions, ListQuery, from_ts, names_in, select_list, ts};
use super::tokens::{StoredToken, TOKEN_COLUMNS, token_in};
use super::{StoreResult, Tx};
use crate::domain::envelope::Envelope;
use crate::domain::request::{Request, RequestState};
use crate::domain::{Login, RequestId, TokenState};

// ---- notices sent once --------------------------------------------------------------------------

/// Notes that the notice `kind` about a request goes out now; `false` when it went out before
/// (from this instance or another): the caller then sends nothing.
pub async fn note_once(
    tx: &mut Tx,
    request: RequestId,
    kind: &str,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO notices (request_id, kind, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (request_id, kind) DO NOTHING",
    )
    .bind(request.0)
    .bind(kind)
    .bind(ts(now))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// When the notice `kind` about a request went out, if it did.
pub async fn noticed_at(
    conn: &mut AnyConnection,
    request: RequestId,
    kind: &str,
) -> StoreResult<Option<OffsetDateTime>> {
    let row = sqlx::query("SELECT created_at FROM notices WHERE request_id = $1 AND kind = $2")
        .bind(request.0)
        .bind(kind)
        .fetch_optional(conn)
        .await?;
    row.map(|r| from_ts(r.try_get(0)?)).transpose()
}

// ---- calendar feeds -----------------------------------------------------------------------------

/// Gives `login` a calendar feed with this secret, replacing any earlier one (whose address
/// then stops working).
pub async fn set_calendar(
    tx: &mut Tx,
    login: &Login,
    secret: &str,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO calendar_feeds (login, secret, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (login) DO UPDATE SET secret = excluded.secret, \
           created_at = excluded.created_at",
    )
    .bind(login.as_str())
    .bind(secret)
    .bind(ts(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stops `login`'s calendar feed; whether there was one.
pub async fn drop_calendar(tx: &mut Tx, login: &Login) -> StoreResult<bool> {
    let done = sqlx::query("DELETE FROM calendar_feeds WHERE login = $1")
        .bind(login.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Whose feed has this secret.
pub async fn calendar_owner(conn: &mut AnyConnection, secret: &str) -> StoreResult<Option<Login>> {
    let row = sqlx::query("SELECT login FROM calendar_feeds WHERE secret = $1")
        .bind(secret)
        .fetch_optional(conn)
        .await?;
    row.map(|r| login(r.try_get(0)?)).transpose()
}

/// `login`'s feed secret, if they have one.
pub async fn calendar_secret(
    conn: &mut AnyConnection,
    login: &Login,
) -> StoreResult<Option<String>> {
    let row = sqlx::query("SELECT secret FROM calendar_feeds WHERE login = $1")
        .bind(login.as_str())
        .fetch_optional(conn)
        .await?;
    row.map(|r| Ok(r.try_get(0)?)).transpose()
}

// ---- orphans ------------------------------------------------------------------------------------

/// A token in Canvas whose purpose says tokendesk made it, that tokendesk does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub id: i64,
    pub canvas_user_id: i64,
    pub canvas_token_id: i64,
    /// The login of the Canvas user, when tokendesk knows it.
    pub owner: Option<Login>,
    pub purpose: String,
    pub hint: String,
    pub canvas_expires_at: Option<OffsetDateTime>,
    pub found_at: OffsetDateTime,
    /// The last reconciliation that saw it in Canvas.
    pub seen_at: OffsetDateTime,
}

const ORPHAN_COLUMNS: &str = "id, canvas_user_id, canvas_token_id, owner, purpose, hint, \
     canvas_expires_at, found_at, seen_at";

fn orphan_row(r: &AnyRow) -> StoreResult<Orphan> {
    Ok(Orphan {
        id: r.try_get("id")?,
        canvas_user_id: r.try_get("canvas_user_id")?,
        canvas_token_id: r.try_get("canvas_token_id")?,
        owner: r
            .try_get::<Option<String>, _>("owner")?
            .map(login)
            .transpose()?,
        purpose: r.try_get("purpose")?,
        hint: r.try_get("hint")?,
        canvas_expires_at: r
            .try_get::<Option<i64>, _>("canvas_expires_at")?
            .map(from_ts)
            .transpose()?,
        found_at: from_ts(r.try_get("found_at")?)?,
        seen_at: from_ts(r.try_get("seen_at")?)?,
    })
}

/// What reconciliation saw of an orphan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenOrphan<'a> {
    pub canvas_user_id: i64,
    pub canvas_token_id: i64,
    pub owner: Option<&'a Login>,
    pub purpose: &'a str,
    pub hint: &'a str,
    pub canvas_expires_at: Option<OffsetDateTime>,
}

/// Records an orphan seen now (found now, or seen again); whether it is new.
pub async fn saw_orphan(tx: &mut Tx, o: &SeenOrphan<'_>, now: OffsetDateTime) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE orphans SET seen_at = $1, purpose = $2, hint = $3, canvas_expires_at = $4 \
         WHERE canvas_user_id = $5 AND canvas_token_id = $6",
    )
    .bind(ts(now))
    .bind(o.purpose)
    .bind(o.hint)
    .bind(o.canvas_expires_at.map(ts))
    .bind(o.canvas_user_id)
    .bind(o.canvas_token_id)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() > 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO orphans (canvas_user_id, canvas_token_id, owner, purpose, hint, \
           canvas_expires_at, found_at, seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(o.canvas_user_id)
    .bind(o.canvas_token_id)
    .bind(o.owner.map(Login::as_str))
    .bind(o.purpose)
    .bind(o.hint)
    .bind(o.canvas_expires_at.map(ts))
    .bind(ts(now))
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// Forgets the orphans of `canvas_user_id` that Canvas no longer lists (all but `still`).
pub async fn forget_orphans_except(
    tx: &mut Tx,
    canvas_user_id: i64,
    still: &[i64],
) -> StoreResult<u64> {
    let keep = if still.is_empty() {
        "-1".to_owned()
    } else {
        still
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let sql = format!(
        "DELETE FROM orphans WHERE canvas_user_id = $1 AND canvas_token_id NOT IN ({keep})"
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(canvas_user_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

/// Every orphan, the oldest found first.
pub async fn list_orphans(conn: &mut AnyConnection, limit: i64) -> StoreResult<Vec<Orphan>> {
    let sql = format!("SELECT {ORPHAN_COLUMNS} FROM orphans ORDER BY found_at, id LIMIT $1");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(orphan_row).collect()
}

pub async fn get_orphan(conn: &mut AnyConnection, id: i64) -> StoreResult<Option<Orphan>> {
    let sql = format!("SELECT {ORPHAN_COLUMNS} FROM orphans WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| orphan_row(&r)).transpose()
}

pub async fn delete_orphan(tx: &mut Tx, id: i64) -> StoreResult<bool> {
    let done = sqlx::query("DELETE FROM orphans WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

// ---- what the sweep works from ------------------------------------------------------------------

/// A request with its token (and, where asked for, its current envelope).
pub type WithToken = (Request, StoredToken, Option<Envelope>);

fn with_token(r: &AnyRow) -> StoreResult<WithToken> {
    let envelope = match r.try_get::<Option<String>, _>("e_id")? {
        Some(_) => Some(envelope_in(r, "e_")?),
        None => None,
    };
    Ok((request_row(r)?, token_in(r, "t_")?, envelope))
}

/// `SELECT` of requests joined with their token and current envelope.
fn joined(condition: &str) -> String {
    format!(
        "SELECT {}, {}, {} FROM requests r JOIN tokens t ON t.request_id = r.id \
         LEFT JOIN envelopes e ON e.id = (SELECT id FROM envelopes WHERE request_id = r.id \
           ORDER BY created_at DESC, id LIMIT 1) \
         WHERE {condition}",
        select_list("r", REQUEST_COLUMNS, ""),
        select_list("t", TOKEN_COLUMNS, "t_"),
        select_list("e", ENVELOPE_VIEW_COLUMNS, "e_"),
    )
}

static UNUSED_ISSUED: LazyLock<String> = LazyLock::new(|| {
    joined(&format!(
        "r.state = '{}' AND t.state = '{}' AND r.id > $1 ORDER BY r.id LIMIT $2",
        RequestState::Issued.as_str(),
        TokenState::Pending.as_str()
    ))
});

/// Issued requests whose token is still pending, with their newest envelope, by id after
/// `after`: the sweep decides which were never put to use.
pub async fn pending_deliveries(
    conn: &mut AnyConnection,
    after: RequestId,
    limit: i64,
) -> StoreResult<Vec<WithToken>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(UNUSED_ISSUED.as_str()))
        .bind(after.0)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(with_token).collect()
}

static EXPIRING: LazyLock<String> = LazyLock::new(|| {
    joined(&format!(
        "r.state IN ({}) AND r.expires_on <= $1 AND r.id > $2 ORDER BY r.id LIMIT $3",
        names_in::<RequestState>(RequestState::holds_token)
    ))
});

/// Live requests expiring on or before `until`, by id after `after`: the reminders.
pub async fn expiring_by(
    conn: &mut AnyConnection,
    until: Date,
    after: RequestId,
    limit: i64,
) -> StoreResult<Vec<WithToken>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(EXPIRING.as_str()))
        .bind(until.to_string())
        .bind(after.0)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(with_token).collect()
}

static UNUSED_ACTIVE: LazyLock<String> = LazyLock::new(|| {
    joined(&format!(
        "r.state = '{}' AND t.state = '{}' \
         AND COALESCE(t.last_used_at, t.activated_at, t.created_at) <= $1 \
         AND r.id > $2 ORDER BY r.id LIMIT $3",
        RequestState::Activated.as_str(),
        TokenState::Active.as_str()
    ))
});

/// Activated requests whose token has not been used since `before`, by id after `after`.
pub async fn unused_since(
    conn: &mut AnyConnection,
    before: OffsetDateTime,
    after: RequestId,
    limit: i64,
) -> StoreResult<Vec<WithToken>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(UNUSED_ACTIVE.as_str()))
        .bind(ts(before))
        .bind(after.0)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(with_token).collect()
}

static REPLACEABLE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT old.id AS old_id, new.id AS new_id FROM requests new \
         JOIN requests old ON old.id = new.renews \
         WHERE new.state = '{}' AND old.state IN ({}) ORDER BY new.id LIMIT $1",
        RequestState::Activated.as_str(),
        names_in::<RequestState>(RequestState::holds_token)
    )
});

/// Renewed requests whose renewal's token is active while theirs is still live: `(old, new)`.
pub async fn replaceable(
    conn: &mut AnyConnection,
    limit: i64,
) -> StoreResult<Vec<(RequestId, RequestId)>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(REPLACEABLE.as_str()))
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                RequestId(r.try_get("old_id")?),
                RequestId(r.try_get("new_id")?),
            ))
        })
        .collect()
}

/// The query [`renewals_of`] runs (a token's page), served by `requests_renewing`.
pub fn renewals_query(id: RequestId) -> ListQuery {
    let mut q = Conditions::default();
    q.equals("renews", id.0);
    q.and(format!(
        "state IN ({})",
        names_in::<RequestState>(|s| s.is_open() || s.holds_token())
    ));
    q.build(
        &format!("SELECT {REQUEST_COLUMNS} FROM requests"),
        "ORDER BY id",
    )
}

/// The renewals of a request that are waiting or hold a token.
pub async fn renewals_of(conn: &mut AnyConnection, id: RequestId) -> StoreResult<Vec<Request>> {
    let rows = renewals_query(id).fetch_all(conn).await?;
    rows.iter().map(request_row).collect()
}

/// Submitted requests that arrived from `since` on (to the second), oldest first: an
/// approver's digest.
pub async fn submitted_since(
    conn: &mut AnyConnection,
    since: OffsetDateTime,
    limit: i64,
) -> StoreResult<Vec<Request>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM requests WHERE state = $1 AND created_at >= $2 \
         ORDER BY created_at, id LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(RequestState::Submitted.as_str())
        .bind(ts(since))
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(request_row).collect()
}

/// The requests of a chain of renewals, from `id` back to the first.
pub async fn renewal_chain(conn: &mut AnyConnection, id: RequestId) -> StoreResult<Vec<Request>> {
    let mut chain = Vec::new();
    let mut next = Some(id);
    while let Some(id) = next {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&mut *conn)
            .await?
        else {
            break;
        };
        let request = request_row(&row)?;
        next = request.renews.filter(|_| chain.len() < 100);
        chain.push(request);
    }
    Ok(chain)
}

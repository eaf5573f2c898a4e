//! Tokens tokendesk created in Canvas (never their values).

use std::sync::LazyLock;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use super::people::login;
use super::sql::{Conditions, ListQuery, from_ts, names_in, state, ts};
use super::{StoreResult, Tx};
use crate::domain::request::RequestState;
use crate::domain::{Login, RequestId, TokenId, TokenState};

/// A token tokendesk created in Canvas. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub id: TokenId,
    pub request_id: RequestId,
    pub owner: Login,
    pub canvas_user_id: i64,
    pub canvas_token_id: i64,
    pub hint: String,
    pub state: TokenState,
    pub expires_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// When Canvas was first seen to report it active.
    pub activated_at: Option<OffsetDateTime>,
    /// When it was last used in Canvas, as Canvas last reported (`last_used_at`).
    pub last_used_at: Option<OffsetDateTime>,
    /// The expiry Canvas holds, as last seen (differs from `expires_at` only if changed there).
    pub canvas_expires_at: Option<OffsetDateTime>,
    /// When to ask Canvas next whether a pending token was activated.
    pub next_check_at: Option<OffsetDateTime>,
    /// How often Canvas was asked (the schedule backs off with it).
    pub checks: u32,
    /// When reconciliation last compared it with Canvas.
    pub reconciled_at: Option<OffsetDateTime>,
}

pub(super) const TOKEN_COLUMNS: &str = "id, request_id, owner, canvas_user_id, canvas_token_id, hint, \
     state, expires_at, created_at, updated_at, activated_at, last_used_at, canvas_expires_at, \
     next_check_at, checks, reconciled_at";

pub(super) fn token_row(r: &AnyRow) -> StoreResult<StoredToken> {
    token_in(r, "")
}

/// The token whose columns are named `{prefix}id`, `{prefix}owner`, … (a joined row).
pub(super) fn token_in(r: &AnyRow, prefix: &str) -> StoreResult<StoredToken> {
    let col = |name: &str| format!("{prefix}{name}");
    Ok(StoredToken {
        id: TokenId(r.try_get(col("id").as_str())?),
        request_id: RequestId(r.try_get(col("request_id").as_str())?),
        owner: login(r.try_get(col("owner").as_str())?)?,
        canvas_user_id: r.try_get(col("canvas_user_id").as_str())?,
        canvas_token_id: r.try_get(col("canvas_token_id").as_str())?,
        hint: r.try_get(col("hint").as_str())?,
        state: state(
            "token state",
            &r.try_get::<String, _>(col("state").as_str())?,
        )?,
        expires_at: from_ts(r.try_get(col("expires_at").as_str())?)?,
        created_at: from_ts(r.try_get(col("created_at").as_str())?)?,
        updated_at: from_ts(r.try_get(col("updated_at").as_str())?)?,
        activated_at: maybe_ts(r.try_get(col("activated_at").as_str())?)?,
        last_used_at: maybe_ts(r.try_get(col("last_used_at").as_str())?)?,
        canvas_expires_at: maybe_ts(r.try_get(col("canvas_expires_at").as_str())?)?,
        next_check_at: maybe_ts(r.try_get(col("next_check_at").as_str())?)?,
        checks: u32::try_from(r.try_get::<i64, _>(col("checks").as_str())?).unwrap_or(u32::MAX),
        reconciled_at: maybe_ts(r.try_get(col("reconciled_at").as_str())?)?,
    })
}

fn maybe_ts(secs: Option<i64>) -> StoreResult<Option<OffsetDateTime>> {
    secs.map(from_ts).transpose()
}

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
    let active = state == TokenState::Active;
    let row = sqlx::query(
        "INSERT INTO tokens (request_id, owner, canvas_user_id, canvas_token_id, hint, state, \
         expires_at, created_at, updated_at, activated_at, canvas_expires_at, next_check_at, checks) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $7, $10, 0) RETURNING id",
    )
    .bind(request_id.0)
    .bind(owner.as_str())
    .bind(canvas_user_id)
    .bind(canvas_token_id)
    .bind(hint)
    .bind(state.as_str())
    .bind(ts(expires_at))
    .bind(ts(now))
    .bind(active.then(|| ts(now)))
    .bind((!active).then(|| ts(crate::domain::token::first_check(now))))
    .fetch_one(&mut **tx)
    .await?;
    Ok(TokenId(row.try_get::<i64, _>(0)?))
}

pub async fn get_token(conn: &mut AnyConnection, id: TokenId) -> StoreResult<Option<StoredToken>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(conn)
        .await?;
    row.map(|r| token_row(&r)).transpose()
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
    row.map(|r| token_row(&r)).transpose()
}

/// The query [`list_tokens`] runs: one owner's tokens, newest first, after `after` (keyset
/// paging), served by `tokens_by_owner`.
pub fn tokens_query(owner: &Login, after: Option<TokenId>, limit: i64) -> ListQuery {
    let mut q = Conditions::default();
    q.equals("owner", owner.as_str());
    if let Some(after) = after {
        let p = q.arg(after.0);
        q.and(format!("id < {p}"));
    }
    let limit = q.arg(limit);
    q.build(
        &format!("SELECT {TOKEN_COLUMNS} FROM tokens"),
        &format!("ORDER BY id DESC LIMIT {limit}"),
    )
}

pub async fn list_tokens(
    conn: &mut AnyConnection,
    owner: &Login,
    after: Option<TokenId>,
    limit: i64,
) -> StoreResult<Vec<StoredToken>> {
    let rows = tokens_query(owner, after, limit).fetch_all(conn).await?;
    rows.iter().map(token_row).collect()
}

pub async fn set_token_state(
    tx: &mut Tx,
    id: TokenId,
    state: TokenState,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE tokens SET state = $1, updated_at = $2, \
           activated_at = CASE WHEN $4 AND activated_at IS NULL THEN $2 ELSE activated_at END, \
           next_check_at = CASE WHEN $5 THEN next_check_at ELSE NULL END \
         WHERE id = $3",
    )
    .bind(state.as_str())
    .bind(ts(now))
    .bind(id.0)
    .bind(state == TokenState::Active)
    .bind(state == TokenState::Pending)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// When to ask Canvas next whether a pending token was activated, and how often it was asked.
pub async fn schedule_check(
    tx: &mut Tx,
    id: TokenId,
    next_at: OffsetDateTime,
    checks: u32,
) -> StoreResult<()> {
    sqlx::query("UPDATE tokens SET next_check_at = $1, checks = $2 WHERE id = $3")
        .bind(ts(next_at))
        .bind(i64::from(checks))
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What Canvas said of a token when reconciliation compared them.
pub async fn record_canvas_view(
    tx: &mut Tx,
    id: TokenId,
    last_used_at: Option<OffsetDateTime>,
    canvas_expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE tokens SET last_used_at = COALESCE($1, last_used_at), canvas_expires_at = $2, \
           reconciled_at = $3 WHERE id = $4",
    )
    .bind(last_used_at.map(ts))
    .bind(canvas_expires_at.map(ts))
    .bind(ts(now))
    .bind(id.0)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The token's expiry, as moved in Canvas (a renewal by extension, or a correction).
pub async fn set_token_expiry(
    tx: &mut Tx,
    id: TokenId,
    expires_at: OffsetDateTime,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE tokens SET expires_at = $1, canvas_expires_at = $1, updated_at = $2 WHERE id = $3",
    )
    .bind(ts(expires_at))
    .bind(ts(now))
    .bind(id.0)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Hands a token to another request (a renewal by extension takes over the renewed token).
pub async fn move_token(
    tx: &mut Tx,
    id: TokenId,
    to: RequestId,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query("UPDATE tokens SET request_id = $1, updated_at = $2 WHERE id = $3")
        .bind(to.0)
        .bind(ts(now))
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

static DUE_CHECKS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE state = $1 AND next_check_at <= $2 \
         AND request_id IN (SELECT id FROM requests WHERE state IN ({})) \
         ORDER BY next_check_at, id LIMIT $3",
        names_in::<RequestState>(RequestState::holds_token)
    )
});

/// Pending tokens whose activation check is due, the most overdue first.
pub async fn due_activation_checks(
    conn: &mut AnyConnection,
    now: OffsetDateTime,
    limit: i64,
) -> StoreResult<Vec<StoredToken>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(DUE_CHECKS.as_str()))
        .bind(TokenState::Pending.as_str())
        .bind(ts(now))
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(token_row).collect()
}

/// Every token tokendesk made for these Canvas users (any state), by user then id.
pub async fn tokens_of_canvas_users(
    conn: &mut AnyConnection,
    users: &[i64],
) -> StoreResult<Vec<StoredToken>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    // Whole numbers only: safe to inline.
    let ids = users
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE canvas_user_id IN ({ids}) ORDER BY canvas_user_id, id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await?;
    rows.iter().map(token_row).collect()
}

/// A regenerated token has a new hint.
pub async fn set_token_hint(
    tx: &mut Tx,
    id: TokenId,
    hint: &str,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query("UPDATE tokens SET hint = $1, updated_at = $2 WHERE id = $3")
        .bind(hint)
        .bind(ts(now))
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

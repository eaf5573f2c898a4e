//! Tokens tokendesk created in Canvas (never their values).

use std::sync::LazyLock;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use super::people::login;
use super::sql::{from_ts, names_in, state, ts};
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
}

const TOKEN_COLUMNS: &str = "id, request_id, owner, canvas_user_id, canvas_token_id, hint, state, \
     expires_at, created_at, updated_at";

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
    })
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
    let row = sqlx::query(
        "INSERT INTO tokens (request_id, owner, canvas_user_id, canvas_token_id, hint, state, \
         expires_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id",
    )
    .bind(request_id.0)
    .bind(owner.as_str())
    .bind(canvas_user_id)
    .bind(canvas_token_id)
    .bind(hint)
    .bind(state.as_str())
    .bind(ts(expires_at))
    .bind(ts(now))
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

pub async fn list_tokens(
    conn: &mut AnyConnection,
    owner: Option<&Login>,
    limit: i64,
) -> StoreResult<Vec<StoredToken>> {
    let sql = format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE ($1 IS NULL OR owner = $1) ORDER BY id DESC LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(owner.map(Login::as_str))
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(token_row).collect()
}

pub async fn set_token_state(
    tx: &mut Tx,
    id: TokenId,
    state: TokenState,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query("UPDATE tokens SET state = $1, updated_at = $2 WHERE id = $3")
        .bind(state.as_str())
        .bind(ts(now))
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
    Ok(())
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

static PENDING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE state IN ({}) AND request_id IN \
         (SELECT id FROM requests WHERE state = $1) ORDER BY id LIMIT $2",
        names_in::<TokenState>(TokenState::is_live)
    )
});

/// Tokens tokendesk believes are live in Canvas for a request that is still issued.
pub async fn pending_tokens(conn: &mut AnyConnection, limit: i64) -> StoreResult<Vec<StoredToken>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(PENDING.as_str()))
        .bind(RequestState::Issued.as_str())
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(token_row).collect()
}

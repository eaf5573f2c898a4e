//! Signing in to tokendesk itself: browser sessions (OIDC and demo), OIDC sign-ins under way,
//! and service keys. Every secret is stored as its SHA-256 hash only.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};
use time::OffsetDateTime;

use super::people::login;
use super::sql::{from_ts, ts};
use super::{StoreResult, Tx};
use crate::domain::Login;

const SESSION_COLUMNS: &str = "public_id, login, kind, roles, id_token, client_addr, user_agent, \
     created_at, last_seen_at, expires_at, ended_at";

/// A browser session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Names the session on pages and in the API (not the secret).
    pub public_id: String,
    pub login: Login,
    /// `oidc` or `demo`.
    pub kind: String,
    /// Role names the identity provider's groups gave at sign-in, comma-separated.
    pub roles: String,
    /// The ID token (for the provider's sign-out).
    pub id_token: Option<String>,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    /// When it ends, used or not.
    pub expires_at: OffsetDateTime,
    pub ended_at: Option<OffsetDateTime>,
}

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id_hash: &'a str,
    pub public_id: &'a str,
    pub login: &'a Login,
    pub kind: &'a str,
    pub roles: &'a str,
    pub id_token: Option<&'a str>,
    pub client_addr: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub now: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

fn session_row(r: &AnyRow) -> StoreResult<StoredSession> {
    Ok(StoredSession {
        public_id: r.try_get("public_id")?,
        login: login(r.try_get("login")?)?,
        kind: r.try_get("kind")?,
        roles: r.try_get("roles")?,
        id_token: r.try_get("id_token")?,
        client_addr: r.try_get("client_addr")?,
        user_agent: r.try_get("user_agent")?,
        created_at: from_ts(r.try_get("created_at")?)?,
        last_seen_at: from_ts(r.try_get("last_seen_at")?)?,
        expires_at: from_ts(r.try_get("expires_at")?)?,
        ended_at: r
            .try_get::<Option<i64>, _>("ended_at")?
            .map(from_ts)
            .transpose()?,
    })
}

pub async fn insert_session(tx: &mut Tx, s: &NewSession<'_>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sessions (id_hash, public_id, login, kind, roles, id_token, client_addr, \
         user_agent, created_at, last_seen_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)",
    )
    .bind(s.id_hash)
    .bind(s.public_id)
    .bind(s.login.as_str())
    .bind(s.kind)
    .bind(s.roles)
    .bind(s.id_token)
    .bind(s.client_addr)
    .bind(s.user_agent)
    .bind(ts(s.now))
    .bind(ts(s.expires_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The session whose id hashes to `id_hash`, ended or not.
pub async fn session_by_hash(
    conn: &mut AnyConnection,
    id_hash: &str,
) -> StoreResult<Option<StoredSession>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE id_hash = $1"
    )))
    .bind(id_hash)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(session_row).transpose()
}

/// Notes that the session was used now.
pub async fn touch_session(
    conn: &mut AnyConnection,
    id_hash: &str,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2 AND ended_at IS NULL")
        .bind(ts(now))
        .bind(id_hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// The sessions of `login` that have not ended and have not expired by `now` (absolutely, or
/// idle since `idle_since`), newest first.
pub async fn live_sessions_of(
    conn: &mut AnyConnection,
    login: &Login,
    now: OffsetDateTime,
    idle_since: OffsetDateTime,
) -> StoreResult<Vec<StoredSession>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE login = $1 AND ended_at IS NULL \
         AND expires_at > $2 AND last_seen_at > $3 ORDER BY created_at DESC, public_id LIMIT 200"
    )))
    .bind(login.as_str())
    .bind(ts(now))
    .bind(ts(idle_since))
    .fetch_all(conn)
    .await?;
    rows.iter().map(session_row).collect()
}

/// Ends one session by its id hash; `false` when it had ended already (or never was).
pub async fn end_session_by_hash(
    tx: &mut Tx,
    id_hash: &str,
    now: OffsetDateTime,
    by: &str,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE sessions SET ended_at = $1, ended_by = $2 WHERE id_hash = $3 AND ended_at IS NULL",
    )
    .bind(ts(now))
    .bind(by)
    .bind(id_hash)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends the session named `public_id` when it is `login`'s; `false` otherwise.
pub async fn end_session_of(
    tx: &mut Tx,
    login: &Login,
    public_id: &str,
    now: OffsetDateTime,
    by: &str,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE sessions SET ended_at = $1, ended_by = $2 \
         WHERE public_id = $3 AND login = $4 AND ended_at IS NULL",
    )
    .bind(ts(now))
    .bind(by)
    .bind(public_id)
    .bind(login.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends every session of `login`; how many were open.
pub async fn end_sessions_of(
    tx: &mut Tx,
    login: &Login,
    now: OffsetDateTime,
    by: &str,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE sessions SET ended_at = $1, ended_by = $2 WHERE login = $3 AND ended_at IS NULL",
    )
    .bind(ts(now))
    .bind(by)
    .bind(login.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes sessions that ended, expired, or sat idle since before `idle_since`, and OIDC
/// sign-ins begun before `flows_before`; how many sessions went.
pub async fn purge_sessions(
    tx: &mut Tx,
    now: OffsetDateTime,
    idle_since: OffsetDateTime,
    flows_before: OffsetDateTime,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "DELETE FROM sessions WHERE ended_at IS NOT NULL OR expires_at <= $1 OR last_seen_at <= $2",
    )
    .bind(ts(now))
    .bind(ts(idle_since))
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM oidc_flows WHERE created_at < $1")
        .bind(ts(flows_before))
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

// ---- OIDC sign-ins under way --------------------------------------------------------------------

/// An OIDC sign-in between the redirect to the provider and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcFlow {
    pub nonce: String,
    pub pkce_verifier: String,
    pub next_path: Option<String>,
    pub created_at: OffsetDateTime,
}

pub async fn insert_flow(tx: &mut Tx, state_hash: &str, flow: &OidcFlow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO oidc_flows (state_hash, nonce, pkce_verifier, next_path, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(state_hash)
    .bind(&flow.nonce)
    .bind(&flow.pkce_verifier)
    .bind(flow.next_path.as_deref())
    .bind(ts(flow.created_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes the sign-in whose state hashes to `state_hash`: it can be taken once.
pub async fn take_flow(tx: &mut Tx, state_hash: &str) -> StoreResult<Option<OidcFlow>> {
    let row = sqlx::query(
        "SELECT nonce, pkce_verifier, next_path, created_at FROM oidc_flows WHERE state_hash = $1",
    )
    .bind(state_hash)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let done = sqlx::query("DELETE FROM oidc_flows WHERE state_hash = $1")
        .bind(state_hash)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    Ok(Some(OidcFlow {
        nonce: row.try_get("nonce")?,
        pkce_verifier: row.try_get("pkce_verifier")?,
        next_path: row.try_get("next_path")?,
        created_at: from_ts(row.try_get("created_at")?)?,
    }))
}

// ---- service keys -------------------------------------------------------------------------------

const KEY_COLUMNS: &str =
    "id, name, role, created_by, created_at, expires_at, revoked_at, last_used_at";

/// A service key as stored (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub id: i64,
    pub name: String,
    /// `auditor` or `helpdesk`.
    pub role: String,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

fn key_row(r: &AnyRow) -> StoreResult<StoredKey> {
    let opt = |name: &str| -> StoreResult<Option<OffsetDateTime>> {
        r.try_get::<Option<i64>, _>(name)?.map(from_ts).transpose()
    };
    Ok(StoredKey {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        created_by: r.try_get("created_by")?,
        created_at: from_ts(r.try_get("created_at")?)?,
        expires_at: from_ts(r.try_get("expires_at")?)?,
        revoked_at: opt("revoked_at")?,
        last_used_at: opt("last_used_at")?,
    })
}

/// Stores a key; `None` when a key of that name exists.
#[allow(clippy::too_many_arguments)]
pub async fn insert_key(
    tx: &mut Tx,
    name: &str,
    role: &str,
    key_hash: &str,
    created_by: &str,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> StoreResult<Option<i64>> {
    let row = sqlx::query(
        "INSERT INTO service_keys (name, role, key_hash, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(name)
    .bind(role)
    .bind(key_hash)
    .bind(created_by)
    .bind(ts(now))
    .bind(ts(expires_at))
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
}

/// The key whose value hashes to `key_hash`.
pub async fn key_by_hash(
    conn: &mut AnyConnection,
    key_hash: &str,
) -> StoreResult<Option<StoredKey>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM service_keys WHERE key_hash = $1"
    )))
    .bind(key_hash)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(key_row).transpose()
}

/// Every key, newest first.
pub async fn list_keys(conn: &mut AnyConnection) -> StoreResult<Vec<StoredKey>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM service_keys ORDER BY id DESC"
    )))
    .fetch_all(conn)
    .await?;
    rows.iter().map(key_row).collect()
}

/// Revokes a key; `None` when there is no such key, `Some(false)` when it was revoked before.
pub async fn revoke_key(tx: &mut Tx, id: i64, now: OffsetDateTime) -> StoreResult<Option<bool>> {
    let done =
        sqlx::query("UPDATE service_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(ts(now))
            .bind(id)
            .execute(&mut **tx)
            .await?;
    if done.rows_affected() == 1 {
        return Ok(Some(true));
    }
    let exists = sqlx::query("SELECT 1 FROM service_keys WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(exists.map(|_| false))
}

/// Notes that a key was used now.
pub async fn touch_key(conn: &mut AnyConnection, id: i64, now: OffsetDateTime) -> StoreResult<()> {
    sqlx::query("UPDATE service_keys SET last_used_at = $1 WHERE id = $2")
        .bind(ts(now))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

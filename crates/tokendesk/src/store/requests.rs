//! Requests: the row of each, the transitions' guarded update, lists and per-person counts.

use std::sync::LazyLock;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use time::{Date, OffsetDateTime};

use super::people::login;
use super::sql::{Conditions, ListQuery, from_ts, names_in, one_row, state, ts};
use super::{StoreError, StoreResult, Tx};
use crate::domain::request::{Holdings, NewRequest, Request, RequestState, parse_date};
use crate::domain::{Login, RequestId};

pub(super) const REQUEST_COLUMNS: &str = "id, requester, purpose, application, requested_expires_on, \
     expires_on, state, decided_by, reason, created_at, updated_at, renews";

fn date(raw: &str) -> StoreResult<Date> {
    parse_date("date", raw).map_err(|_| StoreError::Corrupt(format!("date {raw:?}")))
}

/// A request row (also the `r.`-columns of a joined row, named as in [`REQUEST_COLUMNS`]).
pub(super) fn request_row(r: &AnyRow) -> StoreResult<Request> {
    Ok(Request {
        id: RequestId(r.try_get("id")?),
        requester: login(r.try_get("requester")?)?,
        purpose: r.try_get("purpose")?,
        application: r.try_get("application")?,
        requested_expires_on: date(&r.try_get::<String, _>("requested_expires_on")?)?,
        expires_on: date(&r.try_get::<String, _>("expires_on")?)?,
        state: state("request state", &r.try_get::<String, _>("state")?)?,
        created_at: from_ts(r.try_get("created_at")?)?,
        updated_at: from_ts(r.try_get("updated_at")?)?,
        decided_by: r
            .try_get::<Option<String>, _>("decided_by")?
            .map(login)
            .transpose()?,
        reason: r.try_get("reason")?,
        renews: r.try_get::<Option<i64>, _>("renews")?.map(RequestId),
    })
}

pub async fn insert_request(
    tx: &mut Tx,
    requester: &Login,
    new: &NewRequest,
    now: OffsetDateTime,
) -> StoreResult<Request> {
    let sql = format!(
        "INSERT INTO requests (requester, purpose, application, requested_expires_on, expires_on, \
         state, created_at, updated_at, renews) VALUES ($1, $2, $3, $4, $4, $5, $6, $6, $7) \
         RETURNING {REQUEST_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(requester.as_str())
        .bind(new.purpose.as_str())
        .bind(new.application.as_deref())
        .bind(new.expires_on.to_string())
        .bind(RequestState::Submitted.as_str())
        .bind(ts(now))
        .bind(new.renews.map(|id| id.0))
        .fetch_one(&mut **tx)
        .await?;
    request_row(&row)
}

pub async fn get_request(conn: &mut AnyConnection, id: RequestId) -> StoreResult<Option<Request>> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(conn)
        .await?;
    row.map(|r| request_row(&r)).transpose()
}

/// Writes a transition's new state if the request is still in the state it was read in;
/// otherwise someone else moved it first and this is a `Conflict`.
pub async fn update_request(tx: &mut Tx, from: RequestState, next: &Request) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE requests SET state = $1, expires_on = $2, decided_by = $3, reason = $4, \
         updated_at = $5 WHERE id = $6 AND state = $7",
    )
    .bind(next.state.as_str())
    .bind(next.expires_on.to_string())
    .bind(next.decided_by.as_ref().map(Login::as_str))
    .bind(next.reason.as_deref())
    .bind(ts(next.updated_at))
    .bind(next.id.0)
    .bind(from.as_str())
    .execute(&mut **tx)
    .await?;
    one_row(&done)
}

static HOLDINGS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT \
           COALESCE(SUM(CASE WHEN state IN ({}) THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN state IN ({}) THEN 1 ELSE 0 END), 0) \
         FROM requests WHERE requester = $1",
        names_in::<RequestState>(RequestState::is_open),
        names_in::<RequestState>(RequestState::holds_token),
    )
});

/// What a person holds now, for the per-person limits.
pub async fn holdings(conn: &mut AnyConnection, login: &Login) -> StoreResult<Holdings> {
    let row = sqlx::query(sqlx::AssertSqlSafe(HOLDINGS.as_str()))
        .bind(login.as_str())
        .fetch_one(conn)
        .await?;
    let count = |i: usize| -> StoreResult<u32> {
        let n: i64 = row.try_get(i)?;
        u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("count {n}")))
    };
    Ok(Holdings {
        open_requests: count(0)?,
        live_tokens: count(1)?,
    })
}

/// Whose requests a list holds. There is no default: everyone's is asked for by name, never
/// by leaving a requester out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whose {
    Person(Login),
    Everyone,
}

/// Where a list continues: after this request, in the list's order (creation time, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPosition {
    pub created_at: OffsetDateTime,
    pub id: RequestId,
}

impl From<&Request> for RequestPosition {
    fn from(r: &Request) -> RequestPosition {
        RequestPosition {
            created_at: r.created_at,
            id: r.id,
        }
    }
}

/// Filters for request lists.
#[derive(Debug, Clone)]
pub struct RequestFilter {
    pub whose: Whose,
    pub state: Option<RequestState>,
    /// Oldest first (the approvers' queue) instead of newest first.
    pub oldest_first: bool,
    /// The page after this request (keyset paging).
    pub after: Option<RequestPosition>,
    pub limit: i64,
}

impl RequestFilter {
    /// The first `limit` of `whose` requests, newest first.
    pub fn of(whose: Whose, limit: i64) -> RequestFilter {
        RequestFilter {
            whose,
            state: None,
            oldest_first: false,
            after: None,
            limit,
        }
    }
}

/// The query [`list_requests`] runs: served by `requests_by_requester` or `requests_by_state`
/// (or, for everyone's in any state, `requests_by_created`).
pub fn requests_query(filter: &RequestFilter) -> ListQuery {
    let mut q = Conditions::default();
    if let Whose::Person(login) = &filter.whose {
        q.equals("requester", login.as_str());
    }
    if let Some(state) = filter.state {
        q.equals("state", state.as_str());
    }
    let (order, beyond) = if filter.oldest_first {
        ("ASC", ">")
    } else {
        ("DESC", "<")
    };
    if let Some(at) = filter.after {
        let created = q.arg(ts(at.created_at));
        let id = q.arg(at.id.0);
        q.and(format!("(created_at, id) {beyond} ({created}, {id})"));
    }
    let limit = q.arg(if filter.limit > 0 { filter.limit } else { 100 });
    q.build(
        &format!("SELECT {REQUEST_COLUMNS} FROM requests"),
        &format!("ORDER BY created_at {order}, id {order} LIMIT {limit}"),
    )
}

pub async fn list_requests(
    conn: &mut AnyConnection,
    filter: &RequestFilter,
) -> StoreResult<Vec<Request>> {
    let rows = requests_query(filter).fetch_all(conn).await?;
    rows.iter().map(request_row).collect()
}

static EXPIRING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {REQUEST_COLUMNS} FROM requests WHERE state IN ({}) \
         AND expires_on < $1 ORDER BY id LIMIT $2",
        names_in::<RequestState>(RequestState::holds_token)
    )
});

/// Requests holding a token whose expiry date is before `today`.
pub async fn expiring_requests(
    conn: &mut AnyConnection,
    today: time::Date,
    limit: i64,
) -> StoreResult<Vec<Request>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(EXPIRING.as_str()))
        .bind(today.to_string())
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(request_row).collect()
}

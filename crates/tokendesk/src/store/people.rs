//! People as tokendesk knows them (from sign-in and from Canvas).

use sqlx::AnyConnection;
use sqlx::Row as _;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::StoreResult;
use super::sql::ts;
use crate::domain::Login;

/// A person as tokendesk knows them (from sign-in and from Canvas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub login: Login,
    pub name: Option<String>,
    pub email: Option<String>,
    pub canvas_user_id: Option<i64>,
}

/// A stored login (as it was stored, even under an earlier release's looser rules).
pub(super) fn login(raw: String) -> StoreResult<Login> {
    if raw.trim().is_empty() {
        return Err(super::StoreError::Corrupt("an empty login".into()));
    }
    Ok(Login::from_stored(&raw))
}

fn person_row(r: &AnyRow) -> StoreResult<Person> {
    Ok(Person {
        login: login(r.try_get("login")?)?,
        name: r.try_get("name")?,
        email: r.try_get("email")?,
        canvas_user_id: r.try_get("canvas_user_id")?,
    })
}

/// Makes sure the person exists; fills in what is known (never erases known details).
pub async fn upsert_person(
    conn: &mut AnyConnection,
    person: &Person,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO people (login, name, email, canvas_user_id, first_seen_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (login) DO UPDATE SET \
           name = COALESCE(excluded.name, people.name), \
           email = COALESCE(excluded.email, people.email), \
           canvas_user_id = COALESCE(excluded.canvas_user_id, people.canvas_user_id), \
           updated_at = excluded.updated_at",
    )
    .bind(person.login.as_str())
    .bind(person.name.as_deref())
    .bind(person.email.as_deref())
    .bind(person.canvas_user_id)
    .bind(ts(now))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn person(conn: &mut AnyConnection, login: &Login) -> StoreResult<Option<Person>> {
    let row = sqlx::query("SELECT login, name, email, canvas_user_id FROM people WHERE login = $1")
        .bind(login.as_str())
        .fetch_optional(conn)
        .await?;
    row.map(|r| person_row(&r)).transpose()
}

/// People whose login or name contains `term` (case-insensitive), for the help desk.
pub async fn search_people(
    conn: &mut AnyConnection,
    term: &str,
    limit: i64,
) -> StoreResult<Vec<Person>> {
    let pattern = format!("%{}%", term.to_lowercase().replace(['%', '_'], ""));
    let rows = sqlx::query(
        "SELECT login, name, email, canvas_user_id FROM people \
         WHERE login LIKE $1 OR LOWER(COALESCE(name, '')) LIKE $1 ORDER BY login LIMIT $2",
    )
    .bind(pattern)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(person_row).collect()
}

/// The next `limit` people tokendesk found in Canvas, by Canvas user id after `after`:
/// reconciliation lists each one's tokens.
pub async fn people_in_canvas(
    conn: &mut AnyConnection,
    after: i64,
    limit: i64,
) -> StoreResult<Vec<(i64, Login)>> {
    let rows = sqlx::query(
        "SELECT canvas_user_id, login FROM people WHERE canvas_user_id > $1 \
         ORDER BY canvas_user_id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, login(r.try_get(1)?)?)))
        .collect()
}

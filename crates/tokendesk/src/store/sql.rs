//! What every query module shares: times as stored, and SQL lists of states derived from the
//! domain's state sets (never written out by hand).

use time::OffsetDateTime;

use super::{StoreError, StoreResult};
use crate::domain::StateSet;

/// An instant as stored: Unix seconds, UTC.
pub(crate) fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// A stored instant.
pub(crate) fn from_ts(secs: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| StoreError::Corrupt(format!("time {secs} out of range")))
}

/// `'a','b'`: the stored names of the members of a state set for which `keep` holds, for an
/// `IN (…)` list. The names are the domain's fixed identifiers, so they are safe to inline.
pub(crate) fn names_in<S: StateSet>(keep: impl Fn(S) -> bool) -> String {
    S::names_where(keep)
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A guarded update's outcome: it changed its one row, or the row had moved on (someone else
/// changed it first), a `Conflict`.
pub(crate) fn one_row(done: &sqlx::any::AnyQueryResult) -> StoreResult<()> {
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict)
    }
}

/// `columns` (a comma-separated list) of the table aliased `alias` in a joined select, each
/// renamed with `prefix` (`t.id AS t_id, …`; no renaming when `prefix` is empty).
pub(crate) fn select_list(alias: &str, columns: &str, prefix: &str) -> String {
    columns
        .split(',')
        .map(str::trim)
        .map(|c| {
            if prefix.is_empty() {
                format!("{alias}.{c}")
            } else {
                format!("{alias}.{c} AS {prefix}{c}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a stored state name back.
pub(crate) fn state<S: StateSet>(what: &str, raw: &str) -> StoreResult<S> {
    S::from_name(raw).ok_or_else(|| StoreError::Corrupt(format!("{what} {raw:?}")))
}

/// A value bound to a placeholder of a [`ListQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Int(i64),
    Text(String),
}

impl From<i64> for Arg {
    fn from(n: i64) -> Arg {
        Arg::Int(n)
    }
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Text(s.to_owned())
    }
}

/// A list's query, built from the conditions its filter has. A condition that does not apply
/// is left out rather than written `($1 IS NULL OR col = $1)`: the planner then sees exactly
/// what it must serve, and serves it from an index (`tests/it/store.rs` asks each backend for
/// the plan of every list query and fails on a full scan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub sql: String,
    pub args: Vec<Arg>,
}

/// The conditions of a [`ListQuery`] being built, with their arguments in placeholder order.
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    conds: Vec<String>,
    args: Vec<Arg>,
}

impl Conditions {
    /// A placeholder (`$n`) for the next argument.
    pub(crate) fn arg(&mut self, value: impl Into<Arg>) -> String {
        self.args.push(value.into());
        format!("${}", self.args.len())
    }

    /// Adds a condition (written with placeholders from [`Conditions::arg`]).
    pub(crate) fn and(&mut self, cond: impl Into<String>) {
        self.conds.push(cond.into());
    }

    /// `column = $n`.
    pub(crate) fn equals(&mut self, column: &str, value: impl Into<Arg>) {
        let p = self.arg(value);
        self.and(format!("{column} = {p}"));
    }

    /// `head WHERE … tail`; `tail` (ORDER BY, LIMIT) may use placeholders taken last.
    pub(crate) fn build(self, head: &str, tail: &str) -> ListQuery {
        let sql = if self.conds.is_empty() {
            format!("{head} {tail}")
        } else {
            format!("{head} WHERE {} {tail}", self.conds.join(" AND "))
        };
        ListQuery {
            sql,
            args: self.args,
        }
    }
}

impl ListQuery {
    /// The query with its arguments bound.
    pub(crate) fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.sql.as_str()));
        for a in &self.args {
            q = match a {
                Arg::Int(n) => q.bind(*n),
                Arg::Text(s) => q.bind(s.as_str()),
            };
        }
        q
    }

    /// Runs it.
    pub(crate) async fn fetch_all(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> StoreResult<Vec<sqlx::any::AnyRow>> {
        Ok(self.query().fetch_all(conn).await?)
    }
}

/// How the backend would run `query`: SQLite's `EXPLAIN QUERY PLAN` details, or PostgreSQL's
/// `EXPLAIN` lines, asked with sequential scans, bitmap scans and sorts discouraged (for this
/// connection's session, and reset afterwards): a small test table then does not hide a missing index, and a
/// `Seq Scan` or a `Sort` appears only where no index can serve the query and its order.
pub async fn query_plan(
    conn: &mut sqlx::AnyConnection,
    backend: super::Backend,
    query: &ListQuery,
) -> StoreResult<Vec<String>> {
    use sqlx::Row;
    let explain = ListQuery {
        sql: match backend {
            super::Backend::Sqlite => format!("EXPLAIN QUERY PLAN {}", query.sql),
            super::Backend::Postgres => format!("EXPLAIN {}", query.sql),
        },
        args: query.args.clone(),
    };
    if backend == super::Backend::Postgres {
        for setting in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("SET {setting} = off")))
                .execute(&mut *conn)
                .await?;
        }
    }
    let rows = explain.fetch_all(&mut *conn).await;
    if backend == super::Backend::Postgres {
        // The connection goes back to its pool as it came: the planner's settings reset.
        for setting in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("RESET {setting}")))
                .execute(&mut *conn)
                .await?;
        }
    }
    rows?
        .iter()
        .map(|r| {
            let column = match backend {
                super::Backend::Sqlite => "detail",
                super::Backend::Postgres => "QUERY PLAN",
            };
            Ok(r.try_get::<String, _>(column)?)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::request::RequestState;

    #[test]
    fn lists_come_from_the_state_sets() {
        assert_eq!(
            names_in::<RequestState>(RequestState::is_open),
            "'submitted','approved','failed'"
        );
        assert_eq!(
            names_in::<RequestState>(RequestState::holds_token),
            "'issued','activated'"
        );
        let back: RequestState = state("request state", "issued").unwrap();
        assert_eq!(back, RequestState::Issued);
        assert!(state::<RequestState>("request state", "nope").is_err());
    }
}

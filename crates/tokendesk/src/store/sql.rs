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

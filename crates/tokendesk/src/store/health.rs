//! Whether the database answers. When a connection cannot be had (PostgreSQL stopped, the
//! network gone), the store says so once in the log, and from then on refuses at once instead
//! of making every caller wait `database.acquire_timeout_secs`: pages and the API answer 503
//! with `Retry-After` without hanging. A probe (`Store::probe`, once a second while down) finds
//! when it is back, and that is said once too.

use std::sync::Mutex;
use std::time::Instant;

use super::{Backend, StoreError};

/// The database's standing, shared by a store's clones.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// Since when the database has not answered, and why (the first failure's cause).
    down: Mutex<Option<(Instant, String)>>,
    /// Wakes the callers waiting for a connection when the database is marked down.
    went_down: tokio::sync::Notify,
    /// Whether a caller is asking the server directly whether it is there.
    asking: std::sync::atomic::AtomicBool,
}

impl StoreError {
    /// Whether this says the database cannot be reached (rather than that a query failed).
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Unreachable(_) => true,
            StoreError::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::PoolTimedOut
                ) || goes_away(e)
            }
            _ => false,
        }
    }
}

impl StoreError {
    /// Whether the database refused to store anything because of its disk: full, or
    /// read-only (SQLite's `SQLITE_FULL`/`SQLITE_READONLY` and their extended codes,
    /// PostgreSQL's `disk_full` and `read_only_sql_transaction`). Nothing was changed.
    pub fn is_storage_refused(&self) -> bool {
        let StoreError::Database(e) = self else {
            return false;
        };
        refuses_storage(e)
    }
}

/// PostgreSQL going away under a connection: a connection exception (SQLSTATE class 08) or
/// operator intervention (class 57P: `admin_shutdown` as the server stops or restarts,
/// `crash_shutdown`, `cannot_connect_now` while it starts up or shuts down). The query did not
/// happen because the database is not there, as with a refused connection.
fn goes_away(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
}

/// See [`StoreError::is_storage_refused`].
pub(super) fn refuses_storage(e: &sqlx::Error) -> bool {
    let Some(code) = e.as_database_error().and_then(|d| d.code()) else {
        return false;
    };
    match code.parse::<u32>() {
        // SQLite: the primary code is the low byte of the extended one.
        Ok(n) => matches!(n & 0xff, 8 | 13),
        Err(_) => matches!(code.as_ref(), "53100" | "25006"),
    }
}

impl Health {
    /// Completes when the database is next marked down.
    pub(super) fn went_down(&self) -> tokio::sync::futures::Notified<'_> {
        self.went_down.notified()
    }

    /// Runs `question` unless another caller is running one already (then `None`).
    pub(super) async fn ask<T>(&self, question: impl std::future::Future<Output = T>) -> Option<T> {
        use std::sync::atomic::Ordering;
        if self
            .asking
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return None;
        }
        // Done asking when the question ends, or is dropped half-way (its caller went away).
        struct Asked<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Asked<'_> {
            fn drop(&mut self) {
                self.0.store(false, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _asked = Asked(&self.asking);
        Some(question.await)
    }

    /// Refuses at once while the database is known to be down.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match &*down {
            Some((since, why)) => Err(StoreError::Unreachable(format!(
                "{why} (for {} s)",
                since.elapsed().as_secs()
            ))),
            None => Ok(()),
        }
    }

    pub(super) fn is_down(&self) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Looks at an outcome: a failure to reach the database marks it down (logged once, with
    /// its cause); a success after that marks it back (logged once). SQLite is a local file:
    /// its time-outs are contention, not an outage.
    pub(super) fn note<T>(
        &self,
        backend: Backend,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &result {
            Ok(_) => self.up(),
            Err(e) if backend == Backend::Postgres && e.is_unreachable() => {
                let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
                if down.is_none() {
                    let why = crate::logging::chain(e);
                    tracing::error!(
                        cause = %why,
                        "the database does not answer: answering 503 until it is back"
                    );
                    *down = Some((Instant::now(), why));
                    self.went_down.notify_waiters();
                }
            }
            Err(_) => {}
        }
        result
    }

    fn up(&self) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((since, _)) = down.take() {
            tracing::info!(
                after_secs = since.elapsed().as_secs(),
                "the database answers again"
            );
        }
    }
}

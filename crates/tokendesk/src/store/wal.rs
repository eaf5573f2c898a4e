//! SQLite: the WAL is copied back into the database file (a checkpoint) here, on a connection
//! of its own, beside the writers, not inside a writer's commit.
//!
//! By default SQLite checkpoints in the commit that takes the WAL past 1,000 pages: that
//! commit copies every page written since the last one into the database file and waits for
//! its `fsync`, and its group's callers (see `tx`) wait with it, several milliseconds longer
//! than for any other commit. Here, every commit wakes the checkpointer, which waits
//! [`CHECKPOINT_AFTER`] for more to come, then runs a `PASSIVE` checkpoint: it copies what no
//! reader still needs and never holds up a writer or a reader. The writers' connections keep a
//! far higher automatic threshold ([`AUTOCHECKPOINT_PAGES`]), a net for a checkpointer that
//! cannot keep up (a disk refusing its writes): the WAL then stays bounded as before.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyPool, Row};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, watch};

use super::tx::Refused;

/// How long the checkpointer lets commits gather after the first one that woke it.
pub(super) const CHECKPOINT_AFTER: Duration = Duration::from_millis(100);

/// `wal_autocheckpoint` of every connection: ten times SQLite's default, so that the
/// checkpointer, not a commit, checkpoints while it keeps up.
pub(super) const AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Wakes the checkpointer after a commit; stops it when the store closes, or when the last
/// handle to the store is dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    wake: Arc<Notify>,
    stop: watch::Sender<()>,
    /// Held through each checkpoint: SQLite runs one at a time and answers any other at once
    /// with "busy", so the erasure's own (see `tx`) waits here for this one to end.
    running: Arc<Mutex<()>>,
}

impl Checkpointer {
    /// Starts checkpointing on `pool` (at most one connection, its own); a checkpoint the
    /// database refuses for its file's sake is noted in `refused` like a write (see `tx`).
    pub(super) fn spawn(pool: AnyPool, refused: Refused) -> Arc<Checkpointer> {
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(());
        let running = Arc::new(Mutex::new(()));
        tokio::spawn(checkpoints(
            pool,
            refused,
            wake.clone(),
            running.clone(),
            stopped,
        ));
        Arc::new(Checkpointer {
            wake,
            stop,
            running,
        })
    }

    /// No checkpoint runs here while this lives.
    pub(super) async fn hold(&self) -> OwnedMutexGuard<()> {
        self.running.clone().lock_owned().await
    }

    /// Something committed: a checkpoint is due soon.
    pub(super) fn committed(&self) {
        self.wake.notify_one();
    }

    /// Stops now, and closes its connection (the store is closing).
    pub(super) async fn stop(&self) {
        let _ = self.stop.send(());
        // The task closes the pool as it stops; waiting here for it is waiting for the close.
        self.stop.closed().await;
    }
}

async fn checkpoints(
    pool: AnyPool,
    refused: Refused,
    wake: Arc<Notify>,
    running: Arc<Mutex<()>>,
    mut stop: watch::Receiver<()>,
) {
    // Whether the last checkpoint failed (logged once, until one succeeds again).
    let mut failing = false;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.changed() => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECKPOINT_AFTER) => {}
            _ = stop.changed() => break,
        }
        let done = {
            let _running = running.lock().await;
            checkpoint(&pool).await
        };
        if let Err(e) = &done {
            refused.note(e);
        }
        match done {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints succeed again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(
                    error = %e,
                    "cannot checkpoint the WAL; it grows until a checkpoint succeeds (commits checkpoint past {AUTOCHECKPOINT_PAGES} pages)"
                );
            }
            Err(e) => tracing::debug!(error = %e, "the WAL checkpoint failed again"),
        }
    }
    pool.close().await;
    drop(stop);
}

/// One `PASSIVE` checkpoint: as much as no reader still needs.
async fn checkpoint(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    let (log, copied): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
    tracing::trace!(wal_pages = log, copied, "WAL checkpoint");
    Ok(())
}

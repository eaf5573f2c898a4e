//! The status look-up cache: recently read request views, kept in memory and dropped the moment
//! anything they show changes.
//!
//! What may change a view, and how the cache hears of it:
//! - **This process's writes.** Every write runs in a [`super::Tx`], and the database itself
//!   notes which requests the transaction changed (see `tx.rs`); when the transaction has
//!   committed, those requests leave the cache, before the writer answers anyone. A person
//!   therefore always reads their own writes.
//! - **Other instances' writes (PostgreSQL).** Triggers on `requests`, `tokens` and `envelopes`
//!   send `NOTIFY tokendesk_request_changed, '<request id>'` in the writing transaction, so
//!   PostgreSQL delivers it when (and only if) that transaction commits. Each instance listens on
//!   its own connection; while that connection is down the cache serves nothing (every look-up
//!   reads the database), and it starts empty again once listening resumes.
//! - **SQLite** has one writing process, the one serving (`tokendesk serve` holds a lock file
//!   beside the database), so its own writes are all there are.
//!
//! A read that races a change can never put a stale view back: a look-up takes a ticket (the
//! count of changes heard so far) before it reads, and its result is kept only when no change to
//! that request was heard since. Entries also expire after a set time, a last bound on how stale
//! a view could be if a notification were ever lost without the connection dropping.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;

use super::StoredToken;
use crate::domain::envelope::Envelope;
use crate::domain::request::Request;

/// What a status look-up shows: a request, its token and its newest envelope.
pub type RequestViewRow = (Request, Option<StoredToken>, Option<Envelope>);

/// The PostgreSQL channel the change triggers notify (migration 0003).
const CHANGE_CHANNEL: &str = "tokendesk_request_changed";

/// How many recent changes are remembered for tickets; a read that overlapped more changes
/// than this is not kept.
const RECENT_CHANGES: usize = 4096;

/// How big the cache is and how long an entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewCacheOptions {
    /// Most request views kept; 0 turns the cache off.
    pub entries: usize,
    /// How long an entry is served after it was read.
    pub ttl: Duration,
}

impl Default for ViewCacheOptions {
    fn default() -> Self {
        ViewCacheOptions {
            entries: 50_000,
            ttl: Duration::from_secs(10),
        }
    }
}

/// Look-ups served from memory and from the database since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    /// Whether entries are served now (on PostgreSQL: whether the listener is connected).
    pub live: bool,
}

/// Taken before a look-up reads the database; see [`ViewCache::keep`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

pub struct ViewCache {
    options: ViewCacheOptions,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for ViewCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewCache")
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish()
    }
}

struct State {
    /// Whether entries may be served and kept.
    live: bool,
    /// Changes heard so far; every change gets the next number.
    changes: u64,
    /// Tickets below this are refused: everything up to here was forgotten at once (a clear,
    /// or a change that fell off `recent`).
    floor: u64,
    /// The latest changes: (number, request id), oldest first.
    recent: VecDeque<(u64, i64)>,
    entries: HashMap<i64, Entry>,
    /// When the expired entries were last dropped (see [`ViewCache::keep`]).
    swept_at: Instant,
}

struct Entry {
    view: Arc<RequestViewRow>,
    read_at: Instant,
}

impl ViewCache {
    /// A cache that serves at once (`live`), or only once told (PostgreSQL, when listening).
    pub fn new(options: ViewCacheOptions, live: bool) -> ViewCache {
        ViewCache {
            options,
            state: Mutex::new(State {
                live: live && options.entries > 0,
                changes: 0,
                floor: 0,
                recent: VecDeque::new(),
                entries: HashMap::new(),
                swept_at: Instant::now(),
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements: a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached view of a request, if there is a fresh one.
    pub fn get(&self, id: i64) -> Option<Arc<RequestViewRow>> {
        if self.options.entries == 0 {
            return None;
        }
        let found = {
            let state = self.state();
            state
                .entries
                .get(&id)
                .filter(|e| state.live && e.read_at.elapsed() < self.options.ttl)
                .map(|e| e.view.clone())
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Call before reading a view from the database.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.state().changes)
    }

    /// Keeps a view read after `ticket` was taken, unless the request changed since (then what
    /// was read may already be old) or the cache is not live.
    pub fn keep(&self, ticket: Ticket, id: i64, view: Arc<RequestViewRow>) {
        if self.options.entries == 0 {
            return;
        }
        let mut state = self.state();
        if !state.live || ticket.0 < state.floor {
            return;
        }
        let changed_since = state
            .recent
            .iter()
            .rev()
            .take_while(|(n, _)| *n > ticket.0)
            .any(|(_, changed)| *changed == id);
        if changed_since {
            return;
        }
        // Expired views are dropped once per `ttl`, not only when the cache is full: its
        // memory follows what was read lately instead of growing to `entries` stale views
        // (about 50 MB by default), which `scripts/soak` saw as memory growing for minutes.
        let now = Instant::now();
        if now.duration_since(state.swept_at) >= self.options.ttl {
            let ttl = self.options.ttl;
            state
                .entries
                .retain(|_, e| now.duration_since(e.read_at) < ttl);
            state.swept_at = now;
        }
        if state.entries.len() >= self.options.entries && !state.entries.contains_key(&id) {
            make_room(&mut state.entries, self.options);
        }
        state.entries.insert(
            id,
            Entry {
                view,
                read_at: Instant::now(),
            },
        );
    }

    /// These requests changed (committed): forget their views.
    pub fn changed(&self, ids: &[i64]) {
        if ids.is_empty() || self.options.entries == 0 {
            return;
        }
        let mut state = self.state();
        for &id in ids {
            state.changes += 1;
            let n = state.changes;
            state.entries.remove(&id);
            state.recent.push_back((n, id));
            if state.recent.len() > RECENT_CHANGES
                && let Some((forgotten, _)) = state.recent.pop_front()
            {
                state.floor = state.floor.max(forgotten);
            }
        }
    }

    /// Forgets everything and serves (`live`) or stops serving until told again.
    pub fn reset(&self, live: bool) {
        let mut state = self.state();
        state.changes += 1;
        state.floor = state.changes;
        state.recent.clear();
        state.entries.clear();
        state.live = live && self.options.entries > 0;
    }

    pub fn stats(&self) -> ViewCacheStats {
        let state = self.state();
        ViewCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: state.entries.len(),
            live: state.live,
        }
    }
}

/// Makes room for one more entry: drops the expired ones, and if that is not enough, about a
/// tenth of the rest (in the map's own, randomly seeded, order).
fn make_room(entries: &mut HashMap<i64, Entry>, options: ViewCacheOptions) {
    let now = Instant::now();
    entries.retain(|_, e| now.duration_since(e.read_at) < options.ttl);
    if entries.len() < options.entries {
        return;
    }
    let evict = (options.entries / 10).max(1);
    let victims: Vec<i64> = entries.keys().take(evict).copied().collect();
    for id in victims {
        entries.remove(&id);
    }
}

// ---- PostgreSQL: hearing other instances' changes --------------------------------------------

/// Stops the listener when the last handle to the store is dropped.
#[derive(Debug)]
pub(super) struct ListenerGuard {
    stop: watch::Sender<()>,
}

impl ListenerGuard {
    /// Stops the listener now (the store is closing).
    pub(super) fn stop(&self) {
        let _ = self.stop.send(());
    }
}

/// Starts listening for change notices on a connection of its own (`pool`, at most one
/// connection). The cache serves only while the listener is connected.
pub(super) fn spawn_listener(pool: PgPool, cache: Arc<ViewCache>) -> ListenerGuard {
    let (stop, stopped) = watch::channel(());
    tokio::spawn(listen(pool, cache, stopped));
    ListenerGuard { stop }
}

const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(30);

async fn listen(pool: PgPool, cache: Arc<ViewCache>, mut stop: watch::Receiver<()>) {
    let mut retry = FIRST_RETRY;
    loop {
        let connect = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANGE_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let connected = tokio::select! {
            connected = connect => connected,
            _ = stop.changed() => break,
        };
        match connected {
            Ok(mut listener) => {
                cache.reset(true);
                tracing::debug!("status look-up cache: listening for changes");
                retry = FIRST_RETRY;
                let lost = loop {
                    let next = tokio::select! {
                        next = listener.try_recv() => next,
                        _ = stop.changed() => {
                            cache.reset(false);
                            pool.close().await;
                            return;
                        }
                    };
                    match next {
                        Ok(Some(notice)) => match notice.payload().parse::<i64>() {
                            Ok(id) => cache.changed(&[id]),
                            Err(_) => cache.reset(true),
                        },
                        Ok(None) => break "the connection was lost".to_owned(),
                        Err(e) => break e.to_string(),
                    }
                };
                cache.reset(false);
                tracing::warn!(
                    error = %lost,
                    "status look-up cache: stopped hearing changes; look-ups read the database until it listens again"
                );
            }
            Err(e) => {
                cache.reset(false);
                tracing::warn!(
                    error = %e,
                    retry_in_ms = retry.as_millis() as u64,
                    "status look-up cache: cannot listen for changes; look-ups read the database"
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = stop.changed() => break,
        }
        retry = (retry * 2).min(LAST_RETRY);
    }
    cache.reset(false);
    pool.close().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::Login;
    use crate::domain::RequestId;
    use crate::domain::request::{Request, RequestState};

    fn view(id: i64, purpose: &str) -> Arc<RequestViewRow> {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let date = now.date();
        Arc::new((
            Request {
                id: RequestId(id),
                requester: Login::parse("sam.student").unwrap(),
                purpose: purpose.to_owned(),
                application: None,
                requested_expires_on: date,
                expires_on: date,
                state: RequestState::Submitted,
                decided_by: None,
                reason: None,
                created_at: now,
                updated_at: now,
                renews: None,
            },
            None,
            None,
        ))
    }

    fn cache(entries: usize) -> ViewCache {
        ViewCache::new(
            ViewCacheOptions {
                entries,
                ttl: Duration::from_secs(60),
            },
            true,
        )
    }

    fn purpose(cache: &ViewCache, id: i64) -> Option<String> {
        cache.get(id).map(|v| v.0.purpose.clone())
    }

    #[test]
    fn keeps_what_was_read_and_forgets_what_changed() {
        let c = cache(10);
        assert_eq!(purpose(&c, 1), None);
        let t = c.ticket();
        c.keep(t, 1, view(1, "first"));
        assert_eq!(purpose(&c, 1).as_deref(), Some("first"));
        c.changed(&[2]);
        assert_eq!(
            purpose(&c, 1).as_deref(),
            Some("first"),
            "another request changed"
        );
        c.changed(&[1]);
        assert_eq!(purpose(&c, 1), None);
        let stats = c.stats();
        assert_eq!((stats.hits, stats.misses), (2, 2));
    }

    #[test]
    fn a_read_that_overlapped_a_change_is_not_kept() {
        let c = cache(10);
        let before = c.ticket();
        // The change commits (and is heard) while the read is under way.
        c.changed(&[7]);
        c.keep(before, 7, view(7, "old"));
        assert_eq!(purpose(&c, 7), None, "what was read may predate the change");
        // A change to another request does not spoil the read.
        let t = c.ticket();
        c.changed(&[8]);
        c.keep(t, 7, view(7, "new"));
        assert_eq!(purpose(&c, 7).as_deref(), Some("new"));
    }

    #[test]
    fn a_read_older_than_the_remembered_changes_is_not_kept() {
        let c = cache(10);
        let old = c.ticket();
        let others: Vec<i64> = (100..100 + RECENT_CHANGES as i64 + 1).collect();
        c.changed(&others);
        c.keep(old, 1, view(1, "maybe stale"));
        assert_eq!(purpose(&c, 1), None);
    }

    #[test]
    fn nothing_is_served_or_kept_while_not_live() {
        let c = cache(10);
        c.keep(c.ticket(), 1, view(1, "a"));
        let during = c.ticket();
        c.reset(false);
        assert_eq!(purpose(&c, 1), None, "a reset forgets everything");
        c.keep(c.ticket(), 1, view(1, "b"));
        assert_eq!(purpose(&c, 1), None, "not kept while not live");
        c.reset(true);
        c.keep(during, 1, view(1, "c"));
        assert_eq!(
            purpose(&c, 1),
            None,
            "a read from before the reset is refused"
        );
        c.keep(c.ticket(), 1, view(1, "d"));
        assert_eq!(purpose(&c, 1).as_deref(), Some("d"));
        assert!(c.stats().live);
    }

    #[test]
    fn entries_expire() {
        let c = ViewCache::new(
            ViewCacheOptions {
                entries: 10,
                ttl: Duration::from_millis(30),
            },
            true,
        );
        c.keep(c.ticket(), 1, view(1, "a"));
        assert!(c.get(1).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get(1).is_none());
    }

    #[test]
    fn expired_views_are_dropped_before_the_cache_is_full() {
        let c = ViewCache::new(
            ViewCacheOptions {
                entries: 1000,
                ttl: Duration::from_millis(30),
            },
            true,
        );
        for id in 0..100 {
            c.keep(c.ticket(), id, view(id, "x"));
        }
        assert_eq!(c.stats().entries, 100);
        std::thread::sleep(Duration::from_millis(40));
        c.keep(c.ticket(), 100, view(100, "fresh"));
        assert_eq!(c.stats().entries, 1, "only the fresh view is kept");
    }

    #[test]
    fn stays_within_its_size() {
        let c = cache(50);
        for id in 0..500 {
            c.keep(c.ticket(), id, view(id, "x"));
            assert!(c.stats().entries <= 50);
        }
        assert!(c.get(499).is_some(), "the newest entry is there");
    }

    #[test]
    fn size_zero_is_off() {
        let c = cache(0);
        c.keep(c.ticket(), 1, view(1, "a"));
        assert!(c.get(1).is_none());
        assert!(!c.stats().live);
    }
}

//! A concurrency governor that keeps in-flight requests under Canvas's throttling ceiling.
//!
//! Canvas charges every request an up-front cost `u` (default 50) from its arrival until it
//! settles to its real cost `c` (about 0.05), and refuses a request when the bucket's count would
//! reach the high-water mark `h` (canvas-api.md §4). The count is `u·K + B`: `K` requests
//! running, and a backlog `B` of settled costs not yet leaked. Every response reports
//! `X-Rate-Limit-Remaining`, `R = h − count` just after it settled, so the response of a request
//! that settled while `K` ran (itself included) reads `R = h − u·(K − 1) − c − B`. The `K`
//! running are safe while `u·K + B < h`, that is `R > u − c`; one more fits when `R > 2u − c`.
//!
//! So the governor needs no model of the network: it watches the lowest `R` the responses
//! report while the concurrency is at its ceiling.
//!
//! - A *round* begins whenever the ceiling changes. It ends once as many requests as the
//!   ceiling, all started in that round, have been answered, and the ceiling was reached while
//!   they ran (with fewer callers waiting nothing is learned about the ceiling).
//! - At the end of a round whose lowest `R` leaves room for `n ≥ 1` more requests (`R − u −
//!   margin ≥ n·u`), the ceiling rises by `n`, at most doubling; otherwise a new round begins.
//! - A response of the round with `R < u + margin` means the ceiling is at the edge (the backlog
//!   grew, or someone else spends from the same token): it drops by one at once.
//! - A throttled response halves the ceiling, and the ceiling may then grow back by at most one
//!   request per round; it never goes below 1.
//!
//! The margin is a twentieth of a request. Requests started before a round are not taken into
//! account in it: they ran under another ceiling.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Tuning of the throttle-aware concurrency governor.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// Canvas's up-front cost per request (`request_throttle.up_front_cost`, default 50).
    pub up_front_cost: f64,
    /// Concurrency before the first response tells the headroom (default 1).
    pub initial_concurrency: usize,
    /// Hard ceiling on concurrent requests, whatever Canvas reports (default 64).
    pub max_concurrency: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            up_front_cost: 50.0,
            initial_concurrency: 1,
            max_concurrency: 64,
        }
    }
}

/// The margin kept, in requests' up-front costs.
const MARGIN: f64 = 0.05;

/// After slow start a round lasts this many times its ceiling in answers: a single reading
/// may miss a request on its way to Canvas, so the lowest of more readings is the one trusted.
const STEADY_ROUNDS: usize = 4;

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// The requests in flight, by sequence number, each with the fewest requests that were in
    /// flight at once while it ran.
    outstanding: BTreeMap<u64, usize>,
    next_seq: u64,
    limit: usize,
    /// Until the first round that finds less room than its ceiling (or a throttled response):
    /// the ceiling may double per round, afterwards it rises by one.
    slow_start: bool,
    waiters: VecDeque<oneshot::Sender<u64>>,
    round: Round,
}

/// What the current round has seen.
#[derive(Debug)]
struct Round {
    /// Requests started at or after this sequence number belong to the round.
    first_seq: u64,
    /// Their responses so far that ran with every slot taken all along.
    answered: usize,
    /// The lowest `X-Rate-Limit-Remaining` among those.
    lowest: f64,
}

impl Round {
    fn new(first_seq: u64) -> Self {
        Self {
            first_seq,
            answered: 0,
            lowest: f64::INFINITY,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Governor {
    config: ThrottleConfig,
    state: Mutex<State>,
}

impl Governor {
    pub(crate) fn new(config: ThrottleConfig) -> Arc<Self> {
        let max = config.max_concurrency.max(1);
        let config = ThrottleConfig {
            up_front_cost: if config.up_front_cost > 0.0 {
                config.up_front_cost
            } else {
                50.0
            },
            initial_concurrency: config.initial_concurrency.clamp(1, max),
            max_concurrency: max,
        };
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                outstanding: BTreeMap::new(),
                next_seq: 0,
                limit: config.initial_concurrency,
                slow_start: true,
                waiters: VecDeque::new(),
                round: Round::new(0),
            }),
            config,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn max_concurrency(&self) -> usize {
        self.config.max_concurrency
    }

    pub(crate) fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Waits (first come, first served) until a request may start.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Permit {
        let rx = {
            let mut state = self.lock();
            if state.waiters.is_empty() && state.in_flight < state.limit {
                let seq = Self::take_slot(&mut state);
                return Permit {
                    governor: Arc::clone(self),
                    seq,
                };
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push_back(tx);
            rx
        };
        let mut waiting = Waiting {
            rx: Some(rx),
            governor: Arc::clone(self),
        };
        let granted = match waiting.rx.as_mut() {
            Some(rx) => rx.await.ok(),
            None => None,
        };
        waiting.rx = None;
        // `None` means the sender was dropped without granting: cannot happen while the
        // governor lives, but then take a slot anyway rather than hang.
        let seq = granted.unwrap_or_else(|| Self::take_slot(&mut self.lock()));
        Permit {
            governor: Arc::clone(self),
            seq,
        }
    }

    fn take_slot(state: &mut State) -> u64 {
        let seq = state.next_seq;
        state.next_seq += 1;
        state.in_flight += 1;
        // Sampled at each release from now on (see `release`) and at its own answer.
        state.outstanding.insert(seq, usize::MAX);
        seq
    }

    /// Sets a new ceiling and begins a round.
    fn set_limit(state: &mut State, limit: usize) {
        state.limit = limit;
        state.round = Round::new(state.next_seq);
    }

    /// Feeds back what the response to `permit`'s request said.
    pub(crate) fn observe(&self, permit: &Permit, remaining: Option<f64>, throttled: bool) {
        let cost = self.config.up_front_cost;
        let max = self.config.max_concurrency;
        let mut state = self.lock();
        if throttled {
            let halved = (state.limit / 2).max(1);
            state.slow_start = false;
            Self::set_limit(&mut state, halved);
            tracing::debug!(
                limit = state.limit,
                "Canvas throttled a request; concurrency halved"
            );
            return;
        }
        if permit.seq < state.round.first_seq {
            // Started under another ceiling.
            return;
        }
        let remaining = remaining.filter(|r| r.is_finite());
        if let Some(remaining) = remaining
            && remaining < cost * (1.0 + MARGIN)
        {
            state.slow_start = false;
            let lower = (state.limit.saturating_sub(1)).max(1);
            Self::set_limit(&mut state, lower);
            return;
        }
        // Only a request that ran with every slot taken all along tells about the ceiling.
        let fewest = state.outstanding.get(&permit.seq).copied().unwrap_or(0);
        if fewest.min(state.in_flight) < state.limit {
            return;
        }
        state.round.answered += 1;
        state.round.lowest = state.round.lowest.min(remaining.unwrap_or(f64::INFINITY));
        let needed = if state.slow_start {
            state.limit
        } else {
            state.limit * STEADY_ROUNDS
        };
        if state.round.answered < needed {
            return;
        }
        // Without the header (throttling off, or a proxy) the room is unknown: grow by one.
        let room = if state.round.lowest.is_finite() {
            ((state.round.lowest - cost * (1.0 + MARGIN)) / cost)
                .floor()
                .max(0.0) as usize
        } else {
            1
        };
        let step = if state.slow_start { state.limit } else { 1 };
        if room < state.limit {
            state.slow_start = false;
        }
        let limit = (state.limit + room.min(step)).min(max);
        Self::set_limit(&mut state, limit);
        Self::grant(&mut state);
    }

    fn release(&self, seq: u64) {
        let mut state = self.lock();
        if state.outstanding.remove(&seq).is_some() {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        Self::grant(&mut state);
        // A slot handed straight to a waiter was never free.
        let in_flight = state.in_flight;
        for fewest in state.outstanding.values_mut() {
            *fewest = (*fewest).min(in_flight);
        }
    }

    fn grant(state: &mut State) {
        while state.in_flight < state.limit {
            let Some(tx) = state.waiters.pop_front() else {
                break;
            };
            let seq = state.next_seq;
            if tx.send(seq).is_ok() {
                Self::take_slot(state);
            }
        }
    }
}

/// A slot to run one request; released on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    governor: Arc<Governor>,
    seq: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.governor.release(self.seq);
    }
}

/// Gives back a slot granted to a waiter that was cancelled before it noticed.
struct Waiting {
    rx: Option<oneshot::Receiver<u64>>,
    governor: Arc<Governor>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok(seq) = rx.try_recv() {
                self.governor.release(seq);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What Canvas's default bucket (hwm 600, up-front 50, nothing leaked or backlogged)
    /// answers a request that settled while `running` ran, itself included.
    fn reading(running: usize) -> f64 {
        600.0 - 50.0 * (running as f64 - 1.0) - 0.05
    }

    /// Runs one full round at the current ceiling: every slot taken, then answered as Canvas
    /// would answer with all of them running.
    async fn full_round(g: &Arc<Governor>) -> usize {
        let limit = g.limit();
        let permits: Vec<_> = futures::future::join_all((0..limit).map(|_| g.acquire())).await;
        for p in &permits {
            g.observe(p, Some(reading(limit)), false);
        }
        g.limit()
    }

    #[tokio::test]
    async fn ramps_up_to_what_the_bucket_holds_and_no_further() {
        let g = Governor::new(ThrottleConfig::default());
        assert_eq!(g.limit(), 1);
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(full_round(&g).await);
        }
        // At most doubling per round, and 11 is what fits under 600 (11 · 50 < 600 ≤ 12 · 50).
        assert_eq!(seen, [2, 4, 8, 11, 11, 11, 11, 11]);
    }

    #[tokio::test]
    async fn a_reading_at_the_edge_lowers_the_ceiling_at_once() {
        let g = Governor::new(ThrottleConfig {
            initial_concurrency: 11,
            ..ThrottleConfig::default()
        });
        let permits: Vec<_> = futures::future::join_all((0..11).map(|_| g.acquire())).await;
        // Someone else spends from the token: only 40 units are left.
        g.observe(&permits[0], Some(40.0), false);
        assert_eq!(g.limit(), 10);
        // The rest ran under the old ceiling: they teach nothing about the new one.
        for p in &permits[1..] {
            g.observe(p, Some(40.0), false);
        }
        assert_eq!(g.limit(), 10);
    }

    #[tokio::test]
    async fn room_is_learned_only_at_the_ceiling() {
        let g = Governor::new(ThrottleConfig {
            initial_concurrency: 4,
            ..ThrottleConfig::default()
        });
        // One caller at a time: the bucket looks empty, but the ceiling of 4 was never tried.
        for _ in 0..20 {
            let p = g.acquire().await;
            g.observe(&p, Some(reading(1)), false);
        }
        assert_eq!(g.limit(), 4);
    }

    #[tokio::test]
    async fn throttling_halves_and_never_below_one_then_grows_by_one_per_round() {
        let g = Governor::new(ThrottleConfig {
            initial_concurrency: 10,
            ..ThrottleConfig::default()
        });
        let p = g.acquire().await;
        g.observe(&p, None, true);
        assert_eq!(g.limit(), 5);
        g.observe(&p, None, true);
        g.observe(&p, None, true);
        g.observe(&p, None, true);
        assert_eq!(g.limit(), 1);
        drop(p);
        // Additive recovery, one per steady round, not a jump back to what the readings allow.
        for expected in 2..=4 {
            assert_eq!(rounds_until_it_changes(&g).await, (STEADY_ROUNDS, expected));
        }
    }

    /// Full rounds (of the ceiling's size) until the ceiling changes, and the new ceiling.
    async fn rounds_until_it_changes(g: &Arc<Governor>) -> (usize, usize) {
        let before = g.limit();
        for rounds in 1..=100 {
            let after = full_round(g).await;
            if after != before {
                return (rounds, after);
            }
        }
        (100, before)
    }

    #[tokio::test]
    async fn without_the_header_it_grows_one_per_round() {
        let g = Governor::new(ThrottleConfig::default());
        let mut seen = Vec::new();
        for _ in 0..4 {
            let limit = g.limit();
            let mut rounds = 0;
            while g.limit() == limit && rounds < 100 {
                let permits: Vec<_> =
                    futures::future::join_all((0..limit).map(|_| g.acquire())).await;
                for p in &permits {
                    g.observe(p, None, false);
                }
                rounds += 1;
            }
            seen.push((rounds, g.limit()));
        }
        // Slow start ends at once (no room is known), then one more per steady round.
        assert_eq!(
            seen,
            [(1, 2), (1, 3), (STEADY_ROUNDS, 4), (STEADY_ROUNDS, 5)]
        );
    }

    #[tokio::test]
    async fn waiters_are_served_and_cancellation_returns_slots() {
        let g = Governor::new(ThrottleConfig::default());
        let first = g.acquire().await;
        // A waiter that gives up must not leak a slot.
        let cancelled = tokio::time::timeout(Duration::from_millis(10), g.acquire()).await;
        assert!(cancelled.is_err());
        let waiter = tokio::spawn({
            let g = Arc::clone(&g);
            async move {
                let _p = g.acquire().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.lock().in_flight, 0);
    }
}

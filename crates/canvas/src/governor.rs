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
//!   margin ≥ n·u`), the ceiling rises by `n` while slow start lasts (at most doubling, except
//!   from a single request, whose reading is exact), and by one after it; otherwise a new round
//!   begins. Slow start ends at the first round that finds less room than its ceiling, and after
//!   it a round lasts four times as many answers.
//! - A response of the round with `R < u + margin` means the ceiling is at the edge (the backlog
//!   grew, or someone else spends from the same token): it drops by one at once.
//! - A throttled response halves the ceiling (once: throttled requests started before that do
//!   not halve it again), and the ceiling may then grow back by at most one request per round;
//!   it never goes below 1.
//!
//! Requests are paced: each starts at least 0.9 × (a request's smoothed duration / the ceiling)
//! after the one before (when that is 2 ms or more; timers are coarser below). Unpaced, a
//! ceiling's worth of requests goes out together, settles together, and the bucket empties
//! between the bunches, which forfeits the credit the leak gives a steady client (at 300 ms
//! latency, about a fifth of the throughput).
//!
//! A reading counts only when every slot's request had started at least a millisecond before
//! it was read. The network's round trip is not modelled: on a network slower than a response's
//! spacing, some of ours are still on their way when Canvas answers, the lowest reading shows
//! room that is not there, and the ceiling is then found by a throttled response now and then
//! (halved once per round, then grown back by one).
//!
//! When nothing is in flight the governor starts again from `initial_concurrency` and slow
//! start: an idle bucket drains, and a ceiling learned with the leak's credit would be throttled.
//!
//! The margin is a twentieth of a request. Requests started before a round are not taken into
//! account in it: they ran under another ceiling.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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

/// Requests start at least this share of (a request's duration / the ceiling) apart, so that
/// they do not bunch: a bucket that empties between bunches loses the leak's credit.
const PACE: f64 = 0.9;

/// A request started less than this before a response was read may not have reached Canvas
/// when it answered (a loopback round trip and a scheduler's delay).
const STARTED: Duration = Duration::from_millis(1);

/// Spacing below this is not kept.
const PACE_FINEST: Duration = Duration::from_millis(2);

/// Weight of the newest duration in the smoothed one.
const SMOOTHING: f64 = 1.0 / 16.0;

/// After slow start a round lasts this many times its ceiling in answers: a single reading
/// may miss a request on its way to Canvas, so the lowest of more readings is the one trusted.
const STEADY_ROUNDS: usize = 4;

#[derive(Debug)]
struct State {
    /// The requests in flight, by sequence number.
    outstanding: BTreeMap<u64, Slot>,
    next_seq: u64,
    limit: usize,
    /// Until the first round that finds less room than its ceiling (or a throttled response):
    /// the ceiling may double per round, afterwards it rises by one.
    slow_start: bool,
    waiters: VecDeque<oneshot::Sender<(u64, Instant)>>,
    round: Round,
    /// How long a request takes, smoothed (none before the first answer).
    duration: Option<Duration>,
    /// The earliest start of the next request (pacing).
    next_start: Instant,
    /// The highest ceiling so far.
    peak: usize,
}

impl State {
    /// Requests in flight.
    fn in_flight(&self) -> usize {
        self.outstanding.len()
    }
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// When it may start (see pacing in the module's description).
    start: Instant,
    /// The fewest requests in flight at once while it ran.
    fewest: usize,
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
                outstanding: BTreeMap::new(),
                next_seq: 0,
                limit: config.initial_concurrency,
                slow_start: true,
                waiters: VecDeque::new(),
                round: Round::new(0),
                duration: None,
                next_start: Instant::now(),
                peak: config.initial_concurrency,
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

    /// The highest ceiling so far.
    pub(crate) fn peak(&self) -> usize {
        self.lock().peak
    }

    /// Waits (first come, first served) until a request may start.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Permit {
        let rx = {
            let mut state = self.lock();
            if state.waiters.is_empty() && state.in_flight() < state.limit {
                Ok(Self::take_slot(&mut state))
            } else {
                let (tx, rx) = oneshot::channel();
                state.waiters.push_back(tx);
                Err(rx)
            }
        };
        let rx = match rx {
            Ok((seq, start)) => return self.paced(seq, start).await,
            Err(rx) => rx,
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
        let (seq, start) = granted.unwrap_or_else(|| Self::take_slot(&mut self.lock()));
        self.paced(seq, start).await
    }

    /// The permit for slot `seq`, once its start has come.
    async fn paced(self: &Arc<Self>, seq: u64, start: Instant) -> Permit {
        // Made first, so that a caller that gives up while waiting gives the slot back.
        let permit = Permit {
            governor: Arc::clone(self),
            seq,
        };
        if start > Instant::now() {
            tokio::time::sleep_until(start.into()).await;
        }
        permit
    }

    fn take_slot(state: &mut State) -> (u64, Instant) {
        let seq = state.next_seq;
        state.next_seq += 1;
        let now = Instant::now();
        let start = state.next_start.max(now);
        let spacing = state.duration.map_or(Duration::ZERO, |d| {
            d.mul_f64(PACE / state.limit.max(1) as f64)
        });
        // Timers are about a millisecond coarse: finer pacing would only slow requests down.
        let spacing = if spacing < PACE_FINEST {
            Duration::ZERO
        } else {
            spacing
        };
        state.next_start = start + spacing;
        // `fewest` is sampled at each release from now on (see `release`) and at its answer.
        state.outstanding.insert(
            seq,
            Slot {
                start,
                fewest: usize::MAX,
            },
        );
        (seq, start)
    }

    /// Sets a new ceiling and begins a round.
    fn set_limit(state: &mut State, limit: usize) {
        state.peak = state.peak.max(limit);
        state.limit = limit;
        state.round = Round::new(state.next_seq);
    }

    /// Feeds back what the response to `permit`'s request said.
    pub(crate) fn observe(&self, permit: &Permit, remaining: Option<f64>, throttled: bool) {
        let cost = self.config.up_front_cost;
        // A reading under this is at the edge: one request less fits than run now.
        let edge = cost * (1.0 + MARGIN);
        let max = self.config.max_concurrency;
        let mut state = self.lock();
        if permit.seq < state.round.first_seq {
            // Started under another ceiling: what it met, that change already answered or does
            // not tell about this one.
            return;
        }
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
        let remaining = remaining.filter(|r| r.is_finite());
        if let Some(remaining) = remaining
            && remaining < edge
        {
            state.slow_start = false;
            let lower = (state.limit.saturating_sub(1)).max(1);
            Self::set_limit(&mut state, lower);
            return;
        }
        // Only a request that ran with every slot taken all along, and answered when every
        // other had started (none waiting for its paced start), tells about the ceiling.
        let Some(slot) = state.outstanding.get(&permit.seq).copied() else {
            return;
        };
        let now = Instant::now();
        let all_started = state
            .outstanding
            .values()
            .all(|other| other.start + STARTED <= now);
        let took = slot.start.elapsed();
        state.duration = Some(match state.duration {
            Some(d) => d.mul_f64(1.0 - SMOOTHING) + took.mul_f64(SMOOTHING),
            None => took,
        });
        let fewest = slot.fewest;
        if !all_started || fewest.min(state.in_flight()) < state.limit {
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
            ((state.round.lowest - edge) / cost).floor().max(0.0) as usize
        } else {
            1
        };
        // A lone request's reading is exact (nothing of ours was on its way): take all the room
        // it shows; later, at most double per round while slow start lasts.
        let step = match (state.slow_start, state.limit) {
            (true, 1) => room,
            (true, limit) => limit,
            (false, _) => 1,
        };
        if room < state.limit {
            state.slow_start = false;
        }
        let limit = (state.limit + room.min(step)).min(max);
        Self::set_limit(&mut state, limit);
        Self::grant(&mut state);
    }

    fn release(&self, seq: u64) {
        let mut state = self.lock();
        state.outstanding.remove(&seq);
        Self::grant(&mut state);
        if state.in_flight() == 0 {
            // Idle: what the readings taught may no longer hold (a bucket that empties loses
            // the leak's credit). Start again from one request, whose reading is exact.
            state.slow_start = true;
            let initial = self.config.initial_concurrency;
            if state.limit != initial {
                Self::set_limit(&mut state, initial);
            }
        }
        // A slot handed straight to a waiter was never free.
        let in_flight = state.in_flight();
        for slot in state.outstanding.values_mut() {
            slot.fewest = slot.fewest.min(in_flight);
        }
    }

    fn grant(state: &mut State) {
        while state.in_flight() < state.limit {
            let Some(tx) = state.waiters.pop_front() else {
                break;
            };
            if tx.is_closed() {
                continue;
            }
            let (seq, start) = Self::take_slot(state);
            if tx.send((seq, start)).is_err() {
                // Gave up just now: the slot is free again.
                state.outstanding.remove(&seq);
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
    rx: Option<oneshot::Receiver<(u64, Instant)>>,
    governor: Arc<Governor>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok((seq, _)) = rx.try_recv() {
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

    /// A caller with more work than slots: each answered request's slot goes straight to the
    /// next request, so the governor is never idle.
    struct Busy {
        g: Arc<Governor>,
        held: VecDeque<Permit>,
    }

    impl Busy {
        fn new(config: ThrottleConfig) -> Self {
            Self {
                g: Governor::new(config),
                held: VecDeque::new(),
            }
        }

        /// The next request: waits for a slot, which the oldest request held gives up.
        async fn next(&mut self) -> Permit {
            let g = Arc::clone(&self.g);
            let waiter = tokio::spawn(async move { g.acquire().await });
            // Let it queue, then answer the oldest until a slot is its. (A waiter that is not
            // queued has its slot already, and waits only for its paced start.)
            loop {
                tokio::task::yield_now().await;
                let queued = !self.g.lock().waiters.is_empty();
                if waiter.is_finished() || !queued || self.held.pop_front().is_none() {
                    break;
                }
            }
            waiter.await.unwrap()
        }

        /// One round at the current ceiling: as many requests as it, each replacing the oldest
        /// in flight, then all of them answered with `answer(running)`.
        async fn round(&mut self, answer: impl Fn(usize) -> Option<f64>) -> usize {
            let limit = self.g.limit();
            let mut fresh = Vec::new();
            for _ in 0..limit {
                fresh.push(self.next().await);
            }
            // On their way to Canvas, then answered.
            tokio::time::sleep(STARTED * 2).await;
            for p in &fresh {
                self.g.observe(p, answer(limit), false);
            }
            self.held = fresh.into();
            self.g.limit()
        }

        /// Rounds until the ceiling changes: how many, and the new ceiling.
        async fn rounds_until_it_changes(
            &mut self,
            answer: impl Fn(usize) -> Option<f64>,
        ) -> (usize, usize) {
            let before = self.g.limit();
            for rounds in 1..=100 {
                let after = self.round(&answer).await;
                if after != before {
                    return (rounds, after);
                }
            }
            (100, before)
        }
    }

    #[tokio::test]
    async fn ramps_up_to_what_the_bucket_holds_and_no_further() {
        let mut busy = Busy::new(ThrottleConfig::default());
        assert_eq!(busy.g.limit(), 1);
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(busy.round(|k| Some(reading(k))).await);
        }
        // A lone request's reading shows room for ten more; 11 is what fits under 600 (11 · 50 <
        // 600 ≤ 12 · 50).
        assert_eq!(seen, [11, 11, 11, 11, 11, 11, 11, 11]);
    }

    #[tokio::test]
    async fn slow_start_doubles_from_a_wider_start() {
        let mut busy = Busy::new(ThrottleConfig {
            initial_concurrency: 2,
            ..ThrottleConfig::default()
        });
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(busy.round(|k| Some(reading(k))).await);
        }
        // 2 → 4 → 8 → 11 (room for 3 at 8), then it holds.
        assert_eq!(seen, [4, 8, 11, 11, 11]);
    }

    #[tokio::test]
    async fn a_reading_at_the_edge_lowers_the_ceiling_at_once() {
        let busy = Busy::new(ThrottleConfig {
            initial_concurrency: 11,
            ..ThrottleConfig::default()
        });
        let mut permits = Vec::new();
        for _ in 0..11 {
            permits.push(busy.g.acquire().await);
        }
        // Someone else spends from the token: only 40 units are left.
        busy.g.observe(&permits[0], Some(40.0), false);
        assert_eq!(busy.g.limit(), 10);
        // The rest ran under the old ceiling: they teach nothing about the new one.
        for p in &permits[1..] {
            busy.g.observe(p, Some(40.0), false);
        }
        assert_eq!(busy.g.limit(), 10);
    }

    #[tokio::test]
    async fn room_is_learned_only_at_the_ceiling() {
        let g = Governor::new(ThrottleConfig {
            initial_concurrency: 4,
            ..ThrottleConfig::default()
        });
        // Two callers at a time: the bucket looks nearly empty, but 4 at once was never tried.
        let keep = g.acquire().await;
        for _ in 0..20 {
            let p = g.acquire().await;
            tokio::time::sleep(STARTED * 2).await;
            g.observe(&p, Some(reading(2)), false);
        }
        drop(keep);
        assert_eq!(g.limit(), 4);
    }

    #[tokio::test]
    async fn idle_starts_again_from_one_request() {
        let mut busy = Busy::new(ThrottleConfig::default());
        assert_eq!(busy.round(|k| Some(reading(k))).await, 11);
        busy.held.clear();
        assert_eq!(busy.g.limit(), 1);
    }

    #[tokio::test]
    async fn throttling_halves_once_and_never_below_one_then_grows_by_one_per_round() {
        let mut busy = Busy::new(ThrottleConfig {
            initial_concurrency: 10,
            ..ThrottleConfig::default()
        });
        let (p, q) = (busy.g.acquire().await, busy.g.acquire().await);
        busy.g.observe(&p, None, true);
        assert_eq!(busy.g.limit(), 5);
        // Another throttled answer to a request started before the halving: already answered.
        busy.g.observe(&q, None, true);
        assert_eq!(busy.g.limit(), 5);
        busy.held.extend([p, q]);
        for expected in [2, 1, 1] {
            let p = busy.next().await;
            busy.g.observe(&p, None, true);
            busy.held.push_back(p);
            assert_eq!(busy.g.limit(), expected);
        }
        // Additive recovery, one per steady round, not a jump back to what the readings allow.
        for expected in 2..=4 {
            assert_eq!(
                busy.rounds_until_it_changes(|k| Some(reading(k))).await,
                (STEADY_ROUNDS, expected)
            );
        }
    }

    #[tokio::test]
    async fn without_the_header_it_grows_one_per_round() {
        let mut busy = Busy::new(ThrottleConfig::default());
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(busy.rounds_until_it_changes(|_| None).await);
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
        assert_eq!(g.lock().in_flight(), 0);
    }
}

//! A concurrency governor that keeps in-flight requests under Canvas's throttling ceiling.
//!
//! Canvas charges every request an up-front cost (default 50) while it runs and refuses a
//! request when the bucket would reach the high-water mark (canvas-api.md §4). Every response
//! reports `X-Rate-Limit-Remaining` (= high-water mark − bucket count, which includes the
//! up-front costs of our other requests still running). So the free capacity is roughly
//! `remaining + others_in_flight × up_front_cost`, and `floor(free × safety / up_front_cost)`
//! requests can run at once. "Others" are only requests started more than `send_guard` before
//! the response was read: newer ones cannot have reached Canvas before it answered.
//!
//! The governor starts with `initial_concurrency` (slow start); its ceiling rises by at most one
//! request per response, so one odd reading cannot overshoot. A throttled response halves the
//! ceiling (which then grows back about one request per round trip); it never goes below 1.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Tuning of the throttle-aware concurrency governor.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// Canvas's up-front cost per request (`request_throttle.up_front_cost`, default 50).
    pub up_front_cost: f64,
    /// Fraction of the measured free capacity to use (default 0.9).
    pub safety: f64,
    /// Concurrency before the first response tells the headroom (default 1).
    pub initial_concurrency: usize,
    /// Hard ceiling on concurrent requests, whatever Canvas reports (default 32).
    pub max_concurrency: usize,
    /// Requests started less than this before a response is read are assumed not to have
    /// reached Canvas when it computed that response's `X-Rate-Limit-Remaining`, so they are not
    /// added back to the free capacity. Set it to about the network round trip (default 10 ms).
    pub send_guard: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            up_front_cost: 50.0,
            safety: 0.9,
            initial_concurrency: 1,
            max_concurrency: 32,
            send_guard: Duration::from_millis(10),
        }
    }
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// When each request in flight (by sequence number) was started.
    outstanding: BTreeMap<u64, Instant>,
    next_seq: u64,
    limit: usize,
    /// Ceiling after throttling (multiplicative decrease, additive increase).
    cap: f64,
    waiters: VecDeque<oneshot::Sender<u64>>,
    /// The latest free-capacity estimates; their median is used (single readings are noisy).
    estimates: VecDeque<f64>,
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
            safety: config.safety.clamp(0.05, 1.0),
            initial_concurrency: config.initial_concurrency.clamp(1, max),
            max_concurrency: max,
            send_guard: config.send_guard,
        };
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                outstanding: BTreeMap::new(),
                next_seq: 0,
                limit: config.initial_concurrency,
                cap: max as f64,
                waiters: VecDeque::new(),
                estimates: VecDeque::new(),
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
        state.outstanding.insert(seq, Instant::now());
        seq
    }

    /// Feeds back what the response to `permit`'s request said.
    pub(crate) fn observe(&self, permit: &Permit, remaining: Option<f64>, throttled: bool) {
        let cost = self.config.up_front_cost;
        let max = self.config.max_concurrency;
        let mut state = self.lock();
        if throttled {
            let halved = (state.limit / 2).max(1);
            state.cap = halved as f64;
            state.limit = halved;
            tracing::debug!(
                limit = state.limit,
                "Canvas throttled a request; concurrency halved"
            );
            return;
        }
        state.cap = (state.cap + 1.0 / state.limit.max(1) as f64).min(max as f64);
        let cap = (state.cap.floor() as usize).clamp(1, max);
        let target = match remaining {
            Some(remaining) if remaining.is_finite() => {
                // Ours that Canvas counted in `remaining`: still unanswered, and sent early
                // enough to have reached Canvas before it answered this one.
                let now = Instant::now();
                let others = state
                    .outstanding
                    .iter()
                    .filter(|(seq, started)| {
                        **seq != permit.seq
                            && now.saturating_duration_since(**started) > self.config.send_guard
                    })
                    .count() as f64;
                let free = (remaining + others * cost).max(0.0);
                if state.estimates.len() >= ESTIMATES {
                    state.estimates.pop_front();
                }
                state.estimates.push_back(free);
                let median = median(&state.estimates).unwrap_or(free);
                ((median * self.config.safety / cost).floor() as usize).clamp(1, max)
            }
            // No header (throttling off, or a proxy): grow additively.
            _ => max,
        };
        state.limit = target.min(cap).min(state.limit + 1);
        Self::grant(&mut state);
    }

    fn release(&self, seq: u64) {
        let mut state = self.lock();
        if state.outstanding.remove(&seq).is_some() {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        Self::grant(&mut state);
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

/// How many recent free-capacity estimates the median is taken over.
const ESTIMATES: usize = 9;

fn median(values: &VecDeque<f64>) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
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

    #[tokio::test]
    async fn slow_start_grows_to_the_measured_limit() {
        let g = Governor::new(ThrottleConfig::default());
        assert_eq!(g.limit(), 1);
        // Empty bucket: 600 × 0.9 / 50 = 10.8 → 10, reached one step per response.
        for expected in 2..=10 {
            let p = g.acquire().await;
            g.observe(&p, Some(600.0), false);
            assert_eq!(g.limit(), expected);
        }
        let p = g.acquire().await;
        g.observe(&p, Some(600.0), false);
        assert_eq!(g.limit(), 10);
    }

    #[tokio::test]
    async fn adds_back_what_our_other_requests_hold() {
        let g = Governor::new(ThrottleConfig {
            send_guard: Duration::ZERO,
            ..ThrottleConfig::default()
        });
        for _ in 0..10 {
            let p = g.acquire().await;
            g.observe(&p, Some(600.0), false);
        }
        let permits: Vec<_> = futures::future::join_all((0..10).map(|_| g.acquire())).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        // 9 others hold 450: free is 600 → stays at 10.
        g.observe(&permits[0], Some(150.0), false);
        assert_eq!(g.limit(), 10);
        // Someone else uses the same token: free shrinks, once most recent readings say so.
        for _ in 0..5 {
            g.observe(&permits[0], Some(0.0), false);
        }
        assert_eq!(g.limit(), 8);
    }

    #[tokio::test]
    async fn requests_just_sent_are_not_added_back() {
        let g = Governor::new(ThrottleConfig {
            send_guard: Duration::from_secs(3600),
            ..ThrottleConfig::default()
        });
        for _ in 0..10 {
            let p = g.acquire().await;
            g.observe(&p, Some(600.0), false);
        }
        let permits: Vec<_> = futures::future::join_all((0..10).map(|_| g.acquire())).await;
        g.observe(&permits[9], Some(150.0), false);
        assert_eq!(g.limit(), 10, "one low reading is outvoted by the median");
        for _ in 0..4 {
            g.observe(&permits[9], Some(150.0), false);
        }
        assert_eq!(g.limit(), 2);
    }

    #[tokio::test]
    async fn throttling_halves_and_never_below_one() {
        let g = Governor::new(ThrottleConfig::default());
        for _ in 0..10 {
            let p = g.acquire().await;
            g.observe(&p, Some(600.0), false);
        }
        let p = g.acquire().await;
        g.observe(&p, None, true);
        assert_eq!(g.limit(), 5);
        g.observe(&p, None, true);
        g.observe(&p, None, true);
        g.observe(&p, None, true);
        assert_eq!(g.limit(), 1);
        // Additive recovery, not a jump back to the measured 10.
        g.observe(&p, Some(600.0), false);
        assert!(g.limit() <= 2, "{}", g.limit());
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

//! Canvas's request throttle: a leaky bucket per access token (`canvas-api.md` §4).

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bucket's settings; the defaults are Canvas's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleSettings {
    /// A request arriving when the count (with its up-front cost) reaches this is refused.
    pub high_water_mark: f64,
    /// The count never goes above this.
    pub maximum: f64,
    /// Units leaked per second.
    pub outflow: f64,
    /// Units a request takes when it arrives and holds while it runs.
    pub up_front_cost: f64,
    /// Units a finished request settles to (Canvas: its CPU and database seconds).
    pub request_cost: f64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            high_water_mark: 600.0,
            maximum: 800.0,
            outflow: 10.0,
            up_front_cost: 50.0,
            request_cost: 0.05,
        }
    }
}

impl ThrottleSettings {
    /// Checks that the settings make a working bucket; the message names the flag to fix.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--throttle-hwm", self.high_water_mark),
            ("--throttle-max", self.maximum),
            ("--throttle-outflow", self.outflow),
        ];
        for (flag, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{flag} must be a positive number, not {value}"));
            }
        }
        for (flag, value) in [
            ("--throttle-upfront", self.up_front_cost),
            ("--request-cost", self.request_cost),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!(
                    "{flag} must be zero or a positive number, not {value}"
                ));
            }
        }
        if self.high_water_mark > self.maximum {
            return Err(format!(
                "--throttle-hwm ({}) must not be above --throttle-max ({})",
                self.high_water_mark, self.maximum
            ));
        }
        Ok(())
    }
}

/// The fastest schedules the bucket allows, against which clients are measured (the benches).
impl ThrottleSettings {
    /// When each of `requests` requests of `latency` starts in the fastest schedule the bucket
    /// allows: an ideal client with no network or processing time of its own, that starts each
    /// request the instant the bucket would admit it, against the bucket's own rules (leak,
    /// admission at `count + u < h`, settling to the request cost, clamping to `[0, maximum]`).
    pub fn ideal_starts(&self, latency: Duration, requests: usize) -> Vec<f64> {
        let s = self;
        let latency = latency.as_secs_f64();
        let (h, u, q, c, max) = (
            s.high_water_mark,
            s.up_front_cost,
            s.outflow,
            s.request_cost,
            s.maximum,
        );
        // A hair past the instant the count leaks below `h − u` (admission is strict).
        const EPS: f64 = 1e-7;
        let mut starts = Vec::with_capacity(requests);
        let mut settles: VecDeque<f64> = VecDeque::new();
        let mut count = 0.0f64;
        let mut now = 0.0f64;
        let leak_to = |count: &mut f64, now: &mut f64, t: f64| {
            *count = (*count - (t - *now) * q).clamp(0.0, max);
            *now = t;
        };
        while starts.len() < requests || !settles.is_empty() {
            if starts.len() < requests && count + u < h {
                count = (count + u).min(max);
                starts.push(now);
                settles.push_back(now + latency);
                continue;
            }
            let next_settle = settles.front().copied().unwrap_or(f64::INFINITY);
            let next_admit = if starts.len() < requests && q > 0.0 {
                now + ((count + u - h) / q).max(0.0) + EPS
            } else {
                f64::INFINITY
            };
            if next_settle <= next_admit {
                leak_to(&mut count, &mut now, next_settle);
                count = (count - u + c).clamp(0.0, max);
                settles.pop_front();
            } else if next_admit.is_finite() {
                leak_to(&mut count, &mut now, next_admit);
            } else {
                // Nothing in flight and nothing admissible ever: a bucket that admits nothing.
                break;
            }
        }
        starts
    }

    /// The fastest wall time the bucket allows for `requests` requests of `latency` each: when
    /// the last request of [`Self::ideal_starts`] settles. No client can do better.
    pub fn minimum_time(&self, latency: Duration, requests: usize) -> f64 {
        self.ideal_starts(latency, requests)
            .last()
            .map_or(0.0, |start| start + latency.as_secs_f64())
    }

    /// The fluid limit of the fastest schedule (see [`ThrottleSettings::minimum_time`]): `T` with `R(T) = requests`.
    /// A little below [`Self::minimum_time`], which keeps whole requests in flight.
    pub fn fluid_time(&self, latency: Duration, requests: usize) -> f64 {
        let s = self;
        let (h, u, q, c) = (
            s.high_water_mark,
            s.up_front_cost,
            s.outflow,
            s.request_cost,
        );
        let l = latency.as_secs_f64();
        let r = requests as f64;
        if l == 0.0 {
            return if c > 0.0 {
                (r * c - h).max(0.0) / q
            } else {
                0.0
            };
        }
        let r0 = h / (u * l);
        let done = |t: f64| {
            if c > 0.0 {
                let (r_inf, tau) = (q / c, u * l / c);
                r_inf * t + (r0 - r_inf) * tau * (1.0 - (-t / tau).exp())
            } else {
                // Nothing settles to a cost: the leak only ever widens the window.
                r0 * t + q * t * t / (2.0 * u * l)
            }
        };
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        while done(hi) < r {
            hi *= 2.0;
        }
        for _ in 0..100 {
            let mid = (lo + hi) / 2.0;
            if done(mid) < r {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }

    /// `max(R·L/(⌈h/u⌉ − 1), R·c/q)`: the bound one writes first. It is not a bound: the bucket
    /// starts empty, and below `q/c` the leak eats into the up-front costs held.
    pub fn naive_time(&self, latency: Duration, requests: usize) -> f64 {
        let s = self;
        let in_flight = ((s.high_water_mark / s.up_front_cost).ceil() - 1.0).max(1.0);
        let r = requests as f64;
        (r * latency.as_secs_f64() / in_flight).max(r * s.request_cost / s.outflow)
    }
}

struct Bucket {
    count: f64,
    last: Instant,
}

/// All buckets, keyed by client identity.
pub(crate) struct Throttle {
    settings: ThrottleSettings,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A request's hold on its bucket: taken on arrival, settled when it finishes.
pub(crate) enum Admission {
    Admitted,
    Throttled { remaining: f64 },
}

impl Throttle {
    pub fn new(settings: ThrottleSettings) -> Self {
        Self {
            settings,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn with_bucket<T>(&self, key: &str, f: impl FnOnce(&mut Bucket, &ThrottleSettings) -> T) -> T {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let s = &self.settings;
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            count: 0.0,
            last: now,
        });
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.count = (bucket.count - elapsed * s.outflow).clamp(0.0, s.maximum);
        bucket.last = now;
        f(bucket, s)
    }

    /// Leaks, adds the up-front cost and checks the high-water mark. A refused request settles
    /// at once to nothing.
    pub fn admit(&self, key: &str) -> Admission {
        self.with_bucket(key, |bucket, s| {
            bucket.count = (bucket.count + s.up_front_cost).min(s.maximum);
            if bucket.count >= s.high_water_mark {
                bucket.count = (bucket.count - s.up_front_cost).max(0.0);
                Admission::Throttled {
                    remaining: s.high_water_mark - bucket.count,
                }
            } else {
                Admission::Admitted
            }
        })
    }

    /// Replaces the up-front cost by the real cost; returns (cost, remaining).
    pub fn settle(&self, key: &str) -> (f64, f64) {
        self.with_bucket(key, |bucket, s| {
            bucket.count = (bucket.count - s.up_front_cost + s.request_cost).clamp(0.0, s.maximum);
            (s.request_cost, s.high_water_mark - bucket.count)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_eleven_requests_fit_in_flight() {
        // Nearly no leak between the calls, so that the count is exact.
        let t = Throttle::new(ThrottleSettings {
            outflow: 1e-9,
            ..Default::default()
        });
        let admitted = (0..20)
            .filter(|_| matches!(t.admit("k"), Admission::Admitted))
            .count();
        assert_eq!(admitted, 11);
        // Other keys have their own buckets.
        assert!(matches!(t.admit("other"), Admission::Admitted));
        // Settling frees the capacity again.
        for _ in 0..11 {
            t.settle("k");
        }
        assert!(matches!(t.admit("k"), Admission::Admitted));
    }

    #[test]
    fn the_fastest_schedule_follows_the_buckets_rules() {
        let s = ThrottleSettings::default();
        let l = Duration::from_millis(50);
        // Eleven fit at once (11 · 50 < 600); a twelfth a hair later, once 550 has leaked below
        // 550; a thirteenth only when the first settles.
        let starts = s.ideal_starts(l, 13);
        assert!(starts[..11].iter().all(|t| *t == 0.0), "{starts:?}");
        assert!(starts[11] > 0.0 && starts[11] < 1e-3, "{starts:?}");
        assert!((starts[12] - 0.05).abs() < 1e-3, "{starts:?}");
        assert!((s.minimum_time(l, 11) - 0.05).abs() < 1e-9);
        // In the long run the leak sets the pace: q / c = 200 a second.
        let long = s.minimum_time(l, 100_000);
        assert!((490.0..510.0).contains(&long), "{long}");
        // The fluid limit is a little below the whole-request schedule, the naive "bound" above
        // it early on.
        let (m, f) = (s.minimum_time(l, 25_000), s.fluid_time(l, 25_000));
        assert!(f <= m && m - f < 0.05 * m, "{f} {m}");
        assert!(s.naive_time(l, 25_000) > m);
    }

    #[test]
    fn settings_are_checked() {
        assert!(ThrottleSettings::default().validate().is_ok());
        let bad = ThrottleSettings {
            high_water_mark: 900.0,
            ..Default::default()
        };
        assert!(matches!(bad.validate(), Err(m) if m.contains("--throttle-hwm")));
        let bad = ThrottleSettings {
            outflow: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}

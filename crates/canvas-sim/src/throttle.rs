//! Canvas's request throttle: a leaky bucket per access token (`canvas-api.md` §4).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

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

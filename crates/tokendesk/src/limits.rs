//! Rate limits against abuse: how often one person, or one address, may do a thing. Each limit
//! is a GCRA (a leaky bucket kept as one instant per key): `count` actions per `period`, of which
//! all may come at once (the burst is the whole count), then one more each `period / count`.
//! Limits are per instance (several instances each allow the full rate).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Submitting a request (per person).
    Submit,
    /// Revealing an envelope (per person).
    Reveal,
    /// Looking at, revealing or burning envelopes (per person and per address): what probing
    /// envelope ids costs.
    EnvelopeLookup,
    /// Signing in (per address).
    SignIn,
    /// Reporting a leaked token (per person): what testing guesses costs.
    Report,
    /// Audit records of refusals, such as opening another person's envelope (per person): the
    /// trail records a burst of them, then stops recording more for a while.
    RefusalRecord,
}

/// So many actions per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    pub const fn per_minute(count: u32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(60),
        }
    }

    pub const fn per_hour(count: u32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(3600),
        }
    }

    /// `count` 0 turns the limit off.
    pub fn is_off(self) -> bool {
        self.count == 0
    }
}

const SHARDS: usize = 16;
/// A shard this big is swept of keys whose bucket has emptied.
const SWEEP_AT: usize = 4096;

/// The buckets, by limit and key.
#[derive(Debug)]
pub struct RateLimiter {
    shards: Vec<Mutex<HashMap<(Limit, String), Instant>>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl RateLimiter {
    /// Counts one action of `key` against `limit` at `rate`: `Err(wait)` when it is over the
    /// limit, with how long until one more is allowed.
    pub fn check(&self, limit: Limit, key: &str, rate: Rate) -> Result<(), Duration> {
        self.check_at(limit, key, rate, Instant::now())
    }

    fn check_at(&self, limit: Limit, key: &str, rate: Rate, now: Instant) -> Result<(), Duration> {
        if rate.is_off() {
            return Ok(());
        }
        let interval = rate.per / rate.count;
        let tolerance = rate.per.saturating_sub(interval);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (limit, key).hash(&mut hasher);
        let shard = usize::try_from(hasher.finish() % SHARDS as u64).unwrap_or(0);
        let Some(shard) = self.shards.get(shard) else {
            return Ok(());
        };
        let mut buckets = shard.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, tat| *tat > now);
        }
        let tat = buckets
            .get(&(limit, key.to_owned()))
            .copied()
            .unwrap_or(now)
            .max(now);
        let ahead = tat - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        buckets.insert((limit, key.to_owned()), tat + interval);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval() {
        let limiter = RateLimiter::default();
        let rate = Rate::per_minute(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(Limit::Submit, "sam", rate, t0).is_ok());
        }
        let wait = limiter
            .check_at(Limit::Submit, "sam", rate, t0)
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(20));
        // Someone else, or another limit, has buckets of their own.
        assert!(limiter.check_at(Limit::Submit, "stella", rate, t0).is_ok());
        assert!(limiter.check_at(Limit::Reveal, "sam", rate, t0).is_ok());
        // One more after an interval; the bucket refills entirely after the period.
        let t1 = t0 + Duration::from_secs(20);
        assert!(limiter.check_at(Limit::Submit, "sam", rate, t1).is_ok());
        assert!(limiter.check_at(Limit::Submit, "sam", rate, t1).is_err());
        let t2 = t0 + Duration::from_secs(200);
        for _ in 0..3 {
            assert!(limiter.check_at(Limit::Submit, "sam", rate, t2).is_ok());
        }
        // Off.
        let off = Rate::per_minute(0);
        for _ in 0..100 {
            assert!(limiter.check_at(Limit::SignIn, "x", off, t0).is_ok());
        }
    }
}

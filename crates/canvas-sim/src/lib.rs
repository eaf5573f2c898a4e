//! A Canvas LMS simulator for the part of the REST API that token management needs: the token
//! endpoints, users, pagination, throttling, error shapes and in-browser activation, behaving as
//! `canvas-api.md` describes. It stands in for Canvas in tests, demos and benchmarks.

mod api;
pub mod browser;
mod errors;
mod model;
mod net;
mod params;
mod seed;
mod throttle;
mod token;
mod web;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use api::Pagination;
pub use axum::http::StatusCode;
pub use seed::{
    DEFAULT_ADMIN_TOKEN, DEFAULT_STUDENT_TOKEN, DEFAULT_TEACHER_TOKEN, ROLES, Seed, SeedError,
    SeedSettings, SeedToken, SeedTokenState, SeedUser,
};
pub use throttle::ThrottleSettings;
pub use token::generate_token_value;

use model::Db;

/// How a simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: Seed,
    /// Processing time added to every API request (held against the bucket while it runs).
    pub latency: Duration,
    /// Share of API requests (0.0–1.0) answered with a 500 or 503.
    pub fail_rate: f64,
    /// The leaky bucket; `None` turns throttling off.
    pub throttle: Option<ThrottleSettings>,
    /// Status of "authenticated, not allowed": 401 (Canvas's classic answer) or 403 (newer).
    pub unauthorized_status: StatusCode,
    /// Status of a throttled request: 429 (Instructure-hosted Canvas since 2025-10-08, the
    /// default) or 403 (the open-source code and older self-hosted instances), `canvas-api.md` §3.
    pub throttle_status: StatusCode,
    /// How `user_generated_tokens` pages (`canvas-api.md` §5): numbered pages as on every
    /// single-shard install (the default), or bookmarks as on multi-shard instances.
    pub pagination: Pagination,
    /// Keeps the state in this JSON file (loaded at start if present, written on every change).
    pub state_file: Option<PathBuf>,
    /// Network faults, on top of `fail_rate`.
    pub faults: Faults,
}

/// Faults of the network between a client and Canvas, each a share of API requests (0.0–1.0).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// The request is carried out, then the connection is closed without an answer: a change
    /// that happened but whose answer was lost (`--drop-after-rate`).
    pub drop_after_rate: f64,
    /// The connection is closed before anything is done (`--reset-rate`).
    pub reset_rate: f64,
    /// The request waits `spike` longer first (`--spike-rate`, `--spike-ms`).
    pub spike_rate: f64,
    pub spike: Duration,
}

impl Faults {
    fn validate(&self) -> Result<(), String> {
        for (flag, rate) in [
            ("--drop-after-rate", self.drop_after_rate),
            ("--reset-rate", self.reset_rate),
            ("--spike-rate", self.spike_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!(
                    "{flag} must be a share between 0 and 1 (0.1 = 10%), not {rate}"
                ));
            }
        }
        if self.spike > Duration::from_secs(600) {
            return Err("--spike-ms must be at most 600000 (10 minutes)".into());
        }
        Ok(())
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: Seed::default(),
            latency: Duration::ZERO,
            fail_rate: 0.0,
            throttle: Some(ThrottleSettings::default()),
            unauthorized_status: StatusCode::UNAUTHORIZED,
            throttle_status: StatusCode::TOO_MANY_REQUESTS,
            pagination: Pagination::default(),
            state_file: None,
            faults: Faults::default(),
        }
    }
}

impl SimConfig {
    /// Checks the settings; the message names what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(format!(
                "--fail-rate must be a share between 0 and 1 (0.1 = 10%), not {}",
                self.fail_rate
            ));
        }
        self.faults.validate()?;
        if self.latency > Duration::from_secs(600) {
            return Err("--latency-ms must be at most 600000 (10 minutes)".into());
        }
        if self.unauthorized_status != StatusCode::UNAUTHORIZED
            && self.unauthorized_status != StatusCode::FORBIDDEN
        {
            return Err("--unauthorized-status must be 401 or 403".into());
        }
        if self.throttle_status != StatusCode::FORBIDDEN
            && self.throttle_status != StatusCode::TOO_MANY_REQUESTS
        {
            return Err("--throttle-status must be 429 or 403".into());
        }
        match &self.throttle {
            Some(t) => t.validate(),
            None => Ok(()),
        }
    }
}

/// Counters of what the simulator answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Requests to `/api/`.
    pub api_requests: u64,
    /// Of those, refused by the throttle.
    pub throttled: u64,
    /// Of those, failed on purpose (`fail_rate`).
    pub injected_failures: u64,
    /// Of those, carried out and then left unanswered (`faults.drop_after_rate`).
    pub dropped_after: u64,
    /// Of those, cut before anything was done (`faults.reset_rate`).
    pub resets: u64,
}

#[derive(Default)]
struct Counters {
    api_requests: AtomicU64,
    throttled: AtomicU64,
    injected_failures: AtomicU64,
    dropped_after: AtomicU64,
    resets: AtomicU64,
}

/// What every handler shares.
pub(crate) struct Shared {
    db: Mutex<Db>,
    sessions: Mutex<std::collections::HashMap<String, Session>>,
    throttle: Option<throttle::Throttle>,
    latency: Duration,
    /// `f64` bits, so that tests can change it while serving.
    fail_rate: AtomicU64,
    unauthorized_status: StatusCode,
    throttle_status: StatusCode,
    pagination: Pagination,
    state_file: Option<PathBuf>,
    clock_offset_secs: AtomicI64,
    counters: Counters,
    faults: Faults,
}

impl Shared {
    pub(crate) fn fail_rate(&self) -> f64 {
        f64::from_bits(self.fail_rate.load(Ordering::Relaxed))
    }

    /// The simulator's clock: real time, moved forward by `advance_clock`.
    pub(crate) fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        now + time::Duration::seconds(self.clock_offset_secs.load(Ordering::Relaxed))
    }

    pub(crate) fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the state file after a change, if there is one.
    pub(crate) fn persist(&self, db: &Db) {
        if let Some(path) = &self.state_file
            && let Err(e) = write_state(path, db)
        {
            tracing::error!(path = %path.display(), error = %e, "cannot write the state file");
        }
    }

    /// The browser session with this cookie value, if it exists.
    pub(crate) fn session(&self, id: &str) -> Option<Session> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Signs `user_id` in: a new session id (the cookie) with its own CSRF token.
    pub(crate) fn new_session(&self, user_id: u64) -> (String, Session) {
        let id = token::random_hex(24);
        let session = Session {
            user_id,
            csrf_token: token::random_hex(24),
        };
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), session.clone());
        (id, session)
    }
}

/// A signed-in browser: who it is and the token its forms must carry (Rails' CSRF check).
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub user_id: u64,
    pub csrf_token: String,
}

fn write_state(path: &Path, db: &Db) -> anyhow::Result<()> {
    let text = serde_json::to_vec_pretty(db)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn load_or_seed(config: &SimConfig, now: OffsetDateTime) -> anyhow::Result<Db> {
    if let Some(path) = &config.state_file
        && path.exists()
    {
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read state file {}", path.display()))?;
        let mut db: Db = serde_json::from_slice(&text).with_context(|| {
            format!(
                "state file {} is not a canvas-sim state; remove it to start from the seed",
                path.display()
            )
        })?;
        db.reindex();
        return Ok(db);
    }
    let db = Db::from_seed(&config.seed, now);
    if let Some(path) = &config.state_file {
        write_state(path, &db)
            .with_context(|| format!("cannot write state file {}", path.display()))?;
    }
    Ok(db)
}

/// A simulator serving on a socket.
pub struct RunningSim {
    addr: SocketAddr,
    base_url: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningSim {
    /// The bound address (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn stats(&self) -> SimStats {
        let c = &self.shared.counters;
        SimStats {
            api_requests: c.api_requests.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            injected_failures: c.injected_failures.load(Ordering::Relaxed),
            dropped_after: c.dropped_after.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
        }
    }

    /// Changes the share of API requests that fail on purpose (0.0–1.0, clamped), e.g. to take
    /// "Canvas" down and bring it back in a test.
    pub fn set_fail_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.shared
            .fail_rate
            .store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Moves the simulator's clock forward, so that expiry can be tested without waiting.
    pub fn advance_clock(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.shared
            .clock_offset_secs
            .fetch_add(secs, Ordering::Relaxed);
    }

    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Serves until the server stops (it stops only on error when nobody calls `shutdown`).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        (&mut self.task)
            .await
            .context("the simulator task failed")??;
        Ok(())
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a simulator on `addr` (port 0 picks a free port).
pub async fn start(config: SimConfig, addr: SocketAddr) -> anyhow::Result<RunningSim> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    serve(config, listener).await
}

/// Starts a simulator on an already bound listener.
pub async fn serve(config: SimConfig, listener: TcpListener) -> anyhow::Result<RunningSim> {
    config.validate().map_err(anyhow::Error::msg)?;
    let addr = listener.local_addr()?;
    let now = OffsetDateTime::now_utc();
    let db = load_or_seed(&config, now.replace_nanosecond(0).unwrap_or(now))?;
    let shared = Arc::new(Shared {
        db: Mutex::new(db),
        sessions: Mutex::new(Default::default()),
        throttle: config.throttle.map(throttle::Throttle::new),
        latency: config.latency,
        fail_rate: AtomicU64::new(config.fail_rate.to_bits()),
        unauthorized_status: config.unauthorized_status,
        throttle_status: config.throttle_status,
        pagination: config.pagination,
        state_file: config.state_file.clone(),
        clock_offset_secs: AtomicI64::new(0),
        counters: Counters::default(),
        faults: config.faults,
    });
    let app = api::router(shared.clone()).merge(web::router(shared.clone()));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(net::serve(listener, app, rx));
    Ok(RunningSim {
        addr,
        base_url: format!("http://{addr}"),
        shared,
        shutdown: Some(tx),
        task,
    })
}

//! `tokendesk canvas-sim`: the Canvas simulator as a process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokendesk_canvas_sim::{Pagination, Seed, SimConfig, StatusCode, ThrottleSettings};

use super::CliError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum OnOff {
    On,
    Off,
}

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Address to listen on (loopback only; port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// TOML seed file with the people and their pre-made tokens (default: the built-in seed).
    #[arg(long, value_name = "FILE")]
    seed: Option<PathBuf>,
    /// Keep the state in this JSON file so that it survives a restart.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Processing time added to every API request, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    latency_ms: u64,
    /// Share of API requests (0–1) answered with a 500 or 503.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    fail_rate: f64,
    /// Share of API requests (0–1) carried out and then left unanswered: the connection is
    /// closed without a response (a change that happened, its answer lost).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    drop_after_rate: f64,
    /// Share of API requests (0–1) whose connection is closed before anything is done.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    reset_rate: f64,
    /// Share of API requests (0–1) that wait --spike-ms longer (latency spikes).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    spike_rate: f64,
    /// How long a latency spike lasts, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    spike_ms: u64,
    /// Throttling (Canvas's leaky bucket per access token).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    throttle: OnOff,
    /// Bucket high-water mark: a request arriving at or above it is refused.
    #[arg(long, value_name = "UNITS", default_value_t = 600.0)]
    throttle_hwm: f64,
    /// Bucket maximum.
    #[arg(long, value_name = "UNITS", default_value_t = 800.0)]
    throttle_max: f64,
    /// Units leaked per second.
    #[arg(long, value_name = "UNITS", default_value_t = 10.0)]
    throttle_outflow: f64,
    /// Units a request holds while it runs.
    #[arg(long, value_name = "UNITS", default_value_t = 50.0)]
    throttle_upfront: f64,
    /// Units a finished request costs.
    #[arg(long, value_name = "UNITS", default_value_t = 0.05)]
    request_cost: f64,
    /// Status for "authenticated but not allowed": 401 (classic Canvas) or 403 (newer instances).
    #[arg(long, value_name = "CODE", default_value_t = 401)]
    unauthorized_status: u16,
    /// Status of a throttled request: 429 (hosted Canvas since 2025-10) or 403 (older instances).
    #[arg(long, value_name = "CODE", default_value_t = 429)]
    throttle_status: u16,
    /// How user_generated_tokens pages: numbered (single-shard installs) or bookmarks (multi-shard).
    #[arg(long, value_name = "numbered|bookmarks", default_value = "numbered")]
    pagination: Pagination,
}

impl Args {
    fn config(&self) -> Result<SimConfig, CliError> {
        if !self.listen.ip().is_loopback() {
            return Err(CliError::Usage(format!(
                "--listen {}: the simulator listens on loopback only (127.0.0.1 or [::1]); it hands out admin tokens to anyone who asks",
                self.listen
            )));
        }
        let seed = match &self.seed {
            Some(path) => Seed::load(path)
                .map_err(|e| CliError::Usage(format!("seed file {}: {e}", path.display())))?,
            None => Seed::default(),
        };
        let throttle = match self.throttle {
            OnOff::Off => None,
            OnOff::On => Some(ThrottleSettings {
                high_water_mark: self.throttle_hwm,
                maximum: self.throttle_max,
                outflow: self.throttle_outflow,
                up_front_cost: self.throttle_upfront,
                request_cost: self.request_cost,
            }),
        };
        let unauthorized_status = StatusCode::from_u16(self.unauthorized_status)
            .map_err(|_| CliError::Usage("--unauthorized-status must be 401 or 403".into()))?;
        let throttle_status = StatusCode::from_u16(self.throttle_status)
            .map_err(|_| CliError::Usage("--throttle-status must be 429 or 403".into()))?;
        let config = SimConfig {
            seed,
            latency: Duration::from_millis(self.latency_ms),
            fail_rate: self.fail_rate,
            throttle,
            unauthorized_status,
            throttle_status,
            pagination: self.pagination,
            state_file: self.state.clone(),
            faults: tokendesk_canvas_sim::Faults {
                drop_after_rate: self.drop_after_rate,
                reset_rate: self.reset_rate,
                spike_rate: self.spike_rate,
                spike: Duration::from_millis(self.spike_ms),
            },
        };
        config.validate().map_err(CliError::Usage)?;
        Ok(config)
    }
}

pub(super) async fn run(args: Args) -> Result<(), CliError> {
    let config = args.config()?;
    let default_seed = args.seed.is_none();
    let people = config.seed.users.clone();
    let sim = tokendesk_canvas_sim::start(config, args.listen).await?;
    println!("canvas-sim listening on {}", sim.base_url());
    if let Some(path) = &args.state {
        println!("state kept in {}", path.display());
    }
    println!("people (sign in at {}/login):", sim.base_url());
    for u in &people {
        let role = if u.admin {
            "admin".to_owned()
        } else {
            u.roles.join("+")
        };
        println!("  {:>4}  {:<20} {:<24} {}", u.id, u.login_id, u.name, role);
        if default_seed {
            for t in &u.tokens {
                println!("        token: {}", t.value);
            }
        }
    }
    tokio::select! {
        result = sim.wait() => result?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

//! Throughput, latency and memory of tokendesk's JSON API, beside a baseline measured in the
//! same run.
//!
//! `cargo bench -p tokendesk --bench http` (10 s per scenario after a 3 s warm-up), or
//! `cargo bench -p tokendesk --bench http -- --quick` (or `TOKENDESK_BENCH_QUICK=1`: 1 s + 3 s).
//!
//! Every server runs in its own child process, so that its peak memory (`VmHWM` of
//! `/proc/<pid>/status`) is its own; this process is only the load generator (and the Canvas
//! simulator, which the measured requests never call):
//!
//! - **baseline**: this bench binary started again as a child (`TOKENDESK_BENCH_ROLE=baseline`):
//!   axum on a multi-threaded tokio runtime, served with connect info, with tokendesk's own
//!   middleware (`request_context`: request id, span, log line, security headers) and body limit,
//!   answering `GET /api/v1/ping` with a fixed small JSON body.
//! - **sqlite**: `tokendesk serve` on an SQLite file in a temporary folder, as configured for
//!   production (WAL, `synchronous = FULL`: every commit is durable), workers running.
//! - **postgres**: `tokendesk serve` on a fresh database on the server at
//!   `TOKENDESK_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//!   dropped afterwards; skipped, loudly, when the server does not answer.
//!
//! Each scenario drives 32 concurrent clients (one keep-alive connection each) over loopback:
//! `submit` is `POST /api/v1/requests` (by 64 people per client in turn, each known to the
//! simulator, with the per-person limits lifted; the approvers' notices wait for their digest),
//! `look-up` is `GET /api/v1/requests/{id}` of a random one of 4,000 requests submitted before
//! (evenly spaced through them, whatever their number), by its owner. Signed in with
//! `X-Remote-User` from loopback.
//! Between the two the bench waits (at most 120 s; 60 s with `--quick`) until the workers have
//! sent the notices the submissions queued, and prints how long that took, so that look-ups run
//! on a quiet service. `look-up` runs tokendesk as configured by default, with its status look-up
//! cache (every request looked up is one of those 4,000, so after the first look-up of each,
//! most are answered from memory); `look-up, no cache` then runs the same look-ups against a
//! second `tokendesk serve` on the same database with `view_cache_entries = 0`,
//! so that every look-up is a database query. Both servers' peak memory is reported.
//!
//! `TOKENDESK_BENCH_BIN=/path/to/tokendesk` measures another build of `tokendesk serve` (to
//! compare before and after a change); `TOKENDESK_BENCH_MAX_CONNECTIONS=N` sets its
//! `database.max_connections`; `TOKENDESK_LOG` is passed on to the servers.
//!
//! Before the scenarios it starts `tokendesk serve` five times on a new, empty SQLite database and
//! reports the median time from the spawn to the first `200` from `/readyz` (polled every
//! millisecond; the migrations are part of it) and the resident memory (`VmRSS`) after 3 s idle.
//!
//! After each backend's scenarios it measures the ceiling for durable writes in the same run:
//! single-row commits one after another for 3 s (SQLite: a file beside tokendesk's, WAL,
//! `synchronous = FULL`; PostgreSQL: a table on the same server), and prints
//! `submit sqlite: R/s = P % of raw` and `submit postgres: R/s = P % of raw`, with the raw
//! commits' p50, p99 and longest (a shared commit waits as long for the disk, and every
//! submission in it with it).
//!
//! Exits non-zero when a server could not be started or a scenario saw errors; the targets
//! (look-ups ≥ 40% of the baseline, ≥ 1,000 submissions/s on SQLite, peak memory < 100 MB,
//! `/readyz` within 200 ms of the start, idle memory < 30 MB) are reported, not enforced, since
//! they depend on the machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use rand::RngExt as _;
use sqlx::Connection as _;
use tokendesk_canvas_sim::{DEFAULT_ADMIN_TOKEN, RunningSim, SimConfig};

const CLIENTS: usize = 32;
/// People per client who submit, in turn (each known to the simulator, as tokendesk checks at
/// submission; the per-person limits are lifted in the configuration).
const PEOPLE_PER_CLIENT: usize = 64;

/// The login of the person who makes client `client`'s `n`th submission.
fn bench_person(client: usize, n: usize) -> String {
    format!("b{client:02}p{:02}", n % PEOPLE_PER_CLIENT)
}

/// The simulator's people: the default seed and every bench person.
fn bench_seed() -> tokendesk_canvas_sim::Seed {
    let mut seed = tokendesk_canvas_sim::Seed::default();
    let first = seed.users.iter().map(|u| u.id).max().unwrap_or(1) + 1;
    for client in 0..CLIENTS {
        for k in 0..PEOPLE_PER_CLIENT {
            let login = bench_person(client, k);
            seed.users.push(tokendesk_canvas_sim::SeedUser {
                id: first + (client * PEOPLE_PER_CLIENT + k) as u64,
                name: format!("Bench Person {login}"),
                email: format!("{login}@example.edu"),
                login_id: login,
                sis_user_id: None,
                admin: false,
                roles: vec!["student".into()],
                tokens: Vec::new(),
            });
        }
    }
    seed
}
/// At most this many requests per client and phase, whatever the duration.
const MAX_PER_CLIENT: usize = 500_000;
const ROLE_VAR: &str = "TOKENDESK_BENCH_ROLE";

fn main() -> ExitCode {
    if std::env::var(ROLE_VAR).as_deref() == Ok("baseline") {
        return match baseline_server() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("baseline server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---- the baseline server (child) -------------------------------------------------------------

/// The same HTTP stack as tokendesk's: axum, tokio's default multi-threaded runtime, the
/// common layers (request id, trace, headers) and body limit, connect info, the same log filter.
fn baseline_server() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOKENDESK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let routes = tokendesk::web::middleware::common_layers(
            Router::new()
                .route(
                    "/api/v1/ping",
                    get(|| async {
                        Json(serde_json::json!({"id": 1, "state": "submitted", "ok": true}))
                    }),
                )
                .layer(DefaultBodyLimit::max(
                    tokendesk::config::DEFAULT_MAX_BODY_BYTES,
                )),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("baseline listening on http://{}", listener.local_addr()?);
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let options = tokendesk::server::HttpOptions::from_limits(
            &tokendesk::config::LimitsConfig::default(),
        );
        tokendesk::server::serve(listener, routes, options, stopped).await?;
        Ok(())
    })
}

// ---- children ----------------------------------------------------------------------------------

/// A server in a child process, killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    base: String,
    /// Passes the server's log on; returns the status look-up cache's summary line, which the
    /// server logs when it stops cleanly.
    log: Option<std::thread::JoinHandle<Option<String>>>,
}

/// What a tokendesk's status look-up cache answered, from its summary log line.
#[derive(Clone, Copy)]
struct CacheUse {
    hits: u64,
    misses: u64,
}

impl CacheUse {
    fn parse(line: &str) -> Option<CacheUse> {
        let field = |name: &str| -> Option<u64> {
            line.split(&format!("{name}="))
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        Some(CacheUse {
            hits: field("hits")?,
            misses: field("misses")?,
        })
    }

    fn hit_rate(self) -> f64 {
        self.hits as f64 / (self.hits + self.misses).max(1) as f64
    }
}

impl Server {
    /// Starts `command` and waits for the line on its stdout that names its address.
    fn start(name: &'static str, mut command: Command) -> anyhow::Result<Server> {
        for (key, _) in std::env::vars() {
            if key.starts_with("TOKENDESK_") && key != "TOKENDESK_LOG" {
                command.env_remove(key);
            }
        }
        // tokendesk says how its cache did when it stops (at info, from tokendesk::store).
        let log = std::env::var("TOKENDESK_LOG").unwrap_or_else(|_| "warn".to_owned());
        command.env("TOKENDESK_LOG", format!("{log},tokendesk::store=info"));
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start the {name} server"))?;
        // Pass its log on, keeping the cache summary.
        let stderr = child.stderr.take().context("child stderr")?;
        let log = std::thread::spawn(move || {
            let mut summary = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("status look-up cache") {
                    summary = Some(line);
                } else if !line.contains("migration applied") && line != "stopping…" {
                    eprintln!("{line}");
                }
            }
            summary
        });
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let Some(line) = lines.next() else {
                let status = child.wait()?;
                bail!("the {name} server stopped before listening ({status})");
            };
            let line = line?;
            if let Some(at) = line.find("http://") {
                let url: String = line[at..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                break url.trim_end_matches('/').to_owned();
            }
        };
        // Keep reading so that the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            name,
            child,
            base,
            log: Some(log),
        })
    }

    /// Stops the server cleanly (SIGTERM) and returns what its cache answered, if it said.
    fn stop(mut self) -> anyhow::Result<Option<CacheUse>> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("could not signal the {} server", self.name);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("the {} server did not stop within 20 s", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The log ends with the process: the thread returns once it has read the last line.
        let line = self.log.take().and_then(|log| log.join().ok()).flatten();
        Ok(line.as_deref().and_then(CacheUse::parse))
    }

    /// The child's peak resident memory (`VmHWM`), in bytes.
    fn peak_memory(&self) -> anyhow::Result<u64> {
        vm_hwm(&PathBuf::from(format!("/proc/{}/status", self.child.id())))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vm_hwm(status: &Path) -> anyhow::Result<u64> {
    vm_field(status, "VmHWM:")
}

/// A memory field (`VmHWM:`, `VmRSS:`) of a `/proc/PID/status` file, in bytes.
fn vm_field(status: &Path, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(status)
        .with_context(|| format!("cannot read {}", status.display()))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} line"))?;
    let kib: u64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{field} value"))?;
    Ok(kib * 1024)
}

/// `tokendesk serve`: the binary built with this bench, or `TOKENDESK_BENCH_BIN` (to compare
/// two builds).
/// `TOKENDESK_BENCH_MAX_CONNECTIONS`: the pool size given to tokendesk (default: its default).
fn pool_size() -> Option<u32> {
    std::env::var("TOKENDESK_BENCH_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
}

fn tokendesk_serve(config: &Path) -> Command {
    let binary = std::env::var_os("TOKENDESK_BENCH_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_tokendesk")),
        PathBuf::from,
    );
    let mut command = Command::new(binary);
    command.arg("serve").arg("--config").arg(config);
    command
}

/// Whether the server keeps its status look-up cache (the default) or reads the database for
/// every look-up (`view_cache_entries = 0`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cache {
    On,
    Off,
}

fn write_config(
    dir: &Path,
    database_url: &str,
    sim: &RunningSim,
    cache: Cache,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(match cache {
        Cache::On => "tokendesk.toml",
        Cache::Off => "tokendesk-uncached.toml",
    });
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\n\
         public_url = \"http://127.0.0.1:8080/\"\n\
         database_url = \"{database_url}\"\n\
         [canvas]\nurl = \"{}\"\nadmin_token = \"{DEFAULT_ADMIN_TOKEN}\"\n\
         [roles]\napprovers = [\"ada.admin\", \"theo.teacher\"]\n\
         [email]\ntransport = \"mailbox\"\n\
         [policy]\nmax_open_requests_per_person = 1000\n\
         [limits]\nsubmissions_per_hour = 0\n",
        sim.base_url()
    );
    text.push_str("[database]\n");
    if let Some(n) = pool_size() {
        text.push_str(&format!("max_connections = {n}\n"));
    }
    if cache == Cache::Off {
        text.push_str("view_cache_entries = 0\n");
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

// ---- load ------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Timing {
    warm_up: Duration,
    measure: Duration,
    /// How long to wait for the notices of the submissions to be sent before the look-ups.
    drain_limit: Duration,
}

/// What one scenario measured.
struct Row {
    scenario: &'static str,
    backend: &'static str,
    requests: usize,
    errors: usize,
    elapsed: Duration,
    /// Latencies in microseconds, sorted.
    latencies: Vec<u32>,
    /// Look-ups answered by tokendesk's cache (warm-up included), when it said.
    cache: Option<CacheUse>,
}

impl Row {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        nearest_rank(self.latencies.len(), p)
            .map_or(f64::NAN, |i| f64::from(self.latencies[i]) / 1000.0)
    }
}

/// Where the `p`th percentile of `len` sorted values is (the nearest-rank rule); `None` of none.
fn nearest_rank(len: usize, p: f64) -> Option<usize> {
    let rank = ((p / 100.0) * len as f64).ceil() as usize;
    (len > 0).then(|| rank.clamp(1, len) - 1)
}

/// One client's share of a phase.
#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    errors: usize,
    first_error: Option<String>,
    /// Requests created: (id, owner).
    created: Vec<(i64, String)>,
}

#[derive(Clone, Copy)]
enum Load {
    Baseline,
    Submit,
    LookUp,
}

struct Target {
    client: reqwest::Client,
    base: String,
    expires_on: String,
    existing: Arc<Vec<(i64, String)>>,
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(CLIENTS * 2)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// One request; returns the created request when it was a submission.
async fn one(
    target: &Target,
    load: Load,
    client_no: usize,
    n: usize,
) -> Result<Option<(i64, String)>, String> {
    let (builder, expected, owner) = match load {
        Load::Baseline => (
            target
                .client
                .get(format!("{}/api/v1/ping", target.base))
                .header("x-remote-user", "sam.student"),
            200,
            None,
        ),
        Load::Submit => {
            let login = bench_person(client_no, n);
            let body = serde_json::json!({
                "purpose": "grading scripts for my course sections",
                "expires_on": target.expires_on,
                "application": "bench",
            });
            (
                target
                    .client
                    .post(format!("{}/api/v1/requests", target.base))
                    .header("x-remote-user", &login)
                    .json(&body),
                201,
                Some(login),
            )
        }
        Load::LookUp => {
            let pick = rand::rng().random_range(0..target.existing.len());
            let (id, login) = &target.existing[pick];
            (
                target
                    .client
                    .get(format!("{}/api/v1/requests/{id}", target.base))
                    .header("x-remote-user", login),
                200,
                None,
            )
        }
    };
    let response = builder.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status != expected {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    match owner {
        Some(login) => {
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let id = json["id"].as_i64().ok_or("no id in the answer")?;
            Ok(Some((id, login)))
        }
        None => Ok(None),
    }
}

/// `CLIENTS` clients sending requests back to back until `duration` has passed.
async fn phase(target: Arc<Target>, load: Load, duration: Duration) -> (Vec<Tally>, Duration) {
    let started = Instant::now();
    let end = started + duration;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client_no| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut n = 0;
                while Instant::now() < end && n < MAX_PER_CLIENT {
                    let sent = Instant::now();
                    let outcome = one(&target, load, client_no, n).await;
                    let micros = sent.elapsed().as_micros();
                    tally
                        .latencies
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                    match outcome {
                        Ok(Some(created)) => tally.created.push(created),
                        Ok(None) => {}
                        Err(e) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert(e);
                        }
                    }
                    n += 1;
                }
                tally
            })
        })
        .collect();
    let mut tallies = Vec::with_capacity(CLIENTS);
    for task in tasks {
        tallies.push(task.await.expect("client task"));
    }
    (tallies, started.elapsed())
}

/// A warm-up phase (not counted), then the measured phase. Returns the row and every request
/// created in both phases.
async fn scenario(
    scenario: &'static str,
    backend: &'static str,
    base: &str,
    load: Load,
    existing: Arc<Vec<(i64, String)>>,
    timing: Timing,
) -> anyhow::Result<(Row, Vec<(i64, String)>)> {
    let expires_on =
        (time::OffsetDateTime::now_utc().date() + time::Duration::days(30)).to_string();
    let client = http_client()?;
    let mut created = Vec::new();
    let mut row = None;
    for duration in [timing.warm_up, timing.measure] {
        let target = Arc::new(Target {
            client: client.clone(),
            base: base.to_owned(),
            expires_on: expires_on.clone(),
            existing: existing.clone(),
        });
        let (tallies, elapsed) = phase(target, load, duration).await;
        let errors: usize = tallies.iter().map(|t| t.errors).sum();
        if let Some(e) = tallies.iter().find_map(|t| t.first_error.as_ref()) {
            eprintln!("  {scenario}/{backend}: {errors} errors, the first: {e}");
        }
        let mut latencies: Vec<u32> = Vec::new();
        for t in tallies {
            latencies.extend(t.latencies);
            created.extend(t.created);
        }
        latencies.sort_unstable();
        row = Some(Row {
            scenario,
            backend,
            requests: latencies.len(),
            errors,
            elapsed,
            latencies,
            cache: None,
        });
    }
    Ok((row.context("no measured phase")?, created))
}

/// How long the raw commit loop runs.
const RAW_FOR: Duration = Duration::from_secs(3);

/// The ceiling for durable writes: single-row transactions committed one after another for
/// [`RAW_FOR`], each durable before the next begins. SQLite: a file in `dir`, opened as
/// tokendesk opens its database (WAL, `synchronous = FULL`); PostgreSQL: a table in the bench's
/// database on the same server.
async fn raw_commit_rate(backend: &str, dir: &Path, url: &str) -> anyhow::Result<Raw> {
    sqlx::any::install_default_drivers();
    let mut conn = if backend == "sqlite" {
        let file = dir.join("raw-commits.db");
        let mut conn =
            sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=rwc", file.display())).await?;
        sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL")
            .execute(&mut conn)
            .await?;
        conn
    } else {
        sqlx::AnyConnection::connect(url).await?
    };
    sqlx::query("CREATE TABLE IF NOT EXISTS raw_commits (id BIGINT PRIMARY KEY, note TEXT)")
        .execute(&mut conn)
        .await?;
    let started = Instant::now();
    let mut n: i64 = 0;
    let mut each_ms = Vec::new();
    while started.elapsed() < RAW_FOR {
        // One statement outside a transaction: one durable commit.
        let one = Instant::now();
        sqlx::query("INSERT INTO raw_commits (id, note) VALUES ($1, $2)")
            .bind(n)
            .bind("a request's worth of text, more or less")
            .execute(&mut conn)
            .await?;
        each_ms.push(one.elapsed().as_secs_f64() * 1000.0);
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE raw_commits")
        .execute(&mut conn)
        .await?;
    each_ms.sort_by(f64::total_cmp);
    let at = |p: f64| nearest_rank(each_ms.len(), p).map_or(f64::NAN, |i| each_ms[i]);
    Ok(Raw {
        rate,
        p50_ms: at(50.0),
        p99_ms: at(99.0),
        max_ms: at(100.0),
    })
}

/// The raw commit loop's rate, and how long its commits took: a disk whose commits sometimes
/// take long holds up a whole shared commit (and every submission in it) as long.
struct Raw {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Start-ups measured (the median is reported).
const STARTS: usize = 5;
/// How long a started server is left alone before its idle memory is read.
const IDLE: Duration = Duration::from_secs(3);

/// What starting `tokendesk serve` on an empty SQLite database costs.
struct StartUp {
    /// From the spawn to the first `200` from `/readyz`, each run, sorted.
    ready_ms: Vec<f64>,
    /// Resident memory (`VmRSS`) after [`IDLE`] without requests, each run, sorted.
    idle_mb: Vec<f64>,
}

impl StartUp {
    fn median(values: &[f64]) -> f64 {
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// Starts `tokendesk serve` [`STARTS`] times, each on a new, empty SQLite database (migrations
/// included), polls `/readyz` every millisecond from the spawn on, then leaves it idle and
/// reads its resident memory.
async fn start_up(sim: &RunningSim) -> anyhow::Result<StartUp> {
    let client = http_client()?;
    let mut ready_ms = Vec::new();
    let mut idle_mb = Vec::new();
    for run in 0..STARTS {
        let dir = std::env::temp_dir().join(format!(
            "tokendesk-bench-start-{}-{run}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        let url = format!("sqlite://{}", dir.join("tokendesk.db").display());
        let config = write_config(&dir, &url, sim, Cache::On)?;
        let spawned = Instant::now();
        let server = Server::start("start-up", tokendesk_serve(&config))?;
        let ready = loop {
            if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await
                && r.status().is_success()
            {
                break spawned.elapsed();
            }
            if spawned.elapsed() > Duration::from_secs(20) {
                bail!("/readyz did not answer 200 within 20 s of the start");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        tokio::time::sleep(IDLE).await;
        let rss = vm_field(
            &PathBuf::from(format!("/proc/{}/status", server.child.id())),
            "VmRSS:",
        )?;
        ready_ms.push(ready.as_secs_f64() * 1000.0);
        idle_mb.push(mb(rss));
        server.stop()?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    ready_ms.sort_by(f64::total_cmp);
    idle_mb.sort_by(f64::total_cmp);
    Ok(StartUp { ready_ms, idle_mb })
}

/// Waits until the server says it is ready.
async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let client = http_client()?;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{base}/readyz never answered 200")
}

/// Waits until the workers have sent the notices queued by the submissions (so that look-ups
/// are measured on a quiet service); says how long that took.
async fn wait_for_emails(database_url: &str, backend: &str, limit: Duration) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(database_url).await?;
    let started = Instant::now();
    let mut first = None;
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM emails WHERE state IN ('queued', 'sending')")
                .fetch_one(&mut conn)
                .await?;
        let first = *first.get_or_insert(pending);
        if pending == 0 {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "  {backend}: the {first} notices queued by the submissions were sent within {secs:.1} s \
                 (≥ {:.0}/s while idle)",
                first as f64 / secs.max(0.001)
            );
            return Ok(());
        }
        if started.elapsed() > limit {
            println!(
                "  {backend}: {pending} of {first} queued notices still unsent after {limit:?}; \
                 look-ups run beside the email worker"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Submissions then look-ups against tokendesk as configured by default; then look-ups again
/// against a tokendesk on the same database with its status look-up cache off (every look-up a
/// database query). Returns the rows and both servers' peak memory.
async fn tokendesk_scenarios(
    dir: &Path,
    backend: &'static str,
    database_url: &str,
    sim: &RunningSim,
    timing: Timing,
) -> anyhow::Result<(Vec<Row>, [u64; 2])> {
    let config = write_config(dir, database_url, sim, Cache::On)?;
    let server = Server::start(backend, tokendesk_serve(&config))?;
    wait_ready(&server.base).await?;
    let (submit, created) = scenario(
        "submit",
        backend,
        &server.base,
        Load::Submit,
        Arc::new(Vec::new()),
        timing,
    )
    .await?;
    println!(
        "  {backend}: submit done ({:.0}/s); {} requests exist",
        submit.per_second(),
        created.len()
    );
    if created.is_empty() {
        bail!("no request was created on {backend}: look-ups impossible");
    }
    wait_for_emails(database_url, backend, timing.drain_limit).await?;
    let created = Arc::new(looked_up(created));
    let (mut look_up, _) = scenario(
        "look-up",
        backend,
        &server.base,
        Load::LookUp,
        created.clone(),
        timing,
    )
    .await?;
    println!("  {backend}: look-up done ({:.0}/s)", look_up.per_second());
    let peak = server.peak_memory()?;
    look_up.cache = server.stop()?;
    if let Some(cache) = look_up.cache {
        println!(
            "  {backend}: the cache answered {} of {} look-ups ({:.0}%)",
            cache.hits,
            cache.hits + cache.misses,
            100.0 * cache.hit_rate()
        );
    }

    let config = write_config(dir, database_url, sim, Cache::Off)?;
    let server = Server::start(backend, tokendesk_serve(&config))?;
    wait_ready(&server.base).await?;
    let (uncached, _) = scenario(
        UNCACHED,
        backend,
        &server.base,
        Load::LookUp,
        created,
        timing,
    )
    .await?;
    println!(
        "  {backend}: look-up with the cache off done ({:.0}/s)",
        uncached.per_second()
    );
    let uncached_peak = server.peak_memory()?;
    Ok((vec![submit, look_up, uncached], [peak, uncached_peak]))
}

/// How many of the submitted requests the look-ups choose from: a fixed number, so that what
/// the look-ups measure does not change with how fast the submissions were (a faster service
/// would otherwise meet more requests it had not looked up yet, and a bigger cache).
const LOOKED_UP: usize = 4_000;

/// `LOOKED_UP` of the submitted requests, evenly spaced through them (every client's, from the
/// first to the last), or all when fewer were submitted.
fn looked_up(created: Vec<(i64, String)>) -> Vec<(i64, String)> {
    let step = created.len().div_ceil(LOOKED_UP).max(1);
    created.into_iter().step_by(step).collect()
}

/// The scenario name of look-ups with `view_cache_entries = 0`.
const UNCACHED: &str = "look-up, no cache";

// ---- PostgreSQL ------------------------------------------------------------------------------

#[path = "support/pg.rs"]
mod pg;
use pg::PgDatabase;

// ---- the run ---------------------------------------------------------------------------------

fn timing() -> Timing {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("TOKENDESK_BENCH_QUICK").is_ok_and(|v| v == "1");
    if quick {
        Timing {
            warm_up: Duration::from_secs(1),
            measure: Duration::from_secs(3),
            drain_limit: Duration::from_secs(60),
        }
    } else {
        Timing {
            warm_up: Duration::from_secs(3),
            measure: Duration::from_secs(10),
            drain_limit: Duration::from_secs(120),
        }
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn run() -> anyhow::Result<bool> {
    let timing = timing();
    println!(
        "tokendesk HTTP benchmark: {CLIENTS} concurrent clients, keep-alive, loopback; \
         {:?} warm-up + {:?} measured per scenario; {} CPUs",
        timing.warm_up,
        timing.measure,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "servers run in child processes (peak memory is theirs); the load generator shares the CPUs"
    );
    if let Some(n) = pool_size() {
        println!("tokendesk's database.max_connections = {n} (TOKENDESK_BENCH_MAX_CONNECTIONS)");
    }
    let sim = tokendesk_canvas_sim::start(
        SimConfig {
            seed: bench_seed(),
            throttle: None,
            ..Default::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let mut rows: Vec<Row> = Vec::new();
    let mut memory: Vec<(&'static str, u64)> = Vec::new();
    // Each backend's raw single-row commit rate (the ceiling for submissions).
    let mut raw: Vec<(&'static str, Raw)> = Vec::new();
    let mut ok = true;

    // Start-up and idle cost, before any load.
    let start = start_up(&sim).await;
    match &start {
        Ok(s) => println!(
            "  start-up: /readyz after {:.0} ms (median of {STARTS}: {:?}); idle VmRSS {:.1} MB after {:?}",
            StartUp::median(&s.ready_ms),
            s.ready_ms.iter().map(|v| v.round()).collect::<Vec<_>>(),
            StartUp::median(&s.idle_mb),
            IDLE
        ),
        Err(e) => {
            eprintln!("start-up: {e:#}");
            ok = false;
        }
    }

    // Baseline.
    let mut command = Command::new(std::env::current_exe()?);
    command.env(ROLE_VAR, "baseline");
    let baseline = Server::start("baseline", command)?;
    wait_ready_baseline(&baseline.base).await?;
    let (row, _) = scenario(
        "fixed JSON",
        "baseline",
        &baseline.base,
        Load::Baseline,
        Arc::new(Vec::new()),
        timing,
    )
    .await?;
    println!("  baseline: done ({:.0}/s)", row.per_second());
    rows.push(row);
    memory.push((baseline.name, baseline.peak_memory()?));
    drop(baseline);

    // SQLite.
    let dir = std::env::temp_dir().join(format!("tokendesk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sqlite_url = format!("sqlite://{}", dir.join("tokendesk.db").display());
    let outcome = tokendesk_scenarios(&dir, "sqlite", &sqlite_url, &sim, timing).await;
    match raw_commit_rate("sqlite", &dir, &sqlite_url).await {
        Ok(r) => raw.push(("sqlite", r)),
        Err(e) => eprintln!("sqlite raw commits: {e:#}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok((r, [peak, uncached_peak])) => {
            rows.extend(r);
            memory.push(("sqlite", peak));
            memory.push(("sqlite, cache off", uncached_peak));
        }
        Err(e) => {
            eprintln!("sqlite: {e:#}");
            ok = false;
        }
    }

    // PostgreSQL.
    let mut postgres_ran = false;
    if let Some(db) = PgDatabase::create().await? {
        let dir = std::env::temp_dir().join(format!("tokendesk-bench-pg-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let outcome = tokendesk_scenarios(&dir, "postgres", &db.url, &sim, timing).await;
        match raw_commit_rate("postgres", &dir, &db.url).await {
            Ok(r) => raw.push(("postgres", r)),
            Err(e) => eprintln!("postgres raw commits: {e:#}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = db.drop_database().await {
            eprintln!("could not drop the benchmark database {}: {e:#}", db.name);
        }
        match outcome {
            Ok((r, [peak, uncached_peak])) => {
                rows.extend(r);
                memory.push(("postgres", peak));
                memory.push(("postgres, cache off", uncached_peak));
                postgres_ran = true;
            }
            Err(e) => {
                eprintln!("postgres: {e:#}");
                ok = false;
            }
        }
    }
    sim.shutdown().await;

    print_table(&rows, &memory);
    if !postgres_ran {
        println!("!! PostgreSQL was NOT measured in this run");
    }
    print_targets(&rows, &memory, start.as_ref().ok(), &raw);
    if rows.iter().any(|r| r.errors > 0) {
        ok = false;
    }
    Ok(ok)
}

async fn wait_ready_baseline(base: &str) -> anyhow::Result<()> {
    let client = http_client()?;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{base}/api/v1/ping")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the baseline never answered")
}

fn baseline_rate(rows: &[Row]) -> Option<f64> {
    rows.iter()
        .find(|r| r.backend == "baseline")
        .map(Row::per_second)
}

fn print_table(rows: &[Row], memory: &[(&'static str, u64)]) {
    let baseline = baseline_rate(rows);
    println!();
    println!(
        "{:<18} {:<9} {:>9} {:>10} {:>8} {:>8} {:>7} {:>12} {:>11}",
        "scenario",
        "backend",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "vs baseline",
        "cache hits"
    );
    for r in rows {
        let ratio = match baseline {
            Some(b) if r.backend != "baseline" => format!("{:.0}%", 100.0 * r.per_second() / b),
            _ => "—".to_owned(),
        };
        let hits = r.cache.map_or_else(
            || "—".to_owned(),
            |c| format!("{:.0}%", 100.0 * c.hit_rate()),
        );
        println!(
            "{:<18} {:<9} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>7} {:>12} {:>11}",
            r.scenario,
            r.backend,
            r.requests,
            r.per_second(),
            r.percentile_ms(50.0),
            r.percentile_ms(99.0),
            r.errors,
            ratio,
            hits
        );
    }
    println!();
    let own = vm_hwm(Path::new("/proc/self/status")).unwrap_or(0);
    let list: Vec<String> = memory
        .iter()
        .map(|(name, bytes)| format!("{name} {:.1} MB", mb(*bytes)))
        .collect();
    println!(
        "peak memory (VmHWM of each server process): {}; load generator (this process): {:.1} MB",
        list.join(", "),
        mb(own)
    );
}

fn print_targets(
    rows: &[Row],
    memory: &[(&'static str, u64)],
    start: Option<&StartUp>,
    raw: &[(&'static str, Raw)],
) {
    let verdict = |pass: bool| if pass { "met" } else { "MISSED" };
    for (backend, raw) in raw {
        if let Some(r) = rows
            .iter()
            .find(|r| r.scenario == "submit" && r.backend == *backend)
        {
            println!(
                "submit {backend}: {:.0}/s = {:.0} % of raw ({:.0} single-row commits/s one after another, each p50 {:.2} / p99 {:.2} / max {:.1} ms), p99 {:.1} ms",
                r.per_second(),
                100.0 * r.per_second() / raw.rate,
                raw.rate,
                raw.p50_ms,
                raw.p99_ms,
                raw.max_ms,
                r.percentile_ms(99.0)
            );
        }
    }
    println!("targets:");
    for (backend, raw) in raw {
        if let Some(r) = rows
            .iter()
            .find(|r| r.scenario == "submit" && r.backend == *backend)
        {
            let share = r.per_second() / raw.rate;
            let p99 = r.percentile_ms(99.0);
            let sqlite = *backend == "sqlite";
            println!(
                "  submissions on {backend} ≥ 50 % of the raw commit rate{}: {:.0} %{} — {}",
                if sqlite { ", p99 < 20 ms" } else { "" },
                100.0 * share,
                if sqlite {
                    format!(", p99 {p99:.1} ms")
                } else {
                    String::new()
                },
                verdict(share >= 0.5 && (!sqlite || p99 < 20.0))
            );
        }
    }
    if let Some(s) = start {
        let (ready, idle) = (StartUp::median(&s.ready_ms), StartUp::median(&s.idle_mb));
        println!(
            "  /readyz within 200 ms of starting on an empty database: {ready:.0} ms — {}",
            verdict(ready <= 200.0)
        );
        println!(
            "  idle resident memory < 30 MB: {idle:.1} MB — {}",
            verdict(idle < 30.0)
        );
    }
    if let Some(b) = baseline_rate(rows) {
        for r in rows.iter().filter(|r| r.scenario == "look-up") {
            let share = r.per_second() / b;
            let uncached = rows
                .iter()
                .find(|u| u.scenario == UNCACHED && u.backend == r.backend)
                .map_or_else(String::new, |u| {
                    format!(" (with the cache off: {:.0}%)", 100.0 * u.per_second() / b)
                });
            println!(
                "  look-ups on {} ≥ 40% of the baseline: {:.0}% — {}{uncached}",
                r.backend,
                share * 100.0,
                verdict(share >= 0.4)
            );
        }
    }
    if let Some(r) = rows
        .iter()
        .find(|r| r.scenario == "submit" && r.backend == "sqlite")
    {
        println!(
            "  submissions on sqlite ≥ 1,000/s (synchronous = FULL): {:.0}/s — {}",
            r.per_second(),
            verdict(r.per_second() >= 1000.0)
        );
    }
    for (name, bytes) in memory.iter().filter(|(n, _)| *n != "baseline") {
        println!(
            "  peak memory of tokendesk on {name} < 100 MB: {:.1} MB — {}",
            mb(*bytes),
            verdict(*bytes < 100 * 1024 * 1024)
        );
    }
}

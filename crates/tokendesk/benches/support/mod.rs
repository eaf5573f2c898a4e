//! What the reconciliation and bulk revocation benches share: the seed (the simulator and a
//! database with the same people and tokens), the fastest time Canvas's leaky bucket allows,
//! computed in the same run from the bucket's settings, the child processes, the table.
//!
//! **reconcile**: one reconciliation pass (`App::reconcile`) over many tracked tokens.
//! **revoke**: one bulk revocation of every token (`App::start_revocation`, its jobs run by
//! `tokendesk::jobs::REVOKE_RUNNERS` job runners at once, as `tokendesk admin revoke` runs them): one `DELETE`
//! per token; `cargo bench -p tokendesk --bench revoke [-- --tokens N]` (default 10,000 tokens
//! of 5,000 people), the main run only.
//!
//! The reconciliation bench's own description follows.
//!
//! `cargo bench -p tokendesk --bench reconcile [-- --tokens N]` (default 50,000 tokens of
//! 25,000 people, two each). Flags: `--only-main` runs only the main pass (50 ms latency, the
//! default bucket); `--latency-ms MS` and/or `--throttle-hwm H` run one pass at those settings
//! instead of the four below.
//!
//! Runs, each in a child process of its own (this binary again), so that its memory is its own:
//!
//! - **main**: N tokens, 50 ms latency, the default bucket (high-water mark 600, up-front cost
//!   50, outflow 10/s, request cost 0.05);
//! - the same at high-water mark 700 (hosted Canvas);
//! - the same at 20 ms latency;
//! - the same at 300 ms latency; when its minimum at N is more than 1.5 × the main run's, at
//!   the largest N (in thousands of tokens) whose minimum is at most the main run's (the row
//!   says so).
//!
//! Each child seeds the simulator (in-process, on loopback) with an admin (whose token the
//! service uses) and N/2 people with two tokens each, pending or active, purposes `tokendesk
//! #<request id>: …`, and an SQLite database (in a temporary folder, durable commits, as in
//! production) with the same people, their requests (`issued` or `activated`) and tokens, with
//! the expiries Canvas holds: so the pass lists everyone once and changes nothing but what it
//! records of each token. Only the pass is timed. VmRSS is sampled every 100 ms during it.
//!
//! # The minimum
//!
//! Notation: high-water mark `h`, up-front cost `u`, outflow `q` (units/s), settled request
//! cost `c`, latency `L`, `R` listing requests (one per person: two tokens fit in a page of
//! 100). The bucket's count is `C = u·k + B`, `k` requests in flight (each holding `u` from
//! its arrival until it settles, `L` later) and the backlog `B = c·(settled) − q·t`: the leak
//! drains the whole count, the up-front costs held included, and the count is clamped at 0 only
//! when all of it is gone. A request is admitted iff `C + u < h`.
//!
//! The two bounds one writes first, "at most `⌈h/u⌉ − 1` (11) in flight, each for `L`" (`R·L /
//! 11`: 113.6 s for 25,000 at 50 ms) and "the sustained rate `q/c` (200/s)" (`R·c/q`: 125 s),
//! and their maximum, are not what the bucket allows, either way: the bucket starts empty and
//! the backlog may grow to `h − u·k` before it bites, so a client may run faster than `q/c` for
//! a while (and, late in a pass, with fewer in flight); and below `q/c` the backlog goes
//! *negative* (the leak eats into the up-front costs held), so more than 11 may be in flight
//! later (at 300 ms, up to `q·L/c` = 60). The best client keeps `u·k + B` just under `h`. In the
//! fluid limit `k = (h − B)/u` and `dB/dt = c·k/L − q`, so its rate `k/L` relaxes from `r₀ =
//! h/(u·L)` to `r∞ = q/c` with time constant `τ = u·L/c`:
//!
//! `R(T) = r∞·T + (r₀ − r∞)·τ·(1 − e^(−T/τ))`,
//!
//! and the minimum `M` solves `R(M) = R` (no client can do better: the constraint `u·L·R′ + c·R
//! − q·t < h` is a differential inequality whose greatest solution is this one). At 50 ms:
//! `r₀` 240/s, `r∞` 200/s, `τ` 50 s, `M` ≈ 116 s for 25,000 people; at 20 ms, `τ` 20 s and the
//! backlog's headroom (up to 400 units, 8,000 requests' worth) matters most; at 300 ms `τ` is
//! 300 s and the growing concurrency does.
//!
//! The bench computes `M` exactly rather than in the fluid limit, with the simulator's
//! [`ThrottleSettings::minimum_time`]: the bucket's own rules (leak, admission at `C + u < h`,
//! settling to `c`, clamping to `[0, maximum]`) against an ideal client with no network or
//! processing time that starts each request the instant the bucket would admit it and holds it
//! exactly `L`. `M` is when its last request settles. Both numbers, and the naive bound, are
//! printed. (The throttle bench of the Canvas client uses the same computation.)
//!
//! The target (issue) is a wall time within 1.15 × `M`, with 0 throttled responses and flat
//! memory (the pass's peak RSS does not grow with N beyond one batch). They are reported, not
//! enforced; the bench fails only if the pass failed, was throttled, or did more (or less) than
//! list everyone and record what it saw.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Row as _;
use tokendesk::app::{App, AppParts, Mailer, RoleBook, SystemClock};
use tokendesk::domain::Policy;
use tokendesk::store::{Store, StoreOptions};
use tokendesk_canvas::{CanvasClient, SecretString};
use tokendesk_canvas_sim::{
    DEFAULT_ADMIN_TOKEN, Seed, SeedSettings, SeedToken, SeedTokenState, SeedUser, SimConfig,
    ThrottleSettings, generate_token_value,
};

/// Which bench this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Reconcile,
    Revoke,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Reconcile => "reconcile",
            Pass::Revoke => "revoke",
        }
    }

    fn default_tokens(self) -> usize {
        match self {
            Pass::Reconcile => 50_000,
            Pass::Revoke => 10_000,
        }
    }

    /// Canvas requests the pass makes: one listing per person, or one deletion per token.
    fn requests(self, spec: &RunSpec) -> usize {
        match self {
            Pass::Reconcile => spec.people(),
            Pass::Revoke => spec.tokens,
        }
    }
}

const ROLE_FLAG: &str = "--child-run";
const RESULT_PREFIX: &str = "RESULT ";
/// The Canvas id of the first person (the admin is 1).
const FIRST_PERSON: u64 = 2;

// ---- arguments -------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
struct RunSpec {
    tokens: usize,
    latency_ms: u64,
    hwm: f64,
    /// The N asked for, when this run was made smaller.
    reduced_from: Option<usize>,
}

impl RunSpec {
    fn people(&self) -> usize {
        self.tokens / 2
    }

    fn bucket(&self) -> ThrottleSettings {
        ThrottleSettings {
            high_water_mark: self.hwm,
            maximum: ThrottleSettings::default().maximum.max(self.hwm),
            ..ThrottleSettings::default()
        }
    }

    fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
}

struct Args {
    tokens: usize,
    only_main: bool,
    latency_ms: Option<u64>,
    hwm: Option<f64>,
    child: bool,
}

fn parse_args(pass: Pass) -> Result<Args, String> {
    let mut args = Args {
        tokens: pass.default_tokens(),
        only_main: false,
        latency_ms: None,
        hwm: None,
        child: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            "--tokens" => {
                let v = value("--tokens")?;
                args.tokens = v
                    .replace(['_', ','], "")
                    .parse()
                    .map_err(|_| format!("--tokens takes a number, not {v:?}"))?;
            }
            "--latency-ms" => {
                let v = value("--latency-ms")?;
                args.latency_ms = Some(
                    v.parse()
                        .map_err(|_| format!("--latency-ms takes a number, not {v:?}"))?,
                );
            }
            "--throttle-hwm" => {
                let v = value("--throttle-hwm")?;
                let hwm: f64 = v
                    .parse()
                    .map_err(|_| format!("--throttle-hwm takes a number, not {v:?}"))?;
                if !(hwm.is_finite() && hwm > 0.0) {
                    return Err("--throttle-hwm must be positive".into());
                }
                args.hwm = Some(hwm);
            }
            "--only-main" => args.only_main = true,
            ROLE_FLAG => args.child = true,
            other => {
                return Err(format!(
                    "unknown argument {other:?} (flags: --tokens N, --only-main, --latency-ms MS, \
                     --throttle-hwm H)"
                ));
            }
        }
    }
    if args.tokens < 2 {
        return Err("--tokens must be at least 2".into());
    }
    // Two tokens per person.
    args.tokens -= args.tokens % 2;
    Ok(args)
}

/// The bench's `main`.
pub fn main(pass: Pass) -> ExitCode {
    let args = match parse_args(pass) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{} bench: {e}", pass.name());
            return ExitCode::FAILURE;
        }
    };
    if args.child {
        // `TOKENDESK_LOG` (default `warn`): the service's and sqlx's logs, on stderr.
        let filter = tracing_subscriber::EnvFilter::try_from_env("TOKENDESK_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .try_init();
        let spec = RunSpec {
            tokens: args.tokens,
            latency_ms: args.latency_ms.unwrap_or(50),
            hwm: args.hwm.unwrap_or(600.0),
            reduced_from: None,
        };
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        return match runtime.block_on(child_run(spec, pass)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("{} bench (child): {e:#}", pass.name());
                ExitCode::FAILURE
            }
        };
    }
    parent(&args, pass)
}

// ---- the parent: plans runs, starts children, prints the table --------------------------------

/// What a child measured.
#[derive(Debug, Clone)]
struct Outcome {
    spec: RunSpec,
    wall: f64,
    minimum: f64,
    fluid: f64,
    naive: f64,
    throttled: u64,
    requests: u64,
    rss_start_mb: f64,
    rss_peak_mb: f64,
    ok: bool,
}

impl Outcome {
    fn ratio(&self) -> f64 {
        self.wall / self.minimum
    }

    fn last_line(&self, pass: Pass) -> String {
        format!(
            "{}: {} tokens, {:.1} s, minimum {:.1} s, ratio {:.3}, throttled {}",
            pass.name(),
            self.spec.tokens,
            self.wall,
            self.minimum,
            self.ratio(),
            self.throttled
        )
    }
}

fn plan(args: &Args, pass: Pass) -> Vec<(&'static str, RunSpec)> {
    let spec = |latency_ms, hwm| RunSpec {
        tokens: args.tokens,
        latency_ms,
        hwm,
        reduced_from: None,
    };
    if args.latency_ms.is_some() || args.hwm.is_some() {
        return vec![(
            "selected",
            spec(args.latency_ms.unwrap_or(50), args.hwm.unwrap_or(600.0)),
        )];
    }
    let main = spec(50, 600.0);
    if args.only_main || pass == Pass::Revoke {
        return vec![("main", main)];
    }
    let main_minimum = main.bucket().minimum_time(main.latency(), main.people());
    let mut slow = spec(300, 600.0);
    let slow_minimum = slow.bucket().minimum_time(slow.latency(), slow.people());
    if slow_minimum > 1.5 * main_minimum {
        // The largest N (whole thousands of tokens) whose minimum is at most the main run's.
        let starts = slow.bucket().ideal_starts(slow.latency(), slow.people());
        let latency = slow.latency().as_secs_f64();
        let people = starts
            .iter()
            .take_while(|&&s| s + latency <= main_minimum)
            .count();
        let tokens = (people * 2 / 1000 * 1000).max(2);
        slow.reduced_from = Some(args.tokens);
        slow.tokens = tokens;
    }
    vec![
        ("main", main),
        ("hosted (hwm 700)", spec(50, 700.0)),
        ("20 ms", spec(20, 600.0)),
        ("300 ms", slow),
    ]
}

fn parent(args: &Args, pass: Pass) -> ExitCode {
    let runs = plan(args, pass);
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut outcomes: Vec<(&str, Outcome)> = Vec::new();
    let mut failed = false;
    for (name, spec) in &runs {
        eprintln!(
            "\n== {name}: {} tokens of {} people, {} ms latency, high-water mark {}{}",
            spec.tokens,
            spec.people(),
            spec.latency_ms,
            spec.hwm,
            spec.reduced_from
                .map(|n| format!(
                    " (reduced from {n} tokens: at full size it would take far longer)"
                ))
                .unwrap_or_default()
        );
        match run_child(&exe, spec) {
            Ok(outcome) => {
                failed |= !outcome.ok;
                outcomes.push((name, outcome));
            }
            Err(e) => {
                eprintln!("{name}: {e}");
                failed = true;
            }
        }
    }

    println!();
    println!(
        "{:<18} {:>7} {:>7} {:>8} {:>5} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>9} {:>8}  note",
        "run",
        "tokens",
        "people",
        "latency",
        "hwm",
        "wall s",
        "min s",
        "fluid s",
        "naive s",
        "ratio",
        "throttled",
        "RSS start",
        "peak MB"
    );
    for (name, o) in &outcomes {
        let mut note = String::new();
        if let Some(n) = o.spec.reduced_from {
            let _ = write!(note, "reduced from {n} tokens (full size: far longer); ");
        }
        let _ = write!(
            note,
            "{} Canvas requests; {}within 1.15x",
            o.requests,
            if o.ratio() <= 1.15 { "" } else { "NOT " }
        );
        if !o.ok {
            note.push_str("; FAILED (see above)");
        }
        println!(
            "{:<18} {:>7} {:>7} {:>6}ms {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>6.3} {:>9} {:>9.1} {:>8.1}  {}",
            name,
            o.spec.tokens,
            o.spec.people(),
            o.spec.latency_ms,
            o.spec.hwm,
            o.wall,
            o.minimum,
            o.fluid,
            o.naive,
            o.ratio(),
            o.throttled,
            o.rss_start_mb,
            o.rss_peak_mb,
            note.trim_start()
        );
    }
    println!(
        "(min: the bucket's fastest schedule at that latency, computed from its settings, whole \
         requests; fluid: its fluid limit; naive: max(R·L/(⌈h/u⌉−1), R·c/q), not a bound; \
         ratio = wall/min; RSS in MiB, sampled every 100 ms during the pass)"
    );
    let last = outcomes
        .iter()
        .find(|(name, _)| *name == "main")
        .or_else(|| outcomes.first());
    match last {
        Some((_, o)) => println!("{}", o.last_line(pass)),
        None => println!("{}: no run finished", pass.name()),
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_child(exe: &PathBuf, spec: &RunSpec) -> Result<Outcome, String> {
    let mut child = Command::new(exe)
        .arg(ROLE_FLAG)
        .args(["--tokens", &spec.tokens.to_string()])
        .args(["--latency-ms", &spec.latency_ms.to_string()])
        .args(["--throttle-hwm", &spec.hwm.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading the child: {e}"))?;
        match line.strip_prefix(RESULT_PREFIX) {
            Some(rest) => result = Some(rest.to_owned()),
            None => println!("{line}"),
        }
    }
    let status = child.wait().map_err(|e| format!("child: {e}"))?;
    let rest = result.ok_or_else(|| format!("the child reported nothing ({status})"))?;
    let field = |name: &str| -> Result<f64, String> {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {name} in {rest:?}"))
    };
    Ok(Outcome {
        spec: *spec,
        wall: field("wall")?,
        minimum: field("minimum")?,
        fluid: field("fluid")?,
        naive: field("naive")?,
        throttled: field("throttled")? as u64,
        requests: field("requests")? as u64,
        rss_start_mb: field("rss_start_mb")?,
        rss_peak_mb: field("rss_peak_mb")?,
        ok: status.success() && field("ok")? == 1.0,
    })
}

// ---- the child: seeds, runs one pass, reports ------------------------------------------------

/// The resident set size, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn login_of(i: usize) -> String {
    format!("person{i:06}")
}

struct Seeded {
    /// Canvas token id of token `j` (0-based, request id `j + 1`).
    canvas_token_ids: Vec<u64>,
    expires_at: Vec<i64>,
    pending: Vec<bool>,
}

/// The simulator's people and tokens; token ids follow the seed's order (the admin's first).
fn canvas_seed(spec: &RunSpec, now: i64) -> (Seed, Seeded) {
    let admin_tokens = vec![SeedToken::active(DEFAULT_ADMIN_TOKEN)];
    let mut next_id = 1 + admin_tokens.len() as u64;
    let mut users = vec![SeedUser {
        id: 1,
        name: "Ada Admin".into(),
        login_id: "ada.admin".into(),
        email: "ada.admin@example.edu".into(),
        sis_user_id: Some("A0001".into()),
        admin: true,
        roles: vec![],
        tokens: admin_tokens,
    }];
    let mut seeded = Seeded {
        canvas_token_ids: Vec::with_capacity(spec.tokens),
        expires_at: Vec::with_capacity(spec.tokens),
        pending: Vec::with_capacity(spec.tokens),
    };
    for i in 0..spec.people() {
        let login = login_of(i);
        let mut tokens = Vec::with_capacity(2);
        for k in 0..2 {
            let j = 2 * i + k;
            let pending = j % 3 == 0;
            let expires = now + 86_400 * (30 + (j % 60) as i64);
            tokens.push(SeedToken {
                value: generate_token_value(),
                purpose: format!("tokendesk #{}: reconciliation bench token", j + 1),
                expires_at: Some(time::OffsetDateTime::from_unix_timestamp(expires).unwrap()),
                state: if pending {
                    SeedTokenState::Pending
                } else {
                    SeedTokenState::Active
                },
            });
            seeded.canvas_token_ids.push(next_id);
            seeded.expires_at.push(expires);
            seeded.pending.push(pending);
            next_id += 1;
        }
        users.push(SeedUser {
            id: FIRST_PERSON + i as u64,
            name: format!("Person {i}"),
            login_id: login.clone(),
            email: format!("{login}@example.edu"),
            sis_user_id: None,
            admin: false,
            roles: vec!["teacher".into()],
            tokens,
        });
    }
    (
        Seed {
            settings: SeedSettings::default(),
            users,
        },
        seeded,
    )
}

/// The same people, requests and tokens in tokendesk's database, in one transaction.
async fn seed_database(store: &Store, spec: &RunSpec, seeded: &Seeded, now: i64) {
    const ROWS: usize = 500;
    let date = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap()
            .date()
            .to_string()
    };
    let mut tx = store.write().await.unwrap();
    let people: Vec<usize> = (0..spec.people()).collect();
    for chunk in people.chunks(ROWS) {
        let mut sql = String::from(
            "INSERT INTO people (login, name, email, canvas_user_id, first_seen_at, updated_at) VALUES ",
        );
        for (n, &i) in chunk.iter().enumerate() {
            let login = login_of(i);
            let _ = write!(
                sql,
                "{}('{login}', 'Person {i}', '{login}@example.edu', {}, {now}, {now})",
                if n == 0 { "" } else { "," },
                FIRST_PERSON + i as u64
            );
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let tokens: Vec<usize> = (0..spec.tokens).collect();
    for chunk in tokens.chunks(ROWS) {
        let mut sql = String::from(
            "INSERT INTO requests (id, requester, purpose, application, requested_expires_on, \
             expires_on, state, created_at, updated_at) VALUES ",
        );
        for (n, &j) in chunk.iter().enumerate() {
            let on = date(seeded.expires_at[j]);
            let _ = write!(
                sql,
                "{}({}, '{}', 'reconciliation bench token', 'bench', '{on}', '{on}', '{}', {now}, {now})",
                if n == 0 { "" } else { "," },
                j + 1,
                login_of(j / 2),
                if seeded.pending[j] {
                    "issued"
                } else {
                    "activated"
                }
            );
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .unwrap();
        let mut sql = String::from(
            "INSERT INTO tokens (id, request_id, owner, canvas_user_id, canvas_token_id, hint, \
             state, expires_at, created_at, updated_at, activated_at, canvas_expires_at, \
             next_check_at, checks) VALUES ",
        );
        for (n, &j) in chunk.iter().enumerate() {
            let pending = seeded.pending[j];
            let _ = write!(
                sql,
                "{}({}, {}, '{}', {}, {}, 'abcd', '{}', {}, {now}, {now}, {}, {}, {}, 0)",
                if n == 0 { "" } else { "," },
                j + 1,
                j + 1,
                login_of(j / 2),
                FIRST_PERSON + (j / 2) as u64,
                seeded.canvas_token_ids[j],
                if pending { "pending" } else { "active" },
                seeded.expires_at[j],
                if pending {
                    "NULL".to_owned()
                } else {
                    now.to_string()
                },
                seeded.expires_at[j],
                if pending {
                    (now + 86_400).to_string()
                } else {
                    "NULL".to_owned()
                },
            );
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

/// Samples VmRSS every 100 ms until stopped; returns the peak (KiB).
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib()));
        let thread = std::thread::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        RssSampler { stop, peak, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.fetch_max(rss_kib(), Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed)
    }
}

async fn child_run(spec: RunSpec, pass: Pass) -> anyhow::Result<bool> {
    let seeding = Instant::now();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (seed, seeded) = canvas_seed(&spec, now);
    let sim = tokendesk_canvas_sim::start(
        SimConfig {
            seed,
            latency: spec.latency(),
            throttle: Some(spec.bucket()),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;

    let dir = std::env::temp_dir().join(format!(
        "tokendesk-{}-bench-{}-{:08x}",
        pass.name(),
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let url = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
    let store = Store::open(&url, &StoreOptions::default()).await?;
    seed_database(&store, &spec, &seeded, now).await;
    drop(seeded);

    // As `App::from_config` builds it, with the default client settings.
    let canvas =
        CanvasClient::builder(sim.base_url(), SecretString::from(DEFAULT_ADMIN_TOKEN)).build()?;
    let app = App::new(AppParts {
        store: store.clone(),
        policy: Policy::default(),
        roles: RoleBook::default(),
        canvas: canvas.clone(),
        canvas_url: sim.base_url().parse()?,
        canvas_user_pattern: tokendesk::domain::UserIdPattern::SisLogin,
        public_url: "http://tokendesk.test/".parse()?,
        mailer: Mailer::Mailbox,
        outbox_key: None,
        product_name: "tokendesk".into(),
        notify: tokendesk::config::NotifyConfig::default(),
        sessions: tokendesk::app::SessionRules::default(),
        fingerprint_key: None,
        clock: Arc::new(SystemClock),
    });
    eprintln!(
        "seeded {} people and {} tokens in {:.1} s",
        spec.people(),
        spec.tokens,
        seeding.elapsed().as_secs_f64()
    );

    let bucket = spec.bucket();
    let wanted = pass.requests(&spec);
    let minimum = bucket.minimum_time(spec.latency(), wanted);
    let naive = bucket.naive_time(spec.latency(), wanted);
    let fluid = bucket.fluid_time(spec.latency(), wanted);
    // Let the seeding's work settle before measuring the start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_start = rss_kib();
    let sampler = RssSampler::start();
    let before = sim.stats();
    let started = Instant::now();
    // `TOKENDESK_BENCH_TRACE=1`: requests and the governor's limit every second.
    let trace = std::env::var("TOKENDESK_BENCH_TRACE").as_deref() == Ok("1");
    let tracer = trace.then(|| {
        let canvas = canvas.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last = 0;
            loop {
                tick.tick().await;
                let s = canvas.stats();
                eprintln!(
                    "t={:6.1}s requests={:6} (+{:4}) throttled={} limit={}",
                    started.elapsed().as_secs_f64(),
                    s.requests,
                    s.requests - last,
                    s.throttled,
                    s.peak_concurrency_limit
                );
                last = s.requests;
            }
        })
    });
    let outcome = match pass {
        Pass::Reconcile => app.reconcile().await.map(Some),
        Pass::Revoke => revoke_everything(&app).await.map(|()| None),
    };
    let wall = started.elapsed().as_secs_f64();
    let rss_peak = sampler.finish();
    if let Some(tracer) = tracer {
        tracer.abort();
    }
    let after = sim.stats();
    let report = outcome.map_err(|e| anyhow::anyhow!("the pass failed: {e}"))?;
    let requests = after.api_requests - before.api_requests;
    let throttled = (after.throttled - before.throttled).max(canvas.stats().throttled);
    let mut problems = match report {
        Some(report) => reconcile_problems(&store, &spec, &report).await?,
        None => revoke_problems(&store, &spec).await?,
    };
    if requests != wanted as u64 {
        problems.push(format!(
            "{requests} Canvas requests, not {wanted} (one per {})",
            if pass == Pass::Reconcile {
                "person"
            } else {
                "token"
            }
        ));
    }
    if throttled > 0 {
        problems.push(format!("{throttled} throttled responses"));
    }
    for p in &problems {
        eprintln!("PROBLEM: {p}");
    }
    let stats = canvas.stats();
    eprintln!(
        "pass: {wall:.1} s for {requests} requests ({:.1}/s), minimum {minimum:.1} s (ratio \
         {:.3}; fluid limit {fluid:.1} s), naive bound {naive:.1} s; client: {} requests, {} throttled, {} retries, final \
         concurrency limit {}; RSS {:.1} MiB at the start, {:.1} MiB at the peak",
        requests as f64 / wall,
        wall / minimum,
        stats.requests,
        stats.throttled,
        stats.retries,
        stats.peak_concurrency_limit,
        mib(rss_start),
        mib(rss_peak),
    );
    println!(
        "{RESULT_PREFIX}wall={wall:.3} minimum={minimum:.3} fluid={fluid:.3} naive={naive:.3} throttled={throttled} \
         requests={requests} rss_start_mb={:.1} rss_peak_mb={:.1} ok={}",
        mib(rss_start),
        mib(rss_peak),
        u8::from(problems.is_empty())
    );
    app.close().await;
    sim.shutdown().await;
    Ok(problems.is_empty())
}

/// One bulk revocation of every token, its jobs run as `tokendesk admin revoke` runs them.
async fn revoke_everything(app: &App) -> Result<(), tokendesk::app::AppError> {
    use tokendesk::domain::request::{REVOKE_ALL_CONFIRMATION, RevokeFilter};
    let admin = tokendesk::domain::Actor {
        login: tokendesk::domain::Login::parse("ada.admin").expect("a login"),
        roles: tokendesk::domain::Roles {
            admin: true,
            ..Default::default()
        },
    };
    app.start_revocation(
        &admin,
        RevokeFilter::All,
        "the revocation bench",
        Some(REVOKE_ALL_CONFIRMATION),
        &Default::default(),
    )
    .await?;
    tokendesk::jobs::drain_jobs_concurrently(app, tokendesk::jobs::REVOKE_RUNNERS).await?;
    Ok(())
}

/// A consistent seed: the pass listed everyone and changed nothing but what it records.
async fn reconcile_problems(
    store: &Store,
    spec: &RunSpec,
    report: &tokendesk::app::ReconcileReport,
) -> anyhow::Result<Vec<String>> {
    let mut conn = store.pool().acquire().await?;
    let recorded: i64 = sqlx::query("SELECT COUNT(*) FROM tokens WHERE reconciled_at IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let mut problems = Vec::new();
    if report.people != spec.people() || report.tokens != spec.tokens {
        problems.push(format!(
            "listed {} people and compared {} tokens, not {} and {}",
            report.people,
            report.tokens,
            spec.people(),
            spec.tokens
        ));
    }
    if report.failed > 0 {
        problems.push(format!("{} listings failed", report.failed));
    }
    let changes = report.activated
        + report.gone
        + report.expiry_changed
        + report.expiry_corrected
        + report.orphans_found;
    if changes > 0 {
        problems.push(format!("it found changes in a consistent seed: {report:?}"));
    }
    if recorded != spec.tokens as i64 {
        problems.push(format!(
            "{recorded} of {} tokens recorded as reconciled",
            spec.tokens
        ));
    }
    Ok(problems)
}

/// Every token revoked here, its run finished with nothing failed.
async fn revoke_problems(store: &Store, spec: &RunSpec) -> anyhow::Result<Vec<String>> {
    let mut conn = store.pool().acquire().await?;
    let revoked: i64 = sqlx::query("SELECT COUNT(*) FROM requests WHERE state = 'revoked'")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let failed: i64 = sqlx::query("SELECT COUNT(*) FROM revoke_items WHERE state <> 'done'")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let mut problems = Vec::new();
    if revoked != spec.tokens as i64 || failed != 0 {
        problems.push(format!(
            "{revoked} of {} tokens revoked, {failed} items not done",
            spec.tokens
        ));
    }
    Ok(problems)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

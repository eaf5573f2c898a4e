//! Two `tokendesk serve` processes on one PostgreSQL database, with the Canvas simulator in this
//! process: requests submitted and approved through both are each issued exactly once; two
//! approvers approving the same request at the same moment on the two instances get one 200 and
//! one 409 and one issuance; an instance killed (SIGKILL) while it holds a job loses it to the
//! other once the lease runs out, and there is still exactly one live token; the sweep runs once
//! per period across both; a status look-up cached by one instance follows a change made through
//! the other within moments (the cache's entries would otherwise live for minutes). PostgreSQL only: skipped when it is not reachable, unless
//! `TEST_REQUIRE_POSTGRES=1`. Prints a summary of what it saw.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt as _;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokendesk::domain::RequestId;
use tokendesk::domain::request::{RequestState, canvas_purpose};
use tokendesk::store::{self, Store};
use tokendesk_canvas::{CanvasClient, TokenState, UserRef};
use tokendesk_canvas_sim::{
    DEFAULT_ADMIN_TOKEN, Seed, SeedSettings, SeedToken, SeedUser, SimConfig,
};

use crate::support::db::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_tokendesk");
/// `[workers] lease_secs` of both instances.
const LEASE_SECS: u64 = 3;
/// `[workers] sweep_every_secs` of both instances.
const SWEEP_SECS: u64 = 3;
/// Canvas answers every API call after this long, so that a job takes a while.
const LATENCY: Duration = Duration::from_millis(150);
/// Requesters in the first part, one request each.
const MANY: usize = 12;
/// Rounds of the simultaneous-approval race.
const RACES: usize = 3;
/// `[database] view_cache_secs` of both instances: long, so that only a change notice can make
/// an instance drop a view it holds.
const VIEW_CACHE_SECS: u64 = 600;
/// Rounds of the look-up coherence check.
const LOOKUPS: usize = 5;

const ADMIN: &str = "ada.admin";

fn seed() -> Seed {
    let user = |id: u64, login: &str, admin: bool, tokens: Vec<SeedToken>| SeedUser {
        id,
        name: login.to_owned(),
        login_id: login.to_owned(),
        email: format!("{login}@example.edu"),
        sis_user_id: None,
        admin,
        roles: if admin {
            vec![]
        } else {
            vec!["teacher".to_owned()]
        },
        tokens,
    };
    let mut users = vec![
        user(1, ADMIN, true, vec![SeedToken::active(DEFAULT_ADMIN_TOKEN)]),
        user(2, "theo.teacher", false, vec![]),
    ];
    for (i, login) in requesters().iter().enumerate() {
        users.push(user(10 + i as u64, login, false, vec![]));
    }
    Seed {
        settings: SeedSettings::default(),
        users,
    }
}

/// `u01`…: the first part's requesters, then `race1`…, then `killed`.
fn requesters() -> Vec<String> {
    (1..=MANY)
        .map(|i| format!("u{i:02}"))
        .chain((1..=RACES).map(|i| format!("race{i}")))
        .chain(["killed".to_owned()])
        .collect()
}

/// A `tokendesk serve` child process, killed if the test ends early.
struct Instance {
    name: &'static str,
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    alive: bool,
}

impl Instance {
    fn start(name: &'static str, config: &Path) -> Instance {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("TOKENDESK_CONFIG")
            .env(
                "TOKENDESK_LOG",
                "warn,tokendesk::jobs=debug,tokendesk::store=info",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{name} did not start: {:?}", log.lock().unwrap()));
        let addr = line
            .strip_prefix("tokendesk listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{name} printed {line:?}"))
            .to_owned();
        Instance {
            name,
            child,
            base: addr,
            log,
            alive: true,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether `jobs.locked_by` names this process (`PID-RANDOM`).
    fn holds(&self, locked_by: &str) -> bool {
        locked_by.split('-').next() == Some(self.pid().to_string().as_str())
    }

    fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Sweep periods this instance claimed, and the ticks where another instance had.
    fn sweeps(&self) -> (usize, usize) {
        (
            self.count_log("sweep: this instance claimed the period"),
            self.count_log("sweep: another instance ran it this period"),
        )
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.alive = false;
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(&mut self) {
        if !self.alive {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "{} stopped with {status}", self.name);
                self.alive = false;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not stop on SIGTERM", self.name);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.alive {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn call(
    client: &reqwest::Client,
    base: &str,
    who: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let r = client
        .post(format!("{base}{path}"))
        .header("X-Remote-User", who)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn submit(client: &reqwest::Client, base: &str, who: &str) -> RequestId {
    let expires_on =
        (time::OffsetDateTime::now_utc().date() + time::Duration::days(30)).to_string();
    let (status, body) = call(
        client,
        base,
        who,
        "/api/v1/requests",
        json!({"purpose": "nightly grade export for my sections", "expires_on": expires_on}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    RequestId(body["id"].as_i64().unwrap())
}

async fn approve(client: &reqwest::Client, base: &str, id: RequestId) -> (u16, Value) {
    call(
        client,
        base,
        ADMIN,
        &format!("/api/v1/requests/{}/approve", id.0),
        json!({}),
    )
    .await
}

/// `GET /api/v1/requests/{id}` as the admin: the request's state.
async fn looked_up(client: &reqwest::Client, base: &str, id: RequestId) -> String {
    let r = client
        .get(format!("{base}/api/v1/requests/{}", id.0))
        .header("X-Remote-User", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    body["state"].as_str().unwrap().to_owned()
}

async fn state_of(store: &Store, id: RequestId) -> RequestState {
    let mut conn = store.pool().acquire().await.unwrap();
    store::get_request(&mut conn, id)
        .await
        .unwrap()
        .unwrap()
        .state
}

/// Waits until every request is issued; returns how long it took.
async fn wait_issued(store: &Store, ids: &[RequestId], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut pending = Vec::new();
        for id in ids {
            let state = state_of(store, *id).await;
            assert!(
                matches!(state, RequestState::Approved | RequestState::Issued),
                "request {id} is {state:?}"
            );
            if state != RequestState::Issued {
                pending.push(*id);
            }
        }
        if pending.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not issued in {within:?}: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Live (not deleted) Canvas tokens tokendesk made for a request.
async fn live_tokens(canvas: &CanvasClient, login: &str, id: RequestId) -> usize {
    let prefix = canvas_purpose(id, "");
    canvas
        .list_user_tokens(&UserRef::parse(&format!("sis_login_id:{login}")))
        .await
        .unwrap()
        .iter()
        .filter(|t| {
            t.workflow_state != TokenState::Deleted
                && t.purpose.as_deref().is_some_and(|p| p.starts_with(&prefix))
        })
        .count()
}

/// `(state, attempts, locked_by)` of the issuance job of a request.
async fn job_of(store: &Store, id: RequestId) -> Option<(String, i64, Option<String>)> {
    let mut conn = store.pool().acquire().await.unwrap();
    let row: Option<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT state, attempts, locked_by FROM jobs WHERE request_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(id.0)
    .fetch_optional(&mut *conn)
    .await
    .unwrap();
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_postgres_database() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("instances test skipped: PostgreSQL is not reachable");
        return;
    };
    let sim = tokendesk_canvas_sim::start(
        SimConfig {
            seed: seed(),
            latency: LATENCY,
            throttle: None,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let canvas = CanvasClient::builder(sim.base_url(), SecretString::from(DEFAULT_ADMIN_TOKEN))
        .build()
        .unwrap();
    let dir = Dir(std::env::temp_dir().join(format!(
        "tokendesk-instances-{:08x}",
        rand::rng().random::<u32>()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let config = dir.0.join("tokendesk.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:8080/\"\ndatabase_url = \"{db}\"\n\
             [database]\nmax_connections = 6\nview_cache_secs = {VIEW_CACHE_SECS}\n\
             [workers]\nlease_secs = {LEASE_SECS}\nsweep_every_secs = {SWEEP_SECS}\n\
             [canvas]\nurl = \"{canvas}\"\nadmin_token = \"{DEFAULT_ADMIN_TOKEN}\"\nuser_id_pattern = \"sis_login_id:{{login}}\"\n\
             [auth]\nmode = \"trusted-header\"\n\
             [roles]\napprovers = [\"{ADMIN}\"]\nhelpdesk = [\"theo.teacher\"]\n",
            db = db.url,
            canvas = sim.base_url(),
        ),
    )
    .unwrap();

    let started = Instant::now();
    let mut a = Instance::start("A", &config);
    let mut b = Instance::start("B", &config);
    let both_up = Instant::now();
    let store = &db.store;
    let client = reqwest::Client::new();
    let logins = requesters();

    // (a) Many requests through both instances, approved through both, each issued once.
    let t = Instant::now();
    let submissions = logins.iter().take(MANY).enumerate().map(|(i, login)| {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        submit(&client, base, login)
    });
    let ids: Vec<RequestId> = futures::future::join_all(submissions).await;
    let approvals = ids.iter().enumerate().map(|(i, id)| {
        let base = if i % 2 == 0 { &b.base } else { &a.base };
        approve(&client, base, *id)
    });
    for (status, body) in futures::future::join_all(approvals).await {
        assert_eq!(status, 200, "{body}");
    }
    let issue_time = wait_issued(store, &ids, Duration::from_secs(90)).await;
    let mut by_instance = [0usize; 2];
    for (login, id) in logins.iter().zip(&ids) {
        assert_eq!(live_tokens(&canvas, login, *id).await, 1, "request {id}");
        let (state, attempts, holder) = job_of(store, *id).await.unwrap();
        assert_eq!((state.as_str(), attempts), ("done", 1), "request {id}");
        let holder = holder.unwrap();
        if a.holds(&holder) {
            by_instance[0] += 1;
        } else if b.holds(&holder) {
            by_instance[1] += 1;
        }
    }
    let mut conn = store.pool().acquire().await.unwrap();
    let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    assert_eq!(tokens, MANY as i64);
    let part_a = t.elapsed();

    // (b) Two approvers, the same request, the same moment, two instances.
    let mut race_outcomes = Vec::new();
    for login in logins.iter().skip(MANY).take(RACES) {
        let id = submit(&client, &a.base, login).await;
        let (on_a, on_b) =
            tokio::join!(approve(&client, &a.base, id), approve(&client, &b.base, id));
        let mut statuses = [on_a.0, on_b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "A: {} B: {}", on_a.1, on_b.1);
        let loser = if on_a.0 == 409 { &on_a.1 } else { &on_b.1 };
        assert!(loser["error"]["code"].is_string(), "{loser}");
        wait_issued(store, &[id], Duration::from_secs(30)).await;
        assert_eq!(live_tokens(&canvas, login, id).await, 1, "request {id}");
        let (state, attempts, _) = job_of(store, id).await.unwrap();
        assert_eq!((state.as_str(), attempts), ("done", 1));
        race_outcomes.push(format!(
            "A {} / B {} ({})",
            on_a.0,
            on_b.0,
            loser["error"]["code"].as_str().unwrap_or("?")
        ));
    }

    // (c) Look-ups cached by both instances; a change through one reaches the other's cache.
    let mut seen_after = Vec::new();
    for (round, login) in logins.iter().take(LOOKUPS).enumerate() {
        let (writer, reader) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let id = submit(&client, &writer.base, login).await;
        for instance in [&a, &b] {
            // The second look-up is answered from the cache.
            for _ in 0..2 {
                assert_eq!(looked_up(&client, &instance.base, id).await, "submitted");
            }
        }
        let (status, body) = call(
            &client,
            &writer.base,
            ADMIN,
            &format!("/api/v1/requests/{}/deny", id.0),
            json!({"reason": "coherence check"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let changed = Instant::now();
        assert_eq!(
            looked_up(&client, &writer.base, id).await,
            "denied",
            "the writing instance reads its own write"
        );
        loop {
            if looked_up(&client, &reader.base, id).await == "denied" {
                seen_after.push(changed.elapsed());
                break;
            }
            assert!(
                changed.elapsed() < Duration::from_secs(5),
                "{} still shows request {id} as submitted 5 s after {} denied it",
                reader.name,
                writer.name
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let slowest_notice = seen_after.iter().max().copied().unwrap_or_default();

    // (d) Kill the instance holding a job; the other takes it over after the lease.
    let victim = logins.last().unwrap();
    let id = submit(&client, &b.base, victim).await;
    let (status, body) = approve(&client, &a.base, id).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (holder, first_lease_end) = loop {
        if let Some((state, _, Some(holder))) = job_of(store, id).await
            && state == "running"
        {
            let mut conn = store.pool().acquire().await.unwrap();
            let until: Option<i64> =
                sqlx::query_scalar("SELECT locked_until FROM jobs WHERE request_id = $1")
                    .bind(id.0)
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
            break (holder, until.unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "the job was never claimed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Kill it in the middle of its Canvas calls (person, tokens, create: LATENCY each).
    tokio::time::sleep(LATENCY * 5 / 2).await;
    let (killed, survivor) = if a.holds(&holder) {
        (&mut a, &b)
    } else {
        assert!(b.holds(&holder), "{holder} is neither A nor B");
        (&mut b, &a)
    };
    assert_eq!(
        state_of(store, id).await,
        RequestState::Approved,
        "the job finished before the kill; make LATENCY longer"
    );
    killed.kill();
    let killed_at = Instant::now();
    let killed_name = killed.name;
    // A Canvas call in flight when the process died may still complete in Canvas.
    tokio::time::sleep(LATENCY * 2).await;
    let orphans_after_kill = live_tokens(&canvas, victim, id).await;
    wait_issued(store, &[id], Duration::from_secs(LEASE_SECS + 30)).await;
    let since_kill = killed_at.elapsed();
    let (state, attempts, new_holder) = job_of(store, id).await.unwrap();
    assert_eq!(state, "done");
    assert_eq!(
        attempts, 2,
        "claimed by the killed instance, then by the survivor"
    );
    assert!(
        survivor.holds(new_holder.as_deref().unwrap()),
        "{new_holder:?}"
    );
    assert_eq!(
        live_tokens(&canvas, victim, id).await,
        1,
        "exactly one live token"
    );
    // Not taken over before the lease ran out: the survivor issued after the first lease's end
    // (both in Unix seconds, from the database).
    let mut conn = store.pool().acquire().await.unwrap();
    let issued_at = store::get_request(&mut conn, id)
        .await
        .unwrap()
        .unwrap()
        .updated_at
        .unix_timestamp();
    drop(conn);
    assert!(
        issued_at >= first_lease_end,
        "issued at {issued_at}, before the killed instance's lease ended at {first_lease_end}"
    );

    // (e) The sweep ran once per period across both instances.
    tokio::time::sleep(Duration::from_secs(SWEEP_SECS)).await;
    let overlap = killed_at - both_up;
    let total = both_up.elapsed();
    let (a_claimed, a_skipped) = a.sweeps();
    let (b_claimed, b_skipped) = b.sweeps();
    let mut conn = store.pool().acquire().await.unwrap();
    let run = store::periodic_run(&mut conn, "sweep")
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    let survivor_name = if killed_name == "A" { "B" } else { "A" };
    let (survivor_claimed, _) = if killed_name == "A" {
        b.sweeps()
    } else {
        a.sweeps()
    };
    a.stop();
    b.stop();
    // The survivor stopped cleanly and said how its cache did: (c) was served from it.
    let survivor = if killed_name == "A" { &b } else { &a };
    let cache_hits = survivor
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("status look-up cache"))
        .and_then(|l| l.split("hits=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{survivor_name} logged no cache summary"));
    assert!(
        cache_hits >= LOOKUPS as u64,
        "{survivor_name} answered {cache_hits} look-ups from its cache"
    );
    // The survivor's log may hold a claim made after we read the table: allow one.
    let logged = (a_claimed + b_claimed) as i64;
    assert!(
        run.runs == logged || run.runs + 1 == logged,
        "periodic_runs says {} runs, the logs {logged}",
        run.runs
    );
    let period = Duration::from_secs(SWEEP_SECS).as_secs_f64() * 0.95;
    let most = (total.as_secs_f64() / period).floor() as i64 + 1;
    assert!(
        logged <= most,
        "{logged} sweeps in {total:?} with a {SWEEP_SECS}s period (at most {most})"
    );
    assert!(
        a_skipped + b_skipped > 0,
        "both instances ticked and one stood aside"
    );
    assert!(survivor_claimed > 0);

    println!(
        "two instances on one PostgreSQL database ({:.1}s in all, both up after {:.1}s):\n\
         (a) {MANY} requests submitted and approved alternately through A and B: all issued \
         within {:.1}s of approval ({:.1}s for the part), one live Canvas token each, each job \
         claimed once (A ran {}, B ran {})\n\
         (b) {RACES} simultaneous approvals on A and B: {}; one issuance each\n\
         (c) {LOOKUPS} requests looked up twice through each instance, then denied through one: \
         the writer answered `denied` at once, the other within {:.1}ms at most (cached views \
         live {VIEW_CACHE_SECS}s; {survivor_name} answered {cache_hits} look-ups from its cache)\n\
         (d) killed {killed_name} (SIGKILL) {:.0}ms into its job ({} live token(s) left in Canvas \
         by it); {survivor_name} took it over and issued it {:.1}s after the kill (lease \
         {LEASE_SECS}s), job attempts 2, exactly one live token\n\
         (e) sweep every {SWEEP_SECS}s: {} runs in {:.1}s (A claimed {a_claimed}, stood aside \
         {a_skipped}; B claimed {b_claimed}, stood aside {b_skipped}); both up together for \
         {:.1}s",
        started.elapsed().as_secs_f64(),
        (both_up - started).as_secs_f64(),
        issue_time.as_secs_f64(),
        part_a.as_secs_f64(),
        by_instance[0],
        by_instance[1],
        race_outcomes.join(", "),
        slowest_notice.as_secs_f64() * 1000.0,
        (LATENCY * 5 / 2).as_millis(),
        orphans_after_kill,
        since_kill.as_secs_f64(),
        run.runs,
        total.as_secs_f64(),
        overlap.as_secs_f64(),
    );
    sim.shutdown().await;
}

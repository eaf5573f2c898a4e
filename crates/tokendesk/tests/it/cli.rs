//! The `tokendesk` binary: exit codes and messages of check-config, migrate, audit verify and
//! export, serve's start and clean stop, and the simulator's input errors.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use tokendesk::domain::AuditRecord;
use tokendesk::store::{self, Store, StoreOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tokendesk");

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        use rand::RngExt;
        let dir = std::env::temp_dir().join(format!(
            "tokendesk-cli-{name}-{:08x}",
            rand::rng().random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("TOKENDESK_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SECRET: &str = "admin-token-that-must-never-be-printed";

fn good_config(dir: &Dir, listen: &str) -> PathBuf {
    dir.file(
        "tokendesk.toml",
        &format!(
            "listen = \"{listen}\"\npublic_url = \"http://127.0.0.1:8080\"\ndatabase_url = \"sqlite://td.db\"\n\
             [canvas]\nurl = \"https://canvas.example.edu\"\nadmin_token = \"{SECRET}\"\n\
             [roles]\nauditors = [\"ada\"]\n"
        ),
    )
}

#[test]
fn check_config_names_every_problem_and_never_prints_secrets() {
    let dir = Dir::new("check");
    let bad = dir.file(
        "bad.toml",
        "listen = \"nowhere\"\n[canvas]\nurl = \"https://canvas.example.edu\"\nadmin_token = \"x\"\ntokn = 1\n[policy]\nmax_reveals = 0\n[auth]\nmode = \"saml\"\n",
    );
    let out = run(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for key in ["listen", "canvas.tokn", "policy.max_reveals", "auth.mode"] {
        assert!(err.contains(key), "{key} named in:\n{err}");
    }
    let good = good_config(&dir, "127.0.0.1:8080");
    let out = run(&["check-config", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("configuration OK"));
    assert!(!all.contains(SECRET), "the admin token is never printed");
    let out = run(&["check-config", dir.0.join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// Appends `n` audit events (approvals of requests 0..n) with `details`.
async fn append_events(store: &Store, n: usize, details: serde_json::Value) {
    let mut tx = store.write().await.unwrap();
    for n in 0..n {
        let record = AuditRecord {
            actor: "ada".into(),
            action: "request.approve",
            target: format!("request:{n}"),
            outcome: "ok",
            details: details.clone(),
        };
        store::append_audit(
            &mut tx,
            store.backend(),
            &record,
            OffsetDateTime::now_utc(),
            Some("127.0.0.1"),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn store_at(dir: &Dir) -> Store {
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("td.db").display());
    Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn migrate_then_audit_verify_and_export() {
    let dir = Dir::new("audit");
    let config = good_config(&dir, "127.0.0.1:8080");
    let cfg = config.to_str().unwrap();
    let out = run(&["migrate", "--config", cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let store = store_at(&dir).await;
    append_events(&store, 3, json!({"note": "commas, \"quotes\"\nand lines"})).await;

    let out = run(&["audit", "verify", "--config", cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("3 events"));

    let out = run(&["audit", "export", "--config", cfg, "--format", "jsonl"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["target"], "request:1");
    let csv_path = dir.0.join("audit.csv");
    let out = run(&[
        "audit",
        "export",
        "--config",
        cfg,
        "--format",
        "csv",
        "--output",
        csv_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert!(
        csv.starts_with("seq,at,actor,action,target,outcome,client_addr,details,prev_hash,hash\n")
    );
    assert!(
        csv.contains("\"{\"\"note\"\":"),
        "quoted per RFC 4180: {csv}"
    );

    sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
        .execute(store.pool())
        .await
        .unwrap();
    let out = run(&["audit", "verify", "--config", cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("event 2"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        run(&["audit", "export", "--config", cfg, "--format", "xml"])
            .status
            .code()
            == Some(2)
    );
}

fn wait_line(reader: &mut impl BufRead, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "no line starting with {prefix:?}"
        );
        if line.starts_with(prefix) {
            return line.trim().to_owned();
        }
    }
}

#[tokio::test]
async fn serve_starts_answers_refuses_a_second_instance_and_stops_on_sigterm() {
    let dir = Dir::new("serve");
    let config = good_config(&dir, "127.0.0.1:0");
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let line = wait_line(&mut stdout, "tokendesk listening on ");
    let addr = line
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let me = reqwest::get(format!("http://{addr}/api/v1/me"))
        .await
        .unwrap();
    assert_eq!(me.status().as_u16(), 401);
    // A second instance on the same SQLite database is refused, and says why.
    let mut second = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while second.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second serve on the same SQLite database kept running");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = second.wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("another tokendesk is already serving the SQLite database"),
        "{}",
        text(&second.stderr)
    );
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "serve did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_input_to_the_simulator_exits_2() {
    let dir = Dir::new("sim");
    let seed = dir.file("seed.toml", "[[users]]\nid = 1\nname = \"A\"\nlogin_id = \"a\"\nemail = \"a@x\"\nroles = [\"wizard\"]\n");
    let out = run(&[
        "canvas-sim",
        "--listen",
        "127.0.0.1:0",
        "--seed",
        seed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("line 6: unknown role \"wizard\""),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        run(&["canvas-sim", "--listen", "nowhere"]).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["canvas-sim", "--listen", "10.1.2.3:9090"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&["canvas-sim", "--fail-rate", "1.5"]).status.code(),
        Some(2)
    );
    assert_eq!(run(&["canvas-sim", "--bogus"]).status.code(), Some(2));
    assert_eq!(
        run(&["demo", "--listen", "0.0.0.0:8080"]).status.code(),
        Some(2)
    );
}

#[test]
fn admin_keys_create_list_and_revoke() {
    let dir = Dir::new("keys");
    let config = good_config(&dir, "127.0.0.1:0");
    let config = config.to_str().unwrap();
    let made = run(&[
        "admin",
        "keys",
        "create",
        "--role",
        "auditor",
        "--name",
        "nightly-export",
        "--expires-in",
        "90d",
        "--config",
        config,
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let value = text(&made.stdout).trim().to_owned();
    assert!(value.starts_with("tdk_") && value.len() > 40, "{value}");
    assert!(text(&made.stderr).contains("shown only now"));
    // The same name again, a bad role, a bad duration: usage errors (exit 2) that say why.
    for (args, why) in [
        (
            vec![
                "--role",
                "auditor",
                "--name",
                "nightly-export",
                "--expires-in",
                "1d",
            ],
            "exists",
        ),
        (
            vec!["--role", "admin", "--name", "x", "--expires-in", "1d"],
            "--role",
        ),
        (
            vec!["--role", "auditor", "--name", "y", "--expires-in", "soon"],
            "--expires-in",
        ),
        (
            vec![
                "--role",
                "auditor",
                "--name",
                "Bad Name",
                "--expires-in",
                "1d",
            ],
            "--name",
        ),
    ] {
        let mut all = vec!["admin", "keys", "create"];
        all.extend(args);
        all.extend(["--config", config]);
        let out = run(&all);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(why),
            "{all:?}: {}",
            text(&out.stderr)
        );
    }
    let listed = run(&["admin", "keys", "list", "--config", config]);
    let list = text(&listed.stdout);
    assert!(
        list.contains("nightly-export") && list.contains("auditor") && list.contains("never used"),
        "{list}"
    );
    assert!(!list.contains(&value), "the value is never shown again");
    let id = list
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let revoked = run(&["admin", "keys", "revoke", &id, "--config", config]);
    assert!(
        text(&revoked.stdout).contains("revoked"),
        "{}",
        text(&revoked.stderr)
    );
    assert!(text(&run(&["admin", "keys", "list", "--config", config]).stdout).contains("revoked"));
    let missing = run(&["admin", "keys", "revoke", "999", "--config", config]);
    assert_eq!(missing.status.code(), Some(2));
}

/// `tokendesk admin revoke`: refuses without a way to confirm, refuses two filters, revokes
/// with `--yes` (exit 0), finds nothing the second time (exit 0), and exits 1 listing the
/// tokens Canvas would not delete. (Multi-threaded: the simulator answers the binary while the
/// test waits for it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_revoke_exit_codes() {
    use crate::support::db::TestDb;
    use crate::support::world::World;
    let world = World::tweaked(TestDb::sqlite().await, |parts| {
        parts.policy.max_active_tokens_per_person = 10;
        parts.policy.max_open_requests_per_person = 10;
    })
    .await;
    world.issued("sam.student").await;
    world.issued("sam.student").await;
    let stella = world.issued("stella.student").await;
    let dir = Dir::new("revoke");
    let db = world.db.url.split('?').next().unwrap().to_owned();
    let config = |token: &str| {
        dir.file(
            &format!("tokendesk-{}.toml", &token[..4]),
            &format!(
                "database_url = \"{db}\"\n[canvas]\nurl = \"{}\"\nadmin_token = \"{token}\"\n",
                world.sim.base_url()
            ),
        )
    };
    let good = config(tokendesk_canvas_sim::DEFAULT_ADMIN_TOKEN);
    let good = good.to_str().unwrap();
    let revoke = |args: &[&str], config: &str| {
        let mut all = vec!["admin", "revoke"];
        all.extend_from_slice(args);
        all.extend(["--config", config]);
        run(&all)
    };
    // No terminal to confirm on, and no --yes: nothing happens (exit 2).
    let out = revoke(
        &["--owner", "sam.student", "--reason", "left the university"],
        good,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--yes"), "{}", text(&out.stderr));
    // Two filters: a usage error.
    let out = revoke(
        &["--owner", "sam.student", "--all", "--reason", "x", "--yes"],
        good,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // Revoked, with a summary.
    let out = revoke(
        &[
            "--owner",
            "sam.student",
            "--reason",
            "left the university",
            "--yes",
        ],
        good,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("2 revoked, 0 failed, of 2 token(s)"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("every token of sam.student: 2 live token(s)"),
        "{}",
        text(&out.stderr)
    );
    let out = revoke(
        &[
            "--owner",
            "sam.student",
            "--reason",
            "left the university",
            "--yes",
        ],
        good,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("nothing to revoke"),
        "{}",
        text(&out.stdout)
    );
    // Canvas refuses (this admin token is not Canvas's): exit 1, the failure listed.
    let bad = config("not-the-admin-token-of-this-canvas-0123456789");
    let out = revoke(
        &["--owner", "stella.student", "--reason", "left", "--yes"],
        bad.to_str().unwrap(),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(&format!("failed: request #{stella} of stella.student")),
        "{}",
        text(&out.stdout)
    );
    // The emergency switch from the CLI (with --yes, the typed confirmation is implied).
    let out = revoke(&["--all", "--reason", "a breach", "--yes"], good);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A `tokendesk serve` child with its address. Its standard error is read as it comes (a
/// busy service fills a pipe nobody reads, and then blocks on its next log line); a child
/// still running when this is dropped (a failed test) is killed.
struct Serving {
    child: std::process::Child,
    addr: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Serving {
    fn start(config: &std::path::Path, env: &[(&str, &str)]) -> Serving {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--config", config.to_str().unwrap()])
            .env_remove("TOKENDESK_CONFIG")
            .env_remove("TOKENDESK_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let line = wait_line(&mut stdout, "tokendesk listening on ");
        let addr = line
            .split_whitespace()
            .nth(3)
            .unwrap()
            .trim_start_matches("http://")
            .to_owned();
        // Keep reading stdout and stderr so that the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in stdout.lines() {});
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = BufReader::new(child.stderr.take().unwrap());
        let kept = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            while pipe.read_line(&mut line).is_ok_and(|n| n > 0) {
                kept.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Serving {
            child,
            addr,
            stderr,
            reader: Some(reader),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What it wrote to standard error so far.
    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([name, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// SIGTERM, then everything it wrote to standard error.
    fn stop(self) -> String {
        self.stop_timed().0
    }

    /// SIGTERM, then everything it wrote to standard error and how long it took to stop.
    fn stop_timed(mut self) -> (String, Duration) {
        self.signal("-TERM");
        let started = std::time::Instant::now();
        let deadline = started + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        let took = started.elapsed();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (std::mem::take(&mut *self.stderr.lock().unwrap()), took)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_request_id_that_errors_quote() {
    let dir = Dir::new("json-logs");
    let config = good_config(&dir, "127.0.0.1:0");
    let mut text_config = std::fs::read_to_string(&config).unwrap();
    text_config.push_str("[log]\nformat = \"json\"\n");
    std::fs::write(&config, text_config).unwrap();
    let serving = Serving::start(&config, &[]);
    let answer = reqwest::Client::new()
        .get(serving.url("/api/v1/requests/999999"))
        .header("X-Remote-User", "sam.student")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 404);
    let header_id = answer.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], header_id.as_str());
    let stderr = serving.stop();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let line = lines
        .iter()
        .find(|l| l["span"]["request.id"] == header_id.as_str())
        .unwrap_or_else(|| panic!("no line of request {header_id}: {stderr}"));
    assert_eq!(line["fields"]["message"], "request done");
    assert_eq!(line["fields"]["status"], 404);
    assert_eq!(line["span"]["route"], "/api/v1/requests/{id}");
    assert_eq!(line["span"]["login"], "sam.student");
    assert_eq!(line["level"], "INFO");
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_log_and_tokendesk_log_choose_the_lines() {
    let dir = Dir::new("log-filter");
    let config = good_config(&dir, "127.0.0.1:0");
    for (env, logged) in [
        (vec![], true),
        (vec![("RUST_LOG", "warn")], false),
        (vec![("RUST_LOG", "warn"), ("TOKENDESK_LOG", "info")], true),
    ] {
        let serving = Serving::start(&config, &env);
        let answer = reqwest::get(serving.url("/readyz")).await.unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        let stderr = serving.stop();
        assert_eq!(stderr.contains("request done"), logged, "{env:?}: {stderr}");
    }
}

async fn roles_of(serving: &Serving, login: &str) -> serde_json::Value {
    let me: serde_json::Value = reqwest::Client::new()
        .get(serving.url("/api/v1/me"))
        .header("X-Remote-User", login)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    me["roles"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_roles_and_keeps_serving_through_a_bad_file() {
    let dir = Dir::new("sighup");
    let config = good_config(&dir, "127.0.0.1:0");
    let original = std::fs::read_to_string(&config).unwrap();
    let serving = Serving::start(&config, &[]);
    assert_eq!(roles_of(&serving, "theo").await, json!(["requester"]));

    // A valid change: theo becomes an auditor, ada stops being one.
    std::fs::write(
        &config,
        original.replace("auditors = [\"ada\"]", "auditors = [\"theo\"]"),
    )
    .unwrap();
    serving.signal("-HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while roles_of(&serving, "theo").await != json!(["requester", "auditor"]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the reload never took effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(roles_of(&serving, "ada").await, json!(["requester"]));

    // A broken file: the service stays up with the last good configuration.
    std::fs::write(&config, format!("{original}\n[roles]\nwizards = [1]\n")).unwrap();
    serving.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        roles_of(&serving, "theo").await,
        json!(["requester", "auditor"])
    );
    let ready = reqwest::get(serving.url("/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let stderr = serving.stop();
    assert!(
        stderr.contains("SIGHUP: configuration reloaded"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "SIGHUP: the configuration has problems; the running configuration stays in force"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("TOKENDESK_CONFIG")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn check_config_takes_config_like_every_command_and_warns_about_unwise_choices() {
    let dir = Dir::new("check-flags");
    let good = good_config(&dir, "127.0.0.1:8080");
    let path = good.to_str().unwrap();
    for out in [
        run(&["check-config", "--config", path]),
        run_env(&["check-config"], &[("TOKENDESK_CONFIG", path)]),
    ] {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("configuration OK"));
    }
    let out = run(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--config FILE"),
        "{}",
        text(&out.stderr)
    );

    // Without a proxy secret, trusted-header mode is named as unwise; so is a secret file
    // others may read.
    let out = run(&["check-config", "--config", path]);
    assert!(
        text(&out.stdout).contains("warning: auth.proxy_secret_file is not set"),
        "{}",
        text(&out.stdout)
    );
    let secret = dir.file(
        "proxy.secret",
        "a-proxy-secret-of-more-than-32-characters\n",
    );
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let with_secret = dir.file(
        "with-secret.toml",
        &format!(
            "{}[auth]\nproxy_secret_file = \"proxy.secret\"\n",
            std::fs::read_to_string(&good).unwrap()
        ),
    );
    let out = run(&["check-config", "--config", with_secret.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("proxy_secret_file is not set"), "{stdout}");
    assert!(
        stdout.contains("auth.proxy_secret_file: the secret file")
            && stdout.contains("every local user")
            && stdout.contains("chmod 600"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("a-proxy-secret-of"),
        "the secret is never printed"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&["check-config", "--config", with_secret.to_str().unwrap()]);
    assert!(
        !text(&out.stdout).contains("warning:"),
        "{}",
        text(&out.stdout)
    );

    // database_url from a file (a URL with a password stays out of the configuration).
    let url_file = dir.file("database.url", "sqlite://from-a-file.db\n");
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let from_file = dir.file(
        "db-from-file.toml",
        &std::fs::read_to_string(&good).unwrap().replace(
            "database_url = \"sqlite://td.db\"",
            "database_url_file = \"database.url\"",
        ),
    );
    let out = run(&["check-config", "--config", from_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected = dir.0.join("from-a-file.db");
    assert!(
        text(&out.stdout).contains(&expected.display().to_string()),
        "relative to the configuration's folder: {}",
        text(&out.stdout)
    );

    // A proxy range beyond the private ones is refused.
    let open = dir.file(
        "open.toml",
        &format!(
            "{}[auth]\ntrusted_proxies = [\"0.0.0.0/0\"]\n",
            std::fs::read_to_string(&good).unwrap()
        ),
    );
    let out = run(&["check-config", "--config", open.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "auth.trusted_proxies: 0.0.0.0/0 reaches beyond the loopback and private ranges"
        ),
        "{}",
        text(&out.stderr)
    );
}

/// A configuration against a running Canvas simulator, with the database in `dir`.
fn online_config(dir: &Dir, canvas: &str, extra: &str) -> PathBuf {
    dir.file(
        "online.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://td.db\"\n[canvas]\nurl = \"{canvas}\"\nadmin_token = \"{}\"\n{extra}",
            tokendesk_canvas_sim::DEFAULT_ADMIN_TOKEN
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_online_and_status_connect_and_name_each_problem() {
    let sim = tokendesk_canvas_sim::start(
        tokendesk_canvas_sim::SimConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let smtp = crate::support::smtp::start().await;
    let dir = Dir::new("online");
    let smtp_keys = format!(
        "[email]\ntransport = \"smtp\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_tls = \"none\"\nfrom = \"tokendesk <td@example.edu>\"\n",
        smtp.port
    );
    let config = online_config(&dir, sim.base_url(), &smtp_keys);
    let cfg = config.to_str().unwrap();
    assert_eq!(run(&["migrate", "--config", cfg]).status.code(), Some(0));

    let out = run(&["check-config", "--config", cfg, "--online"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("ok      database"), "{stdout}");
    assert!(
        stdout.contains("created, viewed and deleted a token"),
        "{stdout}"
    );
    assert!(stdout.contains("ok      smtp"), "{stdout}");

    let out = run(&["status", "--config", cfg, "--check-user", "sam.student"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for line in [
        "ok      database",
        "token for user sam.student",
        "ok      jobs",
        "ok      emails",
        "ok      audit",
        "all well",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    // The check leaves nothing behind in Canvas: sam has no live token.
    let canvas = tokendesk_canvas::CanvasClient::builder(
        sim.base_url(),
        secrecy::SecretString::from(tokendesk_canvas_sim::DEFAULT_ADMIN_TOKEN),
    )
    .build()
    .unwrap();
    let left = canvas
        .list_user_tokens(&tokendesk_canvas::UserRef::SisLoginId("sam.student".into()))
        .await
        .unwrap();
    assert!(
        !left.iter().any(|t| t
            .purpose
            .as_deref()
            .is_some_and(|p| p.contains("status check"))),
        "{left:?}"
    );

    // Canvas refusing the admin token, SMTP gone: both named, exit 1.
    drop(smtp);
    let bad = dir.file(
        "bad-online.toml",
        &std::fs::read_to_string(&config).unwrap().replace(
            tokendesk_canvas_sim::DEFAULT_ADMIN_TOKEN,
            "not-the-admin-token",
        ),
    );
    let out = run(&["status", "--config", bad.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("PROBLEM canvas") && stdout.contains("the admin token does not work"),
        "{stdout}"
    );
    assert!(stdout.contains("PROBLEM smtp"), "{stdout}");
    assert!(
        text(&out.stderr).contains("2 problem(s): canvas, smtp"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !stdout.contains("not-the-admin-token"),
        "the token is never printed"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrades_are_guarded_and_migrate_says_what_it_applied() {
    let dir = Dir::new("upgrade");
    let config = good_config(&dir, "127.0.0.1:0");
    let cfg = config.to_str().unwrap();
    // --no-migrate on an empty database: refused, saying what to run.
    let out = run(&["serve", "--config", cfg, "--no-migrate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("run `tokendesk migrate` first"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["migrate", "--config", cfg]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.contains("applied migration 1 (initial)"), "{stdout}");
    assert!(!stdout.contains("already up to date"), "{stdout}");
    let out = run(&["migrate", "--config", cfg]);
    assert!(text(&out.stdout).contains("already up to date"));

    // A newer release's migration: every command refuses, naming both versions.
    let store = store_at(&dir).await;
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) VALUES (9999, 'from the future', CURRENT_TIMESTAMP, TRUE, x'00', 0)")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    for args in [
        vec!["serve", "--config", cfg],
        vec!["migrate", "--config", cfg],
    ] {
        let out = run(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("at migration 9999, newer than this tokendesk"),
            "{stderr}"
        );
        let newest = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.get(..4)?.parse::<u32>().ok())
            .max()
            .unwrap();
        assert!(
            stderr.contains(&format!("migrations up to {newest}")),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn the_audit_head_kept_outside_shows_removed_events() {
    let dir = Dir::new("head");
    let config = good_config(&dir, "127.0.0.1:0");
    let cfg = config.to_str().unwrap();
    assert_eq!(run(&["migrate", "--config", cfg]).status.code(), Some(0));
    let store = store_at(&dir).await;
    append_events(&store, 5, json!({})).await;
    let out = run(&["audit", "head", "--config", cfg]);
    assert_eq!(out.status.code(), Some(0));
    let head = text(&out.stdout).trim().to_owned();
    assert!(head.starts_with("5:") && head.len() == 2 + 64, "{head}");
    let out = run(&["audit", "verify", "--config", cfg, "--expect-head", &head]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("through the expected head 5"));

    // The newest two removed: the chain still verifies on its own, but not against the head.
    sqlx::query("DELETE FROM audit_events WHERE seq > 3")
        .execute(store.pool())
        .await
        .unwrap();
    let out = run(&["audit", "verify", "--config", cfg]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a shorter chain is intact on its own"
    );
    let out = run(&["audit", "verify", "--config", cfg, "--expect-head", &head]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the chain ends at event 3, before the expected head 5"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&[
        "audit",
        "verify",
        "--config",
        cfg,
        "--expect-head",
        "5:nothex",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_a_running_service_is_consistent_and_verified() {
    let dir = Dir::new("backup");
    let config = good_config(&dir, "127.0.0.1:0");
    let cfg = config.to_str().unwrap();
    let serving = Serving::start(&config, &[]);
    // Work goes on while the copy is made.
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let _ = client
            .get(serving.url("/api/v1/me"))
            .header("X-Remote-User", "ada")
            .send()
            .await
            .unwrap();
    }
    let to = dir.0.join("copy.db");
    let out = run(&[
        "db",
        "backup",
        "--config",
        cfg,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("backup written") && stdout.contains("chain intact"),
        "{stdout}"
    );
    assert!(std::fs::metadata(&to).unwrap().len() > 4096);
    // Never over an existing file.
    let out = run(&[
        "db",
        "backup",
        "--config",
        cfg,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("exists already"));
    serving.stop();
}

/// A TCP relay to a server that a test can cut (every connection closed, new ones refused)
/// and restore on the same port: the network to PostgreSQL going away and coming back.
struct Relay {
    port: u16,
    to: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(to: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut relay = Relay {
            port,
            to,
            task: None,
        };
        relay.task = Some(tokio::spawn(Relay::run(listener, to)));
        relay
    }

    async fn run(listener: tokio::net::TcpListener, to: std::net::SocketAddr) {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            connections.spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    }

    /// Every connection dropped (the JoinSet with the task), the port closed.
    fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.task = Some(tokio::spawn(Relay::run(listener, self.to)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_database_gone_answers_are_quick_503s_and_its_return_is_logged() {
    let Some(db) = crate::support::db::TestDb::postgres().await else {
        eprintln!("SKIPPED: PostgreSQL is not reachable");
        return;
    };
    let url = url::Url::parse(&db.url).unwrap();
    let server: std::net::SocketAddr =
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
            .parse()
            .unwrap();
    let mut relay = Relay::start(server).await;
    let mut through = url.clone();
    through.set_port(Some(relay.port)).unwrap();
    let dir = Dir::new("db-down");
    let config = dir.file(
        "tokendesk.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{through}\"\n[database]\nacquire_timeout_secs = 10\n[canvas]\nurl = \"https://canvas.example.edu\"\nadmin_token = \"{SECRET}\"\n[roles]\napprovers = [\"ada\"]\n"
        ),
    );
    let serving = Serving::start(&config, &[]);
    let client = reqwest::Client::new();
    let queue = |accept: &'static str, path: &'static str| {
        client
            .get(serving.url(path))
            .header("X-Remote-User", "ada")
            .header("Accept", accept)
            .send()
    };
    assert_eq!(
        queue("application/json", "/api/v1/requests")
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    relay.cut();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let answer = queue("application/json", "/api/v1/requests").await.unwrap();
        assert_eq!(answer.status().as_u16(), 503);
        assert_eq!(answer.headers()["retry-after"], "5");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    let page = queue("text/html", "/queue").await.unwrap();
    assert_eq!(page.status().as_u16(), 503);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let started = std::time::Instant::now();
    let ready = client.get(serving.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    relay.restore().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ready = client.get(serving.url("/readyz")).send().await.unwrap();
        if ready.status().as_u16() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service never saw the database again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        queue("application/json", "/api/v1/requests")
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let stderr = serving.stop();
    assert_eq!(
        stderr.matches("the database does not answer").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("the database answers again").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("internal error"), "{stderr}");
    drop(db);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_unix_socket_serves_the_proxy_on_this_host_alone() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = Dir::new("unix");
    let socket = dir.0.join("http.sock");
    let config = dir.file(
        "tokendesk.toml",
        &format!(
            "listen = \"unix:{}\"\nlisten_mode = \"0660\"\npublic_url = \"https://tokens.example.edu\"\ndatabase_url = \"sqlite://td.db\"\n[canvas]\nurl = \"https://canvas.example.edu\"\nadmin_token = \"{SECRET}\"\n",
            socket.display()
        ),
    );
    let out = run(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("proxy_secret_file is not set"),
        "a Unix socket needs no proxy secret: {}",
        text(&out.stdout)
    );
    let serving = Serving::start(&config, &[]);
    assert_eq!(serving.addr, format!("unix:{}", socket.display()));
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    stream
        .write_all(b"GET /api/v1/me HTTP/1.1\r\nHost: tokens.example.edu\r\nX-Remote-User: ada\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"login\":\"ada\""), "{answer}");
    let stderr = serving.stop();
    assert!(
        !socket.exists(),
        "the socket is removed at the stop: {stderr}"
    );

    let bad = dir.file(
        "bad.toml",
        "listen = \"unix:relative.sock\"\nlisten_mode = \"9999\"\n[canvas]\nurl = \"https://canvas.example.edu\"\nadmin_token = \"x\"\n",
    );
    let out = run(&["check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("must be absolute") && stderr.contains("listen_mode"),
        "{stderr}"
    );
}

/// Unmounts a test's filesystem when the test ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full disk under the SQLite database: a 6 MB tmpfs mounted for the test (root only; in CI
/// a failure to mount fails the test, elsewhere it is skipped loudly). Writes are refused with
/// a 503 that says so, reads go on, nothing is corrupted, and once there is room again it all
/// works.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_a_clear_503_and_corrupts_nothing() {
    let dir = Dir::new("full-disk");
    let mnt = dir.0.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mnt)
        .output();
    if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
        let why = mounted.map_or_else(|e| e.to_string(), |o| text(&o.stderr));
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root and must be able to mount a small filesystem: {why}"
        );
        eprintln!(
            "SKIPPED a_full_disk_is_a_clear_503_and_corrupts_nothing: cannot mount a tmpfs ({why}); run as root"
        );
        return;
    }
    let _mounted = Mounted(mnt.clone());
    let config = dir.file(
        "tokendesk.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{}/td.db\"\n[canvas]\nurl = \"https://canvas.example.edu\"\nadmin_token = \"{SECRET}\"\n[policy]\nmax_open_requests_per_person = 1000\n[limits]\nsubmissions_per_hour = 0\n",
            mnt.display()
        ),
    );
    let serving = Serving::start(&config, &[]);
    let client = reqwest::Client::new();
    let expires = (OffsetDateTime::now_utc() + time::Duration::days(30))
        .date()
        .to_string();
    let submit = || {
        client
            .post(serving.url("/api/v1/requests"))
            .header("X-Remote-User", "sam.student")
            .json(
                &json!({"purpose": "nightly grade export for my sections", "expires_on": expires}),
            )
            .send()
    };
    assert_eq!(submit().await.unwrap().status().as_u16(), 201);

    // Fill the disk.
    let filler = mnt.join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = None;
    let mut accepted = 0;
    for _ in 0..200 {
        let r = submit().await.unwrap();
        match r.status().as_u16() {
            201 => accepted += 1,
            503 => {
                refused = Some(r.json::<serde_json::Value>().await.unwrap());
                break;
            }
            other => panic!("a full disk answered {other}: {}", r.text().await.unwrap()),
        }
    }
    let body = refused.unwrap_or_else(|| panic!("{accepted} submissions fit on a full disk"));
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    assert!(body["error"]["request_id"].is_string());
    // Reads go on.
    let list = client
        .get(serving.url("/api/v1/requests"))
        .header("X-Remote-User", "sam.student")
        .send()
        .await
        .unwrap();
    assert_eq!(list.status().as_u16(), 200);
    // Room again: it all works.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(submit().await.unwrap().status().as_u16(), 201);
    let stderr = serving.stop();
    assert!(
        stderr.contains("the database cannot store anything: its disk is full or read-only"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = run(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("{} events", accepted + 2)),
        "{}",
        text(&out.stdout)
    );
}

/// A submission of `who`, for the database fault tests: (status, id if stored, `Retry-After`,
/// the error's code, how long the answer took).
struct Submitted {
    status: u16,
    id: Option<i64>,
    retry_after: Option<String>,
    code: Option<String>,
    took: Duration,
}

async fn submit_as(client: &reqwest::Client, url: &str, who: &str) -> Submitted {
    let expires = (OffsetDateTime::now_utc() + time::Duration::days(30))
        .date()
        .to_string();
    let started = std::time::Instant::now();
    let answer = match client
        .post(url)
        .header("X-Remote-User", who)
        .timeout(Duration::from_secs(30))
        .json(&json!({"purpose": "nightly grade export for my sections", "expires_on": expires}))
        .send()
        .await
    {
        Ok(answer) => answer,
        // No answer (status 0): a hang or a dropped connection, which the tests report.
        Err(_) => {
            return Submitted {
                status: 0,
                id: None,
                retry_after: None,
                code: None,
                took: started.elapsed(),
            };
        }
    };
    let status = answer.status().as_u16();
    let retry_after = answer
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value = answer.json().await.unwrap_or(serde_json::Value::Null);
    Submitted {
        status,
        id: (status == 201).then(|| body["id"].as_i64().unwrap()),
        retry_after,
        code: body["error"]["code"].as_str().map(str::to_owned),
        took: started.elapsed(),
    }
}

/// Every stored request has its audit record (a change never commits without it), and the
/// stored requests are `acknowledged` plus, at most, those in `maybe` (answered by no 2xx, yet
/// possibly committed: PostgreSQL's answer to a COMMIT lost with the connection).
async fn every_change_with_its_audit(
    url: &str,
    acknowledged: &std::collections::BTreeSet<i64>,
    maybe: usize,
) {
    let store = Store::connect(url, &StoreOptions::default()).await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM requests ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let stored: std::collections::BTreeSet<i64> = ids.into_iter().collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert!(
        stored.len() <= acknowledged.len() + maybe,
        "{} stored, {} acknowledged",
        stored.len(),
        acknowledged.len()
    );
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT target FROM audit_events WHERE action = 'request.submit' ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let audited: std::collections::BTreeSet<String> = audited.into_iter().collect();
    for id in &stored {
        assert!(
            audited.contains(&format!("request:{id}")),
            "request {id} is stored without its audit record"
        );
    }
    assert_eq!(
        audited.len(),
        stored.len(),
        "an audit record without its change"
    );
}

/// A read-only database under a running service: the directory that holds the SQLite file (and
/// its `-wal` and `-shm`) is a bind mount made for the test, and a read-only bind mount of the
/// same directory is stacked over it (root only: in CI a failure to mount fails the test,
/// elsewhere it is skipped loudly; the kernel will not remount a mount read-only while files
/// are open on it for writing, hence the stack). What a read-only file means to a running
/// process is the connections it opens from then on, so the pool here closes idle connections
/// after a second. Writes are refused with a 503 that says so (never a 500), reads go on,
/// nothing is stored without its audit record, nothing is corrupted, and once the directory is
/// writable again submissions succeed without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_database_is_a_clear_503_and_recovers_without_a_restart() {
    let dir = Dir::new("read-only");
    let real = dir.0.join("real");
    let mnt = dir.0.join("db");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let bound = Command::new("mount")
        .arg("--bind")
        .arg(&real)
        .arg(&mnt)
        .output();
    if !bound.as_ref().is_ok_and(|o| o.status.success()) {
        let why = bound.map_or_else(|e| e.to_string(), |o| text(&o.stderr));
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root and must be able to bind-mount a directory: {why}"
        );
        eprintln!(
            "SKIPPED a_read_only_database_is_a_clear_503_and_recovers_without_a_restart: cannot bind-mount a directory ({why}); run as root"
        );
        return;
    }
    let _bound = Mounted(mnt.clone());
    let sim = tokendesk_canvas_sim::start(
        tokendesk_canvas_sim::SimConfig {
            throttle: None,
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let db_url = format!("sqlite://{}/td.db", mnt.display());
    let config = dir.file(
        "tokendesk.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{db_url}\"\n[database]\nidle_timeout_secs = 1\n\
             [canvas]\nurl = \"{}\"\nadmin_token = \"{}\"\n[roles]\napprovers = [\"ada.admin\"]\n\
             [policy]\nmax_open_requests_per_person = 1000\n[limits]\nsubmissions_per_hour = 0\n",
            sim.base_url(),
            tokendesk_canvas_sim::DEFAULT_ADMIN_TOKEN
        ),
    );
    let serving = Serving::start(&config, &[]);
    let client = reqwest::Client::new();
    let url = serving.url("/api/v1/requests");
    let mut acknowledged = std::collections::BTreeSet::new();
    let first = submit_as(&client, &url, "sam.student").await;
    assert_eq!(first.status, 201);
    acknowledged.insert(first.id.unwrap());

    // Read-only: a read-only bind mount over the directory.
    let ro = Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(&real)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(ro.status.success(), "{}", text(&ro.stderr));
    let read_only = Mounted(mnt.clone());
    assert!(
        std::fs::write(mnt.join("probe"), b"x").is_err(),
        "the directory is read-only now"
    );
    // The connections opened before are closed once idle.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut refused = None;
    for _ in 0..50 {
        let s = submit_as(&client, &url, "sam.student").await;
        match s.status {
            // Through a connection opened while it was writable: stored, and kept.
            201 => {
                acknowledged.insert(s.id.unwrap());
            }
            503 => {
                refused = Some(s);
                break;
            }
            other => panic!(
                "a read-only database answered {other} ({:?}) after {:?}:\n{}",
                s.code,
                s.took,
                serving.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = refused.expect("a read-only database refused nothing");
    assert_eq!(refused.code.as_deref(), Some("storage_unavailable"));
    assert!(
        refused.retry_after.is_some(),
        "a 503 says when to come back"
    );
    assert!(refused.took < Duration::from_secs(2), "{:?}", refused.took);
    for _ in 0..3 {
        let s = submit_as(&client, &url, "stella.student").await;
        assert_eq!(
            (s.status, s.code.as_deref()),
            (503, Some("storage_unavailable")),
            "{}",
            serving.log()
        );
    }
    // A decision is refused too, the same way; reads go on.
    let approve = client
        .post(serving.url(&format!("/api/v1/requests/{}/approve", first.id.unwrap())))
        .header("X-Remote-User", "ada.admin")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(approve.status().as_u16(), 503);
    let body: serde_json::Value = approve.json().await.unwrap();
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    let list = client
        .get(&url)
        .header("X-Remote-User", "sam.student")
        .send()
        .await
        .unwrap();
    assert_eq!(list.status().as_u16(), 200);

    // Writable again: the read-only mount goes (lazily: the service still has files open on it).
    drop(read_only);
    assert!(std::fs::write(mnt.join("probe"), b"x").is_ok());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = submit_as(&client, &url, "sam.student").await;
        if s.status == 201 {
            acknowledged.insert(s.id.unwrap());
            break;
        }
        assert_eq!(s.status, 503, "{:?}\n{}", s.code, serving.log());
        assert!(
            std::time::Instant::now() < deadline,
            "the service did not recover once the database was writable again:\n{}",
            serving.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        let s = submit_as(&client, &url, "stella.student").await;
        assert_eq!(s.status, 201, "{:?}\n{}", s.code, serving.log());
        acknowledged.insert(s.id.unwrap());
    }
    let stderr = serving.stop();
    assert!(
        stderr.contains("the database cannot store anything: its disk is full or read-only"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("internal error"), "{stderr}");
    let out = run(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    every_change_with_its_audit(&db_url, &acknowledged, 0).await;
    let store = Store::connect(&db_url, &StoreOptions::default())
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(check, "ok");
}

/// The directory holding PostgreSQL's programs (`initdb`, `pg_ctl`): the newest of
/// /usr/lib/postgresql/*/bin, or the one on the PATH.
fn postgres_bin_dir() -> Option<PathBuf> {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("pg_ctl").is_file() && bin.join("initdb").is_file())
        .max();
    if let Some((_, bin)) = newest {
        return Some(bin);
    }
    let which = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
        .ok()?;
    let path = PathBuf::from(text(&which.stdout).trim());
    let bin = path.parent()?.to_path_buf();
    bin.join("initdb").is_file().then_some(bin)
}

/// A PostgreSQL server of the test's own (never the machine's shared one): `initdb` in a
/// temporary directory and `pg_ctl` on a free port, as the `postgres` user when the test runs
/// as root (PostgreSQL refuses to run as root). Stopped when dropped.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// A new cluster in `dir`, or why there cannot be one.
    fn create(dir: &Dir) -> Result<PrivatePostgres, String> {
        let bin = postgres_bin_dir().ok_or("no initdb and pg_ctl found")?;
        let as_postgres =
            text(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0";
        let data = dir.0.join("pgdata");
        if as_postgres {
            let chown = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir.0)
                .output()
                .map_err(|e| e.to_string())?;
            if !chown.status.success() {
                return Err(format!("chown to postgres: {}", text(&chown.stderr)));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePostgres {
            bin,
            data,
            port,
            as_postgres,
        };
        let out = pg
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&pg.data)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("initdb: {}", text(&out.stderr)));
        }
        pg.start()?;
        Ok(pg)
    }

    fn start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.data.display()
        );
        let out = self
            .command("pg_ctl")
            .args(["-w", "-t", "30", "-l"])
            .arg(self.data.join("server.log"))
            .args(["-o", &options, "-D"])
            .arg(&self.data)
            .arg("start")
            .output()
            .map_err(|e| e.to_string())?;
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| format!("pg_ctl start: {}{}", text(&out.stdout), text(&out.stderr)))
    }

    fn stop(&self, mode: &str) -> Result<(), String> {
        let out = self
            .command("pg_ctl")
            .args(["-w", "-t", "30", "-m", mode, "-D"])
            .arg(&self.data)
            .arg("stop")
            .output()
            .map_err(|e| e.to_string())?;
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| format!("pg_ctl stop: {}", text(&out.stderr)))
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
    }
}

/// PostgreSQL restarted under load: a private server (see [`PrivatePostgres`]; skipped loudly
/// where there is none, required in CI with `TEST_REQUIRE_POSTGRES=1`), `tokendesk serve` on it,
/// six clients submitting without pause, then `pg_ctl stop -m fast` and, three seconds later,
/// `pg_ctl start` on the same port. While it is down every answer is a quick 503 with
/// `Retry-After` (never a 500, none slower than two seconds); once it is back the service
/// recovers by itself (`/readyz` 200, submissions stored again) without a restart; every
/// acknowledged submission is in the database with its audit record, and the chain verifies.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_under_load_answers_503_then_recovers_by_itself() {
    let dir = Dir::new("pg-restart");
    let pg = match PrivatePostgres::create(&dir) {
        Ok(pg) => pg,
        Err(why) => {
            assert!(
                !(std::env::var("CI").as_deref() == Ok("true")
                    && std::env::var("TEST_REQUIRE_POSTGRES").as_deref() == Ok("1")),
                "CI must be able to run a private PostgreSQL server: {why}"
            );
            eprintln!(
                "SKIPPED postgres_restarted_under_load_answers_503_then_recovers_by_itself: no private PostgreSQL server ({why})"
            );
            return;
        }
    };
    let sim = tokendesk_canvas_sim::start(
        tokendesk_canvas_sim::SimConfig {
            throttle: None,
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let config = dir.file(
        "tokendesk.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\n[canvas]\nurl = \"{}\"\nadmin_token = \"{}\"\n\
             [policy]\nmax_open_requests_per_person = 1000\n[limits]\nsubmissions_per_hour = 0\n",
            pg.url(),
            sim.base_url(),
            tokendesk_canvas_sim::DEFAULT_ADMIN_TOKEN
        ),
    );
    let serving = Serving::start(&config, &[]);
    let url = serving.url("/api/v1/requests");
    let client = reqwest::Client::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for k in 0..6 {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        clients.spawn(async move {
            let who = ["sam.student", "stella.student", "rita.researcher"][k % 3];
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let at = std::time::Instant::now();
                let s = submit_as(&client, &url, who).await;
                if s.status == 503 {
                    // A client that heard "try again later" waits a little, as a person would.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                answers.push((at, s));
            }
            answers
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped_at = std::time::Instant::now();
    pg.stop("fast").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ready = client.get(serving.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status().as_u16(),
        503,
        "/readyz while the database is down"
    );
    let started_at = std::time::Instant::now();
    pg.start().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = client.get(serving.url("/readyz")).send().await.unwrap();
        if ready.status().as_u16() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service never saw the database again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back_at = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = std::collections::BTreeSet::new();
    let (mut before, mut during, mut after, mut refused) = (0, 0, 0, 0);
    while let Some(answers) = clients.join_next().await {
        for (at, s) in answers.unwrap() {
            match s.status {
                201 => {
                    acknowledged.insert(s.id.unwrap());
                    if at < stopped_at {
                        before += 1;
                    } else if at > back_at {
                        after += 1;
                    } else {
                        during += 1;
                    }
                }
                503 => {
                    refused += 1;
                    assert_eq!(s.code.as_deref(), Some("unavailable"), "{:?}", s.code);
                    assert!(s.retry_after.is_some(), "a 503 without Retry-After");
                    assert!(s.took < Duration::from_secs(2), "a 503 after {:?}", s.took);
                }
                other => panic!(
                    "PostgreSQL restarting answered {other} ({:?}) after {:?}:\n{}",
                    s.code,
                    s.took,
                    serving.log()
                ),
            }
            if at > stopped_at && at < started_at {
                assert!(
                    s.took < Duration::from_secs(2),
                    "an answer ({}) {:?} into the outage took {:?}:\n{}",
                    s.status,
                    at - stopped_at,
                    s.took,
                    serving.log()
                );
            }
        }
    }
    assert!(
        before > 0 && refused > 0,
        "{before} before, {refused} refused"
    );
    assert!(
        after > 0,
        "no submission succeeded after the restart ({during} during it)"
    );
    let stderr = serving.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("internal error"), "{stderr}");
    assert!(stderr.contains("the database does not answer"), "{stderr}");
    assert!(stderr.contains("the database answers again"), "{stderr}");
    // A submission whose COMMIT was under way when the server stopped may be stored though its
    // client heard a 503: at most one per client.
    every_change_with_its_audit(&pg.url(), &acknowledged, 6).await;
    let out = run(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    drop(pg);
}

/// SIGTERM with a long queue of issuance (found by `scripts/soak`, whose service took more than
/// 30 s to stop): the service finishes the job in hand and stops within seconds, the rest stays
/// queued, and started again it issues every approved request (nothing lost).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_long_queue_stops_at_once_and_the_rest_waits() {
    let dir = Dir::new("stop-queue");
    // Every Canvas call takes 100 ms: 30 issuances (a look-up, a listing, a creation each)
    // are about ten seconds of work.
    let sim = tokendesk_canvas_sim::start(
        tokendesk_canvas_sim::SimConfig {
            throttle: None,
            latency: Duration::from_millis(100),
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let db_url = format!("sqlite://{}/td.db", dir.0.display());
    let config = dir.file(
        "tokendesk.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{db_url}\"\n[canvas]\nurl = \"{}\"\nadmin_token = \"{}\"\n\
             [roles]\napprovers = [\"ada.admin\"]\n[policy]\nmax_open_requests_per_person = 1000\n\
             max_active_tokens_per_person = 1000\n[limits]\nsubmissions_per_hour = 0\n",
            sim.base_url(),
            tokendesk_canvas_sim::DEFAULT_ADMIN_TOKEN
        ),
    );
    let serving = Serving::start(&config, &[]);
    let client = reqwest::Client::new();
    let url = serving.url("/api/v1/requests");
    let mut ids = Vec::new();
    for _ in 0..30 {
        let s = submit_as(&client, &url, "sam.student").await;
        assert_eq!(s.status, 201, "{:?}", s.code);
        ids.push(s.id.unwrap());
    }
    for id in &ids {
        let r = client
            .post(serving.url(&format!("/api/v1/requests/{id}/approve")))
            .header("X-Remote-User", "ada.admin")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let (stderr, took) = serving.stop_timed();
    assert!(
        took < Duration::from_secs(5),
        "stopping took {took:?} with work queued:\n{stderr}"
    );
    let store = Store::connect(&db_url, &StoreOptions::default())
        .await
        .unwrap();
    let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE state = 'approved'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(
        waiting > 0,
        "the whole queue was worked through before stopping"
    );
    // Started again, it does the rest.
    let serving = Serving::start(&config, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let issued: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE state = 'issued'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        if issued == ids.len() as i64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{issued} of {} issued after the restart:\n{}",
            ids.len(),
            serving.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stderr = serving.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = run(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

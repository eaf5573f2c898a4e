//! Every page and list API at scale, for each role: `cargo bench -p tokendesk --bench pages`
//! (`-- --requests N`, default 100,000, with ten audit events per request: 1,000,000;
//! `-- --backend sqlite|postgres`, default both).
//!
//! On each backend (SQLite: a file in a temporary folder, WAL, `synchronous = FULL`, as in
//! production; PostgreSQL: a database made for the run on the server at
//! `TOKENDESK_BENCH_POSTGRES_URL`, dropped at the end, skipped loudly when it does not answer)
//! it seeds directly through the store's pool: 10,000 people, N requests spread over the
//! last N minutes in every state (a tenth `submitted`, so the approvers' queue is long), a
//! token for each request that got one and an envelope for each issued one, 10·N audit events,
//! sent messages in the mailbox. Then it builds the app and the web router as `tokendesk serve`
//! does (trusted-header sign-in from loopback) and calls the router in process: "server side"
//! is the time from handing the request to the router to the last byte of its body, with no
//! network in between.
//!
//! The addresses come from the route lists themselves ([`tokendesk::web::pages::ROUTES`] and
//! [`tokendesk::web::api_routes`]): every `GET` route, its `{placeholders}` filled from the
//! seed (a route with a placeholder this bench does not know fails it: add a sample), plus the
//! lists' filtered and next-page forms. Left out, and said so: `/static/{file}`, the OpenID
//! Connect hand-shake (`/auth/login`, `/auth/callback`), and the audit trail's two exports
//! (downloads of the whole trail, streamed: not pages).
//!
//! Each address is asked 3 times to warm up and then 30 times by each of the five roles
//! (requester, approver, help desk, auditor, admin); the table gives the median for each answer
//! that is not a refusal (a 403 or 404 for a role that may not see it is shown as such and not
//! counted). The last line reads `pages: worst W ms (PATH as ROLE) at N requests`. The target
//! (every one under 10 ms) is reported, not enforced; the bench fails when a page answers a
//! server error.
//!
//! Reports are counted afresh at most once a minute (`REPORT_FRESH`): the warm-up's first view
//! of each computes it, and the bench prints how long that took for each report beside the
//! table (`reports counted afresh`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use secrecy::SecretString;
use tokendesk::app::{App, AppParts, Chart, Ctx, Mailer, RoleBook, SystemClock};
use tokendesk::config::{AuthConfig, LimitsConfig};
use tokendesk::domain::{Login, Policy};
use tokendesk::store::{Store, StoreOptions};
use tokendesk::web::{WebAuth, WebOptions, router_with};
use tokendesk_canvas::CanvasClient;
use tokendesk_canvas_sim::{DEFAULT_ADMIN_TOKEN, SimConfig};
use tower::Service as _;

#[path = "support/pg.rs"]
mod pg;
use pg::PgDatabase;

/// People (a prime number of them, so that each has requests in every state).
const PEOPLE: i64 = 9_973;
const AUDIT_PER_REQUEST: i64 = 10;
const WARM_UP: usize = 3;
const TIMED: usize = 30;
const TARGET_MS: f64 = 10.0;

/// The roles, each a login the role book names.
const ROLES: [(&str, &str); 5] = [
    ("requester", "p00003"),
    ("approver", "ada.approver"),
    ("help desk", "hal.helpdesk"),
    ("auditor", "aud.auditor"),
    ("admin", "adm.admin"),
];

fn login(s: &str) -> Login {
    Login::parse(s).unwrap()
}

fn requests_wanted() -> i64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--requests takes a number"))
        .unwrap_or(100_000)
}

/// Runs one statement of the seed.
async fn exec(store: &Store, sql: &str) {
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("seeding: {e}\n{sql}"));
}

/// The seed's SQL for one backend.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `INSERT INTO {into} SELECT {select} FROM` the numbers 1..=count as `i`.
    fn numbered(self, count: i64, into: &str, select: &str) -> String {
        match self {
            Dialect::Sqlite => format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
                 INSERT INTO {into} SELECT {select} FROM n"
            ),
            Dialect::Postgres => format!(
                "INSERT INTO {into} SELECT {select} FROM generate_series(1, {count}::bigint) AS n(i)"
            ),
        }
    }

    /// `expr` in decimal, zero-padded to `width`.
    fn pad(self, expr: &str, width: usize) -> String {
        match self {
            Dialect::Sqlite => format!("printf('%0{width}d', {expr})"),
            Dialect::Postgres => format!("lpad(({expr})::text, {width}, '0')"),
        }
    }
}

/// The state of request `i` (of every 20: 2 submitted, 2 issued, 6 activated, 5 expired, 2
/// revoked, 2 denied, 1 cancelled).
const STATE_OF: &str = "CASE i % 20 WHEN 0 THEN 'submitted' WHEN 1 THEN 'submitted' \
     WHEN 2 THEN 'issued' WHEN 3 THEN 'issued' \
     WHEN 4 THEN 'activated' WHEN 5 THEN 'activated' WHEN 6 THEN 'activated' \
     WHEN 7 THEN 'activated' WHEN 8 THEN 'activated' WHEN 9 THEN 'activated' \
     WHEN 10 THEN 'expired' WHEN 11 THEN 'expired' WHEN 12 THEN 'expired' WHEN 13 THEN 'expired' \
     WHEN 14 THEN 'expired' WHEN 15 THEN 'revoked' WHEN 16 THEN 'revoked' \
     WHEN 17 THEN 'denied' WHEN 18 THEN 'denied' ELSE 'cancelled' END";

async fn seed(store: &Store, d: Dialect, requests: i64, now: i64) {
    let start = now - requests * 60;
    let today = time::OffsetDateTime::now_utc().date();
    let expires = (today + time::Duration::days(60)).to_string();
    let expired = (today - time::Duration::days(3)).to_string();
    let person = |expr: &str| format!("'p' || {}", d.pad(expr, 5));
    exec(
        store,
        &d.numbered(
            PEOPLE,
            "people (login, name, email, canvas_user_id, first_seen_at, updated_at)",
            &format!(
                "{}, 'Person ' || i, {} || '@example.edu', i, {start}, {start}",
                person("i"),
                person("i")
            ),
        ),
    )
    .await;
    for (n, (_, who)) in ROLES.iter().enumerate().skip(1) {
        exec(
            store,
            &format!(
                "INSERT INTO people (login, name, email, canvas_user_id, first_seen_at, updated_at) \
                 VALUES ('{who}', '{who}', '{who}@example.edu', {}, {start}, {start})",
                PEOPLE + 1 + n as i64
            ),
        )
        .await;
    }
    exec(
        store,
        &d.numbered(
            requests,
            "requests (id, requester, purpose, application, requested_expires_on, expires_on, \
             state, decided_by, reason, created_at, updated_at)",
            &format!(
                "i, {}, 'Grade export scripts for course ' || (i % 977), NULL, '{expires}', \
                 CASE WHEN i % 20 BETWEEN 10 AND 14 THEN '{expired}' ELSE '{expires}' END, \
                 {STATE_OF}, CASE WHEN i % 20 IN (0, 1) THEN NULL ELSE 'ada.approver' END, \
                 CASE WHEN i % 20 IN (17, 18) THEN 'not for this course' ELSE NULL END, \
                 {start} + i * 60, {start} + i * 60 + 30",
                person(&format!("1 + i % {PEOPLE}"))
            ),
        ),
    )
    .await;
    // A token for each request that got one: pending while issued, active, or deleted.
    exec(
        store,
        &format!(
            "INSERT INTO tokens (id, request_id, owner, canvas_user_id, canvas_token_id, hint, state, \
             expires_at, created_at, updated_at, activated_at) \
             SELECT r.id, r.id, r.requester, 1 + r.id % {PEOPLE}, 100000 + r.id, 'h' || {}, \
             CASE r.state WHEN 'issued' THEN 'pending' WHEN 'activated' THEN 'active' ELSE 'deleted' END, \
             r.created_at + 60 * 86400, r.created_at + 40, r.created_at + 50, \
             CASE WHEN r.state = 'issued' THEN NULL ELSE r.created_at + 50 END \
             FROM requests r WHERE r.state IN ('issued', 'activated', 'expired', 'revoked')",
            d.pad("r.id % 10000", 4)
        ),
    )
    .await;
    exec(
        store,
        &format!(
            "INSERT INTO envelopes (id, request_id, owner, state, reveals, nonce, ciphertext, created_at, expires_at) \
             SELECT 'env' || {}, r.id, r.requester, \
             CASE r.state WHEN 'issued' THEN 'sealed' ELSE 'burned' END, \
             CASE r.state WHEN 'issued' THEN 0 ELSE 1 END, NULL, NULL, \
             r.created_at + 40, {now} + 7 * 86400 \
             FROM requests r WHERE r.state IN ('issued', 'activated')",
            d.pad("r.id", 19)
        ),
    )
    .await;
    let events = requests * AUDIT_PER_REQUEST;
    let actions = "CASE i % 10 WHEN 0 THEN 'request.submit' WHEN 1 THEN 'request.approve' \
         WHEN 2 THEN 'token.create' WHEN 3 THEN 'envelope.create' WHEN 4 THEN 'email.sent' \
         WHEN 5 THEN 'envelope.reveal' WHEN 6 THEN 'token.activate' WHEN 7 THEN 'token.check' \
         WHEN 8 THEN 'email.sent' ELSE 'token.expire' END";
    exec(
        store,
        &d.numbered(
            events,
            "audit_events (seq, at, actor, action, target, outcome, client_addr, details, prev_hash, hash)",
            &format!(
                "i, {start} + i * 6, CASE WHEN i % 10 = 1 THEN 'ada.approver' \
                 WHEN i % 10 = 0 THEN {} ELSE 'system' END, {actions}, \
                 'request:' || (1 + (i - 1) / {AUDIT_PER_REQUEST}), 'ok', '127.0.0.1', '{{}}', {}, {}",
                person(&format!("1 + (i / 10) % {PEOPLE}")),
                d.pad("i - 1", 64),
                d.pad("i", 64)
            ),
        ),
    )
    .await;
    exec(
        store,
        &d.numbered(
            requests / 10,
            "emails (kind, request_id, to_login, to_addr, subject, body_text, body_html, state, \
             attempts, run_after, created_at, sent_at)",
            &format!(
                "'notice', i * 10, {p}, {p} || '@example.edu', 'Your request #' || (i * 10), \
                 'A message.', '<p>A message.</p>', 'sent', 1, {start} + i * 600, \
                 {start} + i * 600, {start} + i * 600 + 5",
                p = person(&format!("1 + (i * 10) % {PEOPLE}"))
            ),
        ),
    )
    .await;
    if d == Dialect::Postgres {
        // Rows given their ids: the sequences go on after them.
        for (table, column) in [
            ("requests", "id"),
            ("tokens", "id"),
            ("audit_events", "seq"),
        ] {
            exec(
                store,
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                     (SELECT MAX({column}) FROM {table}))"
                ),
            )
            .await;
        }
    }
    exec(store, "ANALYZE").await;
}

struct Sample {
    /// `{id}` of `/requests/{id}` and `/tokens/{id}`: the requester's issued request (its token
    /// has the same id).
    issued: i64,
    envelope: String,
    calendar: String,
    revocation: Option<i64>,
}

/// The address for `path` with its placeholders filled, or `None` when it is left out.
fn fill(path: &str, s: &Sample) -> Option<Result<String, String>> {
    const LEFT_OUT: [&str; 3] = ["/static/{file}", "/auth/login", "/auth/callback"];
    if LEFT_OUT.contains(&path) || path.starts_with("/audit/export") || path == "/api/openapi.json"
    {
        return None;
    }
    let mut out = path.to_owned();
    let fills = [
        ("{id}", s.issued.to_string()),
        ("{login}", ROLES[0].1.to_owned()),
        ("{file}", String::new()),
    ];
    if path.starts_with("/e/") || path.contains("/envelopes/") {
        out = out.replace("{id}", &s.envelope);
    }
    if path == "/calendar/{file}" {
        return Some(Ok(format!("/calendar/{}", s.calendar)));
    }
    if path.ends_with("/revocations/preview") {
        return Some(Ok(format!("{path}?owner={}", ROLES[0].1)));
    }
    if path == "/reports/{file}" {
        return None; // every chart's files are added by `addresses`
    }
    if path.contains("revocations/{id}") || path.contains("/incidents/") && path.contains("{id}") {
        match s.revocation {
            Some(id) => out = out.replace("{id}", &id.to_string()),
            None => return None,
        }
    }
    for (hole, value) in &fills {
        if !value.is_empty() {
            out = out.replace(hole, value);
        }
    }
    if out.contains('{') {
        return Some(Err(path.to_owned()));
    }
    Some(Ok(out))
}

/// Every address timed: the `GET` routes, filled, and the lists' other forms.
fn addresses(s: &Sample, requests: i64) -> Vec<String> {
    let mut paths: Vec<String> = tokendesk::web::pages::ROUTES
        .iter()
        .filter(|r| r.methods.contains(&"get"))
        .map(|r| r.path.to_owned())
        .collect();
    paths.extend(
        tokendesk::web::api_routes()
            .into_iter()
            .filter(|(m, _)| *m == Method::GET)
            .map(|(_, p)| p),
    );
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for p in &paths {
        match fill(p, s) {
            Some(Ok(a)) => out.push(a),
            Some(Err(p)) => unknown.push(p),
            None => {}
        }
    }
    assert!(
        unknown.is_empty(),
        "routes with placeholders this bench cannot fill (add samples): {unknown:?}"
    );
    for chart in Chart::ALL {
        out.push(format!("/reports/{}.csv", chart.slug()));
        if chart.drawing() != tokendesk::app::Drawing::TableOnly {
            out.push(format!("/reports/{}.svg", chart.slug()));
        }
    }
    let middle = requests / 2;
    out.extend([
        "/queue?state=activated".to_owned(),
        format!("/queue?after={}", middle - middle % 20),
        "/api/v1/requests?state=submitted".to_owned(),
        "/api/v1/requests?queue=true&state=submitted".to_owned(),
        format!("/api/v1/requests?after={middle}"),
        "/audit?action=request.approve".to_owned(),
        format!(
            "/api/v1/audit?after_seq={}",
            requests * AUDIT_PER_REQUEST / 2
        ),
        format!("/api/v1/audit?target=request:{middle}"),
        "/api/v1/audit?actor=ada.approver&action=request.approve".to_owned(),
        "/people?q=p0004".to_owned(),
    ]);
    let mut seen = HashSet::new();
    out.retain(|a| seen.insert(a.clone()));
    out
}

async fn time_one(router: &axum::Router, path: &str, who: &str) -> (StatusCode, Duration, usize) {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("X-Remote-User", who)
        .header("Accept", "text/html,application/json")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    let started = Instant::now();
    let response = router.clone().call(req).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, started.elapsed(), body.len())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One backend's run: its table printed, the worst answer returned (with any server errors).
async fn run(
    store: Store,
    dialect: Dialect,
    name: &str,
    requests: i64,
) -> (Option<(f64, String, &'static str)>, Vec<String>) {
    let seeding = Instant::now();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    seed(&store, dialect, requests, now).await;
    eprintln!(
        "{name}: seeded {requests} requests, {} audit events, {PEOPLE} people in {:.1} s",
        requests * AUDIT_PER_REQUEST,
        seeding.elapsed().as_secs_f64()
    );

    let sim = tokendesk_canvas_sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let canvas = CanvasClient::builder(sim.base_url(), SecretString::from(DEFAULT_ADMIN_TOKEN))
        .build()
        .unwrap();
    let role = |i: usize| [login(ROLES[i].1)].into_iter().collect();
    let app = App::new(AppParts {
        store: store.clone(),
        policy: Policy::default(),
        roles: RoleBook {
            approvers: role(1),
            helpdesk: role(2),
            auditors: role(3),
            admins: role(4),
        },
        canvas,
        canvas_url: sim.base_url().parse().unwrap(),
        canvas_user_pattern: tokendesk::domain::UserIdPattern::SisLogin,
        public_url: "http://tokendesk.test/".parse().unwrap(),
        mailer: Mailer::Mailbox,
        outbox_key: None,
        product_name: "tokendesk".into(),
        notify: tokendesk::config::NotifyConfig::default(),
        sessions: tokendesk::app::SessionRules::default(),
        fingerprint_key: None,
        clock: Arc::new(SystemClock),
    });
    let requester = app.actor(login(ROLES[0].1));
    let calendar = app.new_calendar(&requester, &Ctx::system()).await.unwrap();
    let calendar = calendar.rsplit('/').next().unwrap().to_owned();
    // The requester's issued request (request i is person 1 + i % PEOPLE's).
    let number: i64 = ROLES[0].1[1..].parse().unwrap();
    let issued = (1..=requests)
        .filter(|i| 1 + i % PEOPLE == number)
        .find(|i| i % 20 == 2 || i % 20 == 3)
        .expect("the requester has an issued request");
    let sample = Sample {
        issued,
        envelope: format!("env{issued:019}"),
        calendar,
        revocation: None,
    };
    let auth = WebAuth::new(
        &AuthConfig::default(),
        "127.0.0.1:8080".parse().unwrap(),
        vec![],
    )
    .unwrap();
    let limits = LimitsConfig {
        envelope_lookups_per_minute: 0,
        reveals_per_hour: 0,
        reports_per_hour: 0,
        sign_ins_per_minute: 0,
        submissions_per_hour: 0,
        ..LimitsConfig::default()
    };
    // Each report counted afresh (what the first view in a minute costs), which also fills the
    // cache the timed views read.
    let auditor = app.actor(login(ROLES[3].1));
    let mut afresh = Vec::new();
    for chart in Chart::ALL {
        let started = Instant::now();
        app.report(&auditor, chart).await.unwrap();
        afresh.push(format!("{} {:.0} ms", chart.slug(), ms(started.elapsed())));
    }
    let router = router_with(
        app,
        auth,
        WebOptions {
            limits,
            ..WebOptions::default()
        },
    );

    let addresses = addresses(&sample, requests);
    let mut results: BTreeMap<(String, &str), (StatusCode, f64)> = BTreeMap::new();
    let mut failed = Vec::new();
    for path in &addresses {
        for (role, who) in ROLES {
            for _ in 0..WARM_UP {
                time_one(&router, path, who).await;
            }
            let mut times = Vec::with_capacity(TIMED);
            let mut status = StatusCode::OK;
            for _ in 0..TIMED {
                let (s, d, _) = time_one(&router, path, who).await;
                status = s;
                times.push(d);
            }
            if status.is_server_error() {
                failed.push(format!("{name}: {path} as {role}: {status}"));
            }
            results.insert((path.clone(), role), (status, ms(median(times))));
        }
    }

    println!(
        "\n{:<52} {}",
        format!("{name}: address (median ms of 30, server side)"),
        ROLES.map(|(r, _)| format!("{r:>10}")).join(" ")
    );
    let mut worst: Option<(f64, String, &'static str)> = None;
    for path in &addresses {
        let mut line = format!("{path:<52}");
        for (role, _) in ROLES {
            let (status, t) = results[&(path.clone(), role)];
            if status.is_success() || status.is_redirection() {
                line.push_str(&format!(" {t:>10.2}"));
                if worst.as_ref().is_none_or(|(w, _, _)| t > *w) {
                    worst = Some((t, path.clone(), role));
                }
            } else {
                line.push_str(&format!(" {:>10}", status.as_u16()));
            }
        }
        println!("{line}");
    }
    let over: Vec<_> = results
        .iter()
        .filter(|(_, (s, t))| (s.is_success() || s.is_redirection()) && *t >= TARGET_MS)
        .map(|((p, r), (_, t))| format!("{p} as {r}: {t:.1} ms"))
        .collect();
    println!(
        "{name}: {} addresses × {} roles; target: every answer under {TARGET_MS} ms: {}",
        addresses.len(),
        ROLES.len(),
        if over.is_empty() {
            "met".to_owned()
        } else {
            format!("MISSED by {}: {}", over.len(), over.join("; "))
        }
    );
    println!(
        "{name}: reports counted afresh (the first view in a minute; cached for {} s): {}",
        tokendesk::app::REPORT_FRESH.as_secs(),
        afresh.join(", ")
    );
    if let Some((w, path, role)) = &worst {
        println!("{name}: worst {w:.1} ms ({path} as {role})");
    }
    (worst, failed)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let requests = requests_wanted();
    let only = std::env::args()
        .skip_while(|a| a != "--backend")
        .nth(1)
        .unwrap_or_else(|| "both".to_owned());
    let mut worst: Option<(f64, String, &'static str)> = None;
    let mut failed = Vec::new();
    let mut keep = |(w, f): (Option<(f64, String, &'static str)>, Vec<String>)| {
        failed.extend(f);
        if let Some(w) = w
            && worst.as_ref().is_none_or(|(t, _, _)| w.0 > *t)
        {
            worst = Some(w);
        }
    };
    if only != "postgres" {
        let dir = std::env::temp_dir().join(format!(
            "tokendesk-pages-bench-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
        let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
        keep(run(store, Dialect::Sqlite, "sqlite", requests).await);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if only != "sqlite" {
        match PgDatabase::create().await.unwrap() {
            Some(db) => {
                let store = Store::open(&db.url, &StoreOptions::default())
                    .await
                    .unwrap();
                keep(run(store.clone(), Dialect::Postgres, "postgres", requests).await);
                store.pool().close().await;
                db.drop_database().await.unwrap();
            }
            None => eprintln!("postgres: skipped (see above)"),
        }
    }
    if !failed.is_empty() {
        println!("errors: {}", failed.join("; "));
    }
    let (w, path, role) = worst.expect("something answered");
    println!("pages: worst {w:.1} ms ({path} as {role}) at {requests} requests");
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

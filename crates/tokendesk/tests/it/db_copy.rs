//! `tokendesk db copy`: a populated SQLite database (a whole story through the service) moves to
//! a fresh PostgreSQL database with every row, its ids and an intact audit chain; a non-empty
//! target is refused without `--force`. Skipped without PostgreSQL (unless TEST_REQUIRE_POSTGRES=1).

use std::process::{Command, Output, Stdio};

use tokendesk::app::Ctx;
use tokendesk::domain::RequestId;
use tokendesk::store::{self, Store};

use crate::support::db::TestDb;
use crate::support::world::{self, World};

const BIN: &str = env!("CARGO_BIN_EXE_tokendesk");

fn copy(from: &str, to: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["db", "copy", "--from", from, "--to", to, "--batch", "3"])
        .args(extra)
        .env_remove("TOKENDESK_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn counts(store: &Store) -> Vec<(&'static str, i64)> {
    let mut conn = store.pool().acquire().await.unwrap();
    let mut out = Vec::new();
    for table in store::copied_tables() {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        out.push((table, n));
    }
    out
}

#[tokio::test]
async fn sqlite_copies_to_postgres_with_its_audit_chain() {
    let Some(target) = TestDb::postgres().await else {
        eprintln!("db copy test skipped: PostgreSQL is not reachable");
        return;
    };
    // A populated SQLite database: issued and revealed, waiting, denied, periodic work.
    let world = World::new(TestDb::sqlite().await).await;
    let issued = world.issued("sam.student").await;
    let value = world.reveal_value("sam.student").await;
    assert!(!value.is_empty());
    let waiting = world.submit("stella.student").await;
    let denied = world.submit("rita.researcher").await;
    world
        .app
        .deny(
            &world.actor("ada.admin"),
            denied,
            Some("not needed"),
            &Ctx::default(),
        )
        .await
        .unwrap();
    tokendesk::jobs::sweep(&world.app).await.unwrap();
    // A notice sent once, a calendar feed, an orphan found in Canvas.
    let mut tx = world.db.store.write().await.unwrap();
    let now = world.app.now();
    store::note_once(&mut tx, issued, "expiry:14", now)
        .await
        .unwrap();
    store::set_calendar(&mut tx, &world::login("sam.student"), "feedsecret", now)
        .await
        .unwrap();
    store::saw_orphan(
        &mut tx,
        &store::SeenOrphan {
            canvas_user_id: 2,
            canvas_token_id: 99,
            owner: None,
            purpose: "tokendesk #77: left behind",
            hint: "abcde",
            canvas_expires_at: None,
        },
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // A session, an OIDC sign-in under way and a service key.
    world
        .app
        .start_session(
            &tokendesk::app::SignIn {
                login: world::login("sam.student"),
                kind: tokendesk::app::SessionKind::Oidc,
                roles: Default::default(),
                email: None,
                name: None,
                id_token: Some("header.payload.signature".into()),
                user_agent: None,
            },
            &Ctx::default(),
        )
        .await
        .unwrap();
    world
        .app
        .begin_oidc(
            "some-state",
            &store::OidcFlow {
                nonce: "n".into(),
                pkce_verifier: "v".into(),
                next_path: None,
                created_at: now,
            },
        )
        .await
        .unwrap();
    world
        .app
        .create_key(
            "audit-export",
            "auditor",
            time::Duration::days(90),
            &Ctx::default(),
        )
        .await
        .unwrap();
    // A report that matched nothing, and a revocation run still queued.
    world
        .app
        .report_leak(
            &world.actor("stella.student"),
            "zzzzz",
            "a gist",
            &Ctx::default(),
        )
        .await
        .unwrap();
    world
        .app
        .start_revocation(
            &world.actor("ada.admin"),
            tokendesk::domain::request::RevokeFilter::Owner(world::login("sam.student")),
            "off-boarding",
            None,
            &Ctx::default(),
        )
        .await
        .unwrap();
    store::claim_period(
        &world.db.store,
        "sweep",
        "test",
        world.app.now(),
        time::Duration::seconds(30),
    )
    .await
    .unwrap();
    let source = &world.db.store;
    let before = counts(source).await;
    assert!(
        before.iter().all(|(_, n)| *n > 0),
        "every table has rows: {before:?}"
    );
    let from = world.db.url.split('?').next().unwrap().to_owned();

    let out = copy(&from, &target.url, &[]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("audit chain intact"), "{stdout}");
    eprintln!("{stdout}");

    // Every table, every row; the same request; an intact chain; sequences past the ids.
    let pg = &target.store;
    assert_eq!(counts(pg).await, before);
    let mut src = source.pool().acquire().await.unwrap();
    let mut dst = pg.pool().acquire().await.unwrap();
    for id in [issued, waiting, denied] {
        assert_eq!(
            store::get_request(&mut dst, id).await.unwrap(),
            store::get_request(&mut src, id).await.unwrap()
        );
    }
    assert_eq!(
        store::token_for_request(&mut dst, issued).await.unwrap(),
        store::token_for_request(&mut src, issued).await.unwrap()
    );
    assert_eq!(
        store::envelope_for_request(&mut dst, issued).await.unwrap(),
        store::envelope_for_request(&mut src, issued).await.unwrap()
    );
    let events = before.iter().find(|(t, _)| *t == "audit_events").unwrap().1;
    assert_eq!(
        store::verify_chain(&mut dst).await.unwrap(),
        Ok(u64::try_from(events).unwrap())
    );
    drop(dst);
    let mut tx = pg.write().await.unwrap();
    store::upsert_person(
        &mut tx,
        &store::Person {
            login: world::login("new.person"),
            name: None,
            email: None,
            canvas_user_id: None,
        },
        world.app.now(),
    )
    .await
    .unwrap();
    let fresh = store::insert_request(
        &mut tx,
        &world::login("new.person"),
        &tokendesk::domain::request::NewRequest {
            purpose: "a request made after the move".into(),
            application: None,
            expires_on: world.app.now().date() + time::Duration::days(10),
            renews: None,
        },
        world.app.now(),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        fresh.id > RequestId(denied.0),
        "{:?} after {denied:?}",
        fresh.id
    );

    // A second copy is refused (input error, exit 2) unless --force.
    let out = copy(&from, &target.url, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not empty") && stderr.contains("--force"),
        "{stderr}"
    );
    let out = copy(&from, &target.url, &["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("replaced"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(counts(pg).await, before);

    // And back: PostgreSQL to a fresh SQLite file.
    let back = TestDb::sqlite().await;
    let back_path = back.url.split('?').next().unwrap().to_owned();
    let out = copy(&target.url, &back_path, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(counts(&back.store).await, before);

    // Input errors.
    let out = copy("sqlite:///nonexistent/td.db", &target.url, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let bad = format!("{}?sslmode=sometimes", target.url);
    let out = copy(&from, &bad, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("sslmode"),
        "{}",
        text(&out.stderr)
    );
}

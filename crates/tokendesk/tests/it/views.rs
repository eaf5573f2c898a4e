//! The status look-up cache: a cached view never outlives a change to what it shows, whether
//! the change is made through this instance (every step of the lifecycle, both backends) or
//! through another instance on the same PostgreSQL database (change notices), also across a lost
//! listener connection.

use std::time::{Duration, Instant};

use time::Duration as Days;
use tokendesk::app::Ctx;
use tokendesk::domain::RequestId;
use tokendesk::domain::request::{Request, RequestState};
use tokendesk::store::{self, Store, StoreOptions, ViewCacheOptions};

use crate::support::db::TestDb;
use crate::support::world::World;

/// Waits until the store's cache serves (PostgreSQL: its listener is connected).
async fn wait_live(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.view_cache_stats().live {
        assert!(Instant::now() < deadline, "the cache never went live");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Looks a request up twice, so that its view is in the cache before the next step.
async fn warm(w: &World, id: RequestId) {
    let ada = w.actor("ada.admin");
    for _ in 0..2 {
        w.app.request(&ada, id).await.unwrap();
    }
}

/// The look-up (cache first) shows what the database holds now.
async fn agree(w: &World, id: RequestId, step: &str) -> RequestState {
    let looked_up = w.app.request(&w.actor("ada.admin"), id).await.unwrap();
    let mut conn = w.db.store.pool().acquire().await.unwrap();
    let stored = store::request_view(&mut conn, id).await.unwrap().unwrap();
    assert_eq!(
        (looked_up.request, looked_up.token, looked_up.envelope),
        stored,
        "after {step}: the look-up shows an old view"
    );
    stored.0.state
}

async fn every_change_reaches_the_cache(db: TestDb) {
    let backend = db.backend().name();
    let w = World::new(db).await;
    wait_live(&w.db.store).await;
    let ada = w.actor("ada.admin");
    let sam = w.actor("sam.student");
    let theo = w.actor("theo.teacher");
    let ctx = Ctx::default();

    // Approve, issue (token and envelope), reveal, activate (sweep), revoke.
    let id = w.submit("sam.student").await;
    warm(&w, id).await;
    w.app.approve(&ada, id, None, &ctx).await.unwrap();
    assert_eq!(agree(&w, id, "approve").await, RequestState::Approved);
    warm(&w, id).await;
    tokendesk::jobs::drain(&w.app).await.unwrap();
    assert_eq!(agree(&w, id, "issue").await, RequestState::Issued);
    warm(&w, id).await;
    w.reveal_value("sam.student").await;
    agree(&w, id, "reveal").await;
    let token = w.app.request(&sam, id).await.unwrap().token.unwrap();
    warm(&w, id).await;
    w.activate_in_canvas("sam.student", token.canvas_token_id)
        .await;
    w.clock.advance(Days::minutes(1));
    tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(agree(&w, id, "activation").await, RequestState::Activated);
    warm(&w, id).await;
    w.app
        .revoke(&theo, token.id, Some("leaked"), &ctx)
        .await
        .unwrap();
    assert_eq!(agree(&w, id, "revoke").await, RequestState::Revoked);

    // Deny and cancel.
    let denied = w.submit("sam.student").await;
    warm(&w, denied).await;
    w.app.deny(&ada, denied, Some("no"), &ctx).await.unwrap();
    assert_eq!(agree(&w, denied, "deny").await, RequestState::Denied);
    let cancelled = w.submit("sam.student").await;
    warm(&w, cancelled).await;
    w.app.cancel(&sam, cancelled, &ctx).await.unwrap();
    assert_eq!(
        agree(&w, cancelled, "cancel").await,
        RequestState::Cancelled
    );

    // The sweep: an envelope expires unopened, and its token ends, never put to use.
    let unopened = w.issued("sam.student").await;
    warm(&w, unopened).await;
    w.clock.advance(Days::days(8));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!((report.envelopes_expired, report.never_used), (1, 1));
    assert_eq!(
        agree(&w, unopened, "envelope expiry").await,
        RequestState::Expired
    );
    // A token in use expires at its date.
    let expiring = w.issued("sam.student").await;
    w.reveal_value("sam.student").await;
    let token = w.app.request(&sam, expiring).await.unwrap().token.unwrap();
    w.activate_in_canvas("sam.student", token.canvas_token_id)
        .await;
    w.clock.advance(Days::minutes(1));
    tokendesk::jobs::sweep(&w.app).await.unwrap();
    warm(&w, expiring).await;
    w.clock.advance(Days::days(31));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(report.requests_expired, 1);
    assert_eq!(
        agree(&w, expiring, "token expiry").await,
        RequestState::Expired
    );

    let stats = w.db.store.view_cache_stats();
    assert!(
        stats.hits >= 10 && stats.misses >= 10,
        "{backend}: the look-ups went through the cache: {stats:?}"
    );
    println!("{backend}: every change reached the cache ({stats:?})");
}

#[tokio::test]
async fn every_change_reaches_the_cache_on_every_backend() {
    for db in TestDb::all().await {
        every_change_reaches_the_cache(db).await;
    }
}

async fn a_commit_whose_caller_stops_waiting(db: TestDb) {
    let w = World::new(db).await;
    wait_live(&w.db.store).await;
    let id = w.submit("sam.student").await;
    warm(&w, id).await;
    let mut tx = w.db.store.write().await.unwrap();
    let before = store::get_request(&mut tx, id).await.unwrap().unwrap();
    let denied = Request {
        state: RequestState::Denied,
        reason: Some("the caller hangs up".into()),
        ..before.clone()
    };
    store::update_request(&mut tx, before.state, &denied)
        .await
        .unwrap();
    // The caller (say, a handler whose client hung up) polls the commit once and is dropped.
    let mut commit = Box::pin(tx.commit());
    let _ = futures::poll!(&mut commit);
    drop(commit);
    // The commit still lands, and the cache forgets the view after it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = w.db.store.pool().acquire().await.unwrap();
        let stored = store::get_request(&mut conn, id).await.unwrap().unwrap();
        if stored.state == RequestState::Denied {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned commit never landed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        agree(&w, id, "a commit whose caller stopped waiting").await,
        RequestState::Denied
    );
}

#[tokio::test]
async fn a_commit_whose_caller_stops_waiting_still_empties_the_cache() {
    for db in TestDb::all().await {
        a_commit_whose_caller_stops_waiting(db).await;
    }
}

/// Looks a request up in `store` until it is in `state`; how long that took.
async fn until_state(
    store: &Store,
    id: RequestId,
    state: RequestState,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let view = store.request_view(id).await.unwrap().unwrap();
        if view.0.state == state {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "request {id} still {:?} after {within:?}",
            view.0.state
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The PostgreSQL listeners of this test's database (`application_name` tokendesk-listener).
async fn listener_pids(store: &Store) -> Vec<i32> {
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE application_name = 'tokendesk-listener' AND datname = current_database() \
         ORDER BY pid",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_hears_every_change_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        eprintln!("skipped: PostgreSQL is not reachable");
        return;
    };
    let w = World::new(db).await;
    // A second instance: its own store on the same database, with views that would live ten
    // minutes if nothing told it of changes.
    let other = Store::open(
        &w.db.url,
        &StoreOptions {
            view_cache: ViewCacheOptions {
                entries: 100,
                ttl: Duration::from_secs(600),
            },
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    wait_live(&w.db.store).await;
    wait_live(&other).await;
    let ada = w.actor("ada.admin");
    let ctx = Ctx::default();

    // A change here reaches the other instance's cache.
    let id = w.submit("sam.student").await;
    for _ in 0..2 {
        other.request_view(id).await.unwrap();
    }
    let hits = other.view_cache_stats().hits;
    assert!(hits >= 1, "the other instance cached the view");
    w.app.approve(&ada, id, None, &ctx).await.unwrap();
    let heard = until_state(&other, id, RequestState::Approved, Duration::from_secs(5)).await;

    // The listeners lose their connections; a change made meanwhile is not missed.
    let before = listener_pids(&other).await;
    assert_eq!(before.len(), 2, "one listener per instance: {before:?}");
    let second = w.submit("theo.teacher").await;
    other.request_view(second).await.unwrap();
    let mut conn = other.pool().acquire().await.unwrap();
    for pid in &before {
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert!(terminated, "listener {pid}");
    }
    drop(conn);
    w.app
        .deny(&ada, second, Some("meanwhile"), &ctx)
        .await
        .unwrap();
    let recovered = until_state(
        &other,
        second,
        RequestState::Denied,
        Duration::from_secs(10),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let pids = listener_pids(&other).await;
        if pids.len() == 2 && pids.iter().all(|p| !before.contains(p)) {
            break pids;
        }
        assert!(
            Instant::now() < deadline,
            "the listeners did not come back: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    wait_live(&other).await;

    // And it hears changes again afterwards.
    for _ in 0..2 {
        other.request_view(id).await.unwrap();
    }
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let heard_again = until_state(&other, id, RequestState::Issued, Duration::from_secs(5)).await;
    println!(
        "another instance saw a change after {:.1} ms; after its listener was cut (pids {before:?} \
         → {after:?}) it showed a change made meanwhile within {:.0} ms, and the next change \
         after {:.1} ms",
        heard.as_secs_f64() * 1000.0,
        recovered.as_secs_f64() * 1000.0,
        heard_again.as_secs_f64() * 1000.0
    );
    other.close().await;
}

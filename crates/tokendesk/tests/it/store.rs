//! The store on every backend: migrations, requests with compare-and-set transitions, limits,
//! tokens, envelopes, the audit chain, and the job and email queues with leases.

use serde_json::json;
use time::macros::{date, datetime};
use time::{Duration, OffsetDateTime};
use tokendesk::delivery::email::OutgoingEmail;
use tokendesk::domain::envelope::{Envelope, EnvelopeState};
use tokendesk::domain::request::{NewRequest, RequestState};
use tokendesk::domain::{AuditRecord, EmailKind, Login};
use tokendesk::store::{
    self, AuditFilter, JobKind, Person, QueuedEmail, RequestFilter, TokenState, Whose,
};

use crate::support::db::TestDb;

const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

fn login(s: &str) -> Login {
    Login::parse(s).unwrap()
}

fn new_request(purpose: &str) -> NewRequest {
    NewRequest {
        purpose: purpose.into(),
        application: Some("grader".into()),
        expires_on: date!(2027 - 01 - 31),
        renews: None,
    }
}

async fn person(db: &TestDb, l: &str) {
    let mut tx = db.store.write().await.unwrap();
    store::upsert_person(
        &mut tx,
        &Person {
            login: login(l),
            name: None,
            email: None,
            canvas_user_id: None,
        },
        NOW,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn migrations_are_recorded_and_idempotent() {
    for db in TestDb::all().await {
        assert_eq!(
            db.store.migrate().await.unwrap().len(),
            0,
            "{:?}",
            db.backend()
        );
        db.store
            .ping(std::time::Duration::from_secs(5))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn people_keep_what_is_known() {
    for db in TestDb::all().await {
        let mut tx = db.store.write().await.unwrap();
        let ann = Person {
            login: login("ann"),
            name: Some("Ann A".into()),
            email: Some("ann@example.edu".into()),
            canvas_user_id: Some(7),
        };
        store::upsert_person(&mut tx, &ann, NOW).await.unwrap();
        let bare = Person {
            login: login("ann"),
            name: None,
            email: None,
            canvas_user_id: None,
        };
        store::upsert_person(&mut tx, &bare, NOW).await.unwrap();
        assert_eq!(
            store::person(&mut tx, &login("ann")).await.unwrap(),
            Some(ann.clone())
        );
        assert_eq!(
            store::search_people(&mut tx, "ANN a", 10).await.unwrap(),
            vec![ann]
        );
        assert!(
            store::search_people(&mut tx, "zzz", 10)
                .await
                .unwrap()
                .is_empty()
        );
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn requests_move_by_compare_and_set() {
    for db in TestDb::all().await {
        person(&db, "sam").await;
        let mut tx = db.store.write().await.unwrap();
        let r = store::insert_request(
            &mut tx,
            &login("sam"),
            &new_request("grading scripts for the course"),
            NOW,
        )
        .await
        .unwrap();
        assert_eq!(r.state, RequestState::Submitted);
        assert_eq!(r.application.as_deref(), Some("grader"));
        assert_eq!(r.expires_on, date!(2027 - 01 - 31));
        let mut approved = r.clone();
        approved.state = RequestState::Approved;
        approved.expires_on = date!(2027 - 01 - 15);
        approved.decided_by = Some(login("ada"));
        store::update_request(&mut tx, RequestState::Submitted, &approved)
            .await
            .unwrap();
        // A second transition from the old state loses: that is the 409 of two approvers.
        assert!(matches!(
            store::update_request(&mut tx, RequestState::Submitted, &approved).await,
            Err(store::StoreError::Conflict)
        ));
        let back = store::get_request(&mut tx, r.id).await.unwrap().unwrap();
        assert_eq!(back, approved);
        let h = store::holdings(&mut tx, &login("sam")).await.unwrap();
        assert_eq!((h.open_requests, h.live_tokens), (1, 0));
        let r2 = store::insert_request(
            &mut tx,
            &login("sam"),
            &new_request("second one for research"),
            NOW + Duration::minutes(1),
        )
        .await
        .unwrap();
        let queue = store::list_requests(
            &mut tx,
            &RequestFilter {
                state: Some(RequestState::Submitted),
                oldest_first: true,
                ..RequestFilter::of(Whose::Everyone, 10)
            },
        )
        .await
        .unwrap();
        assert_eq!(queue.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r2.id]);
        let mine =
            store::list_requests(&mut tx, &RequestFilter::of(Whose::Person(login("sam")), 10))
                .await
                .unwrap();
        assert_eq!(
            mine.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![r2.id, r.id]
        );
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn a_request_needs_a_known_person() {
    for db in TestDb::all().await {
        let mut tx = db.store.write().await.unwrap();
        let e = store::insert_request(
            &mut tx,
            &login("ghost"),
            &new_request("nobody is behind this one"),
            NOW,
        )
        .await;
        assert!(
            matches!(e, Err(store::StoreError::Database(_))),
            "foreign keys are enforced on {:?}",
            db.backend()
        );
    }
}

#[tokio::test]
async fn tokens_and_envelopes() {
    for db in TestDb::all().await {
        person(&db, "sam").await;
        let mut tx = db.store.write().await.unwrap();
        let r = store::insert_request(
            &mut tx,
            &login("sam"),
            &new_request("grading scripts for the course"),
            NOW,
        )
        .await
        .unwrap();
        let id = store::insert_token(
            &mut tx,
            r.id,
            &login("sam"),
            2,
            41,
            "abcde",
            TokenState::Pending,
            NOW + Duration::days(30),
            NOW,
        )
        .await
        .unwrap();
        store::set_token_state(&mut tx, id, TokenState::Active, NOW)
            .await
            .unwrap();
        let t = store::token_for_request(&mut tx, r.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.id, t.canvas_token_id, t.hint.as_str(), t.state),
            (id, 41, "abcde", TokenState::Active)
        );
        assert_eq!(
            store::list_tokens(&mut tx, &login("sam"), None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            store::list_tokens(&mut tx, &login("ann"), None, 10)
                .await
                .unwrap()
                .is_empty()
        );

        let env = Envelope {
            id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            request_id: r.id,
            owner: login("sam"),
            state: EnvelopeState::Sealed,
            reveals: 0,
            created_at: NOW,
            expires_at: NOW + Duration::days(7),
        };
        store::insert_envelope(&mut tx, &env, &[1; 12], &[2; 40])
            .await
            .unwrap();
        let stored = store::get_envelope(&mut tx, &env.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.envelope, env);
        assert_eq!(stored.sealed, Some((vec![1; 12], vec![2; 40])));
        let revealed = Envelope {
            state: EnvelopeState::Revealed,
            reveals: 1,
            ..env.clone()
        };
        store::update_envelope(&mut tx, &env, &revealed)
            .await
            .unwrap();
        // The same reveal counted twice (a race) is a conflict.
        assert!(matches!(
            store::update_envelope(&mut tx, &env, &revealed).await,
            Err(store::StoreError::Conflict)
        ));
        // Expiry erases the ciphertext.
        assert!(
            store::expire_envelopes(&mut tx, NOW + Duration::days(1))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store::expire_envelopes(&mut tx, NOW + Duration::days(7))
                .await
                .unwrap(),
            vec![env.id.clone()]
        );
        let gone = store::get_envelope(&mut tx, &env.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gone.envelope.state, EnvelopeState::Expired);
        assert_eq!(gone.sealed, None);

        // The status look-up reads the request, its token and its newest envelope at once.
        let newer = Envelope {
            id: "BBBBBBBBBBBBBBBBBBBBBB".into(),
            created_at: NOW + Duration::days(1),
            ..env.clone()
        };
        store::insert_envelope(&mut tx, &newer, &[1; 12], &[2; 40])
            .await
            .unwrap();
        let (request, token, envelope) = store::request_view(&mut tx, r.id).await.unwrap().unwrap();
        assert_eq!(request, r);
        assert_eq!(token, Some(t.clone()));
        assert_eq!(envelope, Some(newer));
        let bare = store::insert_request(&mut tx, &login("sam"), &new_request("a second one"), NOW)
            .await
            .unwrap();
        assert_eq!(
            store::request_view(&mut tx, bare.id).await.unwrap(),
            Some((bare.clone(), None, None))
        );
        assert_eq!(
            store::request_view(&mut tx, tokendesk::domain::RequestId(bare.id.0 + 1000))
                .await
                .unwrap(),
            None
        );
        tx.commit().await.unwrap();
    }
}

/// Writers that erase secrets, many at once, all commit: the one whose turn it is checkpoints the
/// WAL after its erasure with a connection of its own, which the writers waiting for their turn
/// must not be holding (they once were, and everyone waited for the pool to time out).
#[tokio::test]
async fn erasing_writers_at_once_all_get_through() {
    let db = TestDb::sqlite().await;
    let started = std::time::Instant::now();
    let writers = (0..16).map(|_| {
        let store = db.store.clone();
        async move {
            let mut tx = store.write().await?;
            store::expire_envelopes(&mut tx, NOW).await?;
            tx.commit().await?;
            Ok::<_, tokendesk::store::StoreError>(())
        }
    });
    let done = futures::future::join_all(writers).await;
    let failed: Vec<_> = done.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "sixteen small writes took {:?}",
        started.elapsed()
    );
}

/// Many writers at once all commit, each exactly once; one that gives up (dropped without a
/// commit) leaves nothing behind and does not hold up the next.
#[tokio::test]
async fn concurrent_writers_take_turns() {
    for db in TestDb::all().await {
        let writers = (0..24).map(|n| {
            let store = db.store.clone();
            async move {
                let mut tx = store.write().await.unwrap();
                let who = Person {
                    login: login(&format!("writer{n}")),
                    name: None,
                    email: None,
                    canvas_user_id: None,
                };
                store::upsert_person(&mut tx, &who, NOW).await.unwrap();
                let r = store::insert_request(&mut tx, &who.login, &new_request("in turn"), NOW)
                    .await
                    .unwrap();
                store::append_audit(
                    &mut tx,
                    store.backend(),
                    &record("request.submit", n),
                    NOW,
                    None,
                )
                .await
                .unwrap();
                if n % 6 == 5 {
                    drop(tx);
                    None
                } else {
                    tx.commit().await.unwrap();
                    Some(r.id)
                }
            }
        });
        let done: Vec<_> = futures::future::join_all(writers).await;
        let committed: Vec<_> = done.into_iter().flatten().collect();
        assert_eq!(committed.len(), 20, "{:?}", db.backend());
        let mut conn = db.store.pool().acquire().await.unwrap();
        let all = store::list_requests(
            &mut conn,
            &RequestFilter {
                oldest_first: true,
                ..RequestFilter::of(Whose::Everyone, 100)
            },
        )
        .await
        .unwrap();
        let mut ids: Vec<_> = all.iter().map(|r| r.id).collect();
        ids.sort();
        let mut expected = committed.clone();
        expected.sort();
        assert_eq!(ids, expected, "{:?}", db.backend());
        let verified = store::verify_chain(&mut conn).await.unwrap();
        assert_eq!(verified, Ok(20), "{:?}", db.backend());
        drop(conn);
        // A writer after the abandoned ones gets its turn at once.
        let tx = db.store.write().await.unwrap();
        tx.rollback().await.unwrap();
    }
}

/// A writer whose wait for its turn is dropped (its caller went away, or the database was found
/// down meanwhile) leaves no shared commit waiting for it: the writer before it commits at once.
/// (Its place in the queue was once still counted after it left, and the writer before it kept
/// the group open for it, forever.)
#[tokio::test(flavor = "multi_thread")]
async fn a_writer_that_stops_waiting_strands_no_commit() {
    for db in TestDb::all().await {
        let mut first = db.store.write().await.unwrap();
        let store = db.store.clone();
        let waiter = tokio::spawn(async move { store.write().await.map(drop) });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        waiter.abort();
        let _ = waiter.await;
        let who = Person {
            login: login("first.writer"),
            name: None,
            email: None,
            canvas_user_id: None,
        };
        store::upsert_person(&mut first, &who, NOW).await.unwrap();
        let done = tokio::time::timeout(std::time::Duration::from_secs(5), first.commit()).await;
        assert!(
            matches!(done, Ok(Ok(()))),
            "{:?}: the commit did not come back: {done:?}",
            db.backend()
        );
        let mut conn = db.store.read().await.unwrap();
        assert!(
            store::person(&mut conn, &who.login)
                .await
                .unwrap()
                .is_some(),
            "{:?}",
            db.backend()
        );
    }
}

fn record(action: &'static str, n: i64) -> AuditRecord {
    AuditRecord {
        actor: "ada".into(),
        action,
        target: format!("request:{n}"),
        outcome: "ok",
        details: json!({"n": n, "b": [1, 2], "a": "x"}),
    }
}

#[tokio::test]
async fn the_audit_chain_detects_edits_and_removals() {
    for db in TestDb::all().await {
        let backend = db.backend();
        let mut tx = db.store.write().await.unwrap();
        for n in 1..=5 {
            store::append_audit(
                &mut tx,
                backend,
                &record("request.approve", n),
                NOW + Duration::seconds(n),
                Some("127.0.0.1"),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let mut conn = db.store.pool().acquire().await.unwrap();
        assert_eq!(store::verify_chain(&mut conn).await.unwrap(), Ok(5));
        let events = store::list_audit(
            &mut conn,
            &AuditFilter {
                target: Some("request:3".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].details, json!({"a": "x", "b": [1, 2], "n": 3}));
        let third = events[0].seq;

        sqlx::query("UPDATE audit_events SET outcome = 'denied' WHERE seq = $1")
            .bind(third)
            .execute(&mut *conn)
            .await
            .unwrap();
        let broken = store::verify_chain(&mut conn).await.unwrap().unwrap_err();
        assert_eq!(broken.seq, third);
        assert!(broken.reason.contains("edited"));
        sqlx::query("UPDATE audit_events SET outcome = 'ok' WHERE seq = $1")
            .bind(third)
            .execute(&mut *conn)
            .await
            .unwrap();
        assert_eq!(store::verify_chain(&mut conn).await.unwrap(), Ok(5));

        sqlx::query("DELETE FROM audit_events WHERE seq = $1")
            .bind(third)
            .execute(&mut *conn)
            .await
            .unwrap();
        let broken = store::verify_chain(&mut conn).await.unwrap().unwrap_err();
        assert!(
            broken.seq > third && broken.reason.contains("prev_hash"),
            "{broken}"
        );
    }
}

#[tokio::test]
async fn jobs_are_claimed_once_and_leases_expire() {
    for db in TestDb::all().await {
        let mut tx = db.store.write().await.unwrap();
        let id = store::enqueue_job(&mut tx, JobKind::IssueToken, None, NOW)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let lease = Duration::seconds(60);
        assert!(
            store::claim_job(&db.store, NOW - Duration::seconds(1), lease)
                .await
                .unwrap()
                .is_none(),
            "not due yet"
        );
        let job = store::claim_job(&db.store, NOW, lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (job.id, job.kind, job.attempts),
            (id, JobKind::IssueToken, 1)
        );
        assert!(
            store::claim_job(&db.store, NOW, lease)
                .await
                .unwrap()
                .is_none(),
            "held by the first worker"
        );
        // The worker died: after the lease another one takes it over.
        let again = store::claim_job(&db.store, NOW + Duration::seconds(61), lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.id, again.attempts), (id, 2));
        let mut tx = db.store.write().await.unwrap();
        store::job_retry(
            &mut tx,
            id,
            "Canvas unavailable",
            Some(NOW + Duration::seconds(120)),
            NOW,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert!(
            store::claim_job(&db.store, NOW + Duration::seconds(100), lease)
                .await
                .unwrap()
                .is_none()
        );
        let third = store::claim_job(&db.store, NOW + Duration::seconds(120), lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(third.attempts, 3);
        let mut tx = db.store.write().await.unwrap();
        store::job_done(&mut tx, id, NOW).await.unwrap();
        tx.commit().await.unwrap();
        assert!(
            store::claim_job(&db.store, NOW + Duration::days(1), lease)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn emails_queue_and_land_in_the_mailbox() {
    for db in TestDb::all().await {
        let mail = OutgoingEmail {
            to: "sam@example.edu".into(),
            to_name: None,
            subject: "Denied".into(),
            text: "because".into(),
            html: "<p>because</p>".into(),
        };
        let mut tx = db.store.write().await.unwrap();
        store::enqueue_email(
            &mut tx,
            EmailKind::Denied,
            None,
            Some(&login("sam")),
            &QueuedEmail::Clear(mail.clone()),
            None,
            NOW,
        )
        .await
        .unwrap();
        store::enqueue_email(
            &mut tx,
            EmailKind::Delivery,
            None,
            Some(&login("sam")),
            &QueuedEmail::Sealed {
                to_addr: "sam@example.edu".into(),
                subject: "Your token".into(),
                sealed: vec![9; 50],
            },
            None,
            NOW,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let lease = Duration::seconds(60);
        let first = store::claim_email(&db.store, NOW, lease)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(&first.email, QueuedEmail::Clear(m) if m.text == "because"));
        let second = store::claim_email(&db.store, NOW, lease)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(&second.email, QueuedEmail::Sealed { sealed, .. } if sealed.len() == 50));
        assert!(
            store::claim_email(&db.store, NOW, lease)
                .await
                .unwrap()
                .is_none()
        );
        let mut tx = db.store.write().await.unwrap();
        store::email_done(&mut tx, first.id, &mail, true, NOW)
            .await
            .unwrap();
        store::email_retry(&mut tx, second.id, "connection refused", None)
            .await
            .unwrap();
        let inbox = store::mailbox(&mut tx, Some(&login("sam")), 10)
            .await
            .unwrap();
        assert_eq!(inbox.len(), 1);
        assert_eq!(
            (inbox[0].subject.as_str(), inbox[0].text.as_str()),
            ("Denied", "because")
        );
        let sealed_left: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT sealed_body FROM emails WHERE id = $1")
                .bind(second.id)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(
            sealed_left, None,
            "a dead delivery email keeps nothing sealed"
        );
        tx.commit().await.unwrap();
        // A notice is composed at send time; one held by its sender is not claimable until
        // the sender's lease runs out (it died before sending).
        let mut tx = db.store.write().await.unwrap();
        store::enqueue_email(
            &mut tx,
            EmailKind::NewRequest,
            None,
            Some(&login("ada")),
            &QueuedEmail::Notice,
            None,
            NOW,
        )
        .await
        .unwrap();
        store::enqueue_email(
            &mut tx,
            EmailKind::Delivery,
            None,
            Some(&login("sam")),
            &QueuedEmail::Notice,
            Some(NOW + lease),
            NOW,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let notice = store::claim_email(&db.store, NOW, lease)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(notice.email, QueuedEmail::Notice) && notice.kind == EmailKind::NewRequest
        );
        assert!(
            store::claim_email(&db.store, NOW, lease)
                .await
                .unwrap()
                .is_none()
        );
        let mut tx = db.store.write().await.unwrap();
        store::email_done(&mut tx, notice.id, &mail, false, NOW)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let orphan = store::claim_email(&db.store, NOW + lease, lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((orphan.kind.as_str(), orphan.attempts), ("delivery", 1));
    }
}

#[tokio::test]
async fn periodic_work_is_claimed_once_per_period() {
    for db in TestDb::all().await {
        let s = &db.store;
        let period = Duration::seconds(30);
        // The first claim wins; the other instance in the same period loses.
        assert!(
            store::claim_period(s, "sweep", "a", NOW, period)
                .await
                .unwrap()
        );
        assert!(
            !store::claim_period(s, "sweep", "b", NOW, period)
                .await
                .unwrap()
        );
        let later = NOW + Duration::seconds(29);
        assert!(
            !store::claim_period(s, "sweep", "b", later, period)
                .await
                .unwrap()
        );
        // Another name is another schedule.
        assert!(
            store::claim_period(s, "purge", "b", NOW, period)
                .await
                .unwrap()
        );
        // Next period: whoever comes first.
        let next = NOW + Duration::seconds(30);
        assert!(
            store::claim_period(s, "sweep", "b", next, period)
                .await
                .unwrap()
        );
        assert!(
            !store::claim_period(s, "sweep", "a", next, period)
                .await
                .unwrap()
        );
        let mut conn = s.pool().acquire().await.unwrap();
        let run = store::periodic_run(&mut conn, "sweep")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((run.owner.as_str(), run.runs), ("b", 2));
        assert_eq!(run.last_run_at, next);
        drop(conn);

        // Many claimers at the same instant: exactly one wins.
        let at = NOW + Duration::seconds(300);
        let claims = (0..8).map(|i| {
            let s = s.clone();
            async move {
                store::claim_period(&s, "race", &format!("i{i}"), at, period)
                    .await
                    .unwrap()
            }
        });
        let won = futures::future::join_all(claims).await;
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{:?}", db.backend());
    }
}

/// The schema as the hand-written migration runner of earlier releases left it: the same
/// migration files, recorded in `schema_migrations`.
async fn legacy_schema(db: &TestDb) {
    let files: &[(i64, &str, &str)] = match db.backend() {
        store::Backend::Sqlite => &[
            (
                1,
                "initial",
                include_str!("../../migrations/sqlite/0001_initial.sql"),
            ),
            (
                2,
                "periodic_runs",
                include_str!("../../migrations/sqlite/0002_periodic_runs.sql"),
            ),
        ],
        store::Backend::Postgres => &[
            (
                1,
                "initial",
                include_str!("../../migrations/postgres/0001_initial.sql"),
            ),
            (
                2,
                "periodic_runs",
                include_str!("../../migrations/postgres/0002_periodic_runs.sql"),
            ),
            (
                3,
                "request_change_notices",
                include_str!("../../migrations/postgres/0003_request_change_notices.sql"),
            ),
        ],
    };
    let mut conn = db.store.pool().acquire().await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    for (version, name, sql) in files {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, 0)")
            .bind(*version)
            .bind(*name)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO people (login, first_seen_at, updated_at) VALUES ('sam', 1, 1)")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO requests (requester, purpose, requested_expires_on, expires_on, state, created_at, updated_at) \
         VALUES ('sam', 'grading scripts for my course', '2027-01-31', '2027-01-31', 'submitted', 1, 1)",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_database_made_by_the_earlier_runner_migrates_cleanly() {
    for db in TestDb::all_empty().await {
        legacy_schema(&db).await;
        let store = db.reopen().await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let expected: Vec<i64> = match db.backend() {
            store::Backend::Sqlite => vec![1, 2, 5, 6, 7, 8],
            store::Backend::Postgres => vec![1, 2, 3, 4, 5, 6, 7, 8],
        };
        assert_eq!(versions, expected, "{:?}", db.backend());
        let legacy = sqlx::query("SELECT 1 FROM schema_migrations")
            .fetch_optional(&mut *conn)
            .await;
        assert!(legacy.is_err(), "the old table is gone");
        // The data is still there and the store works on it.
        let request = store::get_request(&mut conn, tokendesk::domain::RequestId(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(request.state, RequestState::Submitted);
        drop(conn);
        let mut tx = store.write().await.unwrap();
        let next = tokendesk::domain::request::Request {
            state: RequestState::Cancelled,
            ..request
        };
        store::update_request(&mut tx, RequestState::Submitted, &next)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // Opening again changes nothing.
        let again = db.reopen().await.unwrap().migrate().await.unwrap();
        assert_eq!(again, Vec::new(), "{:?}", db.backend());
    }
}

#[tokio::test]
async fn an_edited_or_newer_migration_is_refused() {
    for db in TestDb::all().await {
        let mut conn = db.store.pool().acquire().await.unwrap();
        // Runs a statement about the migration records with a made-up checksum.
        let mut forge = async |sql: &'static str| {
            sqlx::query(sql)
                .bind(vec![0u8; 48])
                .execute(&mut *conn)
                .await
                .unwrap();
        };
        forge("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 1").await;
        let err = db.reopen().await.unwrap_err().to_string();
        assert!(
            err.contains("migration 1 was applied") && err.contains("never be edited"),
            "{err}"
        );
        forge("DELETE FROM _sqlx_migrations WHERE version = 1 AND checksum = $1").await;
        forge(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999, 'from the future', TRUE, $1, 0)",
        )
        .await;
        let newest: i64 =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE version < 999")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        let err = db.reopen().await.unwrap_err().to_string();
        assert!(
            err.contains("migration 999") && err.contains(&format!("up to {newest}")),
            "{err}"
        );
        assert!(err.contains("newer release"), "{err}");
    }
}

/// The state lists of the migrations' CHECK constraints are the domain's state sets.
#[tokio::test]
async fn the_schema_checks_the_domains_states() {
    use tokendesk::domain::StateSet;
    fn quoted(text: &str) -> Vec<String> {
        text.split('\'')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }
    fn names<S: StateSet>() -> Vec<String> {
        S::ALL.iter().map(|s| s.as_str().to_owned()).collect()
    }
    for db in TestDb::all().await {
        let mut conn = db.store.pool().acquire().await.unwrap();
        for (table, expected) in [
            ("requests", names::<RequestState>()),
            ("tokens", names::<TokenState>()),
            ("envelopes", names::<EnvelopeState>()),
            ("revoke_items", names::<store::ItemState>()),
        ] {
            let check: String = match db.backend() {
                store::Backend::Sqlite => {
                    let sql: String =
                        sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = $1")
                            .bind(table)
                            .fetch_one(&mut *conn)
                            .await
                            .unwrap();
                    let start = sql.find("state IN (").unwrap();
                    let end = start + sql[start..].find(')').unwrap();
                    sql[start..end].to_owned()
                }
                store::Backend::Postgres => sqlx::query_scalar(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
                     WHERE conrelid = $1::regclass AND contype = 'c' \
                     AND pg_get_constraintdef(oid) LIKE '%state%'",
                )
                .bind(table)
                .fetch_one(&mut *conn)
                .await
                .unwrap(),
            };
            assert_eq!(
                quoted(&check),
                expected,
                "{table} on {:?}: {check}",
                db.backend()
            );
        }
    }
}

/// What a plan line says about the tables a list may not read whole: `requests`, `tokens`,
/// `envelopes` and `audit_events`. SQLite: a `SCAN` without an index, or a temporary sort of
/// every row that matched; PostgreSQL (asked with sequential scans discouraged, so a small
/// table does not hide a missing index): a `Seq Scan`, or a `Sort` (the order not served by an
/// index).
fn full_scan(backend: store::Backend, plan: &[String]) -> Option<String> {
    const GUARDED: [&str; 4] = ["requests", "tokens", "envelopes", "audit_events"];
    for line in plan {
        let bad = match backend {
            store::Backend::Sqlite => {
                let scan = line.strip_prefix("SCAN ").is_some_and(|rest| {
                    let table = rest.split_whitespace().next().unwrap_or_default();
                    GUARDED.contains(&table) && !rest.contains("USING")
                });
                scan || line.contains("USE TEMP B-TREE FOR ORDER BY")
            }
            store::Backend::Postgres => {
                let seq = GUARDED
                    .iter()
                    .any(|t| line.contains(&format!("Seq Scan on {t}")));
                seq || line.trim_start().starts_with("Sort ") || line.contains("->  Sort ")
            }
        };
        if bad {
            return Some(line.clone());
        }
    }
    None
}

/// Every list query the pages and the API make, in each shape its filter can take: each must
/// be served by an index on both backends.
#[tokio::test]
async fn every_list_query_is_served_by_an_index() {
    use store::{AuditFilter, RequestFilter, RequestPosition, Whose};
    use tokendesk::domain::{RequestId, TokenId};
    let at = NOW;
    let mut queries = Vec::new();
    for whose in [Whose::Person(login("sam")), Whose::Everyone] {
        for state in [None, Some(RequestState::Submitted)] {
            for oldest_first in [false, true] {
                for after in [
                    None,
                    Some(RequestPosition {
                        created_at: at,
                        id: RequestId(7),
                    }),
                ] {
                    let filter = RequestFilter {
                        whose: whose.clone(),
                        state,
                        oldest_first,
                        after,
                        limit: 50,
                    };
                    queries.push((
                        format!("requests {filter:?}"),
                        store::requests_query(&filter),
                    ));
                }
            }
        }
    }
    for after in [None, Some(TokenId(9))] {
        queries.push((
            format!("tokens after {after:?}"),
            store::tokens_query(&login("sam"), after, 50),
        ));
    }
    let audit = [
        AuditFilter::default(),
        AuditFilter {
            after_seq: 1000,
            ..AuditFilter::default()
        },
        AuditFilter {
            actor: Some("ada".into()),
            ..AuditFilter::default()
        },
        AuditFilter {
            action: Some("request.approve".into()),
            after_seq: 10,
            ..AuditFilter::default()
        },
        AuditFilter {
            target: Some("request:12".into()),
            ..AuditFilter::default()
        },
        AuditFilter {
            actor: Some("ada".into()),
            action: Some("request.approve".into()),
            ..AuditFilter::default()
        },
        AuditFilter {
            since: Some(at),
            until: Some(at + Duration::days(1)),
            ..AuditFilter::default()
        },
    ];
    for filter in audit {
        queries.push((format!("audit {filter:?}"), store::audit_query(&filter)));
    }
    queries.push((
        "a token's renewals".to_owned(),
        store::renewals_query(RequestId(3)),
    ));
    for to in [None, Some(login("sam"))] {
        queries.push((
            format!("mailbox to {to:?}"),
            store::mailbox_query(to.as_ref(), 50),
        ));
    }
    for db in TestDb::all().await {
        let mut conn = db.store.pool().acquire().await.unwrap();
        for (name, query) in &queries {
            let plan = store::query_plan(&mut conn, db.backend(), query)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Some(line) = full_scan(db.backend(), &plan) {
                panic!(
                    "{:?}: {name} reads a whole table ({line}):\n{}\n{}",
                    db.backend(),
                    query.sql,
                    plan.join("\n")
                );
            }
        }
    }
}

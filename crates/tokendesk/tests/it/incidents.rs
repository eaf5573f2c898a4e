//! When something goes wrong: leaked-token reports (by value, by hint, no match; the pasted value
//! nowhere), bulk revocation (a run interrupted half-way and resumed, the emergency switch's
//! confirmation, off-boarding by a help-desk key, idempotent), and the CLI's exit codes.

use serde_json::json;
use time::Duration;
use tokendesk::app::{Ctx, ReportOutcome};
use tokendesk::config::AuthConfig;
use tokendesk::domain::request::{REVOKE_ALL_CONFIRMATION, RequestState, RevokeFilter};
use tokendesk::domain::{EmailKind, RequestId};
use tokendesk::store;
use tokendesk::web::WebOptions;

use crate::story::{Logs, database_dump};
use crate::support::app::Api;
use crate::support::db::TestDb;
use crate::support::world::World;

async fn state_of(world: &World, id: RequestId) -> RequestState {
    let mut conn = world.db.store.pool().acquire().await.unwrap();
    store::get_request(&mut conn, id)
        .await
        .unwrap()
        .unwrap()
        .state
}

async fn emails_of(world: &World, kind: EmailKind) -> Vec<(Option<String>, Option<i64>)> {
    sqlx::query_as::<_, (Option<String>, Option<i64>)>(
        "SELECT to_login, request_id FROM emails WHERE kind = $1 ORDER BY id",
    )
    .bind(kind.as_str())
    .fetch_all(world.db.store.pool())
    .await
    .unwrap()
}

async fn roomy(db: TestDb) -> World {
    World::tweaked(db, |parts| {
        parts.policy.max_open_requests_per_person = 100;
        parts.policy.max_active_tokens_per_person = 100;
    })
    .await
}

#[tokio::test]
async fn a_report_by_value_revokes_and_the_value_is_nowhere() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    for db in TestDb::all().await {
        let w = World::new(db).await;
        let id = w.issued("sam.student").await;
        let value = w.reveal_value("sam.student").await;
        assert_eq!(
            w.canvas_status(&value).await,
            401,
            "pending until activated"
        );
        let stella = w.actor("stella.student");
        let where_found = "https://github.com/example/grader/blob/main/config.py";
        let outcome = w
            .app
            .report_leak(&stella, &value, where_found, &Ctx::default())
            .await
            .unwrap();
        assert_eq!(outcome, ReportOutcome::Revoked);
        assert_eq!(state_of(&w, id).await, RequestState::Revoked);
        // Deleted in Canvas: listed no more.
        let listed = w
            .canvas
            .list_user_tokens(&tokendesk_canvas::UserRef::SisLoginId("sam.student".into()))
            .await
            .unwrap();
        assert!(
            !listed.iter().any(|t| t
                .purpose
                .as_deref()
                .unwrap_or_default()
                .starts_with(&format!("tokendesk #{id}:"))),
            "still in Canvas: {listed:?}"
        );
        // The owner is told, and the help desk.
        tokendesk::jobs::drain(&w.app).await.unwrap();
        assert!(
            emails_of(&w, EmailKind::Revoked)
                .await
                .iter()
                .any(|(to, _)| to.as_deref() == Some("sam.student"))
        );
        let helpdesk = emails_of(&w, EmailKind::LeakReported).await;
        assert_eq!(helpdesk, vec![(Some("theo.teacher".into()), Some(id.0))]);
        let ada = w.actor("ada.admin");
        let mail = w
            .app
            .mailbox(&ada, Some("theo.teacher"), None)
            .await
            .unwrap();
        assert!(
            mail.iter()
                .any(|m| m.subject.contains("reported and revoked")),
            "{mail:?}"
        );
        // Recorded and audited with the matched token, never the value.
        let events = w.app.audit_events(&ada, &Default::default()).await.unwrap();
        let report = events
            .iter()
            .find(|e| e.action == "token.report")
            .expect("audited");
        assert_eq!(report.actor, "stella.student");
        assert!(report.details.to_string().contains(where_found));
        let revoke = events.iter().find(|e| e.action == "token.revoke").unwrap();
        assert!(
            revoke
                .details
                .to_string()
                .contains("\"matched_by\":\"value\""),
            "{:?}",
            revoke.details
        );
        let dump = database_dump(&w).await;
        assert!(!dump.contains(&value), "the pasted value in the database");
        assert!(!serde_json::to_string(&events).unwrap().contains(&value));
        for m in w.app.mailbox(&ada, None, None).await.unwrap() {
            assert!(
                !m.text.contains(&value) && !m.html.contains(&value),
                "in an email"
            );
        }
        // Reported again: it is no longer a live token here.
        let again = w
            .app
            .report_leak(&stella, &value, where_found, &Ctx::default())
            .await
            .unwrap();
        assert_eq!(again, ReportOutcome::NotHere);
    }
    assert!(!logs.text().is_empty());
}

#[tokio::test]
async fn a_report_by_hint_revokes_and_no_match_says_the_same_for_any_guess() {
    let w = World::new(TestDb::sqlite().await).await;
    let id = w.issued("sam.student").await;
    let mut conn = w.db.store.pool().acquire().await.unwrap();
    let token = store::token_for_request(&mut conn, id)
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    let stella = w.actor("stella.student");
    // A guess that is not a token here, a made-up value with a real token's hint, and a hint
    // of nothing: the same answer.
    let guess = format!("{}~{}", "1", "x".repeat(64));
    let same_hint = format!("7~{}{}", token.hint, "q".repeat(59));
    for text in [guess.as_str(), same_hint.as_str(), "zzzzz"] {
        let outcome = w
            .app
            .report_leak(&stella, text, "a pastebin", &Ctx::default())
            .await
            .unwrap();
        assert_eq!(outcome, ReportOutcome::NotHere, "{text}");
        assert_eq!(outcome.message(), ReportOutcome::NotHere.message());
    }
    assert_eq!(state_of(&w, id).await, RequestState::Issued);
    // The hint itself matches the live tokens with it.
    let outcome = w
        .app
        .report_leak(
            &stella,
            &token.hint,
            "a screenshot in a chat",
            &Ctx::default(),
        )
        .await
        .unwrap();
    assert_eq!(outcome, ReportOutcome::Revoked);
    assert_eq!(state_of(&w, id).await, RequestState::Revoked);
    // Bad input says what is wrong.
    let bad = w
        .app
        .report_leak(&stella, "", "", &Ctx::default())
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("paste the token"), "{bad}");
}

#[tokio::test]
async fn reports_over_the_api_are_rate_limited_and_answer_alike() {
    let api = Api::with(
        TestDb::sqlite().await,
        AuthConfig::default(),
        WebOptions::default(),
    )
    .await;
    for n in 0..10 {
        let r = api
            .post("stella.student", "/api/v1/reports", json!({"value": format!("guess-{n}-aaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "where": "a gist"}))
            .await
            .expect(200)
            .json();
        assert_eq!(r["outcome"], "not_found");
        assert!(
            r["message"]
                .as_str()
                .unwrap()
                .contains("contact the help desk")
        );
    }
    api.post(
        "stella.student",
        "/api/v1/reports",
        json!({"value": "one-more-guess-aaaaaaaaaaaaaaaa", "where": "a gist"}),
    )
    .await
    .expect_error(429, "too_many_requests");
    api.post(
        "sam.student",
        "/api/v1/reports",
        json!({"value": "x y", "where": ""}),
    )
    .await
    .expect_error(422, "invalid");
    // A real value reported over the API is revoked, and no answer, column or email holds it.
    api.world.issued("rita.researcher").await;
    let value = api.world.reveal_value("rita.researcher").await;
    let r = api
        .post(
            "sam.student",
            "/api/v1/reports",
            json!({"value": value, "where": "a paste site"}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(r["outcome"], "revoked");
    tokendesk::jobs::drain(&api.world.app).await.unwrap();
    for (label, body) in api.seen.lock().unwrap().iter() {
        assert!(
            !body.contains(&value),
            "the pasted value in the answer to {label}"
        );
    }
    assert!(
        !database_dump(&api.world).await.contains(&value),
        "in the database"
    );
    let ada = api.world.actor("ada.admin");
    for m in api.world.app.mailbox(&ada, None, None).await.unwrap() {
        assert!(
            !m.text.contains(&value) && !m.html.contains(&value),
            "in an email"
        );
    }
}

/// Off-boarding and the emergency switch; a run interrupted half-way (a worker that died holding
/// a job right after Canvas deleted its token) is resumed by the next worker: every token ends
/// revoked once, none is left, and each owner gets one email.
#[tokio::test]
async fn a_bulk_run_interrupted_half_way_resumes_without_repeating() {
    for db in TestDb::all().await {
        let w = roomy(db).await;
        let mut ids = Vec::new();
        for who in [
            "sam.student",
            "sam.student",
            "stella.student",
            "rita.researcher",
        ] {
            ids.push(w.issued(who).await);
        }
        let ada = w.actor("ada.admin");
        let theo = w.actor("theo.teacher");
        let ctx = Ctx::default();
        // The emergency switch needs its confirmation, typed; and it is for admins.
        let refused = w
            .app
            .start_revocation(&ada, RevokeFilter::All, "breach", Some("revoke all"), &ctx)
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains(REVOKE_ALL_CONFIRMATION),
            "{refused}"
        );
        assert!(
            w.app
                .start_revocation(
                    &theo,
                    RevokeFilter::All,
                    "breach",
                    Some(REVOKE_ALL_CONFIRMATION),
                    &ctx
                )
                .await
                .is_err()
        );
        let preview = w.app.revoke_preview(&ada, RevokeFilter::All).await.unwrap();
        assert_eq!(preview.count, 4);
        assert_eq!(preview.owners[0], ("sam.student".to_owned(), 2));
        let run = w
            .app
            .start_revocation(
                &ada,
                RevokeFilter::All,
                "a breach of the grading server",
                Some(REVOKE_ALL_CONFIRMATION),
                &ctx,
            )
            .await
            .unwrap();
        assert_eq!(run.total, 4);
        // One job runs; a second worker claims the next and dies after Canvas deleted it.
        let first = w.app.claim_job().await.unwrap().unwrap();
        w.app.run_job(first).await.unwrap();
        let held = w.app.claim_job().await.unwrap().unwrap();
        let mut conn = w.db.store.pool().acquire().await.unwrap();
        let token = store::token_for_request(&mut conn, held.request_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        drop(conn);
        w.canvas
            .delete_token(
                &tokendesk_canvas::UserRef::Id(tokendesk_canvas::CanvasUserId(
                    token.canvas_user_id as u64,
                )),
                &tokendesk_canvas::TokenRef::Id(tokendesk_canvas::CanvasTokenId(
                    token.canvas_token_id as u64,
                )),
            )
            .await
            .unwrap();
        // The worker dies here: its claim is never finished.
        let status = w.app.revocation(&ada, run.id).await.unwrap();
        assert_eq!((status.done, status.remaining()), (1, 3));
        // A restart: the lease runs out and the work is taken over.
        w.clock.advance(Duration::minutes(10));
        tokendesk::jobs::drain(&w.app).await.unwrap();
        let status = w.app.revocation(&ada, run.id).await.unwrap();
        assert_eq!(
            (status.done, status.failed, status.remaining()),
            (4, 0, 0),
            "{status:?}"
        );
        assert!(status.finished_at.is_some());
        for id in &ids {
            assert_eq!(state_of(&w, *id).await, RequestState::Revoked);
        }
        let events = w.app.audit_events(&ada, &Default::default()).await.unwrap();
        let revokes = events.iter().filter(|e| e.action == "token.revoke").count();
        assert_eq!(revokes, 4, "each token revoked once");
        for who in ["sam.student", "stella.student", "rita.researcher"] {
            let listed = w
                .canvas
                .list_user_tokens(&tokendesk_canvas::UserRef::SisLoginId(who.into()))
                .await
                .unwrap();
            assert!(
                !listed.iter().any(|t| t
                    .purpose
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with("tokendesk #")),
                "{who}: {listed:?}"
            );
        }
        // One email per owner, listing their tokens.
        let mails = emails_of(&w, EmailKind::BulkRevoked).await;
        let mut owners: Vec<_> = mails.iter().filter_map(|(to, _)| to.clone()).collect();
        owners.sort();
        assert_eq!(
            owners,
            vec!["rita.researcher", "sam.student", "stella.student"]
        );
        let sam_mail = w
            .app
            .mailbox(&ada, Some("sam.student"), None)
            .await
            .unwrap();
        let bulk = sam_mail
            .iter()
            .find(|m| m.subject.contains("2 of your"))
            .expect("one email for two tokens");
        assert!(bulk.text.contains("a breach of the grading server"));
        // Nothing left: a second run takes nothing.
        let again = w
            .app
            .start_revocation(
                &ada,
                RevokeFilter::All,
                "again",
                Some(REVOKE_ALL_CONFIRMATION),
                &ctx,
            )
            .await
            .unwrap();
        assert_eq!(again.total, 0);
    }
}

#[tokio::test]
async fn off_boarding_by_a_help_desk_key_is_idempotent() {
    let api = Api::with(
        TestDb::sqlite().await,
        AuthConfig::default(),
        WebOptions::default(),
    )
    .await;
    api.world.issued("sam.student").await;
    api.world.issued("stella.student").await;
    let key = api
        .world
        .app
        .create_key(
            "identity-sync",
            "helpdesk",
            Duration::days(30),
            &Ctx::default(),
        )
        .await
        .unwrap();
    let bearer = format!("Bearer {}", key.value);
    let r = api
        .post(&bearer, "/api/v1/people/sam.student/revoke-all", json!({}))
        .await
        .expect(202)
        .json();
    assert_eq!(r["total"], 1);
    assert_eq!(r["actor"], "key:identity-sync");
    tokendesk::jobs::drain(&api.world.app).await.unwrap();
    let id = r["id"].as_i64().unwrap();
    let done = api
        .get(&bearer, &format!("/api/v1/revocations/{id}"))
        .await
        .expect(200)
        .json();
    assert_eq!(
        (done["done"].as_i64(), done["remaining"].as_i64()),
        (Some(1), Some(0)),
        "{done}"
    );
    // A second call revokes nothing and says so.
    let again = api
        .post(&bearer, "/api/v1/people/sam.student/revoke-all", json!({}))
        .await
        .expect(202)
        .json();
    assert_eq!(again["total"], 0);
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("nothing to revoke")
    );
    // Stella's token is untouched; an auditor key may not off-board.
    let auditor = api
        .world
        .app
        .create_key("audit", "auditor", Duration::days(30), &Ctx::default())
        .await
        .unwrap();
    api.post(
        &format!("Bearer {}", auditor.value),
        "/api/v1/people/stella.student/revoke-all",
        json!({}),
    )
    .await
    .expect(404);
    // Admins by purpose, with a preview.
    let preview = api
        .get("ada.admin", "/api/v1/revocations/preview?purpose=GRADING")
        .await
        .expect(200)
        .json();
    assert_eq!(preview["count"], 1, "{preview}");
    api.get(
        "theo.teacher",
        "/api/v1/revocations/preview?purpose=grading",
    )
    .await
    .expect(403);
    api.get(
        "ada.admin",
        "/api/v1/revocations/preview?purpose=grading&all=true",
    )
    .await
    .expect(422);
}

//! The whole process on the service: request, approve, issue in Canvas, deliver, reveal,
//! activate, revoke, expire — and what must not happen: a second live token after a failure,
//! a secret in the database, a log line, an email or the audit trail.

use std::io::Write;
use std::sync::{Arc, Mutex};

use time::Duration;
use tokendesk::app::{AppError, Ctx};
use tokendesk::domain::DomainError;
use tokendesk::domain::envelope::EnvelopeState;
use tokendesk::domain::request::{RawNewRequest, RequestState};
use tokendesk::store::{self, TokenState};
use tokendesk_canvas::{CanvasUserId, NewToken, TokenState as CanvasState, UserRef};

use tracing_subscriber::layer::SubscriberExt as _;

use crate::support::db::TestDb;
use crate::support::world::World;

/// Captures every log line of the test (all levels) in memory.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Everything the database holds, as text (SQLite: the file and its WAL, byte for byte).
pub(crate) async fn database_dump(world: &World) -> String {
    if let Some(path) = world.db.url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap();
        let mut bytes = std::fs::read(path).unwrap();
        bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
        return String::from_utf8_lossy(&bytes).into_owned();
    }
    let mut text = String::new();
    for table in [
        "people",
        "requests",
        "tokens",
        "envelopes",
        "audit_events",
        "jobs",
        "emails",
    ] {
        let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT string_agg(t::text, '\n') FROM {table} t"
        )))
        .fetch_one(world.db.store.pool())
        .await
        .unwrap();
        text.push_str(&rows.unwrap_or_default());
    }
    text
}

async fn the_story(db: TestDb) {
    // Both formats (`log.format`): readable text and tokendesk's JSON lines, every level.
    let logs = Logs::default();
    let json = Logs::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::TRACE)
        .with(tracing_subscriber::fmt::layer().with_writer({
            let logs = logs.clone();
            move || logs.clone()
        }))
        .with(tokendesk::logging::json_layer({
            let json = json.clone();
            move || json.clone()
        }));
    let _guard = tracing::subscriber::set_default(subscriber);

    let w = World::new(db).await;
    let sam = w.actor("sam.student");
    let ada = w.actor("ada.admin");
    let id = w.submit("sam.student").await;
    // The approver hears about it.
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let ada_mail = w.app.mailbox(&ada, Some("ada.admin"), None).await.unwrap();
    assert!(
        ada_mail
            .iter()
            .any(|m| m.text.contains(&format!("/requests/{id}"))),
        "approver notified"
    );

    let approved = w
        .app
        .approve(&ada, id, Some(&w.today_plus(20)), &Ctx::default())
        .await
        .unwrap();
    assert_eq!(approved.state, RequestState::Approved);
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let view = w.app.request(&sam, id).await.unwrap();
    assert_eq!(view.request.state, RequestState::Issued);
    let token = view.token.clone().expect("a token");
    assert_eq!(token.state, TokenState::Pending);
    let envelope = view.envelope.clone().expect("an envelope");
    assert_eq!(envelope.state, EnvelopeState::Sealed);

    // The link's key opens the envelope; the value is pending in Canvas, so Canvas refuses it.
    let (env_id, key) = w.link_for("sam.student").await;
    assert_eq!(env_id, envelope.id);
    let value = w.reveal_value("sam.student").await;
    assert_eq!(value.len(), 64);
    assert_eq!(&value[..5], token.hint);
    assert_eq!(w.canvas_status(&value).await, 401);
    // The Canvas token is named after the request, with the approved (shortened) expiry.
    let canvas_token = w
        .canvas
        .show_token(
            &UserRef::Id(CanvasUserId(token.canvas_user_id as u64)),
            &tokendesk_canvas::TokenRef::Hint(token.hint.clone()),
        )
        .await
        .unwrap();
    assert!(
        canvas_token
            .purpose
            .unwrap()
            .starts_with(&format!("tokendesk #{id}: grading scripts"))
    );
    assert_eq!(
        canvas_token.expires_at.unwrap().date(),
        w.app.now().date() + Duration::days(21)
    );

    // The owner activates it in Canvas; now it works, and tokendesk notices.
    w.activate_in_canvas("sam.student", token.canvas_token_id)
        .await;
    assert_eq!(w.canvas_status(&value).await, 200);
    // A revealed token is looked at again a minute later.
    w.clock.advance(Duration::minutes(1));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(report.activated, 1);
    let view = w.app.request(&sam, id).await.unwrap();
    assert_eq!(view.request.state, RequestState::Activated);
    assert_eq!(view.token.unwrap().state, TokenState::Active);
    let mut conn = w.db.store.pool().acquire().await.unwrap();
    let stored = store::get_envelope(&mut conn, &env_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.sealed, None, "activation erases the ciphertext");
    drop(conn);
    assert!(matches!(
        w.app.reveal(&sam, &env_id, &Ctx::default()).await,
        Err(AppError::Domain(DomainError::Conflict { .. }))
    ));

    // The help desk revokes it: Canvas refuses it at once; the owner is told why.
    let theo = w.actor("theo.teacher");
    let revoked = w
        .app
        .revoke(
            &theo,
            token.id,
            Some("found in a public repository"),
            &Ctx::default(),
        )
        .await
        .unwrap();
    assert_eq!(revoked.state, RequestState::Revoked);
    assert_eq!(w.canvas_status(&value).await, 401);
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let sam_mail = w
        .app
        .mailbox(&ada, Some("sam.student"), None)
        .await
        .unwrap();
    assert!(
        sam_mail
            .iter()
            .any(|m| m.text.contains("found in a public repository"))
    );

    // The audit trail tells the story and is intact.
    let events = w.app.audit_events(&ada, &Default::default()).await.unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    for expected in [
        "request.submit",
        "request.approve",
        "request.issue",
        "envelope.reveal",
        "request.activate",
        "token.revoke",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    assert_eq!(w.app.verify_audit().await.unwrap(), Ok(events.len() as u64));

    // The secret is nowhere: not in the database (the key is only in the mailbox, which is
    // the demo's inbox), not in a log line, not in an email, not in the audit trail.
    let dump = database_dump(&w).await;
    assert!(!dump.contains(&value), "token value in the database");
    let audit_text = serde_json::to_string(&events).unwrap();
    assert!(!audit_text.contains(&value) && !audit_text.contains(&key));
    for m in w.app.mailbox(&ada, None, None).await.unwrap() {
        assert!(
            !m.text.contains(&value) && !m.html.contains(&value),
            "token value in an email"
        );
    }
    let log_text = logs.text();
    assert!(log_text.len() > 1000, "logs were captured");
    assert!(!log_text.contains(&value), "token value in the logs");
    assert!(!log_text.contains(&key), "envelope key in the logs");
    let json_text = json.text();
    assert!(json_text.len() > 1000, "JSON logs were captured");
    for line in json_text.lines() {
        let line: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        assert!(
            line["fields"].is_object() && line["level"].is_string(),
            "{line}"
        );
    }
    assert!(!json_text.contains(&value), "token value in the JSON logs");
    assert!(!json_text.contains(&key), "envelope key in the JSON logs");
}

#[tokio::test]
async fn the_whole_story_on_every_backend() {
    for db in TestDb::all().await {
        the_story(db).await;
    }
}

#[tokio::test]
async fn deny_cancel_and_wrong_states() {
    let w = World::new(TestDb::sqlite().await).await;
    let (sam, ada) = (w.actor("sam.student"), w.actor("ada.admin"));
    let id = w.submit("sam.student").await;
    // One open request at a time.
    let raw = RawNewRequest {
        purpose: Some("another script for the same course".into()),
        expires_on: Some(w.today_plus(10)),
        application: None,
    };
    assert!(matches!(
        w.app.submit(&sam, &raw, &Ctx::default()).await,
        Err(AppError::Domain(DomainError::Conflict {
            code: "too_many_open_requests",
            ..
        }))
    ));
    assert!(matches!(
        w.app.deny(&ada, id, None, &Ctx::default()).await,
        Err(AppError::Domain(DomainError::Invalid(_)))
    ));
    let denied = w
        .app
        .deny(
            &ada,
            id,
            Some("please use the course's shared key"),
            &Ctx::default(),
        )
        .await
        .unwrap();
    assert_eq!(denied.state, RequestState::Denied);
    assert!(matches!(
        w.app.approve(&ada, id, None, &Ctx::default()).await,
        Err(AppError::Domain(DomainError::WrongState {
            current: RequestState::Denied,
            ..
        }))
    ));
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let mail = w.app.mailbox(&sam, None, None).await.unwrap();
    assert!(
        mail.iter()
            .any(|m| m.text.contains("please use the course's shared key"))
    );
    // Now a new request is allowed, and its requester may cancel it.
    let second = w.app.submit(&sam, &raw, &Ctx::default()).await.unwrap();
    assert_eq!(
        w.app
            .cancel(&sam, second.id, &Ctx::default())
            .await
            .unwrap()
            .state,
        RequestState::Cancelled
    );
    // Someone else's request does not exist for them.
    let stella = w.actor("stella.student");
    assert!(matches!(
        w.app.request(&stella, id).await,
        Err(AppError::Domain(DomainError::NotFound))
    ));
    assert!(matches!(
        w.app.cancel(&stella, id, &Ctx::default()).await,
        Err(AppError::Domain(DomainError::NotFound))
    ));
}

#[tokio::test]
async fn envelopes_expire_count_reveals_burn_and_belong_to_their_owner() {
    let w = World::new(TestDb::sqlite().await).await;
    let sam = w.actor("sam.student");
    w.issued("sam.student").await;
    let (env, _) = w.link_for("sam.student").await;
    // Someone else, even the help desk, finds nothing.
    for other in ["stella.student", "theo.teacher", "ada.admin"] {
        assert!(matches!(
            w.app.envelope(&w.actor(other), &env).await,
            Err(AppError::Domain(DomainError::NotFound))
        ));
        assert!(matches!(
            w.app.reveal(&w.actor(other), &env, &Ctx::default()).await,
            Err(AppError::Domain(DomainError::NotFound))
        ));
    }
    for left in [2, 1, 0] {
        let (_, view) = w.app.reveal(&sam, &env, &Ctx::default()).await.unwrap();
        assert_eq!(view.reveals_left, left);
    }
    assert!(matches!(
        w.app.reveal(&sam, &env, &Ctx::default()).await,
        Err(AppError::Domain(DomainError::Conflict {
            code: "no_reveals_left",
            ..
        }))
    ));

    // A second token (the limit is two), left until its link expires.
    let w2 = World::new(TestDb::sqlite().await).await;
    w2.issued("stella.student").await;
    let (env2, _) = w2.link_for("stella.student").await;
    let stella = w2.actor("stella.student");
    w2.clock.advance(Duration::days(7));
    assert_eq!(
        w2.app.envelope(&stella, &env2).await.unwrap().state,
        EnvelopeState::Expired
    );
    assert!(matches!(
        w2.app.reveal(&stella, &env2, &Ctx::default()).await,
        Err(AppError::Domain(DomainError::Conflict {
            code: "envelope_expired",
            ..
        }))
    ));
    assert_eq!(
        tokendesk::jobs::sweep(&w2.app)
            .await
            .unwrap()
            .envelopes_expired,
        1
    );
    let mut conn = w2.db.store.pool().acquire().await.unwrap();
    assert_eq!(
        store::get_envelope(&mut conn, &env2)
            .await
            .unwrap()
            .unwrap()
            .sealed,
        None
    );
    drop(conn);

    // Burn: "I have saved it".
    let w3 = World::new(TestDb::sqlite().await).await;
    w3.issued("rita.researcher").await;
    let (env3, _) = w3.link_for("rita.researcher").await;
    let rita = w3.actor("rita.researcher");
    assert_eq!(
        w3.app
            .burn(&rita, &env3, &Ctx::default())
            .await
            .unwrap()
            .state,
        EnvelopeState::Burned
    );
    assert!(matches!(
        w3.app.reveal(&rita, &env3, &Ctx::default()).await,
        Err(AppError::Domain(DomainError::Conflict {
            code: "envelope_burned",
            ..
        }))
    ));
}

/// Live tokens in Canvas made for a request.
async fn live_tokens(
    w: &World,
    who: &str,
    id: tokendesk::domain::RequestId,
) -> Vec<tokendesk_canvas::Token> {
    let prefix = format!("tokendesk #{id}: ");
    w.canvas
        .list_user_tokens(&UserRef::SisLoginId(who.into()))
        .await
        .unwrap()
        .into_iter()
        .filter(|t| {
            t.workflow_state != CanvasState::Deleted
                && t.purpose.as_deref().is_some_and(|p| p.starts_with(&prefix))
        })
        .collect()
}

#[tokio::test]
async fn canvas_down_during_issuance_then_back_makes_one_token() {
    for db in TestDb::all().await {
        let w = World::new(db).await;
        let ada = w.actor("ada.admin");
        let id = w.submit("sam.student").await;
        w.sim.set_fail_rate(1.0);
        w.app
            .approve(&ada, id, None, &Ctx::default())
            .await
            .unwrap();
        tokendesk::jobs::drain(&w.app).await.unwrap();
        assert_eq!(
            w.app.request(&ada, id).await.unwrap().request.state,
            RequestState::Approved,
            "still waiting"
        );
        w.sim.set_fail_rate(0.0);
        tokendesk::jobs::drain(&w.app).await.unwrap();
        assert_eq!(
            w.app.request(&ada, id).await.unwrap().request.state,
            RequestState::Approved,
            "not before its backoff"
        );
        w.clock.advance(Duration::minutes(1));
        tokendesk::jobs::drain(&w.app).await.unwrap();
        assert_eq!(
            w.app.request(&ada, id).await.unwrap().request.state,
            RequestState::Issued
        );
        assert_eq!(live_tokens(&w, "sam.student", id).await.len(), 1);
    }
}

#[tokio::test]
async fn a_crash_between_create_and_record_leaves_no_second_live_token() {
    let w = World::new(TestDb::sqlite().await).await;
    let ada = w.actor("ada.admin");
    let id = w.submit("sam.student").await;
    w.app
        .approve(&ada, id, None, &Ctx::default())
        .await
        .unwrap();
    // An earlier attempt created the token in Canvas and died before recording it.
    let orphan = w
        .canvas
        .create_token(
            &UserRef::SisLoginId("sam.student".into()),
            &NewToken::new(format!("tokendesk #{id}: grading scripts")),
        )
        .await
        .unwrap();
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let live = live_tokens(&w, "sam.student", id).await;
    assert_eq!(live.len(), 1, "exactly one live token");
    assert_ne!(live[0].id, orphan.token.id, "the orphan was deleted");
    let view = w.app.request(&ada, id).await.unwrap();
    assert_eq!(view.token.unwrap().canvas_token_id as u64, live[0].id.0);
}

#[tokio::test]
async fn issuance_that_keeps_failing_ends_failed_and_can_be_retried() {
    let w = World::new(TestDb::sqlite().await).await;
    let ada = w.actor("ada.admin");
    let id = w.submit("sam.student").await;
    w.sim.set_fail_rate(1.0);
    w.app
        .approve(&ada, id, None, &Ctx::default())
        .await
        .unwrap();
    for _ in 0..10 {
        tokendesk::jobs::drain(&w.app).await.unwrap();
        w.clock.advance(Duration::minutes(15));
    }
    let failed = w.app.request(&ada, id).await.unwrap().request;
    assert_eq!(failed.state, RequestState::Failed);
    assert!(
        failed.reason.unwrap().contains("Canvas"),
        "the reason is shown to the approver"
    );
    w.sim.set_fail_rate(0.0);
    assert_eq!(
        w.app.retry(&ada, id, &Ctx::default()).await.unwrap().state,
        RequestState::Approved
    );
    tokendesk::jobs::drain(&w.app).await.unwrap();
    assert_eq!(
        w.app.request(&ada, id).await.unwrap().request.state,
        RequestState::Issued
    );
    assert_eq!(live_tokens(&w, "sam.student", id).await.len(), 1);
}

#[tokio::test]
async fn an_unknown_canvas_person_fails_at_once() {
    let w = World::new(TestDb::sqlite().await).await;
    let ada = w.actor("ada.admin");
    // Submitted while Canvas could not say who is who (told at once otherwise).
    w.sim.set_fail_rate(1.0);
    let id = w.submit("nobody.here").await;
    w.sim.set_fail_rate(0.0);
    w.app
        .approve(&ada, id, None, &Ctx::default())
        .await
        .unwrap();
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let r = w.app.request(&ada, id).await.unwrap().request;
    assert_eq!(r.state, RequestState::Failed);
    assert!(r.reason.unwrap().contains("Canvas has no user"));
}

/// With `canvas.user_id_pattern = "{login}"` (numeric Canvas ids), a login such as `self` or
/// `sis_login_id:stella.student` cannot name another Canvas user: it is refused at once, and
/// nothing is made in Canvas.
#[tokio::test]
async fn a_login_cannot_name_another_canvas_user() {
    let w = World::tweaked(TestDb::sqlite().await, |parts| {
        parts.canvas_user_pattern = tokendesk::domain::UserIdPattern::CanvasId;
    })
    .await;
    let before = w.sim.stats();
    for attacker in [
        "self",
        "sis_login_id:stella.student",
        "sis_user_id:a0001",
        "1x",
    ] {
        let raw = tokendesk::domain::request::RawNewRequest {
            purpose: Some("grading scripts for my course sections".into()),
            expires_on: Some(w.today_plus(30)),
            application: None,
        };
        let err = w
            .app
            .submit(&w.actor(attacker), &raw, &Ctx::default())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("not a number"),
            "{attacker}: {err}"
        );
    }
    assert_eq!(w.sim.stats(), before, "Canvas was not even asked");
    // A real numeric id is that person.
    let id = w.submit("2").await;
    w.app
        .approve(&w.actor("ada.admin"), id, None, &Ctx::default())
        .await
        .unwrap();
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let view = w.app.request(&w.actor("ada.admin"), id).await.unwrap();
    assert_eq!(
        view.request.state,
        RequestState::Issued,
        "{:?}",
        view.request.reason
    );
    assert_eq!(view.token.unwrap().canvas_user_id, 2);
}

/// After a burn, the envelope's ciphertext is in none of SQLite's files (database, WAL, shared
/// memory): `secure_delete` overwrites it as it is erased, and the WAL is checkpointed and
/// truncated. With the mailbox transport the link's key is in the same file, so a ciphertext
/// left behind would be the token.
#[tokio::test]
async fn an_erased_ciphertext_is_in_no_file() {
    let w = World::new(TestDb::sqlite().await).await;
    let id = w.issued("sam.student").await;
    let (envelope_id, _) = w.link_for("sam.student").await;
    let mut conn = w.db.store.pool().acquire().await.unwrap();
    let stored = store::get_envelope(&mut conn, &envelope_id)
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    let (nonce, ciphertext) = stored.sealed.unwrap();
    assert!(ciphertext.len() >= 32);
    let path =
        w.db.url
            .strip_prefix("sqlite://")
            .and_then(|p| p.split('?').next())
            .unwrap()
            .to_owned();
    let files = || {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                std::fs::read(format!("{path}{suffix}"))
                    .ok()
                    .map(|b| (*suffix, b))
            })
            .collect::<Vec<_>>()
    };
    let holds = |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        files().iter().any(|(_, b)| holds(b, &ciphertext[..16])),
        "the ciphertext is on disk while the envelope is open"
    );
    w.reveal_value("sam.student").await;
    w.app
        .burn(&w.actor("sam.student"), &envelope_id, &Ctx::default())
        .await
        .unwrap();
    for (suffix, bytes) in files() {
        for piece in [
            &ciphertext[..16],
            &ciphertext[ciphertext.len() - 16..],
            &nonce[..],
        ] {
            assert!(
                !holds(&bytes, piece),
                "erased bytes are still in {path}{suffix} ({} bytes)",
                bytes.len()
            );
        }
    }
    assert_eq!(
        w.app
            .request(&w.actor("sam.student"), id)
            .await
            .unwrap()
            .envelope
            .unwrap()
            .state,
        tokendesk::domain::envelope::EnvelopeState::Burned
    );
}

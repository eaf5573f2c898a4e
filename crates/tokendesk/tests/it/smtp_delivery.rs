//! The delivery email over real SMTP: sent from memory during issuance, and what happens when
//! the mail server refuses it — kept sealed under the outbox key, or (without one) the token is
//! regenerated and a new envelope sealed when the email is retried. The envelope key never rests
//! in the database in the clear.

use std::time::Duration as StdDuration;

use time::Duration;
use tokendesk::app::{Ctx, Mailer};
use tokendesk::delivery::email::SmtpSender;
use tokendesk::delivery::envelope::AtRestKey;
use tokendesk::domain::envelope::EnvelopeState;
use tokendesk::domain::request::RequestState;
use tokendesk::store;
use tokendesk_canvas::{TokenState as CanvasState, UserRef};
use tokendesk_canvas_sim::SimConfig;

use crate::support::db::TestDb;
use crate::support::smtp::{self, Behavior, SmtpServer};
use crate::support::world::{World, open};

async fn world(server: &SmtpServer, outbox_key: Option<AtRestKey>) -> World {
    // Loopback answers in milliseconds; a stalled server is given up on after a second.
    let settings = tokendesk::delivery::email::SmtpSettings {
        timeout: StdDuration::from_secs(1),
        ..server.smtp_settings()
    };
    let sender = SmtpSender::new(&settings).unwrap();
    World::with(
        TestDb::sqlite().await,
        SimConfig {
            throttle: None,
            ..Default::default()
        },
        Mailer::Smtp(sender),
        outbox_key,
    )
    .await
}

/// (envelope id, key) from a received message.
fn link_in(message: &smtp::Received) -> (String, String) {
    let link = message.find_link("/e/").expect("a delivery link");
    let (_, rest) = link.split_once("/e/").unwrap();
    let (id, key) = rest.split_once('#').unwrap();
    (id.to_owned(), key.to_owned())
}

/// The SQLite database file and its WAL, as text.
fn database_text(w: &World) -> String {
    let path =
        w.db.url
            .strip_prefix("sqlite://")
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn approve(w: &World) -> tokendesk::domain::RequestId {
    let id = w.submit("sam.student").await;
    w.app
        .approve(&w.actor("ada.admin"), id, None, &Ctx::default())
        .await
        .unwrap();
    tokendesk::jobs::drain(&w.app).await.unwrap();
    id
}

#[tokio::test]
async fn the_link_goes_out_by_smtp_and_never_rests_in_the_database() {
    let server = smtp::start().await;
    let w = world(&server, None).await;
    let id = approve(&w).await;
    let received = server.wait_for(2, StdDuration::from_secs(5)).await;
    let delivery = received
        .iter()
        .find(|m| m.to == ["sam.student@example.edu"] && m.find_link("/e/").is_some())
        .expect("the delivery email to the requester");
    let (env, key) = link_in(delivery);
    let (sealed, _) = w
        .app
        .reveal(&w.actor("sam.student"), &env, &Ctx::default())
        .await
        .unwrap();
    let value = open(&env, &key, &sealed);
    assert_eq!(
        w.app
            .request(&w.actor("sam.student"), id)
            .await
            .unwrap()
            .token
            .unwrap()
            .hint,
        value[..5]
    );
    let db = database_text(&w);
    assert!(!db.contains(&key), "the key is not in the database");
    assert!(!db.contains(&value), "the value is not in the database");
}

#[tokio::test]
async fn a_refused_delivery_email_waits_sealed_under_the_outbox_key() {
    let server = smtp::start_with(Behavior::RejectData(451)).await;
    let w = world(&server, Some(AtRestKey::generate())).await;
    let id = approve(&w).await;
    assert_eq!(
        w.app
            .request(&w.actor("ada.admin"), id)
            .await
            .unwrap()
            .request
            .state,
        RequestState::Issued
    );
    assert!(server.messages().is_empty());
    // The email waits, sealed: the key is not readable in the database.
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT sealed_body FROM emails WHERE kind = 'delivery'")
            .fetch_one(w.db.store.pool())
            .await
            .unwrap();
    assert!(sealed.is_some_and(|s| s.len() > 100));
    let envelope_before = w
        .app
        .request(&w.actor("sam.student"), id)
        .await
        .unwrap()
        .envelope
        .unwrap()
        .id;

    server.set_behavior(Behavior::Accept);
    w.clock.advance(Duration::minutes(1));
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let received = server.wait_for(1, StdDuration::from_secs(5)).await;
    let delivery = received
        .iter()
        .find(|m| m.find_link("/e/").is_some())
        .expect("the delivery email");
    let (env, key) = link_in(delivery);
    assert_eq!(env, envelope_before, "the same envelope, sent late");
    let (sealed, _) = w
        .app
        .reveal(&w.actor("sam.student"), &env, &Ctx::default())
        .await
        .unwrap();
    assert_eq!(open(&env, &key, &sealed).len(), 64);
    let db = database_text(&w);
    assert!(!db.contains(&key));
}

#[tokio::test]
async fn without_an_outbox_key_a_refused_link_is_reissued_with_a_new_value() {
    let server = smtp::start_with(Behavior::RejectData(451)).await;
    let w = world(&server, None).await;
    let id = approve(&w).await;
    let first = w.app.request(&w.actor("sam.student"), id).await.unwrap();
    let first_envelope = first.envelope.unwrap().id;
    let first_hint = first.token.unwrap().hint;

    server.set_behavior(Behavior::Accept);
    w.clock.advance(Duration::minutes(1));
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let received = server.wait_for(1, StdDuration::from_secs(5)).await;
    let delivery = received
        .iter()
        .find(|m| m.find_link("/e/").is_some())
        .expect("a new delivery email");
    let (env, key) = link_in(delivery);
    assert_ne!(env, first_envelope, "a new envelope");
    let sam = w.actor("sam.student");
    let (sealed, _) = w.app.reveal(&sam, &env, &Ctx::default()).await.unwrap();
    let value = open(&env, &key, &sealed);
    let now = w.app.request(&sam, id).await.unwrap();
    let token = now.token.unwrap();
    assert_eq!(token.hint, value[..5]);
    assert_ne!(token.hint, first_hint, "the token was regenerated");
    // The first envelope is closed, and Canvas holds one live token for the request.
    assert_eq!(
        w.app.envelope(&sam, &first_envelope).await.unwrap().state,
        EnvelopeState::Burned
    );
    let live: Vec<_> = w
        .canvas
        .list_user_tokens(&UserRef::SisLoginId("sam.student".into()))
        .await
        .unwrap()
        .into_iter()
        .filter(|t| {
            t.workflow_state != CanvasState::Deleted
                && t.purpose
                    .as_deref()
                    .is_some_and(|p| p.starts_with(&format!("tokendesk #{id}: ")))
        })
        .collect();
    assert_eq!(live.len(), 1);
    let mut conn = w.db.store.pool().acquire().await.unwrap();
    let events = store::list_audit(&mut conn, &Default::default())
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.action == "request.reissue_link"));
}

/// The value of one sample in a `/metrics` text (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_refused_email_is_counted_in_the_metrics_and_waits_in_its_queue() {
    tokendesk::telemetry::install().expect("the recorder");
    let server = smtp::start_with(Behavior::RejectData(451)).await;
    let w = world(&server, Some(AtRestKey::generate())).await;
    let failures = r#"tokendesk_email_failures_total{stage="send",retry="yes"}"#;
    let before = tokendesk::telemetry::render(&w.app).await.unwrap();
    approve(&w).await;
    let after = tokendesk::telemetry::render(&w.app).await.unwrap();
    assert!(
        sample(&after, failures) >= sample(&before, failures) + 1.0,
        "{after}"
    );
    assert!(sample(&after, r#"tokendesk_queue_waiting{queue="emails"}"#) >= 1.0);
    w.clock.advance(Duration::minutes(10));
    assert!(
        sample(
            &tokendesk::telemetry::render(&w.app).await.unwrap(),
            r#"tokendesk_queue_oldest_age_seconds{queue="emails"}"#
        ) >= 600.0
    );

    let sent = "tokendesk_emails_sent_total";
    let sent_before = sample(&after, sent);
    server.set_behavior(Behavior::Accept);
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let done = tokendesk::telemetry::render(&w.app).await.unwrap();
    assert!(sample(&done, sent) >= sent_before + 1.0, "{done}");
    assert_eq!(
        sample(&done, r#"tokendesk_queue_waiting{queue="emails"}"#),
        0.0
    );
}

/// Mail faults (issue 15): a server that refuses for now (4xx), hangs up in the middle of DATA,
/// never greets, or takes the message and never answers it; then accepts. The email is sent in the end, every failed attempt is an
/// audit event (`email.retry`, with the server's answer), and a refusal for good (5xx) is
/// `email.give_up`.
#[tokio::test]
async fn mail_faults_lose_nothing_and_every_retry_is_audited() {
    for fault in [
        Behavior::RejectData(451),
        Behavior::CloseInData,
        Behavior::RejectRcpt(421),
        // Stalls: the send gives up after the SMTP timeout (1 s here) and is retried.
        Behavior::NoGreeting,
        Behavior::StallAfterData,
    ] {
        let server = smtp::start_with(fault).await;
        let w = world(&server, Some(AtRestKey::generate())).await;
        let id = approve(&w).await;
        // A second attempt fails too.
        w.clock.advance(Duration::minutes(30));
        tokendesk::jobs::drain(&w.app).await.unwrap();
        assert!(server.messages().is_empty(), "{fault:?}");
        let events = w
            .app
            .audit_events(&w.actor("ada.admin"), &Default::default())
            .await
            .unwrap();
        let retries: Vec<_> = events
            .iter()
            .filter(|e| e.action == "email.retry")
            .collect();
        assert!(retries.len() >= 2, "{fault:?}: {retries:?}");
        assert!(
            retries
                .iter()
                .all(|e| e.target.starts_with("email:") && e.outcome == "failed")
        );
        server.set_behavior(Behavior::Accept);
        w.clock.advance(Duration::hours(2));
        tokendesk::jobs::drain(&w.app).await.unwrap();
        let received = server.wait_for(1, StdDuration::from_secs(5)).await;
        assert!(
            received.iter().any(|m| m.find_link("/e/").is_some()),
            "{fault:?}: the delivery email arrives in the end"
        );
        assert_eq!(
            w.app
                .request(&w.actor("ada.admin"), id)
                .await
                .unwrap()
                .request
                .state,
            RequestState::Issued
        );
    }
    // Refused for good: given up, and the trail says so.
    let server = smtp::start_with(Behavior::RejectRcpt(550)).await;
    let w = world(&server, Some(AtRestKey::generate())).await;
    approve(&w).await;
    let events = w
        .app
        .audit_events(&w.actor("ada.admin"), &Default::default())
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.action == "email.give_up"),
        "{:?}",
        events.iter().map(|e| &e.action).collect::<Vec<_>>()
    );
}

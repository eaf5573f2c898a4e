//! The token's life after delivery (issue 12), on a moved clock against the simulator: activation
//! checks that back off and the owner's "I have activated it", tokens never put to use,
//! reminders (once, even with two instances), expiry and deletion in Canvas, the calendar feed,
//! renewal (a new token, or the same one extended), unused tokens, reconciliation (deleted,
//! activated, expiry changed, last use, orphans; one listing per person), the approvers' digest,
//! and the one wording of an expiry.

use time::Duration;
use tokendesk::app::{App, Ctx};
use tokendesk::domain::request::{RawNewRequest, RequestState};
use tokendesk::domain::{RequestId, TokenState};
use tokendesk_canvas::{CanvasTokenId, CanvasUserId, TokenRef, TokenUpdate, UserRef};

use crate::support::db::TestDb;
use crate::support::world::World;

const SAM: &str = "sam.student";

/// A world whose people may hold many requests and tokens at once.
async fn roomy(tweak: impl FnOnce(&mut tokendesk::app::AppParts)) -> World {
    World::tweaked(TestDb::sqlite().await, |parts| {
        parts.policy.max_open_requests_per_person = 1000;
        parts.policy.max_active_tokens_per_person = 1000;
        tweak(parts);
    })
    .await
}

/// `who` asks for a token valid `days` days; approved and issued.
async fn issued_for(w: &World, who: &str, days: i64) -> RequestId {
    let raw = RawNewRequest {
        purpose: Some("grading scripts for my course sections".into()),
        expires_on: Some(w.today_plus(days)),
        application: None,
    };
    let id = w
        .app
        .submit(&w.actor(who), &raw, &Ctx::default())
        .await
        .unwrap()
        .id;
    w.app
        .approve(&w.actor("ada.admin"), id, None, &Ctx::default())
        .await
        .unwrap();
    tokendesk::jobs::drain(&w.app).await.unwrap();
    id
}

async fn state_of(w: &World, id: RequestId) -> RequestState {
    w.app
        .request(&w.actor("ada.admin"), id)
        .await
        .unwrap()
        .request
        .state
}

async fn token_of(w: &World, id: RequestId) -> tokendesk::store::StoredToken {
    w.app
        .request(&w.actor("ada.admin"), id)
        .await
        .unwrap()
        .token
        .unwrap()
}

/// Subjects of the mail `who` received, oldest first.
async fn subjects(w: &World, who: &str) -> Vec<String> {
    let mut mail = w
        .app
        .mailbox(&w.actor("ada.admin"), Some(who), None)
        .await
        .unwrap();
    mail.reverse();
    mail.into_iter().map(|m| m.subject).collect()
}

fn canvas_ref(t: &tokendesk::store::StoredToken) -> (UserRef, TokenRef) {
    (
        UserRef::Id(CanvasUserId(t.canvas_user_id.unsigned_abs())),
        TokenRef::Id(CanvasTokenId(t.canvas_token_id.unsigned_abs())),
    )
}

// ---- 1. activation ----------------------------------------------------------------------------

#[tokio::test]
async fn pending_tokens_are_checked_on_a_schedule_that_backs_off() {
    let w = roomy(|_| {}).await;
    let id = w.issued(SAM).await;
    let t = token_of(&w, id).await;
    assert_eq!(t.state, TokenState::Pending);
    let first = t.next_check_at.unwrap();
    assert_eq!(first - t.created_at, Duration::minutes(5));
    // Not due yet: Canvas is not asked.
    let before = w.sim.stats().api_requests;
    w.clock.advance(Duration::minutes(4));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(report.checked, 0);
    assert_eq!(w.sim.stats().api_requests, before);
    // Due: asked, still pending, asked again later and later.
    let mut waits = Vec::new();
    for _ in 0..4 {
        let due = token_of(&w, id).await.next_check_at.unwrap();
        w.clock.set(due);
        let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
        assert_eq!(report.checked, 1);
        let next = token_of(&w, id).await.next_check_at.unwrap();
        waits.push((next - due).whole_minutes());
    }
    assert_eq!(waits, [2, 4, 8, 16]);
    // A reveal brings the next check forward; after activation it finds the token active.
    w.reveal_value(SAM).await;
    let after_reveal = token_of(&w, id).await;
    let soon = after_reveal.next_check_at.unwrap() - w.app.now();
    assert!(
        (Duration::seconds(55)..=Duration::minutes(1)).contains(&soon),
        "{soon}"
    );
    assert_eq!(after_reveal.checks, 0);
    w.activate_in_canvas(SAM, t.canvas_token_id).await;
    w.clock.advance(Duration::minutes(1));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(report.activated, 1);
    let active = token_of(&w, id).await;
    assert_eq!(active.state, TokenState::Active);
    let since = w.app.now() - active.activated_at.unwrap();
    assert!(since < Duration::seconds(5), "activated just now: {since}");
    assert_eq!(
        active.next_check_at, None,
        "active tokens are not checked again"
    );
}

#[tokio::test]
async fn the_sweep_checks_every_due_token_without_a_cap() {
    let w = roomy(|_| {}).await;
    // More than a batch (200) of pending tokens, all due at once.
    let mut ids = Vec::new();
    for _ in 0..210 {
        let raw = RawNewRequest {
            purpose: Some("one of many scripts for my course sections".into()),
            expires_on: Some(w.today_plus(30)),
            application: None,
        };
        ids.push(
            w.app
                .submit(&w.actor(SAM), &raw, &Ctx::default())
                .await
                .unwrap()
                .id,
        );
    }
    for id in &ids {
        w.app
            .approve(&w.actor("ada.admin"), *id, None, &Ctx::default())
            .await
            .unwrap();
    }
    tokendesk::jobs::drain(&w.app).await.unwrap();
    w.clock.advance(Duration::minutes(10));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(report.checked, 210, "{report:?}");
    // None is due again at once.
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(report.checked, 0);
}

#[tokio::test]
async fn the_owner_says_i_have_activated_it() {
    let w = roomy(|_| {}).await;
    let id = w.issued(SAM).await;
    let t = token_of(&w, id).await;
    let sam = w.actor(SAM);
    let still = w.app.check_activation(&sam, t.id).await.unwrap();
    assert!(!still.active);
    assert!(
        still.message.contains("still pending in Canvas"),
        "{}",
        still.message
    );
    assert!(still.activate_at.unwrap().ends_with("/profile/settings"));
    // Only the owner says so.
    let err = w
        .app
        .check_activation(&w.actor("theo.teacher"), t.id)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("owner"), "{err}");
    w.activate_in_canvas(SAM, t.canvas_token_id).await;
    let now = w.app.check_activation(&sam, t.id).await.unwrap();
    assert!(now.active, "{}", now.message);
    assert_eq!(state_of(&w, id).await, RequestState::Activated);
}

// ---- 2. never put to use ----------------------------------------------------------------------

#[tokio::test]
async fn a_link_that_expires_unrevealed_ends_the_token() {
    let w = roomy(|_| {}).await;
    let id = w.issued(SAM).await;
    let t = token_of(&w, id).await;
    let (user, token) = canvas_ref(&t);
    // Before the link expires, the help desk could still send a new one.
    w.clock.advance(Duration::days(7) - Duration::minutes(1));
    tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(state_of(&w, id).await, RequestState::Issued);
    w.clock.advance(Duration::minutes(2));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(report.never_used, 1);
    let r = w.app.request(&w.actor("ada.admin"), id).await.unwrap();
    assert_eq!(r.request.state, RequestState::Expired);
    assert!(
        r.request
            .reason
            .unwrap()
            .contains("expired before the token was revealed")
    );
    assert_eq!(r.token.unwrap().state, TokenState::Deleted);
    assert!(
        matches!(
            w.canvas.show_token(&user, &token).await,
            Err(tokendesk_canvas::CanvasError::NotFound { .. })
        ),
        "deleted in Canvas"
    );
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let mail = w
        .app
        .mailbox(&w.actor("ada.admin"), Some(SAM), None)
        .await
        .unwrap();
    let told = mail
        .iter()
        .find(|m| m.subject.contains("never used"))
        .expect("the owner is told");
    assert!(
        told.text.contains("/requests/new"),
        "how to ask again: {}",
        told.text
    );
}

#[tokio::test]
async fn a_token_not_activated_in_the_grace_period_ends() {
    let w = roomy(|_| {}).await;
    let id = w.issued(SAM).await;
    w.reveal_value(SAM).await;
    w.clock.advance(Duration::days(14) - Duration::minutes(1));
    tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(
        state_of(&w, id).await,
        RequestState::Issued,
        "revealed: the link's end alone does not end it"
    );
    w.clock.advance(Duration::minutes(2));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(report.never_used, 1);
    let r = w
        .app
        .request(&w.actor("ada.admin"), id)
        .await
        .unwrap()
        .request;
    assert_eq!(r.state, RequestState::Expired);
    assert!(
        r.reason
            .unwrap()
            .contains("not activated in Canvas within 14 days")
    );
}

#[tokio::test]
async fn a_token_activated_at_the_last_minute_is_kept() {
    let w = roomy(|_| {}).await;
    let id = w.issued(SAM).await;
    w.reveal_value(SAM).await;
    let t = token_of(&w, id).await;
    // Activated in Canvas, not yet noticed when the grace period ends.
    w.clock.advance(Duration::days(13));
    w.activate_in_canvas(SAM, t.canvas_token_id).await;
    let mut tx = w.db.store.write().await.unwrap();
    tokendesk::store::schedule_check(&mut tx, t.id, w.app.now() + Duration::days(30), 9)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    w.clock.advance(Duration::days(2));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(report.never_used, 0);
    assert_eq!(state_of(&w, id).await, RequestState::Activated);
}

// ---- 3. reminders, expiry, the calendar --------------------------------------------------------

#[tokio::test]
async fn reminders_go_out_once_each_even_from_two_instances() {
    let w = roomy(|_| {}).await;
    let other = App::new(w.app.parts_cloned());
    let id = issued_for(&w, SAM, 30).await;
    let t = token_of(&w, id).await;
    w.activate_in_canvas(SAM, t.canvas_token_id).await;
    let reminders = |s: &Vec<String>| s.iter().filter(|s| s.contains("expires on")).count();
    // 16 days before: nothing.
    w.clock.advance(Duration::days(14));
    let (a, b) = tokio::join!(
        tokendesk::jobs::sweep(&w.app),
        tokendesk::jobs::sweep(&other)
    );
    assert_eq!(a.unwrap().reminded + b.unwrap().reminded, 0);
    // 14 days before: one reminder, from one of the two.
    w.clock.advance(Duration::days(2));
    let (a, b) = tokio::join!(
        tokendesk::jobs::sweep(&w.app),
        tokendesk::jobs::sweep(&other)
    );
    assert_eq!(a.unwrap().reminded + b.unwrap().reminded, 1);
    tokendesk::jobs::drain(&w.app).await.unwrap();
    assert_eq!(reminders(&subjects(&w, SAM).await), 1);
    // Again the next day: nothing more.
    w.clock.advance(Duration::days(1));
    tokendesk::jobs::sweep(&w.app).await.unwrap();
    tokendesk::jobs::sweep(&other).await.unwrap();
    tokendesk::jobs::drain(&w.app).await.unwrap();
    assert_eq!(reminders(&subjects(&w, SAM).await), 1);
    // 3 days before: the second.
    w.clock.advance(Duration::days(10));
    tokendesk::jobs::sweep(&other).await.unwrap();
    tokendesk::jobs::sweep(&w.app).await.unwrap();
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let mail = w
        .app
        .mailbox(&w.actor("ada.admin"), Some(SAM), None)
        .await
        .unwrap();
    let last = &mail[0];
    assert_eq!(reminders(&subjects(&w, SAM).await), 2);
    assert!(last.text.contains("in 3 days"), "{}", last.text);
    assert!(
        last.text.contains(&format!("/tokens/{}", t.id)),
        "renew from the token's page"
    );
}

#[tokio::test]
async fn a_token_made_inside_a_reminder_window_gets_only_the_nearer_reminder() {
    let w = roomy(|_| {}).await;
    let id = issued_for(&w, SAM, 10).await;
    let t = token_of(&w, id).await;
    w.activate_in_canvas(SAM, t.canvas_token_id).await;
    w.clock.advance(Duration::days(1));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(
        report.reminded, 0,
        "made 10 days before its expiry: no 14-day reminder"
    );
    w.clock.advance(Duration::days(6));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(report.reminded, 1, "the 3-day one");
}

#[tokio::test]
async fn at_expiry_the_token_is_deleted_in_canvas_unless_configured_otherwise() {
    for delete in [true, false] {
        let w = roomy(|parts| parts.policy.delete_expired = delete).await;
        let id = issued_for(&w, SAM, 5).await;
        let t = token_of(&w, id).await;
        w.activate_in_canvas(SAM, t.canvas_token_id).await;
        w.clock.advance(Duration::days(6));
        let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
        assert_eq!(report.requests_expired, 1);
        assert_eq!(state_of(&w, id).await, RequestState::Expired);
        tokendesk::jobs::drain(&w.app).await.unwrap();
        let (user, token) = canvas_ref(&t);
        let in_canvas = w.canvas.show_token(&user, &token).await;
        assert_eq!(
            in_canvas.is_err(),
            delete,
            "delete_expired = {delete}: {in_canvas:?}"
        );
        assert_eq!(token_of(&w, id).await.state == TokenState::Deleted, delete);
    }
}

#[tokio::test]
async fn each_person_has_a_calendar_feed_of_their_expiry_days() {
    use std::str::FromStr as _;
    let w = roomy(|_| {}).await;
    let sam = w.actor(SAM);
    let first = issued_for(&w, SAM, 20).await;
    let second = issued_for(&w, SAM, 40).await;
    issued_for(&w, "stella.student", 30).await;
    let url = w.app.new_calendar(&sam, &Ctx::default()).await.unwrap();
    assert_eq!(w.app.calendar_url(&sam).await.unwrap(), Some(url.clone()));
    let secret = url
        .rsplit('/')
        .next()
        .unwrap()
        .trim_end_matches(".ics")
        .to_owned();
    let feed = w.app.calendar_feed(&secret).await.unwrap().unwrap();
    // A calendar parser takes it: two events, on the two expiry days.
    let calendar = icalendar::Calendar::from_str(&feed).expect("a valid iCalendar feed");
    let events: Vec<&icalendar::Event> = calendar
        .components
        .iter()
        .filter_map(|c| match c {
            icalendar::CalendarComponent::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 2, "{feed}");
    use icalendar::Component as _;
    let mut days: Vec<String> = events
        .iter()
        .map(|e| match e.get_start() {
            Some(icalendar::DatePerhapsTime::Date(d)) => d.to_string(),
            other => panic!("an all-day event: {other:?}"),
        })
        .collect();
    days.sort();
    assert_eq!(days, [w.today_plus(20), w.today_plus(40)]);
    for (id, e) in [first, second].iter().zip(&events) {
        let _ = id;
        assert!(e.get_summary().unwrap().starts_with("Canvas token expires"));
        assert!(
            e.get_description().unwrap().contains("(ends "),
            "the instant it ends"
        );
    }
    for line in feed.split("\r\n") {
        assert!(line.len() <= 75, "folded: {line}");
    }
    assert!(!feed.contains("stella"), "only the person's own tokens");
    // A new address stops the old one; stopping stops it.
    let newer = w.app.new_calendar(&sam, &Ctx::default()).await.unwrap();
    assert_ne!(newer, url);
    assert!(w.app.calendar_feed(&secret).await.unwrap().is_none());
    assert!(w.app.stop_calendar(&sam, &Ctx::default()).await.unwrap());
    assert_eq!(w.app.calendar_url(&sam).await.unwrap(), None);
    let newer_secret = newer.rsplit('/').next().unwrap().trim_end_matches(".ics");
    assert!(w.app.calendar_feed(newer_secret).await.unwrap().is_none());
}

// ---- 4. renewal -------------------------------------------------------------------------------

#[tokio::test]
async fn a_renewal_makes_a_new_token_and_retires_the_old_one_once_it_is_active() {
    let w = roomy(|_| {}).await;
    let sam = w.actor(SAM);
    let old = w.issued(SAM).await;
    let old_value = w.reveal_value(SAM).await;
    let old_token = token_of(&w, old).await;
    w.activate_in_canvas(SAM, old_token.canvas_token_id).await;
    w.app.check_activation(&sam, old_token.id).await.unwrap();
    assert_eq!(w.canvas_status(&old_value).await, 200);

    // Renewed with the purpose carried over; it waits like any request, marked as a renewal.
    let raw = RawNewRequest {
        purpose: None,
        expires_on: Some(w.today_plus(90)),
        application: None,
    };
    let renewal = w
        .app
        .renew(&sam, old_token.id, &raw, &Ctx::default())
        .await
        .unwrap();
    assert_eq!(renewal.renews, Some(old));
    assert_eq!(renewal.purpose, "grading scripts for my course sections");
    assert_eq!(renewal.state, RequestState::Submitted);
    // A second renewal of the same token is refused.
    let twice = w
        .app
        .renew(&sam, old_token.id, &raw, &Ctx::default())
        .await
        .unwrap_err();
    assert!(twice.to_string().contains("already renews"), "{twice}");

    w.app
        .approve(&w.actor("ada.admin"), renewal.id, None, &Ctx::default())
        .await
        .unwrap();
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let new_token = token_of(&w, renewal.id).await;
    assert_ne!(
        new_token.canvas_token_id, old_token.canvas_token_id,
        "a new token"
    );
    let new_value = w.reveal_value(SAM).await;
    assert_ne!(new_value, old_value);
    // The old one keeps working until the new one is activated.
    assert_eq!(w.canvas_status(&old_value).await, 200);
    assert_eq!(state_of(&w, old).await, RequestState::Activated);
    w.activate_in_canvas(SAM, new_token.canvas_token_id).await;
    w.app.check_activation(&sam, new_token.id).await.unwrap();
    assert_eq!(w.canvas_status(&new_value).await, 200);
    assert_eq!(
        w.canvas_status(&old_value).await,
        401,
        "the old one is deleted in Canvas"
    );
    let old_now = w.app.request(&sam, old).await.unwrap().request;
    assert_eq!(old_now.state, RequestState::Expired);
    assert!(
        old_now
            .reason
            .unwrap()
            .contains(&format!("request #{}", renewal.id))
    );
}

#[tokio::test]
async fn a_renewal_by_extension_moves_the_same_tokens_expiry() {
    let w =
        roomy(|parts| parts.policy.renewal = tokendesk::domain::policy::RenewalMode::Extend).await;
    let sam = w.actor(SAM);
    let old = w.issued(SAM).await;
    let value = w.reveal_value(SAM).await;
    let token = token_of(&w, old).await;
    w.activate_in_canvas(SAM, token.canvas_token_id).await;
    w.app.check_activation(&sam, token.id).await.unwrap();
    let raw = RawNewRequest {
        purpose: Some("grading scripts for my course sections, next term too".into()),
        expires_on: Some(w.today_plus(100)),
        application: None,
    };
    let renewal = w
        .app
        .renew(&sam, token.id, &raw, &Ctx::default())
        .await
        .unwrap();
    w.app
        .approve(&w.actor("ada.admin"), renewal.id, None, &Ctx::default())
        .await
        .unwrap();
    tokendesk::jobs::drain(&w.app).await.unwrap();
    // The same token, now the renewal's, expiring at the end of the new day, in Canvas too.
    let moved = token_of(&w, renewal.id).await;
    assert_eq!(moved.id, token.id);
    let expected = tokendesk::domain::request::canvas_expiry(
        time::Date::parse(
            &w.today_plus(100),
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .unwrap(),
    );
    assert_eq!(moved.expires_at, expected);
    let (user, tref) = canvas_ref(&token);
    assert_eq!(
        w.canvas.show_token(&user, &tref).await.unwrap().expires_at,
        Some(expected)
    );
    assert_eq!(w.canvas_status(&value).await, 200, "the same value works");
    assert_eq!(state_of(&w, renewal.id).await, RequestState::Activated);
    let old_now = w.app.request(&sam, old).await.unwrap().request;
    assert_eq!(old_now.state, RequestState::Expired);
    assert!(old_now.reason.unwrap().contains("the same token"));
    let mail = subjects(&w, SAM).await;
    assert!(
        mail.iter().any(|s| s.contains("now expires on")),
        "{mail:?}"
    );
}

// ---- 5. unused tokens -------------------------------------------------------------------------

#[tokio::test]
async fn unused_tokens_are_warned_about_then_revoked() {
    let w = roomy(|parts| parts.policy.revoke_unused_days = 30).await;
    let id = issued_for(&w, SAM, 100).await;
    let value = w.reveal_value(SAM).await;
    let t = token_of(&w, id).await;
    w.activate_in_canvas(SAM, t.canvas_token_id).await;
    w.app.check_activation(&w.actor(SAM), t.id).await.unwrap();
    w.clock.advance(Duration::days(31));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!((report.warned_unused, report.revoked_unused), (1, 0));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(
        (report.warned_unused, report.revoked_unused),
        (0, 0),
        "warned once"
    );
    tokendesk::jobs::drain(&w.app).await.unwrap();
    assert!(
        subjects(&w, SAM)
            .await
            .iter()
            .any(|s| s.contains("has not been used for 30 days"))
    );
    w.clock.advance(Duration::days(7));
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(report.revoked_unused, 1);
    assert_eq!(state_of(&w, id).await, RequestState::Revoked);
    assert_eq!(w.canvas_status(&value).await, 401);
}

// ---- 6. reconciliation ------------------------------------------------------------------------

#[tokio::test]
async fn reconciliation_compares_every_live_token_with_canvas() {
    let w = roomy(|_| {}).await;
    let sam = w.actor(SAM);
    // Deleted in Canvas by a Canvas admin.
    let gone = w.issued(SAM).await;
    let (user, token) = canvas_ref(&token_of(&w, gone).await);
    w.canvas.delete_token(&user, &token).await.unwrap();
    // Activated in Canvas, not yet noticed.
    let activated = w.issued(SAM).await;
    let a = token_of(&w, activated).await;
    w.activate_in_canvas(SAM, a.canvas_token_id).await;
    // Its expiry moved later in Canvas (breaks policy), and another's earlier (recorded).
    let later = w.issued("stella.student").await;
    let l = token_of(&w, later).await;
    let (lu, lt) = canvas_ref(&l);
    let update = |at| TokenUpdate {
        expires_at: Some(at),
        ..TokenUpdate::default()
    };
    w.canvas
        .update_token(&lu, &lt, &update(l.expires_at + Duration::days(300)))
        .await
        .unwrap();
    let earlier = w.issued("rita.researcher").await;
    let e = token_of(&w, earlier).await;
    let (eu, et) = canvas_ref(&e);
    w.canvas
        .update_token(&eu, &et, &update(e.expires_at - Duration::days(3)))
        .await
        .unwrap();
    // An orphan: made in Canvas with tokendesk's purpose, unknown to it.
    w.canvas
        .create_token(
            &UserRef::SisLoginId(SAM.into()),
            &tokendesk_canvas::NewToken::new("tokendesk #4242: left by a crash".to_owned()),
        )
        .await
        .unwrap();

    let before = w.sim.stats().api_requests;
    let report = w.app.reconcile().await.unwrap();
    let listings = w.sim.stats().api_requests - before;
    // sam, stella and rita, and ada (found in Canvas to email her as an approver).
    assert_eq!(report.people, 4, "{report:?}");
    assert_eq!(report.tokens, 4);
    assert_eq!((report.gone, report.activated), (1, 1), "{report:?}");
    assert_eq!(
        (report.expiry_corrected, report.expiry_changed),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(report.orphans_found, 1);
    // One listing per person, and one correction.
    assert_eq!(listings, 4 + 1, "{report:?}");

    let g = w.app.request(&sam, gone).await.unwrap().request;
    assert_eq!(g.state, RequestState::Revoked);
    assert!(g.reason.unwrap().contains("revoked in Canvas"));
    assert_eq!(state_of(&w, activated).await, RequestState::Activated);
    assert_eq!(
        w.canvas.show_token(&lu, &lt).await.unwrap().expires_at,
        Some(l.expires_at),
        "put back"
    );
    assert_eq!(
        token_of(&w, earlier).await.canvas_expires_at,
        Some(e.expires_at - Duration::days(3))
    );
    let trail = w
        .app
        .audit_events(&w.actor("ada.admin"), &Default::default())
        .await
        .unwrap();
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    for action in [
        "token.expiry_corrected",
        "token.expiry_changed",
        "orphan.found",
        "token.gone_from_canvas",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    assert!(token_of(&w, activated).await.reconciled_at.is_some());

    // Orphans: admins see them; they are deleted only when an admin says so.
    let orphans = w.app.orphans(&w.actor("ada.admin")).await.unwrap();
    assert_eq!(orphans.len(), 1);
    assert!(w.app.orphans(&sam).await.is_err());
    let again = w.app.reconcile().await.unwrap();
    assert_eq!(
        (again.orphans_found, again.gone, again.expiry_corrected),
        (0, 0, 0),
        "{again:?}"
    );
    let deleted = w
        .app
        .delete_orphan(&w.actor("ada.admin"), orphans[0].id, &Ctx::default())
        .await
        .unwrap();
    assert!(deleted.purpose.starts_with("tokendesk #4242"));
    assert!(
        w.app
            .orphans(&w.actor("ada.admin"))
            .await
            .unwrap()
            .is_empty()
    );
    let listed = w
        .canvas
        .list_user_tokens(&UserRef::SisLoginId(SAM.into()))
        .await
        .unwrap();
    assert!(
        !listed
            .iter()
            .any(|t| t.purpose.as_deref().is_some_and(|p| p.contains("#4242")))
    );
}

#[tokio::test]
async fn reconciliation_records_when_a_token_was_last_used() {
    let w = roomy(|_| {}).await;
    let id = w.issued(SAM).await;
    let value = w.reveal_value(SAM).await;
    let t = token_of(&w, id).await;
    w.activate_in_canvas(SAM, t.canvas_token_id).await;
    w.app.reconcile().await.unwrap();
    assert_eq!(token_of(&w, id).await.last_used_at, None);
    assert_eq!(w.canvas_status(&value).await, 200);
    w.app.reconcile().await.unwrap();
    assert!(
        token_of(&w, id).await.last_used_at.is_some(),
        "Canvas said it was used"
    );
}

// ---- 8. the approvers' digest -----------------------------------------------------------------

#[tokio::test]
async fn approvers_get_one_digest_per_period() {
    let w = roomy(|parts| {
        parts.notify = tokendesk::config::NotifyConfig {
            approver_digest_minutes: 60,
        };
    })
    .await;
    let ids = [
        w.submit(SAM).await,
        w.submit("stella.student").await,
        w.submit("rita.researcher").await,
    ];
    tokendesk::jobs::drain(&w.app).await.unwrap();
    assert!(
        subjects(&w, "ada.admin").await.is_empty(),
        "no email per request"
    );
    let report = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(report.digests, 1);
    tokendesk::jobs::drain(&w.app).await.unwrap();
    let mail = w
        .app
        .mailbox(&w.actor("ada.admin"), Some("ada.admin"), None)
        .await
        .unwrap();
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0].subject.contains("3 Canvas access token requests"),
        "{}",
        mail[0].subject
    );
    for id in ids {
        assert!(
            mail[0].text.contains(&format!("/requests/{id}")),
            "{}",
            mail[0].text
        );
    }
    // Another request within the period: no second digest until the period is over.
    w.submit(SAM).await;
    w.clock.advance(Duration::minutes(30));
    assert_eq!(tokendesk::jobs::sweep(&w.app).await.unwrap().digests, 0);
    w.clock.advance(Duration::minutes(31));
    assert_eq!(tokendesk::jobs::sweep(&w.app).await.unwrap().digests, 1);
    // Nothing new: nothing sent.
    w.clock.advance(Duration::minutes(61));
    assert_eq!(tokendesk::jobs::sweep(&w.app).await.unwrap().digests, 0);
}

// ---- 9. dates people can trust ----------------------------------------------------------------

#[tokio::test]
async fn an_expiry_reads_as_the_day_chosen_and_the_instant_it_ends() {
    let w = roomy(|_| {}).await;
    let id = issued_for(&w, SAM, 30).await;
    let day = w.today_plus(30);
    let text = tokendesk::domain::request::expiry_text(
        time::Date::parse(
            &day,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .unwrap(),
    );
    assert!(
        text.starts_with(&format!("{day} (ends ")) && text.ends_with(" 00:00 UTC)"),
        "{text}"
    );
    let mail = w
        .app
        .mailbox(&w.actor("ada.admin"), Some(SAM), None)
        .await
        .unwrap();
    assert!(
        mail.iter().any(|m| m.text.contains(&text)),
        "the delivery email says {text}"
    );
    let _ = id;
}

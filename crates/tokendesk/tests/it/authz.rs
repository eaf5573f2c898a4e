//! The authorization matrix: every API route (from the served OpenAPI document) and every page
//! route (from `pages::ROUTES`) × who is asking → the status they get. A route without a row
//! fails the test, and so does a row for a route that no longer exists.
//!
//! Each cell is asked on objects of its own, made for it in the state its action needs (a
//! submitted request to approve, a failed one to retry, a delivered token to revoke, …), so
//! that a cell's answer says what the asker may do, not what an earlier cell did.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tokendesk::app::RoleBook;
use tokendesk::config::{AuthConfig, LimitsConfig};
use tokendesk::web::pages::{DEMO_ROUTES, ROUTES};
use tokendesk::web::{API_PREFIX, WebOptions};

use crate::support::app::{Api, Resp};
use crate::support::db::TestDb;
use crate::support::world::{World, login};

const OWNER: &str = "sam.student";
const OTHER: &str = "stella.student";
const APPROVER: &str = "andy.approver";
const HELPDESK: &str = "theo.teacher";
const AUDITOR: &str = "aude.auditor";
const ADMIN: &str = "ada.admin";
/// Stands for the matrix's service key (an auditor key, made at the start): sent as
/// `Authorization: Bearer`.
const KEY: &str = "key:matrix-audit";
/// Stands for a person signed in by OIDC on a second server (`auth.mode = "oidc"`, same
/// database) who is an approver only because of a group: sent as the session cookie.
const OIDC: &str = "session:olga.oidc";

/// The columns: signed out, the requester who owns the objects, another requester, one person
/// of each role, an auditor's service key, then an approver by group signed in by OIDC (its
/// column is not in [`MATRIX`]: it must answer as the approver's does, except [`OIDC_DIFFERS`]).
const WHO: [Option<&str>; 9] = [
    None,
    Some(OWNER),
    Some(OTHER),
    Some(APPROVER),
    Some(HELPDESK),
    Some(AUDITOR),
    Some(ADMIN),
    Some(KEY),
    Some(OIDC),
];

/// Where the OIDC approver's answer differs from the header-signed approver's, and why.
const OIDC_DIFFERS: &[(&str, &str, u16)] = &[
    // With OIDC these exist: the sign-in begins (its provider is unreachable here: a page that
    // says so), and a callback without the provider's answer is a page that says so.
    ("GET", "/auth/login", 502),
    ("GET", "/auth/callback", 400),
];

/// `(method, path, [signed out, owner, other requester, approver, help desk, auditor, admin])`.
/// Paths are as routed: `{id}` and the like are filled with the cell's own objects.
///
/// Reading the table: 401 signed out; 404 for objects one may not know of (another person's
/// request, token or envelope); 403 for what one may see but not do, or for pages of a role one
/// does not hold; 2xx (303 after a form) for what one may do.
/// A path with a query is an extra row for its route: whose things a list may show.
#[rustfmt::skip]
const MATRIX: &[(&str, &str, [u16; 8])] = &[
    // Outside the API: for everyone, signed in or not.
    ("GET",  "/healthz",                            [200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/readyz",                             [200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/api/openapi.json",                   [200, 200, 200, 200, 200, 200, 200, 200]),
    // For the monitoring system's key only, and off here (no metrics.bearer_key): a person or
    // a service key gets nothing either way.
    ("GET",  "/metrics",                            [404, 404, 404, 404, 404, 404, 404, 404]),
    ("GET",  "/static/{file}",                      [200, 200, 200, 200, 200, 200, 200, 200]),
    // The JSON API.
    ("GET",  "/api/v1/me",                          [401, 200, 200, 200, 200, 200, 200, 200]),
    // Sessions: none behind a sign-in proxy, so ending one finds nothing; ending all of a
    // person's is theirs, or the help desk's.
    ("GET",  "/api/v1/me/sessions",                 [401, 200, 200, 200, 200, 200, 200, 200]),
    ("POST", "/api/v1/me/sessions/{id}/end",        [401, 404, 404, 404, 404, 404, 404, 404]),
    ("POST", "/api/v1/people/{login}/sessions/end", [401, 200, 404, 403, 200, 404, 200, 404]),
    // Incidents: anyone reports a leak; the help desk revokes a person's tokens; admins any.
    ("POST", "/api/v1/reports",                     [401, 200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/api/v1/revocations/preview",         [401, 422, 422, 422, 422, 422, 422, 422]),
    ("GET",  "/api/v1/revocations/preview?owner=sam.student", [401, 403, 403, 403, 200, 403, 200, 403]),
    ("POST", "/api/v1/revocations",                 [401, 403, 403, 403, 202, 403, 202, 403]),
    ("GET",  "/api/v1/revocations/{id}",            [401, 404, 404, 404, 200, 404, 200, 404]),
    ("POST", "/api/v1/people/{login}/revoke-all",   [401, 404, 404, 403, 202, 404, 202, 404]),
    ("POST", "/api/v1/requests",                    [401, 201, 201, 201, 201, 201, 201, 403]),
    ("GET",  "/api/v1/requests",                    [401, 200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/api/v1/requests?requester=sam.student", [401, 200, 403, 200, 200, 403, 200, 403]),
    ("GET",  "/api/v1/requests/{id}",               [401, 200, 404, 200, 200, 404, 200, 404]),
    ("POST", "/api/v1/requests/{id}/approve",       [401, 403, 404, 200, 403, 404, 200, 404]),
    ("POST", "/api/v1/requests/{id}/deny",          [401, 403, 404, 200, 403, 404, 200, 404]),
    ("POST", "/api/v1/requests/{id}/cancel",        [401, 200, 404, 403, 403, 404, 403, 404]),
    ("POST", "/api/v1/requests/{id}/retry",         [401, 403, 404, 200, 403, 404, 200, 404]),
    ("POST", "/api/v1/requests/{id}/resend-link",   [401, 403, 404, 403, 200, 404, 200, 404]),
    ("GET",  "/api/v1/tokens",                      [401, 200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/api/v1/tokens?owner=sam.student",    [401, 200, 403, 200, 200, 403, 200, 403]),
    ("GET",  "/api/v1/tokens/{id}",                 [401, 200, 404, 200, 200, 404, 200, 404]),
    ("POST", "/api/v1/tokens/{id}/revoke",          [401, 200, 404, 403, 200, 404, 200, 404]),
    ("GET",  "/api/v1/envelopes/{id}",              [401, 200, 404, 404, 404, 404, 404, 404]),
    ("POST", "/api/v1/envelopes/{id}/reveal",       [401, 200, 404, 404, 404, 404, 404, 404]),
    ("POST", "/api/v1/envelopes/{id}/burn",         [401, 200, 404, 404, 404, 404, 404, 404]),
    ("GET",  "/api/v1/mailbox",                     [401, 200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/api/v1/mailbox?to=sam.student",      [401, 200, 403, 403, 403, 403, 200, 403]),
    ("GET",  "/api/v1/audit",                       [401, 403, 403, 403, 403, 200, 200, 200]),
    ("POST", "/api/v1/tokens/{id}/check-activation", [401, 200, 404, 403, 403, 404, 403, 404]),
    ("POST", "/api/v1/tokens/{id}/renew",           [401, 201, 404, 403, 403, 404, 403, 404]),
    ("GET",  "/api/v1/me/calendar",                 [401, 200, 200, 200, 200, 200, 200, 200]),
    ("POST", "/api/v1/me/calendar",                 [401, 200, 200, 200, 200, 200, 200, 403]),
    ("POST", "/api/v1/me/calendar/stop",            [401, 200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/api/v1/orphans",                     [401, 403, 403, 403, 403, 403, 200, 403]),
    ("POST", "/api/v1/orphans/{id}/delete",         [401, 403, 403, 403, 403, 403, 200, 403]),
    // The pages (a refused form is a page too; 303 is a form that went through).
    ("GET",  "/",                                   [401, 200, 200, 200, 200, 200, 200, 401]),
    ("GET",  "/me",                                 [401, 200, 200, 200, 200, 200, 200, 401]),
    ("GET",  "/requests/new",                       [401, 200, 200, 200, 200, 200, 200, 401]),
    ("POST", "/requests/new",                       [401, 303, 303, 303, 303, 303, 303, 401]),
    ("GET",  "/requests/{id}",                      [401, 200, 404, 200, 200, 404, 200, 401]),
    ("POST", "/requests/{id}/approve",              [401, 403, 404, 303, 403, 404, 303, 401]),
    ("POST", "/requests/{id}/deny",                 [401, 403, 404, 303, 403, 404, 303, 401]),
    ("POST", "/requests/{id}/cancel",               [401, 303, 404, 403, 403, 404, 403, 401]),
    ("POST", "/requests/{id}/retry",                [401, 403, 404, 303, 403, 404, 303, 401]),
    ("POST", "/requests/{id}/resend-link",          [401, 403, 404, 403, 303, 404, 303, 401]),
    ("POST", "/tokens/{id}/revoke",                 [401, 303, 404, 403, 303, 404, 303, 401]),
    // A token's page: its owner, the help desk and admins (approvers see the request page).
    ("GET",  "/tokens/{id}",                        [401, 200, 404, 403, 200, 404, 200, 401]),
    ("POST", "/tokens/{id}/renew",                  [401, 303, 404, 403, 403, 404, 403, 401]),
    ("POST", "/tokens/{id}/check-activation",       [401, 303, 404, 403, 403, 404, 403, 401]),
    ("POST", "/me/calendar",                        [401, 303, 303, 303, 303, 303, 303, 401]),
    ("POST", "/me/calendar/stop",                   [401, 303, 303, 303, 303, 303, 303, 401]),
    // The feed's address is its key: whoever has it reads it, signed in or not.
    ("GET",  "/calendar/{file}",                    [200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/orphans",                            [401, 403, 403, 403, 403, 403, 200, 401]),
    ("POST", "/orphans/{id}/delete",                [401, 403, 403, 403, 403, 403, 303, 401]),
    ("GET",  "/queue",                              [401, 403, 403, 200, 403, 403, 200, 401]),
    ("GET",  "/people",                             [401, 403, 403, 200, 200, 403, 200, 401]),
    ("GET",  "/people?q=sam",                       [401, 403, 403, 200, 200, 403, 200, 401]),
    ("GET",  "/people/{login}",                     [401, 200, 403, 200, 200, 403, 200, 401]),
    ("GET",  "/audit",                              [401, 403, 403, 403, 403, 200, 200, 401]),
    ("GET",  "/audit/export.jsonl",                 [401, 403, 403, 403, 403, 200, 200, 401]),
    ("GET",  "/audit/export.csv",                   [401, 403, 403, 403, 403, 200, 200, 401]),
    // Reports: auditors and admins (the file is one report's CSV).
    ("GET",  "/reports",                            [401, 403, 403, 403, 403, 200, 200, 401]),
    ("GET",  "/reports/{file}",                     [401, 403, 403, 403, 403, 200, 200, 401]),
    ("GET",  "/mailbox",                            [401, 200, 200, 200, 200, 200, 200, 401]),
    ("GET",  "/e/{id}",                             [401, 200, 404, 404, 404, 404, 404, 401]),
    ("POST", "/e/{id}/burn",                        [401, 303, 404, 404, 404, 404, 404, 401]),
    ("POST", "/me/sessions/{id}/end",               [401, 404, 404, 404, 404, 404, 404, 401]),
    ("POST", "/people/{login}/sessions/end",        [401, 303, 404, 403, 303, 404, 303, 401]),
    ("POST", "/people/{login}/revoke-all",          [401, 404, 404, 403, 303, 404, 303, 401]),
    ("GET",  "/report",                             [401, 200, 200, 200, 200, 200, 200, 401]),
    ("POST", "/report",                             [401, 303, 303, 303, 303, 303, 303, 401]),
    ("GET",  "/revocations",                        [401, 403, 403, 403, 200, 403, 200, 401]),
    ("POST", "/revocations",                        [401, 403, 403, 403, 303, 403, 303, 401]),
    ("GET",  "/revocations/{id}",                   [401, 404, 404, 404, 200, 404, 200, 401]),
    // OIDC sign-in exists only with auth.mode = "oidc"; signing out and its page, always.
    ("GET",  "/auth/login",                         [404, 404, 404, 404, 404, 404, 404, 404]),
    ("GET",  "/auth/callback",                      [404, 404, 404, 404, 404, 404, 404, 404]),
    ("POST", "/auth/logout",                        [303, 303, 303, 303, 303, 303, 303, 303]),
    ("GET",  "/auth/signed-out",                    [200, 200, 200, 200, 200, 200, 200, 200]),
    // The demo's sign-in exists only in the demo (this service signs in by header).
    ("GET",  "/demo/login",                         [404, 404, 404, 404, 404, 404, 404, 404]),
    ("POST", "/demo/login",                         [404, 404, 404, 404, 404, 404, 404, 404]),
    ("POST", "/demo/logout",                        [404, 404, 404, 404, 404, 404, 404, 404]),
];

/// What a cell's path needs made first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Nothing,
    /// A request of the owner's, submitted.
    Submitted,
    /// A request of the owner's whose issuance failed.
    Failed,
    /// A request of the owner's, issued, its link never opened.
    Issued,
    /// A token in Canvas that says tokendesk made it, found by reconciliation.
    Orphan,
    /// The owner's calendar feed.
    Calendar,
    /// A bulk revocation run (of the owner's tokens).
    Revocation,
}

fn needs(method: &str, path: &str) -> Needs {
    let path = path.split('?').next().unwrap_or_default();
    let action = path.rsplit('/').next().unwrap_or_default();
    if path.contains("/requests/{id}") {
        match action {
            "retry" => Needs::Failed,
            "resend-link" => Needs::Issued,
            _ => Needs::Submitted,
        }
    } else if path.contains("/tokens/{id}")
        || path.contains("/envelopes/{id}")
        || path.contains("/e/{id}")
    {
        Needs::Issued
    } else if path.contains("/orphans/{id}") {
        Needs::Orphan
    } else if path.starts_with("/calendar/") {
        Needs::Calendar
    } else if path.contains("/revocations/{id}") {
        Needs::Revocation
    } else if method == "GET" && path.starts_with("/api/v1/mailbox") || path == "/mailbox" {
        // Something in the owner's mailbox.
        Needs::Issued
    } else {
        Needs::Nothing
    }
}

/// The objects a cell works on.
#[derive(Debug, Default)]
struct Objects {
    request: Option<i64>,
    token: Option<i64>,
    envelope: Option<String>,
    orphan: Option<i64>,
    /// The calendar feed's file name (`SECRET.ics`).
    calendar: Option<String>,
    revocation: Option<i64>,
}

/// The service with a person of each role, the limits off (the matrix asks a lot in a minute).
async fn matrix_api() -> Api {
    let world = World::tweaked(TestDb::sqlite().await, |parts| {
        let set = |names: &[&str]| names.iter().map(|n| login(n)).collect();
        parts.roles = RoleBook {
            approvers: set(&[APPROVER]),
            helpdesk: set(&[HELPDESK]),
            auditors: set(&[AUDITOR]),
            admins: set(&[ADMIN]),
        };
        // Every cell makes its own requests and tokens.
        parts.policy.max_open_requests_per_person = 1000;
        parts.policy.max_active_tokens_per_person = 1000;
    })
    .await;
    // Canvas knows the people of the simulator's seed; these two it is told of.
    world.known_person(APPROVER, 9001).await;
    world.known_person(AUDITOR, 9002).await;
    let off = LimitsConfig {
        submissions_per_hour: 0,
        reveals_per_hour: 0,
        envelope_lookups_per_minute: 0,
        sign_ins_per_minute: 0,
        ..LimitsConfig::default()
    };
    let options = WebOptions {
        limits: off,
        ..WebOptions::default()
    };
    Api::on(world, AuthConfig::default(), options).await
}

/// A second server on the matrix's database, signing in by OIDC (its provider is never
/// reached: sessions are made directly, as the callback makes them).
async fn oidc_server(api: &Api) -> crate::support::app::Server {
    let server = crate::support::app::oidc_mode_server(&api.world, &["canvas-admins"]).await;
    // Canvas knows the person (some cells ask for tokens).
    api.world
        .known_person(OIDC.trim_start_matches("session:"), 9003)
        .await;
    server
}

/// A fresh OIDC session of the approver by group, as the callback makes it: the cookie. (Each
/// cell signs in anew: cells move the clock, and an hour unused ends a session.)
async fn oidc_session(api: &Api) -> String {
    use tokendesk::app::{SessionKind, SignIn};
    let roles = tokendesk::config::RolesConfig {
        approver_groups: vec!["canvas-admins".into()],
        ..Default::default()
    };
    let groups = tokendesk::web::oidc::GroupRoles::from_config(&roles);
    let sign_in = SignIn {
        login: login(OIDC.trim_start_matches("session:")),
        kind: SessionKind::Oidc,
        roles: groups.roles_of(&["canvas-admins".to_owned(), "staff".to_owned()]),
        email: None,
        name: None,
        id_token: None,
        user_agent: None,
    };
    let cookie = api
        .world
        .app
        .start_session(&sign_in, &Default::default())
        .await
        .unwrap();
    format!("Cookie tokendesk_session={cookie}")
}

async fn make(api: &Api, needs: Needs) -> Objects {
    let id = match needs {
        Needs::Nothing => return Objects::default(),
        Needs::Submitted => api.submit(OWNER).await,
        Needs::Failed => {
            let id = api.submit(OWNER).await;
            api.world.sim.set_fail_rate(1.0);
            api.post(ADMIN, &format!("/api/v1/requests/{id}/approve"), json!({}))
                .await
                .expect(200);
            for _ in 0..10 {
                tokendesk::jobs::drain(&api.world.app).await.unwrap();
                api.world.clock.advance(time::Duration::minutes(15));
            }
            api.world.sim.set_fail_rate(0.0);
            let r = api
                .get(ADMIN, &format!("/api/v1/requests/{id}"))
                .await
                .expect(200)
                .json();
            assert_eq!(r["state"], "failed", "{r}");
            id
        }
        Needs::Issued => {
            let r = api.issued(OWNER).await;
            return Objects {
                request: r["id"].as_i64(),
                token: r["token_id"].as_i64(),
                envelope: r["envelope_id"].as_str().map(str::to_owned),
                ..Objects::default()
            };
        }
        Needs::Orphan => {
            // A token left in Canvas that tokendesk does not know, found by reconciliation.
            api.world
                .canvas
                .create_token(
                    &tokendesk_canvas::UserRef::SisLoginId(OWNER.into()),
                    &tokendesk_canvas::NewToken::new("tokendesk #999999: left behind".to_owned()),
                )
                .await
                .unwrap();
            api.world.app.reconcile().await.unwrap();
            let orphans = api
                .world
                .app
                .orphans(&api.world.actor(ADMIN))
                .await
                .unwrap();
            return Objects {
                orphan: orphans.iter().map(|o| o.id).max(),
                ..Objects::default()
            };
        }
        Needs::Revocation => {
            let run = api
                .world
                .app
                .start_revocation(
                    &api.world.actor(ADMIN),
                    tokendesk::domain::request::RevokeFilter::Owner(login(OWNER)),
                    "the matrix asks",
                    None,
                    &Default::default(),
                )
                .await
                .unwrap();
            return Objects {
                revocation: Some(run.id),
                ..Objects::default()
            };
        }
        Needs::Calendar => {
            let url = api
                .world
                .app
                .new_calendar(&api.world.actor(OWNER), &Default::default())
                .await
                .unwrap();
            return Objects {
                calendar: url.rsplit('/').next().map(str::to_owned),
                ..Objects::default()
            };
        }
    };
    Objects {
        request: Some(id),
        ..Objects::default()
    }
}

/// The path with its parameters filled in.
fn fill(path: &str, objects: &Objects, asset: &str) -> String {
    let id = if path.contains("/sessions/") {
        Some("no-such-session".to_owned())
    } else if path.contains("/revocations/") {
        objects.revocation.map(|r| r.to_string())
    } else if path.contains("/orphans/") {
        objects.orphan.map(|o| o.to_string())
    } else if path.contains("/tokens/") {
        objects.token.map(|t| t.to_string())
    } else if path.contains("/envelopes/") || path.starts_with("/e/") {
        objects.envelope.clone()
    } else {
        objects.request.map(|r| r.to_string())
    };
    let file = if path.starts_with("/calendar/") {
        objects.calendar.clone().unwrap_or_default()
    } else if path.starts_with("/reports/") {
        format!("{}.csv", tokendesk::app::Chart::ALL[0].slug())
    } else {
        asset.to_owned()
    };
    let mut filled = path.replace("{login}", OWNER).replace("{file}", &file);
    if let Some(id) = id {
        filled = filled.replace("{id}", &id);
    }
    assert!(!filled.contains('{'), "nothing to fill {filled} with");
    filled
}

/// The JSON body an API call needs to get past input checks.
fn api_body(api: &Api, path: &str) -> Value {
    if path.ends_with("/requests") {
        json!({
            "purpose": "grading scripts for my course sections",
            "expires_on": api.world.today_plus(30),
        })
    } else if path.ends_with("/renew") {
        json!({"expires_on": api.world.today_plus(60)})
    } else if path.ends_with("/reports") {
        json!({"value": "zzzzz", "where": "the matrix"})
    } else if path.ends_with("/revocations") {
        json!({"owner": OWNER, "reason": "the matrix asks"})
    } else if path.ends_with("/deny") || path.ends_with("/revoke") {
        json!({"reason": "the matrix asks"})
    } else {
        json!({})
    }
}

/// The form fields a page POST needs to get past input checks (besides the CSRF token).
fn form_fields(api: &Api, path: &str) -> Vec<(&'static str, String)> {
    if path == "/requests/new" {
        vec![
            ("purpose", "Grading scripts for my course sections".into()),
            ("expires_on", api.world.today_plus(30)),
            ("ack", "yes".into()),
        ]
    } else if path.ends_with("/deny") || path.ends_with("/revoke") {
        vec![("reason", "the matrix asks".into())]
    } else if path == "/report" {
        vec![("value", "zzzzz".into()), ("where", "the matrix".into())]
    } else if path == "/revocations" {
        vec![
            ("owner", OWNER.into()),
            ("reason", "the matrix asks".into()),
        ]
    } else if path.ends_with("/renew") {
        vec![
            ("expires_on", api.world.today_plus(60)),
            ("purpose", "Grading scripts for my course sections".into()),
        ]
    } else {
        vec![]
    }
}

/// The CSRF cookie and field of `who`'s session, from the request form (none signed out).
async fn csrf(api: &Api, base: &str, who: Option<&str>) -> Option<(String, String)> {
    let page = api
        .send(who, api.client.get(format!("{base}/requests/new")))
        .await;
    let cookie = page
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tokendesk_csrf="))?
        .split(';')
        .next()?
        .to_owned();
    let marker = "name=\"csrf\" value=\"";
    let start = page.text.find(marker)? + marker.len();
    let field = page.text[start..].split('"').next()?.to_owned();
    Some((cookie, field))
}

/// Asks one cell, of the server at `base`.
async fn ask(
    api: &Api,
    base: &str,
    method: &str,
    path: &str,
    who: Option<&str>,
    asset: &str,
) -> Resp {
    let objects = make(api, needs(method, path)).await;
    let session = match who {
        Some(OIDC) => Some(oidc_session(api).await),
        _ => None,
    };
    let who = session.as_deref().or(who);
    let url = format!("{base}{}", fill(path, &objects, asset));
    let is_api = path.starts_with(API_PREFIX);
    let builder = match (method, is_api) {
        ("GET", _) => api.client.get(url),
        ("POST", true) => api.client.post(url).json(&api_body(api, path)),
        ("POST", false) => {
            let mut fields = form_fields(api, path);
            let mut builder = api.client.post(url);
            if let Some((cookie, field)) = csrf(api, base, who).await {
                fields.push(("csrf", field));
                builder = builder.header("Cookie", cookie);
            }
            builder.form(&fields)
        }
        _ => panic!("no way to ask {method} {path}"),
    };
    let mut r = api.send(who, builder).await;
    if r.status == 303 && refusal_flash(&r) {
        // Sent back with the reason on the page: refused for the state of things.
        r.status = REFUSED_BACK;
    }
    r
}

/// A page form refused for the state of things (not for who asked) returns to its page with the
/// reason in a flash message; such cells show as this.
const REFUSED_BACK: u16 = 409;

/// Whether a redirect carries an error flash (signed: 44 characters of MAC, then `e.` or `o.`).
fn refusal_flash(r: &Resp) -> bool {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("tokendesk_flash="))
        .any(|v| v.get(44..).is_some_and(|rest| rest.starts_with("e.")))
}

/// Every route the service has: the API's from its document, the pages' from their list.
async fn every_route(api: &Api) -> BTreeSet<(String, String)> {
    let doc = api.get_anon("/api/openapi.json").await.expect(200).json();
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        // Paths with servers of their own are outside `/api/v1`.
        let full = if item.get("servers").is_some() {
            path.clone()
        } else {
            format!("{API_PREFIX}{path}")
        };
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.insert((method.to_uppercase(), full.clone()));
            }
        }
    }
    for route in ROUTES.iter().chain(DEMO_ROUTES) {
        for method in route.methods {
            routes.insert((method.to_uppercase(), route.path.to_owned()));
        }
    }
    routes
}

#[tokio::test]
async fn who_may_do_what_on_every_route() {
    let api = matrix_api().await;
    let home = api.get(OWNER, "/me").await.expect(200);
    let start = home.text.find("/static/").expect("a stylesheet link") + "/static/".len();
    let asset: String = home.text[start..]
        .chars()
        .take_while(|c| *c != '"')
        .collect();

    let made = api
        .world
        .app
        .create_key(
            "matrix-audit",
            "auditor",
            time::Duration::days(30),
            &Default::default(),
        )
        .await
        .unwrap();
    let key = format!("Bearer {}", made.value);
    let oidc_server = oidc_server(&api).await;

    let routes = every_route(&api).await;
    let route_of = |path: &str| path.split('?').next().unwrap_or_default().to_owned();
    let rows: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), route_of(p)))
        .collect();
    let mut problems = Vec::new();
    for (method, path) in routes.difference(&rows) {
        problems.push(format!("{method} {path}: a route without a row in MATRIX"));
    }
    for (method, path) in rows.difference(&routes) {
        problems.push(format!(
            "{method} {path}: a row for a route that does not exist"
        ));
    }

    let mut observed = Vec::new();
    let mut cells = 0;
    let asked = routes.iter().map(|(m, p)| (m.clone(), p.clone())).chain(
        MATRIX
            .iter()
            .filter(|(_, p, _)| p.contains('?'))
            .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned())),
    );
    for (method, path) in asked {
        let mut statuses = [0u16; 9];
        for (i, who) in WHO.iter().enumerate() {
            let (base, who) = match *who {
                Some(KEY) => (api.server.base.as_str(), Some(key.as_str())),
                Some(OIDC) => (oidc_server.base.as_str(), Some(OIDC)),
                other => (api.server.base.as_str(), other),
            };
            statuses[i] = ask(&api, base, &method, &path, who, &asset).await.status;
            cells += 1;
        }
        let oidc_expected = OIDC_DIFFERS
            .iter()
            .find(|(m, p, _)| *m == method && *p == path)
            .map_or(statuses[3], |(_, _, status)| *status);
        if statuses[8] != oidc_expected {
            problems.push(format!(
                "{method} {path}: the OIDC approver got {}, expected {oidc_expected}",
                statuses[8]
            ));
        }
        let statuses: [u16; 8] = statuses[..8].try_into().unwrap();
        observed.push(format!("    ({method:?}, {path:?}, {statuses:?}),"));
        if let Some((_, _, expected)) = MATRIX.iter().find(|(m, p, _)| *m == method && *p == path)
            && *expected != statuses
        {
            problems.push(format!(
                "{method} {path}: expected {expected:?}, got {statuses:?} \
                 (signed out, owner, other, approver, help desk, auditor, admin, auditor key)"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nwhat every route answers now:\n{}",
        problems.join("\n"),
        observed.join("\n")
    );
    assert_eq!(cells, MATRIX.len() * WHO.len());
}

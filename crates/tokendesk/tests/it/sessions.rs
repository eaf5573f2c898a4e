//! Sessions in the database (OIDC and demo) on a moved clock, and service keys on the JSON API.
//! The OpenID Connect flow itself runs against a real provider in tests/browser/oidc.test.mjs.

use serde_json::json;
use time::Duration;
use tokendesk::app::{Ctx, SessionKind, SignIn};
use tokendesk::config::AuthConfig;
use tokendesk::domain::Roles;
use tokendesk::web::WebOptions;

use crate::support::app::Api;
use crate::support::db::TestDb;
use crate::support::world::{World, login};

fn sign_in(who: &str, roles: Roles) -> SignIn {
    SignIn {
        login: login(who),
        kind: SessionKind::Oidc,
        roles,
        email: Some(format!("{who}@example.edu")),
        name: None,
        id_token: Some("h.p.s".into()),
        user_agent: None,
    }
}

/// NIST SP 800-63B AAL2: a session ends after 60 minutes unused, and 12 hours after sign-in
/// however much it is used; the sweep deletes what ended.
#[tokio::test]
async fn sessions_end_when_idle_or_too_old() {
    for db in TestDb::all().await {
        let world = World::new(db).await;
        let app = &world.app;
        let ctx = Ctx::default();
        let roles = Roles {
            approver: true,
            ..Roles::default()
        };

        // Idle: used at 59 minutes, it lives on; 60 minutes unused, it is gone.
        let cookie = app
            .start_session(&sign_in("sam.student", roles), &ctx)
            .await
            .unwrap();
        let live = app.session(&cookie).await.unwrap().expect("a live session");
        assert_eq!(live.login, login("sam.student"));
        assert!(live.roles.approver, "the roles the groups gave");
        world.clock.advance(Duration::minutes(59));
        assert!(app.session(&cookie).await.unwrap().is_some());
        world.clock.advance(Duration::minutes(59));
        assert!(
            app.session(&cookie).await.unwrap().is_some(),
            "used 59 minutes ago"
        );
        world.clock.advance(Duration::minutes(60));
        assert!(
            app.session(&cookie).await.unwrap().is_none(),
            "idle for an hour"
        );

        // Absolute: used every 30 minutes, it still ends 12 hours after sign-in.
        let cookie = app
            .start_session(&sign_in("sam.student", roles), &ctx)
            .await
            .unwrap();
        for _ in 0..23 {
            world.clock.advance(Duration::minutes(30));
            assert!(app.session(&cookie).await.unwrap().is_some());
        }
        world.clock.advance(Duration::minutes(30));
        assert!(
            app.session(&cookie).await.unwrap().is_none(),
            "12 hours after sign-in"
        );

        // Each sign-in is a new session with a new id; the cookie is not the stored id.
        let a = app
            .start_session(&sign_in("sam.student", roles), &ctx)
            .await
            .unwrap();
        let b = app
            .start_session(&sign_in("sam.student", roles), &ctx)
            .await
            .unwrap();
        assert_ne!(a, b);
        let owner = world.actor("sam.student");
        let listed = app.sessions_of(&owner, &owner.login).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|s| s.public_id != a && s.public_id != b));
        // Ending one leaves the other; the help desk ends all; others may not.
        app.end_own_session(&owner, &listed[0].public_id, &ctx)
            .await
            .unwrap();
        assert_eq!(
            app.sessions_of(&owner, &owner.login).await.unwrap().len(),
            1
        );
        let stella = world.actor("stella.student");
        assert!(
            app.end_all_sessions(&stella, &owner.login, &ctx)
                .await
                .is_err()
        );
        let helpdesk = world.actor("theo.teacher");
        // (The two timed-out sessions had not been ended yet: they are ended too.)
        assert_eq!(
            app.end_all_sessions(&helpdesk, &owner.login, &ctx)
                .await
                .unwrap(),
            3
        );
        assert!(app.session(&a).await.unwrap().is_none());
        assert!(app.session(&b).await.unwrap().is_none());

        // The sweep deletes ended and expired sessions.
        let report = tokendesk::jobs::sweep(app).await.unwrap();
        assert!(report.sessions_purged >= 3, "{report:?}");
        let mut conn = world.db.store.pool().acquire().await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(left, 0);
        // Nothing stored is the cookie itself.
        let hashes: Vec<String> = sqlx::query_scalar("SELECT id_hash FROM sessions")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert!(!hashes.contains(&a));
    }
}

/// A service key acts on the JSON API with exactly its role, as `key:NAME`; expired and revoked
/// keys are told which; pages ignore keys.
#[tokio::test]
async fn service_keys_act_with_exactly_their_role() {
    let api = Api::with(
        TestDb::sqlite().await,
        AuthConfig::default(),
        WebOptions::default(),
    )
    .await;
    let app = &api.world.app;
    let ctx = Ctx::default();
    let auditor = app
        .create_key("audit-export", "auditor", Duration::days(90), &ctx)
        .await
        .unwrap();
    let helpdesk = app
        .create_key("helpdesk-bot", "helpdesk", Duration::days(1), &ctx)
        .await
        .unwrap();
    assert!(auditor.value.starts_with("tdk_") && auditor.value.len() > 40);
    let bearer = |v: &str| format!("Bearer {v}");

    // Who it is.
    let me = api
        .get(&bearer(&auditor.value), "/api/v1/me")
        .await
        .expect(200)
        .json();
    assert_eq!(
        me,
        json!({"login": "key:audit-export", "roles": ["auditor"]})
    );
    // Its role: the audit trail, which shows the key being made.
    let audit = api
        .get(&bearer(&auditor.value), "/api/v1/audit")
        .await
        .expect(200)
        .json();
    assert!(audit.to_string().contains("key.create"), "{audit}");
    // Not more: an auditor key cannot approve, look people up, or ask for a token.
    let id = api.submit("sam.student").await;
    api.post(
        &bearer(&auditor.value),
        &format!("/api/v1/requests/{id}/approve"),
        json!({}),
    )
    .await
    .expect(404);
    api.post(
        &bearer(&auditor.value),
        "/api/v1/requests",
        json!({"purpose": "grading scripts for my course sections", "expires_on": api.world.today_plus(30)}),
    )
    .await
    .expect_error(403, "forbidden");
    // A help-desk key revokes, and the audit trail names it.
    let issued = api.issued("stella.student").await;
    let token = issued["token_id"].as_i64().unwrap();
    api.post(
        &bearer(&helpdesk.value),
        &format!("/api/v1/tokens/{token}/revoke"),
        json!({"reason": "reported by the bot"}),
    )
    .await
    .expect(200);
    let trail = api
        .get("ada.admin", "/api/v1/audit")
        .await
        .expect(200)
        .json();
    assert!(
        trail.to_string().contains("\"actor\":\"key:helpdesk-bot\""),
        "{trail}"
    );
    // Pages do not take keys.
    let page = api.get(&bearer(&auditor.value), "/audit").await;
    assert_eq!(page.status, 401);
    // Unknown, revoked and expired keys: 401, saying which.
    api.get(&bearer("tdk_nonsense"), "/api/v1/me")
        .await
        .expect_error(401, "unauthenticated");
    assert!(app.revoke_key(auditor.id, &ctx).await.unwrap());
    assert!(
        !app.revoke_key(auditor.id, &ctx).await.unwrap(),
        "revoked before"
    );
    let r = api
        .get(&bearer(&auditor.value), "/api/v1/me")
        .await
        .expect_error(401, "key_revoked");
    assert!(r.text.contains("audit-export"), "{}", r.text);
    api.world.clock.advance(Duration::days(2));
    let r = api
        .get(&bearer(&helpdesk.value), "/api/v1/me")
        .await
        .expect_error(401, "key_expired");
    assert!(r.text.contains("expired on"), "{}", r.text);
    // Names are unique, roles are checked.
    assert!(
        app.create_key("helpdesk-bot", "helpdesk", Duration::days(1), &ctx)
            .await
            .is_err()
    );
    assert!(
        app.create_key("x", "admin", Duration::days(1), &ctx)
            .await
            .is_err()
    );
    // No key value is stored.
    let mut conn = api.world.db.store.pool().acquire().await.unwrap();
    let hashes: Vec<String> = sqlx::query_scalar("SELECT key_hash FROM service_keys")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert!(
        hashes
            .iter()
            .all(|h| *h != auditor.value && *h != helpdesk.value && h.len() == 64)
    );
}

/// Every failure at the OIDC callback is a page that says what happened and how to retry,
/// never a bare 400; a provider that does not answer is a page too; signed-out pages send the
/// browser to sign in.
#[tokio::test]
async fn oidc_failures_are_pages_that_say_what_to_do() {
    let world = World::new(TestDb::sqlite().await).await;
    let server = crate::support::app::oidc_mode_server(&world, &[]).await;
    let client = crate::support::app::client();
    let get = |path: &str| client.get(format!("{}{path}", server.base)).send();
    for (path, status, says) in [
        (
            "/auth/callback?error=access_denied&error_description=The+user+said+no",
            401,
            "declined",
        ),
        (
            "/auth/callback?error=temporarily_unavailable&error_description=%1Bbad",
            401,
            "temporarily_unavailable",
        ),
        (
            "/auth/callback?code=abc&state=def",
            400,
            "state does not match",
        ),
        ("/auth/callback", 400, "missing its code or state"),
        ("/auth/login?next=/me", 502, "did not answer"),
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let html = r.text().await.unwrap();
        assert!(html.contains(says), "{path}: {html}");
        assert!(
            html.contains("Sign in again") && html.contains("href=\"/auth/login\""),
            "{path}"
        );
        assert!(
            !html.contains('\u{1b}'),
            "control characters are not echoed"
        );
    }
    // A page needing a person sends the browser to the provider by way of /auth/login.
    let r = get("/me").await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/auth/login?next=%2Fme");
    // The API says 401, as ever.
    assert_eq!(get("/api/v1/me").await.unwrap().status().as_u16(), 401);
}

/// With `auth.proxy_secret`, the login header (and `X-Forwarded-For`, `X-Request-Id`) is
/// believed only from a trusted address that also sends the secret: another process on the
/// proxy's host, which can reach tokendesk from the same address, is nobody.
#[tokio::test]
async fn a_proxy_secret_makes_the_login_header_the_proxys_alone() {
    const PROXY_SECRET: &str = "the-proxy-secret-0123456789abcdefghij";
    let auth = AuthConfig {
        proxy_secret: tokendesk::config::Secret::code(secrecy::SecretString::from(PROXY_SECRET)),
        strip_domain: Some("@example.edu".to_owned()),
        ..AuthConfig::default()
    };
    let api = Api::with(TestDb::sqlite().await, auth, WebOptions::default()).await;
    let me = |extra: Vec<(&'static str, &'static str)>| {
        let mut builder = api.client.get(api.url("/api/v1/me"));
        for (k, v) in extra {
            builder = builder.header(k, v);
        }
        api.send(Some("ada.admin"), builder)
    };
    // A local process without the secret: not signed in.
    me(vec![]).await.expect_error(401, "unauthenticated");
    me(vec![("X-Tokendesk-Proxy-Secret", "a-guess")])
        .await
        .expect_error(401, "unauthenticated");
    // The proxy, with it.
    let r = me(vec![("X-Tokendesk-Proxy-Secret", PROXY_SECRET)])
        .await
        .expect(200);
    assert_eq!(r.json()["login"], "ada.admin");
    // Shibboleth's scoped login: the configured scope is stripped, as with OIDC.
    let r = api
        .send(
            Some("Sam.Student@EXAMPLE.edu"),
            api.client
                .get(api.url("/api/v1/me"))
                .header("X-Tokendesk-Proxy-Secret", PROXY_SECRET),
        )
        .await
        .expect(200);
    assert_eq!(r.json()["login"], "sam.student");
    // A request id from a peer without the secret is not kept.
    let r = me(vec![("X-Request-Id", "chosen-by-the-client")]).await;
    assert_ne!(
        r.header("x-request-id").as_deref(),
        Some("chosen-by-the-client")
    );
    let r = me(vec![
        ("X-Request-Id", "chosen-by-the-proxy"),
        ("X-Tokendesk-Proxy-Secret", PROXY_SECRET),
    ])
    .await;
    assert_eq!(
        r.header("x-request-id").as_deref(),
        Some("chosen-by-the-proxy")
    );
}

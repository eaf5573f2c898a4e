//! The client against the Canvas simulator, started in-process on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use time::OffsetDateTime;
use tokendesk_canvas::{
    CanvasAccountId, CanvasClient, CanvasClientBuilder, CanvasError, CanvasTokenId, CanvasUserId,
    CreatedToken, ExposeSecret, NewToken, SecretString, ThrottleConfig, TokenRef, TokenRejection,
    TokenState, TokenUpdate, UserRef,
};
use tokendesk_canvas_sim::browser::{self, Session};
use tokendesk_canvas_sim::{
    DEFAULT_ADMIN_TOKEN, DEFAULT_STUDENT_TOKEN, Pagination, RunningSim, Seed, SeedToken, SeedUser,
    SimConfig, ThrottleSettings, generate_token_value,
};

const ADMIN: u64 = 1;
const STUDENT: u64 = 2;
const TEACHER: u64 = 4;
/// Seeded by `seed()`: many tokens, for pagination.
const HOARDER: u64 = 50;
const HOARDED_TOKENS: usize = 230;
/// Seeded by `seed()`: names matching "bulk", for multi-page search.
const BULK_USERS: u64 = 230;

fn seed() -> Seed {
    // Someone who is not an admin, has no SIS id and no tokens.
    let person = |id, name: String, login_id: String, email: String, role: &str| SeedUser {
        id,
        name,
        login_id,
        email,
        sis_user_id: None,
        admin: false,
        roles: vec![role.into()],
        tokens: vec![],
    };
    let mut seed = Seed::default();
    seed.users.push(SeedUser {
        sis_user_id: Some("D 9/1".into()),
        ..person(
            6,
            "Dana O'Neil".into(),
            "dana+qa@example.edu".into(),
            "dana@example.edu".into(),
            "teacher",
        )
    });
    seed.users.push(SeedUser {
        tokens: (0..HOARDED_TOKENS)
            .map(|_| SeedToken::active(generate_token_value()))
            .collect(),
        ..person(
            HOARDER,
            "Hank Hoarder".into(),
            "hank.hoarder".into(),
            "hank@example.edu".into(),
            "teacher",
        )
    });
    seed.users.extend((0..BULK_USERS).map(|i| {
        person(
            1000 + i,
            format!("Bulk Person {i:03}"),
            format!("bulk.person{i}"),
            format!("bulk{i}@example.edu"),
            "student",
        )
    }));
    seed
}

async fn start(config: SimConfig) -> RunningSim {
    tokendesk_canvas_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

async fn sim() -> RunningSim {
    start(SimConfig {
        seed: seed(),
        ..SimConfig::default()
    })
    .await
}

/// The simulator with `seed()`, taking `millis` over every API request.
async fn slow_sim(millis: u64) -> RunningSim {
    start(SimConfig {
        seed: seed(),
        latency: Duration::from_millis(millis),
        ..SimConfig::default()
    })
    .await
}

/// The simulator with `seed()`, and a client with the admin's token.
async fn sim_and_admin() -> (RunningSim, CanvasClient) {
    let sim = sim().await;
    let admin = client(&sim, DEFAULT_ADMIN_TOKEN);
    (sim, admin)
}

fn builder(sim: &RunningSim, token: &str) -> CanvasClientBuilder {
    CanvasClient::builder(sim.base_url(), SecretString::from(token))
}

fn client(sim: &RunningSim, token: &str) -> CanvasClient {
    builder(sim, token)
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .build()
        .unwrap()
}

fn client_with(sim: &RunningSim, token: &SecretString) -> CanvasClient {
    builder(sim, token.expose_secret())
        .max_retries(0)
        .build()
        .unwrap()
}

/// Who a token value belongs to, asked without retries.
async fn whoami(
    sim: &RunningSim,
    value: &SecretString,
) -> Result<tokendesk_canvas::User, CanvasError> {
    client_with(sim, value).get_user(&UserRef::Self_).await
}

fn in_days(days: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(days)
}

/// Creates a token, which must work.
async fn create(client: &CanvasClient, user: &UserRef, token: NewToken) -> CreatedToken {
    client.create_token(user, &token).await.unwrap()
}

/// Tries to create a token, which must fail.
async fn create_err(client: &CanvasClient, user: &UserRef, token: NewToken) -> CanvasError {
    client.create_token(user, &token).await.unwrap_err()
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, CanvasError>) {
    assert!(
        matches!(result, Err(CanvasError::NotFound { .. })),
        "{result:?}"
    );
}

/// Lists the tokens of user `HOARDER`; returns them and how many requests that took.
async fn list_hoarded(admin: &CanvasClient) -> (Vec<tokendesk_canvas::Token>, u64) {
    let before = admin.stats().requests;
    let user = UserRef::Id(CanvasUserId(HOARDER));
    let tokens = admin.list_user_tokens(&user).await.unwrap();
    (tokens, admin.stats().requests - before)
}

/// Updates a token of the admin's own, which must work.
async fn update(
    admin: &CanvasClient,
    id: &TokenRef,
    update: TokenUpdate,
) -> tokendesk_canvas::Token {
    admin
        .update_token(&UserRef::Self_, id, &update)
        .await
        .unwrap()
}

/// Signs in as `login` in the simulator's web UI and activates a pending token, as its owner
/// would in Canvas's Approved Integrations.
async fn activate(sim: &RunningSim, login: &str, id: CanvasTokenId) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = sim.base_url();
    let signed_in = http
        .get(format!("{base}{}", browser::sign_in_path(login)))
        .send()
        .await
        .unwrap();
    let session =
        Session::from_set_cookies(signed_in.headers().get_all(reqwest::header::SET_COOKIE))
            .expect("login sets a session and a CSRF cookie");
    let response = http
        .post(format!("{base}{}", browser::activation_path(id)))
        .header(reqwest::header::COOKIE, session.cookie_header())
        .header(browser::CSRF_HEADER, session.csrf_token())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

// ---- users ----------------------------------------------------------------------------------

#[tokio::test]
async fn get_user_in_all_four_forms() {
    let (sim, admin) = sim_and_admin().await;

    let me = admin.get_user(&UserRef::Self_).await.unwrap();
    assert_eq!(me.id, CanvasUserId(ADMIN));
    assert_eq!(me.login_id.as_deref(), Some("ada.admin"));

    let by_id = admin
        .get_user(&UserRef::Id(CanvasUserId(STUDENT)))
        .await
        .unwrap();
    assert_eq!(by_id.name, "Sam Student");
    assert_eq!(by_id.sis_user_id.as_deref(), Some("S1001"));
    assert!(!by_id.sortable_name.is_empty());

    let by_login = admin
        .get_user(&UserRef::SisLoginId("sam.student".into()))
        .await
        .unwrap();
    assert_eq!(by_login.id, CanvasUserId(STUDENT));

    let by_sis = admin
        .get_user(&UserRef::SisUserId("S1001".into()))
        .await
        .unwrap();
    assert_eq!(by_sis.id, CanvasUserId(STUDENT));

    // Special characters are percent-encoded in the path segment.
    let odd_login = admin
        .get_user(&UserRef::SisLoginId("dana+qa@example.edu".into()))
        .await
        .unwrap();
    assert_eq!(odd_login.id, CanvasUserId(6));
    let odd_sis = admin
        .get_user(&UserRef::SisUserId("D 9/1".into()))
        .await
        .unwrap();
    assert_eq!(odd_sis.id, CanvasUserId(6));
    sim.shutdown().await;
}

// canvas-api.md §5: the account search pages by number with absolute same-host URLs.
#[tokio::test]
async fn search_users_follows_absolute_numbered_pages() {
    let (sim, admin) = sim_and_admin().await;
    let before = admin.stats().requests;
    let users = admin
        .search_users(CanvasAccountId(1), "Bulk Person")
        .await
        .unwrap();
    assert_eq!(users.len() as u64, BULK_USERS);
    // 230 users at 100 a page.
    assert_eq!(admin.stats().requests - before, 3);
    let mut ids: Vec<_> = users.iter().map(|u| u.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, BULK_USERS);

    // canvas-api.md §2: current Canvas needs 2 characters.
    let two = admin
        .search_users(CanvasAccountId(1), " ha ")
        .await
        .unwrap();
    assert!(two.iter().any(|u| u.id == CanvasUserId(HOARDER)), "{two:?}");
    let requests = sim.stats().api_requests;
    for short in [" a ", "  "] {
        let refused = admin.search_users(CanvasAccountId(1), short).await;
        assert!(
            matches!(&refused, Err(CanvasError::InvalidInput { message }) if message.contains("2 characters")),
            "{refused:?}"
        );
    }
    assert_eq!(sim.stats().api_requests, requests, "nothing sent");
    sim.shutdown().await;
}

// ---- tokens ---------------------------------------------------------------------------------

#[tokio::test]
async fn create_for_self_is_active_and_works() {
    let (sim, admin) = sim_and_admin().await;
    let new = NewToken::new("nightly sync")
        .expires_at(in_days(30))
        .scopes(["url:GET|/api/v1/users/:id"]);
    let created = create(&admin, &UserRef::Self_, new).await;
    let token = &created.token;
    assert_eq!(token.user_id, CanvasUserId(ADMIN));
    assert_eq!(token.workflow_state, TokenState::Active);
    assert_eq!(token.purpose.as_deref(), Some("nightly sync"));
    assert_eq!(token.scopes, vec!["url:GET|/api/v1/users/:id".to_owned()]);
    assert!(token.expires_at.is_some());
    // The value moved out of `visible_token`, which keeps the hint only.
    let value = created.value.expose_secret();
    assert_eq!(value.len(), 64);
    assert_eq!(token.visible_token, format!("{}...", &value[..5]));
    assert_eq!(token.hint(), &value[..5]);
    assert!(!format!("{created:?}").contains(value));

    let me = whoami(&sim, &created.value).await.unwrap();
    assert_eq!(me.id, CanvasUserId(ADMIN));
    sim.shutdown().await;
}

#[tokio::test]
async fn create_for_another_user_is_pending_until_activated() {
    let (sim, admin) = sim_and_admin().await;
    let teacher = UserRef::SisLoginId("theo.teacher".into());
    let new = NewToken::new("grade export").expires_at(in_days(90));
    let created = create(&admin, &teacher, new).await;
    assert_eq!(created.token.workflow_state, TokenState::Pending);
    assert_eq!(created.token.user_id, CanvasUserId(TEACHER));

    let as_teacher = client_with(&sim, &created.value);
    let refused = as_teacher.get_user(&UserRef::Self_).await;
    assert!(
        matches!(&refused, Err(CanvasError::InvalidCredentials { message, reason: TokenRejection::Invalid }) if message == "Invalid access token."),
        "{refused:?}"
    );

    activate(&sim, "theo.teacher", created.token.id).await;
    let me = as_teacher.get_user(&UserRef::Self_).await.unwrap();
    assert_eq!(me.id, CanvasUserId(TEACHER));
    let shown = admin
        .show_token(&teacher, &TokenRef::Id(created.token.id))
        .await
        .unwrap();
    assert_eq!(shown.workflow_state, TokenState::Active);
    sim.shutdown().await;
}

#[tokio::test]
async fn show_by_id_and_by_hint() {
    let (sim, admin) = sim_and_admin().await;
    let user = UserRef::Id(CanvasUserId(TEACHER));
    let created = create(&admin, &user, NewToken::new("lookup")).await;
    let by_id = admin
        .show_token(&user, &TokenRef::Id(created.token.id))
        .await
        .unwrap();
    assert_eq!(by_id, created.token);
    let by_hint = admin
        .show_token(&user, &TokenRef::Hint(created.token.hint().to_owned()))
        .await
        .unwrap();
    assert_eq!(by_hint.id, created.token.id);
    assert!(by_hint.visible_token.ends_with("..."));
    sim.shutdown().await;
}

#[tokio::test]
async fn update_purpose_and_expiry() {
    let (sim, admin) = sim_and_admin().await;
    let created = create(&admin, &UserRef::Self_, NewToken::new("before")).await;
    let id = TokenRef::Id(created.token.id);
    let expiry =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::days(10);
    let after = TokenUpdate {
        purpose: Some("after".into()),
        expires_at: Some(expiry),
        ..TokenUpdate::default()
    };
    let updated = update(&admin, &id, after).await;
    assert_eq!(updated.purpose.as_deref(), Some("after"));
    assert_eq!(updated.expires_at, Some(expiry));
    assert_eq!(updated.visible_token, created.token.visible_token);
    // Omitted fields are unchanged.
    let third = TokenUpdate {
        purpose: Some("third".into()),
        ..TokenUpdate::default()
    };
    let again = update(&admin, &id, third).await;
    assert_eq!(again.expires_at, Some(expiry));
    // The value still works.
    whoami(&sim, &created.value).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn regenerate_replaces_the_value() {
    let (sim, admin) = sim_and_admin().await;
    let created = create(&admin, &UserRef::Self_, NewToken::new("rotating")).await;
    let regenerated = admin
        .regenerate_token(&UserRef::Self_, &TokenRef::Id(created.token.id), None)
        .await
        .unwrap();
    assert_eq!(regenerated.token.id, created.token.id);
    assert_eq!(regenerated.token.workflow_state, TokenState::Active);
    assert_ne!(
        regenerated.value.expose_secret(),
        created.value.expose_secret()
    );
    assert_eq!(
        regenerated.token.hint(),
        &regenerated.value.expose_secret()[..5]
    );

    let old = whoami(&sim, &created.value).await;
    assert!(
        matches!(old, Err(CanvasError::InvalidCredentials { .. })),
        "{old:?}"
    );
    whoami(&sim, &regenerated.value).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn delete_is_soft_and_stops_the_token() {
    let (sim, admin) = sim_and_admin().await;
    let user = UserRef::Id(CanvasUserId(TEACHER));
    let created = create(&admin, &user, NewToken::new("short-lived")).await;
    activate(&sim, "theo.teacher", created.token.id).await;
    let as_teacher = client_with(&sim, &created.value);
    as_teacher.get_user(&UserRef::Self_).await.unwrap();

    let deleted = admin
        .delete_token(&user, &TokenRef::Id(created.token.id))
        .await
        .unwrap();
    assert_eq!(deleted.workflow_state, TokenState::Deleted);
    assert_eq!(deleted.id, created.token.id);
    // canvas-api.md §3: the deleted token is "Revoked access token.".
    let refused = as_teacher.get_user(&UserRef::Self_).await;
    assert!(
        matches!(
            &refused,
            Err(CanvasError::InvalidCredentials { message, reason: TokenRejection::Revoked })
                if message == "Revoked access token."
        ),
        "{refused:?}"
    );
    // canvas-api.md §2: a deleted token is not found, and deleting it again is a 404.
    let token = TokenRef::Id(created.token.id);
    let again = admin.delete_token(&user, &token).await;
    assert!(
        matches!(again, Err(CanvasError::NotFound { .. })),
        "{again:?}"
    );
    let shown = admin.show_token(&user, &token).await;
    assert!(
        matches!(shown, Err(CanvasError::NotFound { .. })),
        "{shown:?}"
    );
    // ...and the list leaves it out.
    let listed = admin.list_user_tokens(&user).await.unwrap();
    assert!(
        listed.iter().all(|t| t.id != created.token.id),
        "{listed:?}"
    );
    assert!(
        listed
            .iter()
            .all(|t| t.workflow_state != TokenState::Deleted)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn expired_token_is_refused() {
    let (sim, admin) = sim_and_admin().await;
    let new = NewToken::new("a day").expires_at(in_days(1));
    let created = create(&admin, &UserRef::Self_, new).await;
    let user = client_with(&sim, &created.value);
    user.get_user(&UserRef::Self_).await.unwrap();
    sim.advance_clock(Duration::from_secs(2 * 86_400));
    // canvas-api.md §3: "Expired access token." with `expired_at`, told apart in the error.
    let refused = user.get_user(&UserRef::Self_).await;
    let expected = created
        .token
        .expires_at
        .map(|at| at.replace_nanosecond(0).unwrap());
    assert!(
        matches!(
            &refused,
            Err(CanvasError::InvalidCredentials {
                message,
                reason: TokenRejection::Expired { expired_at },
            }) if message == "Expired access token." && *expired_at == expected
        ),
        "{refused:?}"
    );
    assert!(refused.unwrap_err().to_string().contains("expired at"));
    sim.shutdown().await;
}

// canvas-api.md §5: a single-shard Canvas pages user_generated_tokens by number, with relative
// Link URLs.
#[tokio::test]
async fn list_user_tokens_follows_relative_numbered_pages() {
    let sim = sim().await;
    let link = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/users/{HOARDER}/user_generated_tokens?per_page=100",
            sim.base_url()
        ))
        .bearer_auth(DEFAULT_ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .headers()["link"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        tokendesk_canvas::find_rel(&link, "next").as_deref(),
        Some(format!("/api/v1/users/{HOARDER}/user_generated_tokens?page=2&per_page=100").as_str()),
        "the sim answers relative numbered links: {link}"
    );
    let admin = client(&sim, DEFAULT_ADMIN_TOKEN);
    let user = UserRef::Id(CanvasUserId(HOARDER));
    let created = create(&admin, &user, NewToken::new("the newest")).await;
    let (tokens, requests) = list_hoarded(&admin).await;
    assert_eq!(tokens.len(), HOARDED_TOKENS + 1);
    assert_eq!(requests, 3, "231 tokens at 100 a page");
    assert!(tokens.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    assert!(tokens.iter().all(|t| t.user_id == CanvasUserId(HOARDER)));
    assert!(tokens.iter().all(|t| t.visible_token.ends_with("...")));
    assert_eq!(tokens.last().map(|t| t.id), Some(created.token.id));
    sim.shutdown().await;
}

// canvas-api.md §5: a multi-shard Canvas pages user_generated_tokens by bookmark.
#[tokio::test]
async fn list_user_tokens_follows_bookmark_pages() {
    let sim = start(SimConfig {
        seed: seed(),
        pagination: Pagination::Bookmarks,
        ..SimConfig::default()
    })
    .await;
    let admin = client(&sim, DEFAULT_ADMIN_TOKEN);
    let (tokens, requests) = list_hoarded(&admin).await;
    assert_eq!(tokens.len(), HOARDED_TOKENS);
    assert_eq!(requests, 3, "230 tokens at 100 a page");
    assert!(
        tokens.windows(2).all(|w| w[0].id < w[1].id),
        "oldest first, no repeats"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn show_tokens_in_bulk_stays_under_the_throttle() {
    let sim = slow_sim(20).await;
    let admin = client(&sim, DEFAULT_ADMIN_TOKEN);
    let user = UserRef::Id(CanvasUserId(HOARDER));
    let (tokens, _) = list_hoarded(&admin).await;
    let ids: Vec<TokenRef> = tokens
        .iter()
        .take(120)
        .map(|t| TokenRef::Id(t.id))
        .collect();
    let results = admin.show_tokens(&user, ids.clone()).await;
    assert_eq!(results.len(), ids.len());
    for (result, id) in results.iter().zip(&ids) {
        let token = result.as_ref().unwrap();
        assert_eq!(&TokenRef::Id(token.id), id, "results keep the input order");
    }
    assert_eq!(sim.stats().throttled, 0);
    assert_eq!(admin.stats().throttled, 0);
    assert!(
        admin.stats().peak_concurrency_limit >= 8,
        "{:?}",
        admin.stats()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn throttled_requests_are_retried_and_concurrency_shrinks() {
    let sim = slow_sim(20).await;
    // A governor that badly misjudges Canvas's cost starts far too wide.
    let admin = builder(&sim, DEFAULT_ADMIN_TOKEN)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .max_retries(20)
        .throttle(ThrottleConfig {
            up_front_cost: 5.0,
            initial_concurrency: 30,
            max_concurrency: 30,
        })
        .build()
        .unwrap();
    let user = UserRef::Id(CanvasUserId(HOARDER));
    let ids: Vec<TokenRef> = (0..60).map(|_| TokenRef::Hint("zzzzz".into())).collect();
    let results = admin.show_tokens(&user, ids).await;
    // Throttling is never mistaken for a permission problem: all get to the real answer.
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(CanvasError::NotFound { .. }))),
        "{:?}",
        results
            .iter()
            .find(|r| !matches!(r, Err(CanvasError::NotFound { .. })))
    );
    let stats = admin.stats();
    assert!(stats.throttled > 0, "{stats:?}");
    assert_eq!(stats.throttled, sim.stats().throttled);
    sim.shutdown().await;
}

// ---- errors ---------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_token_is_invalid_credentials() {
    let sim = sim().await;
    let bogus = generate_token_value();
    let client = client(&sim, &bogus);
    let err = client.get_user(&UserRef::Self_).await.unwrap_err();
    assert!(
        matches!(&err, CanvasError::InvalidCredentials { message, reason: TokenRejection::Invalid } if message == "Invalid access token."),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(!text.contains(&bogus), "{text}");
    assert!(text.contains("check"), "{text}");
    assert_eq!(sim.stats().api_requests, 1, "401 is not retried");
    sim.shutdown().await;
}

#[tokio::test]
async fn student_may_not_create_tokens_for_others() {
    let sim = sim().await;
    let student = client(&sim, DEFAULT_STUDENT_TOKEN);
    let new = NewToken::new("sneaky").expires_at(in_days(10));
    let err = create_err(&student, &UserRef::Id(CanvasUserId(3)), new).await;
    assert!(matches!(err, CanvasError::NotPermitted { .. }), "{err:?}");
    assert_eq!(sim.stats().api_requests, 1);

    // Newer instances answer 403 (JSON): still not a throttle.
    let sim403 = start(SimConfig {
        // `http::StatusCode`, which reqwest re-exports.
        unauthorized_status: reqwest::StatusCode::FORBIDDEN,
        ..SimConfig::default()
    })
    .await;
    let err = client(&sim403, DEFAULT_STUDENT_TOKEN)
        .list_user_tokens(&UserRef::Id(CanvasUserId(ADMIN)))
        .await
        .unwrap_err();
    assert!(matches!(err, CanvasError::NotPermitted { .. }), "{err:?}");
    // canvas-api.md §2: another person's profile is simply not found for a non-admin.
    assert_not_found(student.get_user(&UserRef::Id(CanvasUserId(ADMIN))).await);
    sim.shutdown().await;
    sim403.shutdown().await;
}

#[tokio::test]
async fn missing_things_are_not_found() {
    let (sim, admin) = sim_and_admin().await;
    assert_not_found(admin.get_user(&UserRef::Id(CanvasUserId(999_999))).await);
    let nothing = TokenRef::Id(CanvasTokenId(999_999));
    assert_not_found(admin.show_token(&UserRef::Self_, &nothing).await);
    assert_not_found(admin.get_user(&UserRef::SisLoginId("nobody".into())).await);
    assert_eq!(sim.stats().api_requests, 3, "404 is not retried");
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_requests_carry_canvas_messages() {
    let (sim, admin) = sim_and_admin().await;
    let me = UserRef::Self_;

    // No purpose: a top-level array.
    let err = create_err(&admin, &me, NewToken::new("").expires_at(in_days(5))).await;
    assert_eq!(
        err,
        CanvasError::BadRequest {
            message: "token[purpose] is missing".into()
        }
    );

    // Model validation: `{"errors":{"purpose":[{...}]}}`.
    let err = create_err(&admin, &me, NewToken::new("x".repeat(300))).await;
    assert!(
        matches!(&err, CanvasError::BadRequest { message } if message.starts_with("purpose")),
        "{err:?}"
    );

    // A student is held to 120 days.
    let student = client(&sim, DEFAULT_STUDENT_TOKEN);
    let err = create_err(
        &student,
        &me,
        NewToken::new("long").expires_at(in_days(200)),
    )
    .await;
    assert!(
        matches!(&err, CanvasError::BadRequest { message } if message.contains("120 days")),
        "{err:?}"
    );

    // Regenerating an expired token without a new expiry: `{"errors":{"message":..}}`.
    let created = create(
        &admin,
        &me,
        NewToken::new("expiring").expires_at(in_days(1)),
    )
    .await;
    sim.advance_clock(Duration::from_secs(3 * 86_400));
    let err = admin
        .regenerate_token(&me, &TokenRef::Id(created.token.id), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CanvasError::BadRequest { message } if message.contains("expired")),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("fix the input"), "{text}");
    sim.shutdown().await;
}

// canvas-api.md §3: hosted Canvas throttles with 429 (the simulator's default), older
// instances with 403 "Rate Limit Exceeded": both are throttling, never a permission error.
#[tokio::test]
async fn throttled_429_and_403_are_both_throttling() {
    for status in [
        reqwest::StatusCode::TOO_MANY_REQUESTS,
        reqwest::StatusCode::FORBIDDEN,
    ] {
        let sim = start(SimConfig {
            throttle: Some(ThrottleSettings {
                high_water_mark: 40.0,
                ..ThrottleSettings::default()
            }),
            throttle_status: status,
            ..SimConfig::default()
        })
        .await;
        let admin = builder(&sim, DEFAULT_ADMIN_TOKEN)
            .max_retries(0)
            .build()
            .unwrap();
        let err = admin.get_user(&UserRef::Self_).await.unwrap_err();
        assert_eq!(err, CanvasError::Throttled, "{status}");
        assert!(err.is_transient());
        assert_eq!(admin.stats().throttled, 1);
        assert_eq!(sim.stats().throttled, 1);
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn throttled_429_by_default_is_retried() {
    assert_eq!(
        SimConfig::default().throttle_status,
        reqwest::StatusCode::TOO_MANY_REQUESTS
    );
    let sim = start(SimConfig {
        throttle: Some(ThrottleSettings {
            high_water_mark: 60.0,
            outflow: 100.0,
            ..ThrottleSettings::default()
        }),
        latency: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await;
    // Two at once: the second is throttled with 429, retried after a backoff, and succeeds.
    let admin = client(&sim, DEFAULT_ADMIN_TOKEN);
    let wide = builder(&sim, DEFAULT_ADMIN_TOKEN)
        .backoff(Duration::from_millis(100), Duration::from_millis(200))
        .throttle(ThrottleConfig {
            initial_concurrency: 2,
            ..ThrottleConfig::default()
        })
        .build()
        .unwrap();
    let (a, b) = tokio::join!(
        wide.get_user(&UserRef::Self_),
        wide.get_user(&UserRef::Self_)
    );
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    assert!(wide.stats().throttled >= 1, "{:?}", wide.stats());
    assert!(wide.stats().retries >= 1);
    admin.get_user(&UserRef::Self_).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn server_errors_are_retried_then_unavailable() {
    let sim = start(SimConfig {
        fail_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let admin = builder(&sim, DEFAULT_ADMIN_TOKEN)
        .max_retries(2)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .unwrap();
    let err = admin.get_user(&UserRef::Self_).await.unwrap_err();
    assert!(
        matches!(
            err,
            CanvasError::Unavailable {
                status: Some(500 | 503),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        sim.stats().injected_failures,
        3,
        "first try and two retries"
    );
    assert_eq!(admin.stats().retries, 2);

    // A creation may have happened before the 5xx: it is not retried.
    let err = create_err(&admin, &UserRef::Self_, NewToken::new("once")).await;
    assert!(matches!(err, CanvasError::Unavailable { .. }), "{err:?}");
    assert_eq!(sim.stats().injected_failures, 4, "no retry of a create");
    sim.shutdown().await;
}

#[tokio::test]
async fn slow_canvas_times_out() {
    let sim = start(SimConfig {
        latency: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await;
    let admin = builder(&sim, DEFAULT_ADMIN_TOKEN)
        .timeout(Duration::from_millis(200))
        .max_retries(1)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .unwrap();
    let err = admin.get_user(&UserRef::Self_).await.unwrap_err();
    assert!(matches!(err, CanvasError::Timeout { .. }), "{err:?}");
    assert_eq!(admin.stats().requests, 2, "a read is retried once");

    let err = create_err(&admin, &UserRef::Self_, NewToken::new("slow")).await;
    assert!(matches!(err, CanvasError::Timeout { .. }), "{err:?}");
    assert_eq!(
        admin.stats().requests,
        3,
        "a create is not retried after a timeout"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unreachable_canvas_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let admin = CanvasClient::builder(format!("http://{addr}"), SecretString::from("x".repeat(64)))
        .max_retries(1)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .unwrap();
    let err = create_err(&admin, &UserRef::Self_, NewToken::new("never")).await;
    assert!(
        matches!(err, CanvasError::Unavailable { status: None, .. }),
        "{err:?}"
    );
    // A refused connection never reached Canvas, so even a create is retried.
    assert_eq!(admin.stats().requests, 2);
    assert!(!err.to_string().contains(&"x".repeat(64)));
}

#[tokio::test]
async fn debug_never_shows_the_admin_token() {
    let example = || {
        CanvasClient::builder(
            "https://canvas.example.edu",
            SecretString::from(DEFAULT_ADMIN_TOKEN),
        )
    };
    let client = example().build().unwrap();
    let debug = format!("{client:?}");
    assert!(!debug.contains(DEFAULT_ADMIN_TOKEN), "{debug}");
    assert!(!debug.contains(&DEFAULT_ADMIN_TOKEN[..5]), "{debug}");
    assert!(debug.contains("REDACTED"), "{debug}");
    assert!(!format!("{:?}", example()).contains(DEFAULT_ADMIN_TOKEN));

    let bad = CanvasClient::builder("not a url", SecretString::from("t")).build();
    assert!(matches!(bad, Err(CanvasError::InvalidInput { .. })));
}

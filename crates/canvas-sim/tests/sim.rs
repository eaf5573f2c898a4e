//! The simulator over HTTP: permissions, pending tokens and activation, expiry, deletion,
//! pagination, throttling and Canvas's error shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokendesk_canvas_sim::{
    DEFAULT_ADMIN_TOKEN, DEFAULT_STUDENT_TOKEN, DEFAULT_TEACHER_TOKEN, RunningSim, SimConfig,
    ThrottleSettings,
};

async fn sim(config: SimConfig) -> RunningSim {
    tokendesk_canvas_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn default_sim() -> RunningSim {
    sim(SimConfig {
        throttle: None,
        ..Default::default()
    })
    .await
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn call(
    sim: &RunningSim,
    method: Method,
    path: &str,
    token: Option<&str>,
    form: &[(&str, &str)],
) -> Reply {
    let mut req = Client::new().request(method, format!("{}{path}", sim.base_url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if !form.is_empty() {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
    }
    let r = req.send().await.unwrap();
    Reply {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

async fn get(sim: &RunningSim, path: &str, token: &str) -> Reply {
    call(sim, Method::GET, path, Some(token), &[]).await
}

/// Creates a token as `token` for `user`; returns (id, value).
async fn create(sim: &RunningSim, token: &str, user: &str, purpose: &str) -> (u64, String, Value) {
    let r = call(
        sim,
        Method::POST,
        &format!("/api/v1/users/{user}/tokens"),
        Some(token),
        &[
            ("token[purpose]", purpose),
            ("token[expires_at]", "2099-01-01T00:00:00Z"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let j = r.json();
    (
        j["id"].as_u64().unwrap(),
        j["visible_token"].as_str().unwrap().to_owned(),
        j,
    )
}

/// Signs in as `login` in the browser and activates token `id`.
async fn activate(sim: &RunningSim, login: &str, id: u64) -> Reply {
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/login?as={login}", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = client
        .post(format!("{}/profile/tokens/{id}/activate", sim.base_url()))
        .header("cookie", cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    Reply {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

const INVALID: &str = r#"{"errors":[{"message":"Invalid access token."}]}"#;

fn assert_invalid_token(r: &Reply) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers["www-authenticate"],
        r#"Bearer realm="canvas-lms""#
    );
    assert_eq!(r.json(), serde_json::from_str::<Value>(INVALID).unwrap());
}

fn assert_unauthorized(r: &Reply) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.headers.get("www-authenticate").is_none());
    assert_eq!(
        r.json(),
        json!({"status":"unauthorized","errors":[{"message":"user not authorized to perform that action"}]})
    );
}

#[tokio::test]
async fn users_resolve_in_every_form() {
    let s = default_sim().await;
    for path in ["self", "1", "sis_login_id:ada.admin", "sis_user_id:A0001"] {
        let r = get(&s, &format!("/api/v1/users/{path}"), DEFAULT_ADMIN_TOKEN).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.json()["login_id"], "ada.admin");
    }
    let r = get(
        &s,
        "/api/v1/users/sis_login_id:sam.student",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json()["id"], 2);
    assert_eq!(r.json()["sortable_name"], "Student, Sam");
    // No bare login_id: prefix, unknown people are not found.
    for path in ["login_id:sam.student", "sis_login_id:nobody", "999"] {
        let r = get(&s, &format!("/api/v1/users/{path}"), DEFAULT_ADMIN_TOKEN).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            r.json(),
            json!({"errors":[{"message":"The specified resource does not exist."}]})
        );
    }
    // A student sees themselves but not others.
    assert_eq!(
        get(&s, "/api/v1/users/self", DEFAULT_STUDENT_TOKEN)
            .await
            .status,
        StatusCode::OK
    );
    assert_unauthorized(&get(&s, "/api/v1/users/1", DEFAULT_STUDENT_TOKEN).await);
}

#[tokio::test]
async fn credentials_are_required_and_checked() {
    let s = default_sim().await;
    let r = call(&s, Method::GET, "/api/v1/users/self", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers["www-authenticate"],
        r#"Bearer realm="canvas-lms""#
    );
    assert_eq!(
        r.json(),
        json!({"status":"unauthenticated","errors":[{"message":"user authorization required"}]})
    );
    assert_invalid_token(&get(&s, "/api/v1/users/self", "not-a-token").await);
    // The access_token parameter works like the header.
    let r = call(
        &s,
        Method::GET,
        &format!("/api/v1/users/self?access_token={DEFAULT_TEACHER_TOKEN}"),
        None,
        &[],
    )
    .await;
    assert_eq!(r.json()["login_id"], "theo.teacher");
}

#[tokio::test]
async fn tokens_made_for_others_are_pending_until_the_owner_activates_them() {
    let s = default_sim().await;
    let (id, value, json) = create(
        &s,
        DEFAULT_ADMIN_TOKEN,
        "sis_login_id:stella.student",
        "for scripts",
    )
    .await;
    assert_eq!(json["workflow_state"], "pending");
    assert_eq!(json["user_id"], 3);
    assert_eq!(value.len(), 64);
    assert_invalid_token(&get(&s, "/api/v1/users/self", &value).await);
    // Only a browser session of the owner activates; another person's session finds nothing.
    assert_eq!(
        activate(&s, "sam.student", id).await.status,
        StatusCode::NOT_FOUND
    );
    let r = activate(&s, "stella.student", id).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["workflow_state"], "active");
    assert_eq!(
        get(&s, "/api/v1/users/self", &value).await.json()["login_id"],
        "stella.student"
    );
    // Activating again is Canvas's 400.
    let r = activate(&s, "stella.student", id).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json(), json!({"errors":{"token":["is already active"]}}));
    // An API token cannot use the session route.
    let r = call(
        &s,
        Method::POST,
        &format!("/profile/tokens/{id}/activate"),
        Some(&value),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Own tokens are active at once.
    let (_, own, json) = create(&s, DEFAULT_TEACHER_TOKEN, "self", "my own").await;
    assert_eq!(json["workflow_state"], "active");
    assert_eq!(
        get(&s, "/api/v1/users/self", &own).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn show_by_id_or_hint_and_the_value_is_shown_once() {
    let s = default_sim().await;
    let (id, value, _) = create(&s, DEFAULT_ADMIN_TOKEN, "2", "lookup").await;
    let hint = &value[..5];
    for key in [id.to_string(), hint.to_owned()] {
        let r = get(
            &s,
            &format!("/api/v1/users/2/tokens/{key}"),
            DEFAULT_ADMIN_TOKEN,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["id"], id);
        assert_eq!(r.json()["visible_token"], format!("{hint}..."));
        assert!(!r.body.contains(&value));
    }
    // The token is not user 3's.
    let r = get(
        &s,
        &format!("/api/v1/users/3/tokens/{id}"),
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The owner may read it; another student gets "not authorized" for a token of that user.
    assert_eq!(
        get(
            &s,
            &format!("/api/v1/users/self/tokens/{id}"),
            DEFAULT_STUDENT_TOKEN
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_unauthorized(
        &get(
            &s,
            &format!("/api/v1/users/2/tokens/{id}"),
            DEFAULT_TEACHER_TOKEN,
        )
        .await,
    );
}

#[tokio::test]
async fn create_validates_like_canvas() {
    let s = default_sim().await;
    let post =
        |token: &'static str, user: &'static str, form: Vec<(&'static str, &'static str)>| {
            let s = &s;
            async move {
                call(
                    s,
                    Method::POST,
                    &format!("/api/v1/users/{user}/tokens"),
                    Some(token),
                    &form,
                )
                .await
            }
        };
    let r = post(
        DEFAULT_ADMIN_TOKEN,
        "2",
        vec![("token[expires_at]", "2099-01-01")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json(), json!([{"message":"token[purpose] is missing"}]));
    let r = post(
        DEFAULT_ADMIN_TOKEN,
        "2",
        vec![("token[purpose]", "x"), ("token[expires_at]", "soon")],
    )
    .await;
    assert_eq!(
        r.json(),
        json!([{"message":"Invalid expiration date format"}])
    );
    let r = post(DEFAULT_ADMIN_TOKEN, "2", vec![("token[purpose]", "")]).await;
    assert_eq!(
        r.json(),
        json!({"errors":{"purpose":[{"attribute":"purpose","type":"too_short","message":"too_short"}]}})
    );
    let long = "p".repeat(256);
    let long: &'static str = Box::leak(long.into_boxed_str());
    let r = post(DEFAULT_ADMIN_TOKEN, "2", vec![("token[purpose]", long)]).await;
    assert_eq!(r.json()["errors"]["purpose"][0]["type"], "too_long");
    let r = post(DEFAULT_ADMIN_TOKEN, "2", vec![]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A student's own token obeys the 120-day limit and needs an expiry.
    let r = post(DEFAULT_STUDENT_TOKEN, "self", vec![("token[purpose]", "x")]).await;
    assert_eq!(r.json(), json!([{"message":"Expiration date is required"}]));
    let r = post(
        DEFAULT_STUDENT_TOKEN,
        "self",
        vec![("token[purpose]", "x"), ("token[expires_at]", "2099-01-01")],
    )
    .await;
    assert_eq!(
        r.json(),
        json!([{"message":"Expiration date cannot be more than 120 days in the future"}])
    );
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .date()
        .to_string();
    let soon: &'static str = Box::leak(soon.into_boxed_str());
    let r = post(
        DEFAULT_STUDENT_TOKEN,
        "self",
        vec![("token[purpose]", "x"), ("token[expires_at]", soon)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // An admin creating for a student is not held to it; a student cannot create for others.
    assert_eq!(
        post(DEFAULT_ADMIN_TOKEN, "2", vec![("token[purpose]", "x")])
            .await
            .status,
        StatusCode::OK
    );
    assert_unauthorized(
        &post(
            DEFAULT_STUDENT_TOKEN,
            "3",
            vec![("token[purpose]", "x"), ("token[expires_at]", soon)],
        )
        .await,
    );
    assert_unauthorized(&post(DEFAULT_TEACHER_TOKEN, "3", vec![("token[purpose]", "x")]).await);
    // JSON bodies work; malformed JSON is a 400.
    let r = Client::new()
        .post(format!("{}/api/v1/users/3/tokens", s.base_url()))
        .bearer_auth(DEFAULT_ADMIN_TOKEN)
        .json(&json!({"token": {"purpose": "json", "expires_at": null}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = Client::new()
        .post(format!("{}/api/v1/users/3/tokens", s.base_url()))
        .bearer_auth(DEFAULT_ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"token\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn regenerate_replaces_the_value_and_deletion_stops_it() {
    let s = default_sim().await;
    let (id, old, _) = create(&s, DEFAULT_TEACHER_TOKEN, "self", "regen").await;
    let r = call(
        &s,
        Method::PUT,
        &format!("/api/v1/users/self/tokens/{id}"),
        Some(DEFAULT_TEACHER_TOKEN),
        &[("token[regenerate]", "1"), ("token[purpose]", "renamed")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new = r.json()["visible_token"].as_str().unwrap().to_owned();
    assert_eq!(new.len(), 64);
    assert_eq!(r.json()["purpose"], "renamed");
    assert_eq!(r.json()["workflow_state"], "active");
    assert_invalid_token(&get(&s, "/api/v1/users/self", &old).await);
    assert_eq!(
        get(&s, "/api/v1/users/self", &new).await.status,
        StatusCode::OK
    );
    // Regenerated by an admin for someone else: pending again.
    let r = call(
        &s,
        Method::PUT,
        &format!("/api/v1/users/4/tokens/{id}"),
        Some(DEFAULT_ADMIN_TOKEN),
        &[("token[regenerate]", "true")],
    )
    .await;
    assert_eq!(r.json()["workflow_state"], "pending");
    let newest = r.json()["visible_token"].as_str().unwrap().to_owned();
    assert_invalid_token(&get(&s, "/api/v1/users/self", &newest).await);
    // Another person's update: not found; the owner without rights: not authorized.
    let r = call(
        &s,
        Method::PUT,
        &format!("/api/v1/users/4/tokens/{id}"),
        Some(DEFAULT_STUDENT_TOKEN),
        &[("token[purpose]", "x")],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Delete: 200 with the token, deleted, refused at once; deleting again is fine.
    let (id2, value2, _) = create(&s, DEFAULT_TEACHER_TOKEN, "self", "to delete").await;
    for _ in 0..2 {
        let r = call(
            &s,
            Method::DELETE,
            &format!("/api/v1/users/4/tokens/{id2}"),
            Some(DEFAULT_ADMIN_TOKEN),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["workflow_state"], "deleted");
    }
    assert_invalid_token(&get(&s, "/api/v1/users/self", &value2).await);
    let r = call(
        &s,
        Method::DELETE,
        &format!("/api/v1/users/4/tokens/{id2}"),
        Some(DEFAULT_STUDENT_TOKEN),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn expiry_is_real() {
    let s = default_sim().await;
    let in_a_day = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = call(
        &s,
        Method::POST,
        "/api/v1/users/self/tokens",
        Some(DEFAULT_TEACHER_TOKEN),
        &[
            ("token[purpose]", "short"),
            ("token[expires_at]", &in_a_day),
        ],
    )
    .await;
    let id = r.json()["id"].as_u64().unwrap();
    let value = r.json()["visible_token"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&s, "/api/v1/users/self", &value).await.status,
        StatusCode::OK
    );
    s.advance_clock(Duration::from_secs(2 * 86_400));
    assert_invalid_token(&get(&s, "/api/v1/users/self", &value).await);
    let r = get(
        &s,
        &format!("/api/v1/users/4/tokens/{id}"),
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json()["can_manually_regenerate"], false);
    // Regenerating an expired token needs a new expiry.
    let r = call(
        &s,
        Method::PUT,
        &format!("/api/v1/users/self/tokens/{id}"),
        Some(DEFAULT_TEACHER_TOKEN),
        &[("token[regenerate]", "1")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json(),
        json!({"errors":{"message":"cannot regenerate an expired token without a new expiration date"}})
    );
}

#[tokio::test]
async fn user_generated_tokens_page_by_bookmark_with_absolute_links() {
    let s = default_sim().await;
    for i in 0..12 {
        create(&s, DEFAULT_ADMIN_TOKEN, "3", &format!("t{i}")).await;
    }
    let mut url = format!(
        "{}/api/v1/users/3/user_generated_tokens?per_page=5",
        s.base_url()
    );
    let mut purposes = Vec::new();
    let mut pages = 0;
    loop {
        let r = Client::new()
            .get(&url)
            .bearer_auth(DEFAULT_ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let link = r.headers()["link"].to_str().unwrap().to_owned();
        let items: Vec<Value> = r.json().await.unwrap();
        pages += 1;
        purposes.extend(
            items
                .iter()
                .map(|t| t["purpose"].as_str().unwrap().to_owned()),
        );
        assert!(link.contains(r#"rel="current""#) && link.contains(r#"rel="first""#));
        assert!(!link.contains(", <"), "entries are joined by a bare comma");
        let next = link
            .split(',')
            .find(|e| e.ends_with(r#"rel="next""#))
            .map(|e| {
                e.trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_owned()
            });
        match next {
            Some(n) => {
                assert!(
                    n.starts_with(s.base_url()) && n.contains("per_page=5"),
                    "{n}"
                );
                url = n;
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        purposes,
        (0..12).map(|i| format!("t{i}")).collect::<Vec<_>>()
    );
    // A student may not list someone else's tokens.
    assert_unauthorized(
        &get(
            &s,
            "/api/v1/users/3/user_generated_tokens",
            DEFAULT_STUDENT_TOKEN,
        )
        .await,
    );
    // per_page is clamped to 1–100.
    let r = get(
        &s,
        "/api/v1/users/3/user_generated_tokens?per_page=0",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn account_user_search() {
    let s = default_sim().await;
    let r = get(
        &s,
        "/api/v1/accounts/1/users?search_term=student&per_page=1&page=2",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json()[0]["login_id"], "stella.student");
    let link = r.headers["link"].to_str().unwrap();
    assert!(link.contains(r#"page=1&per_page=1>; rel="prev""#), "{link}");
    assert!(link.contains("search_term=student"));
    let r = get(
        &s,
        "/api/v1/accounts/1/users?search_term=student&page=9",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json(), json!([]));
    let r = get(
        &s,
        "/api/v1/accounts/1/users?search_term=st",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_unauthorized(
        &get(
            &s,
            "/api/v1/accounts/1/users?search_term=student",
            DEFAULT_TEACHER_TOKEN,
        )
        .await,
    );
    assert_eq!(
        get(&s, "/api/v1/accounts/7/users", DEFAULT_ADMIN_TOKEN)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_bucket_throttles_wide_parallel_clients_only() {
    let s = sim(SimConfig {
        latency: Duration::from_millis(200),
        throttle: Some(ThrottleSettings::default()),
        ..Default::default()
    })
    .await;
    // Sequential requests are never throttled and report what is left.
    for _ in 0..3 {
        let r = get(&s, "/api/v1/users/self", DEFAULT_ADMIN_TOKEN).await;
        assert_eq!(r.status, StatusCode::OK);
        let left: f64 = r.headers["x-rate-limit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(left > 590.0 && left <= 600.0, "{left}");
        assert!(r.headers.contains_key("x-request-cost"));
    }
    // 30 at once: about 11 fit under the high-water mark, the rest get Canvas's 403.
    let replies = futures::future::join_all(
        (0..30).map(|_| get(&s, "/api/v1/users/self", DEFAULT_ADMIN_TOKEN)),
    )
    .await;
    let throttled: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::FORBIDDEN)
        .collect();
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert!((10..=13).contains(&ok), "{ok} succeeded");
    assert_eq!(throttled.len() + ok, 30);
    let t = throttled[0];
    assert_eq!(t.body.trim(), "403 Forbidden (Rate Limit Exceeded)");
    assert!(
        t.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(t.headers.get("retry-after").is_none());
    assert!(t.headers.contains_key("x-rate-limit-remaining"));
    assert!(!t.headers.contains_key("x-request-cost"));
    assert_eq!(s.stats().throttled as usize, throttled.len());
    // Buckets are per token: another token is unaffected.
    assert_eq!(
        get(&s, "/api/v1/users/self", DEFAULT_TEACHER_TOKEN)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn injected_failures_and_state_file() {
    let s = sim(SimConfig {
        throttle: None,
        fail_rate: 1.0,
        ..Default::default()
    })
    .await;
    let r = get(&s, "/api/v1/users/self", DEFAULT_ADMIN_TOKEN).await;
    assert!(
        r.status == StatusCode::INTERNAL_SERVER_ERROR
            || r.status == StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(s.stats().injected_failures, 1);
    s.shutdown().await;

    let dir = std::env::temp_dir().join(format!("canvas-sim-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let _ = std::fs::remove_file(&path);
    let config = SimConfig {
        throttle: None,
        state_file: Some(path.clone()),
        ..Default::default()
    };
    let s = sim(config.clone()).await;
    let (id, value, _) = create(&s, DEFAULT_ADMIN_TOKEN, "3", "survives").await;
    s.shutdown().await;
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(!saved.contains(&value), "the state file keeps only hashes");
    assert!(!saved.contains(DEFAULT_ADMIN_TOKEN));
    let s = sim(config).await;
    assert_eq!(
        activate(&s, "stella.student", id).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&s, "/api/v1/users/self", &value).await.status,
        StatusCode::OK
    );
    s.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_settings_page_lists_tokens_with_an_activate_button() {
    let s = default_sim().await;
    let (id, _, _) = create(&s, DEFAULT_ADMIN_TOKEN, "3", "<b>page</b>").await;
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/profile/settings", s.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "signed out goes to /login"
    );
    let r = client
        .get(format!("{}/login?as=stella.student", s.base_url()))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = client
        .get(format!("{}/profile/settings", s.base_url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Approved Integrations"));
    assert!(page.contains(&format!("/profile/tokens/{id}/activate")));
    assert!(page.contains(">Activate</button>"));
    assert!(
        page.contains("&#60;b&#62;page&#60;/b&#62;") || page.contains("&lt;b&gt;page"),
        "escaped"
    );
    // A browser form post redirects back to the page, which then has no button.
    let r = client
        .post(format!("{}/profile/tokens/{id}/activate", s.base_url()))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = client
        .get(format!("{}/profile/settings", s.base_url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains(">Activate</button>"));
}

#[tokio::test]
async fn throttling_can_answer_429_like_newer_instances() {
    let s = sim(SimConfig {
        latency: Duration::from_millis(200),
        throttle_status: StatusCode::TOO_MANY_REQUESTS,
        ..Default::default()
    })
    .await;
    let replies = futures::future::join_all(
        (0..20).map(|_| get(&s, "/api/v1/users/self", DEFAULT_ADMIN_TOKEN)),
    )
    .await;
    let throttled: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(!throttled.is_empty());
    assert!(throttled[0].body.contains("Rate Limit Exceeded"));
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::OK || r.status == StatusCode::TOO_MANY_REQUESTS)
    );
}

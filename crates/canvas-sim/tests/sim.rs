//! The simulator over HTTP: permissions, pending tokens and activation, expiry, deletion,
//! pagination, throttling and Canvas's error shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokendesk_canvas_sim::{
    DEFAULT_ADMIN_TOKEN, DEFAULT_STUDENT_TOKEN, DEFAULT_TEACHER_TOKEN, Pagination, RunningSim,
    SimConfig, ThrottleSettings,
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

/// A browser signed in to the simulator: its cookies (session and `_csrf_token`) and the CSRF
/// token its forms carry.
struct Browser {
    client: Client,
    base: String,
    cookies: String,
    csrf: String,
}

async fn sign_in(sim: &RunningSim, login: &str) -> Browser {
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
    let pairs: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let csrf = pairs
        .iter()
        .find_map(|p| p.strip_prefix("_csrf_token="))
        .expect("a _csrf_token cookie")
        .to_owned();
    assert!(pairs.iter().any(|p| p.starts_with("canvas_sim_session=")));
    Browser {
        client,
        base: sim.base_url().to_owned(),
        cookies: pairs.join("; "),
        csrf,
    }
}

impl Browser {
    /// Posts the activation as Canvas's page script does: JSON, with `X-CSRF-Token`.
    async fn activate(&self, id: u64) -> Reply {
        self.send(
            self.client
                .post(format!("{}/profile/tokens/{id}/activate", self.base))
                .header("accept", "application/json")
                .header("x-csrf-token", &self.csrf),
        )
        .await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let r = req.header("cookie", &self.cookies).send().await.unwrap();
        Reply {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.base))
    }
}

/// Signs in as `login` in the browser and activates token `id`.
async fn activate(sim: &RunningSim, login: &str, id: u64) -> Reply {
    sign_in(sim, login).await.activate(id).await
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
}

// canvas-api.md §2: another person's profile, for a non-admin, is not found (not 401).
#[tokio::test]
async fn another_persons_profile_is_not_found_for_a_non_admin() {
    let s = default_sim().await;
    let r = get(&s, "/api/v1/users/self", DEFAULT_STUDENT_TOKEN).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["id"], 2);
    for path in ["1", "3", "sis_login_id:ada.admin", "sis_user_id:S1002"] {
        let r = get(&s, &format!("/api/v1/users/{path}"), DEFAULT_STUDENT_TOKEN).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
        assert_eq!(
            r.json(),
            json!({"errors":[{"message":"The specified resource does not exist."}]})
        );
    }
}

// canvas-api.md §2: `sis_login_id:` look-ups ignore case (LOWER(unique_id)), and the
// `hex:sis_login_id:<hex>` form is accepted (as is `hex:` for the other SIS columns).
#[tokio::test]
async fn sis_login_id_lookups_ignore_case_and_accept_hex() {
    let s = default_sim().await;
    let hex = |text: &str| -> String { text.bytes().map(|b| format!("{b:02x}")).collect() };
    let paths = [
        "sis_login_id:SAM.Student".to_owned(),
        "sis_login_id:sam.student".to_owned(),
        format!("hex:sis_login_id:{}", hex("sam.student")),
        format!("hex:sis_login_id:{}", hex("Sam.Student").to_uppercase()),
        format!("hex:sis_user_id:{}", hex("S1001")),
    ];
    for path in &paths {
        let r = get(&s, &format!("/api/v1/users/{path}"), DEFAULT_ADMIN_TOKEN).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert_eq!(r.json()["id"], 2, "{path}");
    }
    // SIS user ids keep their case; a malformed hex is not a reference.
    for path in [
        "sis_user_id:s1001",
        "hex:sis_login_id:zz",
        "hex:sis_login_id:7",
    ] {
        let r = get(&s, &format!("/api/v1/users/{path}"), DEFAULT_ADMIN_TOKEN).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    // Tokens are addressed the same way.
    let (id, _, _) = create(&s, DEFAULT_ADMIN_TOKEN, "sis_login_id:SAM.STUDENT", "case").await;
    let r = get(
        &s,
        &format!("/api/v1/users/sis_login_id:Sam.Student/tokens/{id}"),
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json()["user_id"], 2);
}

// canvas-api.md §2: login_id, email and the SIS ids only for admins with the permissions (the
// seeded admin holds them all); a person's own profile carries none of them.
#[tokio::test]
async fn user_fields_are_shown_to_admins_only() {
    let s = default_sim().await;
    let admin_view = get(&s, "/api/v1/users/2", DEFAULT_ADMIN_TOKEN).await.json();
    assert_eq!(admin_view["login_id"], "sam.student");
    assert_eq!(admin_view["email"], "sam.student@example.edu");
    assert_eq!(admin_view["sis_user_id"], "S1001");
    assert_eq!(admin_view["sortable_name"], "Student, Sam");
    for token in [DEFAULT_STUDENT_TOKEN, DEFAULT_TEACHER_TOKEN] {
        let own = get(&s, "/api/v1/users/self", token).await.json();
        assert!(own["id"].is_u64() && own["name"].is_string(), "{own}");
        for field in ["login_id", "email", "sis_user_id", "integration_id"] {
            assert!(own.get(field).is_none(), "{field} in {own}");
        }
    }
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
    assert_eq!(r.json()["id"], 4);
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
    assert_eq!(get(&s, "/api/v1/users/self", &value).await.json()["id"], 3);
    // Activating again is Canvas's 400.
    let r = activate(&s, "stella.student", id).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json(), json!({"errors":{"token":["is already active"]}}));
    // An API token cannot use the session route: without a session it is sent to sign in.
    let r = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/profile/tokens/{id}/activate", s.base_url()))
        .bearer_auth(&value)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "/login");
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
    let r = post(DEFAULT_ADMIN_TOKEN, "2", vec![("token[purpose]", "")]).await;
    assert_eq!(
        r.json(),
        json!({"errors":{"purpose":[{"attribute":"purpose","type":"too_short","message":"too_short"}]}})
    );
    let long = "p".repeat(256);
    let long: &'static str = Box::leak(long.into_boxed_str());
    let r = post(DEFAULT_ADMIN_TOKEN, "2", vec![("token[purpose]", long)]).await;
    assert_eq!(r.json()["errors"]["purpose"][0]["type"], "too_long");
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
    // Delete: 200 with the token, deleted, refused at once (canvas-api.md §2).
    let (id2, value2, _) = create(&s, DEFAULT_TEACHER_TOKEN, "self", "to delete").await;
    let (id3, _, _) = create(&s, DEFAULT_TEACHER_TOKEN, "self", "not the student's").await;
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
    assert_eq!(
        get(&s, "/api/v1/users/self", &value2).await.json()["errors"][0]["message"],
        "Revoked access token."
    );
    let r = call(
        &s,
        Method::DELETE,
        &format!("/api/v1/users/4/tokens/{id3}"),
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
    let r = get(&s, "/api/v1/users/self", &value).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["errors"][0]["message"], "Expired access token.");
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

/// The `rel` entries of a `Link` header, in order, with their URLs.
fn links(reply: &Reply) -> Vec<(String, String)> {
    let header = reply.headers["link"].to_str().unwrap();
    assert!(
        !header.contains(", <"),
        "entries are joined by a bare comma: {header}"
    );
    header
        .split(',')
        .map(|entry| {
            let (url, rel) = entry.split_once(">; rel=").unwrap();
            (
                rel.trim_matches('"').to_owned(),
                url.trim_start_matches('<').to_owned(),
            )
        })
        .collect()
}

fn rel<'a>(links: &'a [(String, String)], name: &str) -> Option<&'a str> {
    links
        .iter()
        .find(|(r, _)| r == name)
        .map(|(_, u)| u.as_str())
}

fn purposes(reply: &Reply) -> Vec<String> {
    reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["purpose"].as_str().unwrap().to_owned())
        .collect()
}

// canvas-api.md §5: on a single-shard install user_generated_tokens pages by number
// (page=1, 2, …, with `last`), its Link URLs are relative paths, and a page past the end is [].
#[tokio::test]
async fn user_generated_tokens_page_by_number_with_relative_links() {
    let s = default_sim().await;
    for i in 0..12 {
        create(&s, DEFAULT_ADMIN_TOKEN, "3", &format!("t{i}")).await;
    }
    let first = get(
        &s,
        "/api/v1/users/3/user_generated_tokens?per_page=5",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    let l = links(&first);
    let names: Vec<&str> = l.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(names, ["current", "next", "first", "last"], "{l:?}");
    assert_eq!(
        rel(&l, "next"),
        Some("/api/v1/users/3/user_generated_tokens?page=2&per_page=5")
    );
    assert_eq!(
        rel(&l, "last"),
        Some("/api/v1/users/3/user_generated_tokens?page=3&per_page=5")
    );
    assert_eq!(purposes(&first), ["t0", "t1", "t2", "t3", "t4"]);
    // Follow `next` as a client must: a path, resolved against the Canvas base URL.
    let mut url = rel(&l, "next").map(str::to_owned);
    let mut all = purposes(&first);
    while let Some(path) = url {
        assert!(path.starts_with("/api/v1/"), "{path}");
        let r = get(&s, &path, DEFAULT_ADMIN_TOKEN).await;
        all.extend(purposes(&r));
        url = rel(&links(&r), "next").map(str::to_owned);
    }
    assert_eq!(all, (0..12).map(|i| format!("t{i}")).collect::<Vec<_>>());
    // page=2 is the second page, with prev; page=999 is empty.
    let second = get(
        &s,
        "/api/v1/users/3/user_generated_tokens?per_page=5&page=2",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(purposes(&second), ["t5", "t6", "t7", "t8", "t9"]);
    let l = links(&second);
    assert_eq!(
        rel(&l, "prev"),
        Some("/api/v1/users/3/user_generated_tokens?page=1&per_page=5")
    );
    let past = get(
        &s,
        "/api/v1/users/3/user_generated_tokens?per_page=5&page=999",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(past.json(), json!([]));
    assert!(rel(&links(&past), "next").is_none());
    // The original query is carried along; the path stays as the client wrote it.
    let r = get(
        &s,
        "/api/v1/users/sis_user_id:S1002/user_generated_tokens?per_page=5&foo=bar",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(
        rel(&links(&r), "next"),
        Some("/api/v1/users/sis_user_id:S1002/user_generated_tokens?foo=bar&page=2&per_page=5")
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
    // per_page is clamped to 1–100 and defaults to 10.
    let r = get(
        &s,
        "/api/v1/users/3/user_generated_tokens?per_page=0",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let r = get(
        &s,
        "/api/v1/users/3/user_generated_tokens",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 10);
}

// canvas-api.md §5: a multi-shard instance pages by bookmark (page=first, page=bookmark:…, no
// `last`); `--pagination bookmarks`. The links stay relative (`_path` helper).
#[tokio::test]
async fn user_generated_tokens_page_by_bookmark_when_asked() {
    let s = sim(SimConfig {
        throttle: None,
        pagination: Pagination::Bookmarks,
        ..Default::default()
    })
    .await;
    for i in 0..12 {
        create(&s, DEFAULT_ADMIN_TOKEN, "3", &format!("t{i}")).await;
    }
    let mut path = "/api/v1/users/3/user_generated_tokens?per_page=5".to_owned();
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let r = get(&s, &path, DEFAULT_ADMIN_TOKEN).await;
        pages += 1;
        all.extend(purposes(&r));
        let l = links(&r);
        assert!(
            rel(&l, "last").is_none() && rel(&l, "prev").is_none(),
            "{l:?}"
        );
        assert_eq!(
            rel(&l, "first"),
            Some("/api/v1/users/3/user_generated_tokens?page=first&per_page=5")
        );
        match rel(&l, "next") {
            Some(next) => {
                assert!(
                    next.starts_with("/api/v1/users/3/user_generated_tokens?page=bookmark:"),
                    "{next}"
                );
                path = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(all, (0..12).map(|i| format!("t{i}")).collect::<Vec<_>>());
    // A page number is no bookmark: the first page again.
    let r = get(
        &s,
        "/api/v1/users/3/user_generated_tokens?per_page=5&page=2",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(purposes(&r), ["t0", "t1", "t2", "t3", "t4"]);
}

// canvas-api.md §2: user_generated_tokens lists active and pending tokens, expired ones too,
// deleted ones never.
#[tokio::test]
async fn user_generated_tokens_lists_expired_tokens_but_never_deleted_ones() {
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
            ("token[purpose]", "expiring"),
            ("token[expires_at]", &in_a_day),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (pending, _, _) = create(&s, DEFAULT_ADMIN_TOKEN, "4", "pending").await;
    let (gone, _, _) = create(&s, DEFAULT_TEACHER_TOKEN, "self", "deleted").await;
    let r = call(
        &s,
        Method::DELETE,
        &format!("/api/v1/users/self/tokens/{gone}"),
        Some(DEFAULT_TEACHER_TOKEN),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    s.advance_clock(Duration::from_secs(2 * 86_400));
    let r = get(
        &s,
        "/api/v1/users/4/user_generated_tokens",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(purposes(&r), ["seeded", "expiring", "pending"]);
    let states: Vec<Value> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["workflow_state"].clone())
        .collect();
    assert_eq!(states, [json!("active"), json!("active"), json!("pending")]);
    assert!(
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == pending)
    );
}

// canvas-api.md §2 and §5: account search needs 2 characters (answered with `code`), a blank
// term lists everyone, numeric ids match, email only with include[]=email; numbered pages
// without `last`, with absolute same-host URLs (canvasapi strips the base URL with a regex).
#[tokio::test]
async fn account_user_search_follows_current_canvas() {
    let s = default_sim().await;
    let r = get(
        &s,
        "/api/v1/accounts/1/users?search_term=student&per_page=1&page=2",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json()[0]["login_id"], "stella.student");
    assert!(r.json()[0].get("email").is_none(), "no email unless asked");
    let l = links(&r);
    let names: Vec<&str> = l.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(names, ["current", "prev", "first"], "no last: {l:?}");
    let base = s.base_url();
    assert_eq!(
        rel(&l, "prev"),
        Some(
            format!("{base}/api/v1/accounts/1/users?search_term=student&page=1&per_page=1")
                .as_str()
        )
    );
    let r = get(
        &s,
        "/api/v1/accounts/1/users?search_term=student&page=9",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json(), json!([]));
    // Two characters are enough; one is Canvas's 400.
    let r = get(
        &s,
        "/api/v1/accounts/1/users?search_term=st",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(!r.json().as_array().unwrap().is_empty());
    let r = get(
        &s,
        "/api/v1/accounts/1/users?search_term=s",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json(),
        json!({"errors":[{"field":"search_term","code":"invalid","message":"2 or more characters is required"}]})
    );
    // A blank term lists everyone.
    for query in ["", "?search_term=", "?search_term=%20%20"] {
        let r = get(
            &s,
            &format!("/api/v1/accounts/1/users{query}"),
            DEFAULT_ADMIN_TOKEN,
        )
        .await;
        assert_eq!(r.json().as_array().unwrap().len(), 5, "{query}");
    }
    // Numeric ids match; email only with include[]=email.
    let r = get(
        &s,
        "/api/v1/accounts/1/users?search_term=4&include[]=email",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "one digit is still too short"
    );
    let r = get(
        &s,
        "/api/v1/accounts/1/users?search_term=04",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json()[0]["id"], 4, "{}", r.body);
    let r = get(
        &s,
        "/api/v1/accounts/1/users?search_term=theo&include[]=email",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json()[0]["email"], "theo.teacher@example.edu");
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
        // canvas-api.md §4: Ruby prints the float, `0.05`, not `0.0500`.
        assert_eq!(r.headers["x-request-cost"], "0.05");
    }
    // 30 at once: about 11 fit under the high-water mark, the rest get hosted Canvas's 429
    // (canvas-api.md §3: the default since 2025-10-08).
    let replies = futures::future::join_all(
        (0..30).map(|_| get(&s, "/api/v1/users/self", DEFAULT_ADMIN_TOKEN)),
    )
    .await;
    let throttled: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert!((10..=13).contains(&ok), "{ok} succeeded");
    assert_eq!(throttled.len() + ok, 30);
    let t = throttled[0];
    assert_eq!(t.body.trim(), "429 Forbidden (Rate Limit Exceeded)");
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
    // The form carries the session's CSRF token; posting it redirects back to the page, which
    // then has no button.
    let field = "name=\"authenticity_token\" value=\"";
    let at = page
        .find(field)
        .expect("the form has an authenticity_token")
        + field.len();
    let csrf = &page[at..at + page[at..].find('"').unwrap()];
    let r = client
        .post(format!("{}/profile/tokens/{id}/activate", s.base_url()))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .form(&[("authenticity_token", csrf)])
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

// canvas-api.md §3: older self-hosted instances (and the open-source code) answer 403.
#[tokio::test]
async fn throttling_can_answer_403_like_older_instances() {
    assert_eq!(
        SimConfig::default().throttle_status,
        StatusCode::TOO_MANY_REQUESTS,
        "429 is the default"
    );
    let s = sim(SimConfig {
        latency: Duration::from_millis(200),
        throttle_status: StatusCode::FORBIDDEN,
        ..Default::default()
    })
    .await;
    let replies = futures::future::join_all(
        (0..20).map(|_| get(&s, "/api/v1/users/self", DEFAULT_ADMIN_TOKEN)),
    )
    .await;
    let throttled: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::FORBIDDEN)
        .collect();
    assert!(!throttled.is_empty());
    assert_eq!(
        throttled[0].body.trim(),
        "403 Forbidden (Rate Limit Exceeded)"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::OK || r.status == StatusCode::FORBIDDEN)
    );
}

// canvas-api.md §2: show, update, delete and activate look tokens up among the user's active
// and pending ones, so a deleted token is 404 for each, and deleting it again is 404.
#[tokio::test]
async fn deleted_tokens_are_not_found() {
    let s = default_sim().await;
    let (id, value, _) = create(&s, DEFAULT_ADMIN_TOKEN, "3", "soon deleted").await;
    let hint = &value[..5];
    let path = format!("/api/v1/users/3/tokens/{id}");
    let r = call(&s, Method::DELETE, &path, Some(DEFAULT_ADMIN_TOKEN), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["workflow_state"], "deleted");
    let not_found = json!({"errors":[{"message":"The specified resource does not exist."}]});
    for key in [id.to_string(), hint.to_owned()] {
        let path = format!("/api/v1/users/3/tokens/{key}");
        let r = get(&s, &path, DEFAULT_ADMIN_TOKEN).await;
        assert_eq!(
            (r.status, r.json()),
            (StatusCode::NOT_FOUND, not_found.clone())
        );
        let r = call(
            &s,
            Method::PUT,
            &path,
            Some(DEFAULT_ADMIN_TOKEN),
            &[("token[purpose]", "revived?")],
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "update {key}");
        let r = call(
            &s,
            Method::PUT,
            &path,
            Some(DEFAULT_ADMIN_TOKEN),
            &[("token[regenerate]", "1")],
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "regenerate {key}");
        let r = call(&s, Method::DELETE, &path, Some(DEFAULT_ADMIN_TOKEN), &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "second delete {key}");
    }
    // Its owner cannot activate it either.
    assert_eq!(
        activate(&s, "stella.student", id).await.status,
        StatusCode::NOT_FOUND
    );
}

// canvas-api.md §3: an expired token says "Expired access token." with `expired_at`, a deleted
// one "Revoked access token.", a pending or unknown one "Invalid access token."; all three
// with the WWW-Authenticate challenge.
#[tokio::test]
async fn expired_and_revoked_tokens_say_so() {
    let s = default_sim().await;
    let expiry = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = call(
        &s,
        Method::POST,
        "/api/v1/users/self/tokens",
        Some(DEFAULT_TEACHER_TOKEN),
        &[("token[purpose]", "a day"), ("token[expires_at]", &expiry)],
    )
    .await;
    let expiring = r.json()["visible_token"].as_str().unwrap().to_owned();
    let (id, revoked, _) = create(&s, DEFAULT_TEACHER_TOKEN, "self", "revoked").await;
    call(
        &s,
        Method::DELETE,
        &format!("/api/v1/users/self/tokens/{id}"),
        Some(DEFAULT_TEACHER_TOKEN),
        &[],
    )
    .await;
    let (_, pending, _) = create(&s, DEFAULT_ADMIN_TOKEN, "3", "pending").await;
    s.advance_clock(Duration::from_secs(2 * 86_400));

    let challenge = |r: &Reply| {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
        assert_eq!(
            r.headers["www-authenticate"],
            r#"Bearer realm="canvas-lms""#
        );
    };
    let r = get(&s, "/api/v1/users/self", &expiring).await;
    challenge(&r);
    assert_eq!(
        r.json(),
        json!({"errors":[{"message":"Expired access token.","expired_at": expiry}]})
    );
    let r = get(&s, "/api/v1/users/self", &revoked).await;
    challenge(&r);
    assert_eq!(
        r.json(),
        json!({"errors":[{"message":"Revoked access token."}]})
    );
    assert_invalid_token(&get(&s, "/api/v1/users/self", &pending).await);
    assert_invalid_token(&get(&s, "/api/v1/users/self", "unknown-token-value").await);
}

// canvas-api.md §2: no `token[...]` at all is `params.require(:token)`'s "token is missing".
#[tokio::test]
async fn missing_token_params_say_token_is_missing() {
    let s = default_sim().await;
    let missing = json!({"errors":[{"message":"token is missing"}]});
    let r = call(
        &s,
        Method::POST,
        "/api/v1/users/2/tokens",
        Some(DEFAULT_ADMIN_TOKEN),
        &[("purpose", "not wrapped")],
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::BAD_REQUEST, missing.clone())
    );
    let (id, _, _) = create(&s, DEFAULT_ADMIN_TOKEN, "2", "to update").await;
    let r = call(
        &s,
        Method::PUT,
        &format!("/api/v1/users/2/tokens/{id}"),
        Some(DEFAULT_ADMIN_TOKEN),
        &[],
    )
    .await;
    assert_eq!((r.status, r.json()), (StatusCode::BAD_REQUEST, missing));
}

// canvas-api.md §2: an unparseable token[expires_at] is refused ("Invalid expiration date
// format") only for a student-only caller; for anyone else the model casts it to no expiry.
#[tokio::test]
async fn unparseable_expiry_is_refused_only_for_student_only_callers() {
    let s = default_sim().await;
    let form = [("token[purpose]", "x"), ("token[expires_at]", "soon")];
    let r = call(
        &s,
        Method::POST,
        "/api/v1/users/2/tokens",
        Some(DEFAULT_ADMIN_TOKEN),
        &form,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["expires_at"], Value::Null);
    let r = call(
        &s,
        Method::POST,
        "/api/v1/users/self/tokens",
        Some(DEFAULT_TEACHER_TOKEN),
        &form,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let id = r.json()["id"].as_u64().unwrap();
    let r = call(
        &s,
        Method::POST,
        "/api/v1/users/self/tokens",
        Some(DEFAULT_STUDENT_TOKEN),
        &form,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json(),
        json!([{"message":"Invalid expiration date format"}])
    );
    // Update casts too: an unreadable date clears the expiry.
    let r = call(
        &s,
        Method::PUT,
        &format!("/api/v1/users/self/tokens/{id}"),
        Some(DEFAULT_TEACHER_TOKEN),
        &[("token[expires_at]", "2099-01-01T00:00:00Z")],
    )
    .await;
    assert_eq!(r.json()["expires_at"], "2099-01-01T00:00:00Z");
    let r = call(
        &s,
        Method::PUT,
        &format!("/api/v1/users/self/tokens/{id}"),
        Some(DEFAULT_TEACHER_TOKEN),
        &[("token[expires_at]", "whenever")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["expires_at"], Value::Null);
}

// canvas-api.md §4: session (cookie) requests to the API are accepted, throttled by user id
// (not by session), and carry the rate-limit headers; Rails' CSRF check applies to session
// requests that change something.
#[tokio::test]
async fn session_requests_to_the_api_are_accepted_and_throttled_by_user() {
    let s = sim(SimConfig {
        latency: Duration::from_millis(300),
        throttle: Some(ThrottleSettings {
            high_water_mark: 100.0,
            ..ThrottleSettings::default()
        }),
        ..Default::default()
    })
    .await;
    let sam = sign_in(&s, "sam.student").await;
    let r = sam.send(sam.get("/api/v1/users/self")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["id"], 2);
    assert_eq!(r.headers["x-request-cost"], "0.05");
    let left: f64 = r.headers["x-rate-limit-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(left > 90.0 && left <= 100.0, "{left}");

    // Two sessions of one user share a bucket: with room for about two requests in flight,
    // four at once from two sessions are throttled; another user is not.
    let sam2 = sign_in(&s, "sam.student").await;
    let stella = sign_in(&s, "stella.student").await;
    let replies = futures::future::join_all([
        sam.send(sam.get("/api/v1/users/self")),
        sam2.send(sam2.get("/api/v1/users/self")),
        sam.send(sam.get("/api/v1/users/self")),
        sam2.send(sam2.get("/api/v1/users/self")),
        stella.send(stella.get("/api/v1/users/self")),
    ])
    .await;
    let throttled = replies[..4]
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        throttled >= 1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        replies[4].status,
        StatusCode::OK,
        "stella has her own bucket"
    );

    // Writing through a session needs the CSRF token.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let body = [
        ("token[purpose]", "from the browser"),
        ("token[expires_at]", "2030-01-01"),
    ];
    let r = sam
        .send(sam.post("/api/v1/users/self/tokens").form(&body))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = sam
        .send(
            sam.post("/api/v1/users/self/tokens")
                .header("x-csrf-token", "not-the-token")
                .form(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = sam
        .send(
            sam.post("/api/v1/users/self/tokens")
                .header("x-csrf-token", &sam.csrf)
                .form(&body),
        )
        .await;
    // The request got through to the controller, which applies the student limit.
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("120 days"), "{}", r.body);
}

// canvas-api.md §1: activation without a session redirects a browser to the login page (a
// client that asks for JSON gets Canvas's 401), and Rails' CSRF check applies to it.
#[tokio::test]
async fn activation_redirects_to_login_without_a_session_and_checks_csrf() {
    let s = default_sim().await;
    let (id, value, _) = create(&s, DEFAULT_ADMIN_TOKEN, "3", "to activate").await;
    let anonymous = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{}/profile/tokens/{id}/activate", s.base_url());
    for accept in [
        None,
        Some("text/html,application/xhtml+xml,*/*;q=0.8"),
        Some("*/*"),
    ] {
        let mut req = anonymous.post(&url);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "{accept:?}");
        assert_eq!(r.headers()["location"], "/login");
    }
    let r = anonymous
        .post(&url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status":"unauthenticated","errors":[{"message":"user authorization required"}]})
    );

    let stella = sign_in(&s, "stella.student").await;
    let no_token = stella
        .send(
            stella
                .post(&format!("/profile/tokens/{id}/activate"))
                .header("accept", "application/json"),
        )
        .await;
    assert_eq!(no_token.status, StatusCode::UNPROCESSABLE_ENTITY);
    let wrong = stella
        .send(
            stella
                .post(&format!("/profile/tokens/{id}/activate"))
                .form(&[("authenticity_token", "forged")]),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Another person's CSRF token does not do either.
    let sam = sign_in(&s, "sam.student").await;
    let crossed = stella
        .send(
            stella
                .post(&format!("/profile/tokens/{id}/activate"))
                .header("x-csrf-token", &sam.csrf),
        )
        .await;
    assert_eq!(crossed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_invalid_token(&get(&s, "/api/v1/users/self", &value).await);
    // The form field works as well as the header.
    let r = stella
        .send(
            stella
                .post(&format!("/profile/tokens/{id}/activate"))
                .header("accept", "application/json")
                .form(&[("authenticity_token", stella.csrf.as_str())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        get(&s, "/api/v1/users/self", &value).await.status,
        StatusCode::OK
    );
}

// canvas-api.md §2: `as_user_id=N` acts as user N: a token created that way is N's and pending;
// an id the caller may not act as is 401 {"errors":"Invalid as_user_id"}.
#[tokio::test]
async fn as_user_id_acts_as_that_user() {
    let s = default_sim().await;
    let r = get(&s, "/api/v1/users/self?as_user_id=3", DEFAULT_ADMIN_TOKEN).await;
    assert_eq!(r.json()["id"], 3);
    let r = get(
        &s,
        "/api/v1/users/self?as_user_id=sis_login_id:Sam.Student",
        DEFAULT_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.json()["id"], 2);
    // Acting as a student-only user: the student limit applies, and the token is theirs and
    // pending, with the admin as real_user_id.
    let r = call(
        &s,
        Method::POST,
        "/api/v1/users/self/tokens?as_user_id=3",
        Some(DEFAULT_ADMIN_TOKEN),
        &[("token[purpose]", "masqueraded")],
    )
    .await;
    assert_eq!(r.json(), json!([{"message":"Expiration date is required"}]));
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .date()
        .to_string();
    let r = call(
        &s,
        Method::POST,
        "/api/v1/users/self/tokens",
        Some(DEFAULT_ADMIN_TOKEN),
        // as_user_id in the form body works like the query string.
        &[
            ("as_user_id", "3"),
            ("token[purpose]", "masqueraded"),
            ("token[expires_at]", &soon),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.json();
    assert_eq!(token["user_id"], 3);
    assert_eq!(token["real_user_id"], 1);
    assert_eq!(token["workflow_state"], "pending");
    assert_invalid_token(
        &get(
            &s,
            "/api/v1/users/self",
            token["visible_token"].as_str().unwrap(),
        )
        .await,
    );
    // As a teacher (no student limit), still pending.
    let r = call(
        &s,
        Method::POST,
        "/api/v1/users/self/tokens?as_user_id=4",
        Some(DEFAULT_ADMIN_TOKEN),
        &[("token[purpose]", "as theo")],
    )
    .await;
    assert_eq!(
        (
            r.json()["user_id"].clone(),
            r.json()["workflow_state"].clone()
        ),
        (json!(4), json!("pending"))
    );
    // Acting as oneself is no masquerade.
    let r = get(&s, "/api/v1/users/self?as_user_id=2", DEFAULT_STUDENT_TOKEN).await;
    assert_eq!(r.json()["id"], 2);
    // Someone the caller may not act as, or nobody: 401 without a challenge.
    for (token, as_user) in [
        (DEFAULT_STUDENT_TOKEN, "3"),
        (DEFAULT_TEACHER_TOKEN, "1"),
        (DEFAULT_ADMIN_TOKEN, "999"),
        (DEFAULT_ADMIN_TOKEN, "sis_login_id:nobody"),
    ] {
        let r = get(
            &s,
            &format!("/api/v1/users/self?as_user_id={as_user}"),
            token,
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{as_user}");
        assert!(r.headers.get("www-authenticate").is_none());
        assert_eq!(r.json(), json!({"errors":"Invalid as_user_id"}));
    }
}

// canvas-api.md §2: `last_used_at` moves at most once every 10 minutes (AccessToken#used!), and
// moves `updated_at` with it.
#[tokio::test]
async fn last_used_at_moves_at_most_every_ten_minutes() {
    let s = default_sim().await;
    let (id, value, created) = create(&s, DEFAULT_TEACHER_TOKEN, "self", "used").await;
    assert_eq!(created["last_used_at"], Value::Null);
    let show = || async {
        get(
            &s,
            &format!("/api/v1/users/4/tokens/{id}"),
            DEFAULT_ADMIN_TOKEN,
        )
        .await
        .json()
    };
    s.advance_clock(Duration::from_secs(60));
    assert_eq!(
        get(&s, "/api/v1/users/self", &value).await.status,
        StatusCode::OK
    );
    let first = show().await;
    assert!(first["last_used_at"].is_string(), "{first}");
    assert_eq!(first["updated_at"], first["last_used_at"]);
    assert_ne!(first["updated_at"], created["updated_at"]);
    s.advance_clock(Duration::from_secs(9 * 60));
    get(&s, "/api/v1/users/self", &value).await;
    let later = show().await;
    assert_eq!(
        later["last_used_at"], first["last_used_at"],
        "9 minutes: unchanged"
    );
    assert_eq!(later["updated_at"], first["updated_at"]);
    s.advance_clock(Duration::from_secs(60));
    get(&s, "/api/v1/users/self", &value).await;
    let moved = show().await;
    assert_ne!(
        moved["last_used_at"], first["last_used_at"],
        "10 minutes: moved"
    );
    assert_eq!(moved["updated_at"], moved["last_used_at"]);
}

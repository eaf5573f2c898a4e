//! The simulator over HTTP: permissions, pending tokens and activation, expiry, deletion,
//! pagination, throttling and Canvas's error shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Display;
use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokendesk_canvas_sim::browser::{self, Session};
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

/// A client that follows no redirect, to see where the simulator sends a browser.
fn no_redirects() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The time `days` from now, in whole seconds, as RFC 3339.
fn in_days(days: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::days(days))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The date `days` from now (`YYYY-MM-DD`).
fn date_in_days(days: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::days(days))
        .date()
        .to_string()
}

fn token_path(user: impl Display, id: impl Display) -> String {
    format!("/api/v1/users/{user}/tokens/{id}")
}

/// The two keys a token is found by: its id and the hint of its value.
fn id_and_hint(id: u64, value: &str) -> [String; 2] {
    [id.to_string(), value[..5].to_owned()]
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    async fn of(request: RequestBuilder) -> Reply {
        let r = request.send().await.unwrap();
        Reply {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `id` of the token in the body.
    fn id(&self) -> u64 {
        self.json()["id"].as_u64().unwrap()
    }

    /// The `visible_token` of the token in the body: its value, right after create or
    /// regenerate.
    fn visible_token(&self) -> String {
        self.json()["visible_token"].as_str().unwrap().to_owned()
    }

    /// `X-Rate-Limit-Remaining`.
    fn remaining(&self) -> f64 {
        self.headers["x-rate-limit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// A form body's names and values.
type Form<'a> = [(&'a str, &'a str)];

/// The API as one token, or no token at all, calls it.
#[derive(Clone, Copy)]
struct Api<'a> {
    base: &'a str,
    token: Option<&'a str>,
}

fn api<'a>(sim: &'a RunningSim, token: &'a str) -> Api<'a> {
    Api {
        base: sim.base_url(),
        token: Some(token),
    }
}

fn anonymous(sim: &RunningSim) -> Api<'_> {
    Api {
        base: sim.base_url(),
        token: None,
    }
}

impl Api<'_> {
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = Client::new().request(method, format!("{}{path}", self.base));
        match self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// A request with the form as its body (none when the form is empty).
    async fn call(&self, method: Method, path: &str, form: &Form<'_>) -> Reply {
        let mut request = self.request(method, path);
        if !form.is_empty() {
            request = request.form(form);
        }
        Reply::of(request).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, &[]).await
    }

    async fn post(&self, path: &str, form: &Form<'_>) -> Reply {
        self.call(Method::POST, path, form).await
    }

    async fn put(&self, path: &str, form: &Form<'_>) -> Reply {
        self.call(Method::PUT, path, form).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, &[]).await
    }

    /// `GET /api/v1/users/:user_id`.
    async fn user(&self, reference: &str) -> Reply {
        self.get(&format!("/api/v1/users/{reference}")).await
    }

    /// `GET /api/v1/users/self`.
    async fn me(&self) -> Reply {
        self.user("self").await
    }

    /// `POST /api/v1/users/:user_id/tokens` with this form.
    async fn create_with(&self, user: &str, form: &Form<'_>) -> Reply {
        self.post(&format!("/api/v1/users/{user}/tokens"), form)
            .await
    }

    /// `POST /api/v1/users/:user_id/tokens` with a purpose and an expiry.
    async fn create_until(&self, user: &str, purpose: &str, expires_at: &str) -> Reply {
        let form = [
            ("token[purpose]", purpose),
            ("token[expires_at]", expires_at),
        ];
        self.create_with(user, &form).await
    }

    /// Creates a token for `user`, expiring in 2099; returns (id, value, JSON).
    async fn create(&self, user: &str, purpose: &str) -> (u64, String, Value) {
        let r = self
            .create_until(user, purpose, "2099-01-01T00:00:00Z")
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        (r.id(), r.visible_token(), r.json())
    }
}

/// A browser signed in to the simulator.
struct Browser {
    client: Client,
    base: String,
    session: Session,
}

async fn sign_in(sim: &RunningSim, login: &str) -> Browser {
    let client = no_redirects();
    let base = sim.base_url().to_owned();
    let r = Reply::of(client.get(format!("{base}{}", browser::sign_in_path(login)))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let session = Session::from_set_cookies(r.headers.get_all("set-cookie"))
        .expect("a session cookie and a _csrf_token cookie");
    assert!(
        session
            .cookie_header()
            .split("; ")
            .any(|p| p.starts_with("canvas_sim_session="))
    );
    Browser {
        client,
        base,
        session,
    }
}

impl Browser {
    fn csrf(&self) -> &str {
        self.session.csrf_token()
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(format!("{}{path}", self.base))
    }

    /// A post to the Activate button of token `id`.
    fn activation(&self, id: u64) -> RequestBuilder {
        self.post(&browser::activation_path(id))
    }

    /// Posts the activation as Canvas's page script does: JSON, with `X-CSRF-Token`.
    async fn activate(&self, id: u64) -> Reply {
        let request = self
            .activation(id)
            .header("accept", "application/json")
            .header(browser::CSRF_HEADER, self.csrf());
        self.send(request).await
    }

    async fn send(&self, request: RequestBuilder) -> Reply {
        Reply::of(request.header("cookie", self.session.cookie_header())).await
    }
}

/// A token the admin makes for `stella.student` (user 3), pending until she activates it;
/// returns its id and value.
async fn pending_for_stella(sim: &RunningSim, purpose: &str) -> (u64, String) {
    let (id, value, _) = api(sim, DEFAULT_ADMIN_TOKEN).create("3", purpose).await;
    (id, value)
}

/// Signs in as `login` in the browser and activates token `id`.
async fn activate(sim: &RunningSim, login: &str, id: u64) -> Reply {
    sign_in(sim, login).await.activate(id).await
}

/// Canvas's usual error body.
fn errors(message: &str) -> Value {
    json!({"errors": [{"message": message}]})
}

/// `render_error`'s body: a top-level array with one message.
fn rendered(message: &str) -> Value {
    json!([{ "message": message }])
}

/// The body of a request without credentials.
fn unauthenticated() -> Value {
    json!({"status":"unauthenticated","errors":[{"message":"user authorization required"}]})
}

/// A 401 with Canvas's `WWW-Authenticate` challenge, and this body.
fn assert_challenged(r: &Reply, body: Value) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(
        r.headers["www-authenticate"],
        r#"Bearer realm="canvas-lms""#
    );
    assert_eq!(r.json(), body);
}

/// A 401 without a challenge, and this body.
fn assert_unchallenged(r: &Reply, body: Value) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.headers.get("www-authenticate").is_none());
    assert_eq!(r.json(), body);
}

fn assert_invalid_token(r: &Reply) {
    assert_challenged(r, errors("Invalid access token."));
}

fn assert_unauthorized(r: &Reply) {
    assert_unchallenged(
        r,
        json!({"status":"unauthorized","errors":[{"message":"user not authorized to perform that action"}]}),
    );
}

fn assert_not_found(r: &Reply, what: &str) {
    assert_eq!(
        (r.status, r.json()),
        (
            StatusCode::NOT_FOUND,
            errors("The specified resource does not exist.")
        ),
        "{what}"
    );
}

/// A browser is sent to the login page.
fn assert_sent_to_login(r: &Reply, what: &str) {
    assert_eq!(r.status, StatusCode::FOUND, "{what}");
    assert_eq!(r.headers["location"], "/login");
}

#[tokio::test]
async fn users_resolve_in_every_form() {
    let s = default_sim().await;
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    for path in ["self", "1", "sis_login_id:ada.admin", "sis_user_id:A0001"] {
        let r = admin.user(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.json()["login_id"], "ada.admin");
    }
    let r = admin.user("sis_login_id:sam.student").await;
    assert_eq!(r.json()["id"], 2);
    assert_eq!(r.json()["sortable_name"], "Student, Sam");
    // No bare login_id: prefix, unknown people are not found.
    for path in ["login_id:sam.student", "sis_login_id:nobody", "999"] {
        assert_not_found(&admin.user(path).await, path);
    }
}

// canvas-api.md §2: another person's profile, for a non-admin, is not found (not 401).
#[tokio::test]
async fn another_persons_profile_is_not_found_for_a_non_admin() {
    let s = default_sim().await;
    let student = api(&s, DEFAULT_STUDENT_TOKEN);
    let r = student.me().await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["id"], 2);
    for path in ["1", "3", "sis_login_id:ada.admin", "sis_user_id:S1002"] {
        assert_not_found(&student.user(path).await, path);
    }
}

// canvas-api.md §2: `sis_login_id:` look-ups ignore case (LOWER(unique_id)), and the
// `hex:sis_login_id:<hex>` form is accepted (as is `hex:` for the other SIS columns).
#[tokio::test]
async fn sis_login_id_lookups_ignore_case_and_accept_hex() {
    let s = default_sim().await;
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let hex = |text: &str| -> String { text.bytes().map(|b| format!("{b:02x}")).collect() };
    let paths = [
        "sis_login_id:SAM.Student".to_owned(),
        "sis_login_id:sam.student".to_owned(),
        format!("hex:sis_login_id:{}", hex("sam.student")),
        format!("hex:sis_login_id:{}", hex("Sam.Student").to_uppercase()),
        format!("hex:sis_user_id:{}", hex("S1001")),
    ];
    for path in &paths {
        let r = admin.user(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert_eq!(r.json()["id"], 2, "{path}");
    }
    // SIS user ids keep their case; a malformed hex is not a reference.
    for path in [
        "sis_user_id:s1001",
        "hex:sis_login_id:zz",
        "hex:sis_login_id:7",
    ] {
        assert_eq!(
            admin.user(path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // Tokens are addressed the same way.
    let (id, _, _) = admin.create("sis_login_id:SAM.STUDENT", "case").await;
    let r = admin.get(&token_path("sis_login_id:Sam.Student", id)).await;
    assert_eq!(r.json()["user_id"], 2);
}

// canvas-api.md §2: login_id, email and the SIS ids only for admins with the permissions (the
// seeded admin holds them all); a person's own profile carries none of them.
#[tokio::test]
async fn user_fields_are_shown_to_admins_only() {
    let s = default_sim().await;
    let admin_view = api(&s, DEFAULT_ADMIN_TOKEN).user("2").await.json();
    assert_eq!(admin_view["login_id"], "sam.student");
    assert_eq!(admin_view["email"], "sam.student@example.edu");
    assert_eq!(admin_view["sis_user_id"], "S1001");
    assert_eq!(admin_view["sortable_name"], "Student, Sam");
    for token in [DEFAULT_STUDENT_TOKEN, DEFAULT_TEACHER_TOKEN] {
        let own = api(&s, token).me().await.json();
        assert!(own["id"].is_u64() && own["name"].is_string(), "{own}");
        for field in ["login_id", "email", "sis_user_id", "integration_id"] {
            assert!(own.get(field).is_none(), "{field} in {own}");
        }
    }
}

#[tokio::test]
async fn credentials_are_required_and_checked() {
    let s = default_sim().await;
    assert_challenged(&anonymous(&s).me().await, unauthenticated());
    assert_invalid_token(&api(&s, "not-a-token").me().await);
    // The access_token parameter works like the header.
    let path = format!("/api/v1/users/self?access_token={DEFAULT_TEACHER_TOKEN}");
    assert_eq!(anonymous(&s).get(&path).await.json()["id"], 4);
}

#[tokio::test]
async fn tokens_made_for_others_are_pending_until_the_owner_activates_them() {
    let s = default_sim().await;
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let (id, value, json) = admin
        .create("sis_login_id:stella.student", "for scripts")
        .await;
    assert_eq!(json["workflow_state"], "pending");
    assert_eq!(json["user_id"], 3);
    assert_eq!(value.len(), 64);
    assert_invalid_token(&api(&s, &value).me().await);
    // Only a browser session of the owner activates; another person's session finds nothing.
    assert_eq!(
        activate(&s, "sam.student", id).await.status,
        StatusCode::NOT_FOUND
    );
    let r = activate(&s, "stella.student", id).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["workflow_state"], "active");
    assert_eq!(api(&s, &value).me().await.json()["id"], 3);
    // Activating again is Canvas's 400.
    let r = activate(&s, "stella.student", id).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json(), json!({"errors":{"token":["is already active"]}}));
    // An API token cannot use the session route: without a session it is sent to sign in.
    let url = format!("{}{}", s.base_url(), browser::activation_path(id));
    let r = Reply::of(no_redirects().post(url).bearer_auth(&value)).await;
    assert_sent_to_login(&r, "with a token");
    // Own tokens are active at once.
    let (_, own, json) = api(&s, DEFAULT_TEACHER_TOKEN)
        .create("self", "my own")
        .await;
    assert_eq!(json["workflow_state"], "active");
    assert_eq!(api(&s, &own).me().await.status, StatusCode::OK);
}

#[tokio::test]
async fn show_by_id_or_hint_and_the_value_is_shown_once() {
    let s = default_sim().await;
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let (id, value, _) = admin.create("2", "lookup").await;
    let hint = &value[..5];
    for key in id_and_hint(id, &value) {
        let r = admin.get(&token_path(2, key)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["id"], id);
        assert_eq!(r.json()["visible_token"], format!("{hint}..."));
        assert!(!r.body.contains(&value));
    }
    // The token is not user 3's.
    let r = admin.get(&token_path(3, id)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The owner may read it; another student gets "not authorized" for a token of that user.
    let r = api(&s, DEFAULT_STUDENT_TOKEN)
        .get(&token_path("self", id))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_unauthorized(&api(&s, DEFAULT_TEACHER_TOKEN).get(&token_path(2, id)).await);
}

#[tokio::test]
async fn create_validates_like_canvas() {
    let s = default_sim().await;
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let student = api(&s, DEFAULT_STUDENT_TOKEN);
    let r = admin
        .create_with("2", &[("token[expires_at]", "2099-01-01")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json(), rendered("token[purpose] is missing"));
    let r = admin.create_with("2", &[("token[purpose]", "")]).await;
    assert_eq!(
        r.json(),
        json!({"errors":{"purpose":[{"attribute":"purpose","type":"too_short","message":"too_short"}]}})
    );
    let long = "p".repeat(256);
    let r = admin.create_with("2", &[("token[purpose]", &long)]).await;
    assert_eq!(r.json()["errors"]["purpose"][0]["type"], "too_long");
    // A student's own token obeys the 120-day limit and needs an expiry.
    let r = student
        .create_with("self", &[("token[purpose]", "x")])
        .await;
    assert_eq!(r.json(), rendered("Expiration date is required"));
    let r = student.create_until("self", "x", "2099-01-01").await;
    assert_eq!(
        r.json(),
        rendered("Expiration date cannot be more than 120 days in the future")
    );
    let soon = date_in_days(30);
    let r = student.create_until("self", "x", &soon).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // An admin creating for a student is not held to it; a student cannot create for others.
    let r = admin.create_with("2", &[("token[purpose]", "x")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_unauthorized(&student.create_until("3", "x", &soon).await);
    let teacher = api(&s, DEFAULT_TEACHER_TOKEN);
    assert_unauthorized(&teacher.create_with("3", &[("token[purpose]", "x")]).await);
    // JSON bodies work; malformed JSON is a 400.
    let post = || admin.request(Method::POST, "/api/v1/users/3/tokens");
    let body = json!({"token": {"purpose": "json", "expires_at": null}});
    assert_eq!(Reply::of(post().json(&body)).await.status, StatusCode::OK);
    let malformed = post()
        .header("content-type", "application/json")
        .body("{\"token\":");
    assert_eq!(Reply::of(malformed).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn regenerate_replaces_the_value_and_deletion_stops_it() {
    let s = default_sim().await;
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let teacher = api(&s, DEFAULT_TEACHER_TOKEN);
    let student = api(&s, DEFAULT_STUDENT_TOKEN);
    let (id, old, _) = teacher.create("self", "regen").await;
    let form = [("token[regenerate]", "1"), ("token[purpose]", "renamed")];
    let r = teacher.put(&token_path("self", id), &form).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new = r.visible_token();
    assert_eq!(new.len(), 64);
    assert_eq!(r.json()["purpose"], "renamed");
    assert_eq!(r.json()["workflow_state"], "active");
    assert_invalid_token(&api(&s, &old).me().await);
    assert_eq!(api(&s, &new).me().await.status, StatusCode::OK);
    // Regenerated by an admin for someone else: pending again.
    let r = admin
        .put(&token_path(4, id), &[("token[regenerate]", "true")])
        .await;
    assert_eq!(r.json()["workflow_state"], "pending");
    assert_invalid_token(&api(&s, &r.visible_token()).me().await);
    // Another person's update: not found; the owner without rights: not authorized.
    let r = student
        .put(&token_path(4, id), &[("token[purpose]", "x")])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Delete: 200 with the token, deleted, refused at once (canvas-api.md §2).
    let (id2, value2, _) = teacher.create("self", "to delete").await;
    let (id3, _, _) = teacher.create("self", "not the student's").await;
    let r = admin.delete(&token_path(4, id2)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["workflow_state"], "deleted");
    assert_eq!(
        api(&s, &value2).me().await.json()["errors"][0]["message"],
        "Revoked access token."
    );
    let r = student.delete(&token_path(4, id3)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn expiry_is_real() {
    let s = default_sim().await;
    let teacher = api(&s, DEFAULT_TEACHER_TOKEN);
    let r = teacher.create_until("self", "short", &in_days(1)).await;
    let (id, value) = (r.id(), r.visible_token());
    assert_eq!(api(&s, &value).me().await.status, StatusCode::OK);
    s.advance_clock(Duration::from_secs(2 * 86_400));
    let r = api(&s, &value).me().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["errors"][0]["message"], "Expired access token.");
    let r = api(&s, DEFAULT_ADMIN_TOKEN).get(&token_path(4, id)).await;
    assert_eq!(r.json()["can_manually_regenerate"], false);
    // Regenerating an expired token needs a new expiry.
    let r = teacher
        .put(&token_path("self", id), &[("token[regenerate]", "1")])
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

/// One field of every item of a JSON array body.
fn each(reply: &Reply, field: &str) -> Vec<Value> {
    let items = reply.json().as_array().unwrap().clone();
    items.iter().map(|t| t[field].clone()).collect()
}

fn purposes(reply: &Reply) -> Vec<String> {
    each(reply, "purpose")
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

/// Creates tokens `t0` … `t11` for user 3 (as the admin); returns their purposes.
async fn twelve_tokens(admin: Api<'_>) -> Vec<String> {
    let purposes: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    for purpose in &purposes {
        admin.create("3", purpose).await;
    }
    purposes
}

// canvas-api.md §5: on a single-shard install user_generated_tokens pages by number
// (page=1, 2, …, with `last`), its Link URLs are relative paths, and a page past the end is [].
#[tokio::test]
async fn user_generated_tokens_page_by_number_with_relative_links() {
    let s = default_sim().await;
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let twelve = twelve_tokens(admin).await;
    const LIST: &str = "/api/v1/users/3/user_generated_tokens";
    let first = admin.get(&format!("{LIST}?per_page=5")).await;
    let l = links(&first);
    let names: Vec<&str> = l.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(names, ["current", "next", "first", "last"], "{l:?}");
    assert_eq!(
        rel(&l, "next"),
        Some(format!("{LIST}?page=2&per_page=5").as_str())
    );
    assert_eq!(
        rel(&l, "last"),
        Some(format!("{LIST}?page=3&per_page=5").as_str())
    );
    assert_eq!(purposes(&first), ["t0", "t1", "t2", "t3", "t4"]);
    // Follow `next` as a client must: a path, resolved against the Canvas base URL.
    let mut url = rel(&l, "next").map(str::to_owned);
    let mut all = purposes(&first);
    while let Some(path) = url {
        assert!(path.starts_with("/api/v1/"), "{path}");
        let r = admin.get(&path).await;
        all.extend(purposes(&r));
        url = rel(&links(&r), "next").map(str::to_owned);
    }
    assert_eq!(all, twelve);
    // page=2 is the second page, with prev; page=999 is empty.
    let second = admin.get(&format!("{LIST}?per_page=5&page=2")).await;
    assert_eq!(purposes(&second), ["t5", "t6", "t7", "t8", "t9"]);
    assert_eq!(
        rel(&links(&second), "prev"),
        Some(format!("{LIST}?page=1&per_page=5").as_str())
    );
    let past = admin.get(&format!("{LIST}?per_page=5&page=999")).await;
    assert_eq!(past.json(), json!([]));
    assert!(rel(&links(&past), "next").is_none());
    // The original query is carried along; the path stays as the client wrote it.
    let r = admin
        .get("/api/v1/users/sis_user_id:S1002/user_generated_tokens?per_page=5&foo=bar")
        .await;
    assert_eq!(
        rel(&links(&r), "next"),
        Some("/api/v1/users/sis_user_id:S1002/user_generated_tokens?foo=bar&page=2&per_page=5")
    );
    // A student may not list someone else's tokens.
    assert_unauthorized(&api(&s, DEFAULT_STUDENT_TOKEN).get(LIST).await);
    // per_page is clamped to 1–100 and defaults to 10.
    let r = admin.get(&format!("{LIST}?per_page=0")).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(admin.get(LIST).await.json().as_array().unwrap().len(), 10);
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
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let twelve = twelve_tokens(admin).await;
    let mut path = "/api/v1/users/3/user_generated_tokens?per_page=5".to_owned();
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let r = admin.get(&path).await;
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
    assert_eq!(all, twelve);
    // A page number is no bookmark: the first page again.
    let r = admin
        .get("/api/v1/users/3/user_generated_tokens?per_page=5&page=2")
        .await;
    assert_eq!(purposes(&r), ["t0", "t1", "t2", "t3", "t4"]);
}

// canvas-api.md §2: user_generated_tokens lists active and pending tokens, expired ones too,
// deleted ones never.
#[tokio::test]
async fn user_generated_tokens_lists_expired_tokens_but_never_deleted_ones() {
    let s = default_sim().await;
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let teacher = api(&s, DEFAULT_TEACHER_TOKEN);
    let r = teacher.create_until("self", "expiring", &in_days(1)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (pending, _, _) = admin.create("4", "pending").await;
    let (gone, _, _) = teacher.create("self", "deleted").await;
    let r = teacher.delete(&token_path("self", gone)).await;
    assert_eq!(r.status, StatusCode::OK);
    s.advance_clock(Duration::from_secs(2 * 86_400));
    let r = admin.get("/api/v1/users/4/user_generated_tokens").await;
    assert_eq!(purposes(&r), ["seeded", "expiring", "pending"]);
    assert_eq!(
        each(&r, "workflow_state"),
        [json!("active"), json!("active"), json!("pending")]
    );
    assert!(each(&r, "id").contains(&json!(pending)));
}

// canvas-api.md §2 and §5: account search needs 2 characters (answered with `code`), a blank
// term lists everyone, numeric ids match, email only with include[]=email; numbered pages
// without `last`, with absolute same-host URLs (canvasapi strips the base URL with a regex).
#[tokio::test]
async fn account_user_search_follows_current_canvas() {
    let s = default_sim().await;
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    const USERS: &str = "/api/v1/accounts/1/users";
    let r = admin
        .get(&format!("{USERS}?search_term=student&per_page=1&page=2"))
        .await;
    assert_eq!(r.json()[0]["login_id"], "stella.student");
    assert!(r.json()[0].get("email").is_none(), "no email unless asked");
    let l = links(&r);
    let names: Vec<&str> = l.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(names, ["current", "prev", "first"], "no last: {l:?}");
    let base = s.base_url();
    assert_eq!(
        rel(&l, "prev"),
        Some(format!("{base}{USERS}?search_term=student&page=1&per_page=1").as_str())
    );
    let r = admin
        .get(&format!("{USERS}?search_term=student&page=9"))
        .await;
    assert_eq!(r.json(), json!([]));
    // Two characters are enough; one is Canvas's 400.
    let r = admin.get(&format!("{USERS}?search_term=st")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(!r.json().as_array().unwrap().is_empty());
    let r = admin.get(&format!("{USERS}?search_term=s")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json(),
        json!({"errors":[{"field":"search_term","code":"invalid","message":"2 or more characters is required"}]})
    );
    // A blank term lists everyone.
    for query in ["", "?search_term=", "?search_term=%20%20"] {
        let r = admin.get(&format!("{USERS}{query}")).await;
        assert_eq!(r.json().as_array().unwrap().len(), 5, "{query}");
    }
    // Numeric ids match; email only with include[]=email.
    let r = admin
        .get(&format!("{USERS}?search_term=4&include[]=email"))
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "one digit is still too short"
    );
    let r = admin.get(&format!("{USERS}?search_term=04")).await;
    assert_eq!(r.json()[0]["id"], 4, "{}", r.body);
    let r = admin
        .get(&format!("{USERS}?search_term=theo&include[]=email"))
        .await;
    assert_eq!(r.json()[0]["email"], "theo.teacher@example.edu");
    let teacher = api(&s, DEFAULT_TEACHER_TOKEN);
    assert_unauthorized(&teacher.get(&format!("{USERS}?search_term=student")).await);
    let r = admin.get("/api/v1/accounts/7/users").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_bucket_throttles_wide_parallel_clients_only() {
    let s = sim(SimConfig {
        latency: Duration::from_millis(200),
        throttle: Some(ThrottleSettings::default()),
        ..Default::default()
    })
    .await;
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    // Sequential requests are never throttled and report what is left.
    for _ in 0..3 {
        let r = admin.me().await;
        assert_eq!(r.status, StatusCode::OK);
        let left = r.remaining();
        assert!(left > 590.0 && left <= 600.0, "{left}");
        // canvas-api.md §4: Ruby prints the float, `0.05`, not `0.0500`.
        assert_eq!(r.headers["x-request-cost"], "0.05");
    }
    // 30 at once: about 11 fit under the high-water mark, the rest get hosted Canvas's 429
    // (canvas-api.md §3: the default since 2025-10-08).
    let replies = futures::future::join_all((0..30).map(|_| admin.me())).await;
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
    let r = api(&s, DEFAULT_TEACHER_TOKEN).me().await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn injected_failures_and_state_file() {
    let s = sim(SimConfig {
        throttle: None,
        fail_rate: 1.0,
        ..Default::default()
    })
    .await;
    let r = api(&s, DEFAULT_ADMIN_TOKEN).me().await;
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
    let (id, value) = pending_for_stella(&s, "survives").await;
    s.shutdown().await;
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(!saved.contains(&value), "the state file keeps only hashes");
    assert!(!saved.contains(DEFAULT_ADMIN_TOKEN));
    let s = sim(config).await;
    assert_eq!(
        activate(&s, "stella.student", id).await.status,
        StatusCode::OK
    );
    assert_eq!(api(&s, &value).me().await.status, StatusCode::OK);
    s.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_settings_page_lists_tokens_with_an_activate_button() {
    let s = default_sim().await;
    let (id, _) = pending_for_stella(&s, "<b>page</b>").await;
    let signed_out = no_redirects().get(format!("{}/profile/settings", s.base_url()));
    assert_eq!(
        Reply::of(signed_out).await.status,
        StatusCode::SEE_OTHER,
        "signed out goes to /login"
    );
    let stella = sign_in(&s, "stella.student").await;
    let page = stella.send(stella.get("/profile/settings")).await.body;
    assert!(page.contains("Approved Integrations"));
    assert!(page.contains(&browser::activation_path(id)));
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
    let form = stella
        .activation(id)
        .header("accept", "text/html")
        .form(&[("authenticity_token", csrf)]);
    assert_eq!(stella.send(form).await.status, StatusCode::SEE_OTHER);
    let page = stella.send(stella.get("/profile/settings")).await.body;
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
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let replies = futures::future::join_all((0..20).map(|_| admin.me())).await;
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
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let (id, value, _) = admin.create("3", "soon deleted").await;
    let r = admin.delete(&token_path(3, id)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["workflow_state"], "deleted");
    for key in id_and_hint(id, &value) {
        let path = token_path(3, &key);
        assert_not_found(&admin.get(&path).await, &key);
        let calls: [(&str, Method, &Form); 3] = [
            ("update", Method::PUT, &[("token[purpose]", "revived?")]),
            ("regenerate", Method::PUT, &[("token[regenerate]", "1")]),
            ("second delete", Method::DELETE, &[]),
        ];
        for (what, method, form) in calls {
            let r = admin.call(method, &path, form).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{what} {key}");
        }
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
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let teacher = api(&s, DEFAULT_TEACHER_TOKEN);
    let expiry = in_days(1);
    let expiring = teacher.create_until("self", "a day", &expiry).await;
    let expiring = expiring.visible_token();
    let (id, revoked, _) = teacher.create("self", "revoked").await;
    teacher.delete(&token_path("self", id)).await;
    let (_, pending, _) = admin.create("3", "pending").await;
    s.advance_clock(Duration::from_secs(2 * 86_400));

    assert_challenged(
        &api(&s, &expiring).me().await,
        json!({"errors":[{"message":"Expired access token.","expired_at": expiry}]}),
    );
    assert_challenged(
        &api(&s, &revoked).me().await,
        errors("Revoked access token."),
    );
    assert_invalid_token(&api(&s, &pending).me().await);
    assert_invalid_token(&api(&s, "unknown-token-value").me().await);
}

// canvas-api.md §2: no `token[...]` at all is `params.require(:token)`'s "token is missing".
#[tokio::test]
async fn missing_token_params_say_token_is_missing() {
    let s = default_sim().await;
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let missing = (StatusCode::BAD_REQUEST, errors("token is missing"));
    let r = admin.create_with("2", &[("purpose", "not wrapped")]).await;
    assert_eq!((r.status, r.json()), missing);
    let (id, _, _) = admin.create("2", "to update").await;
    let r = admin.put(&token_path(2, id), &[]).await;
    assert_eq!((r.status, r.json()), missing);
}

// canvas-api.md §2: an unparseable token[expires_at] is refused ("Invalid expiration date
// format") only for a student-only caller; for anyone else the model casts it to no expiry.
#[tokio::test]
async fn unparseable_expiry_is_refused_only_for_student_only_callers() {
    let s = default_sim().await;
    let teacher = api(&s, DEFAULT_TEACHER_TOKEN);
    let form = [("token[purpose]", "x"), ("token[expires_at]", "soon")];
    let r = api(&s, DEFAULT_ADMIN_TOKEN).create_with("2", &form).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["expires_at"], Value::Null);
    let r = teacher.create_with("self", &form).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let path = token_path("self", r.id());
    let r = api(&s, DEFAULT_STUDENT_TOKEN)
        .create_with("self", &form)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json(), rendered("Invalid expiration date format"));
    // Update casts too: an unreadable date clears the expiry.
    let r = teacher
        .put(&path, &[("token[expires_at]", "2099-01-01T00:00:00Z")])
        .await;
    assert_eq!(r.json()["expires_at"], "2099-01-01T00:00:00Z");
    let r = teacher
        .put(&path, &[("token[expires_at]", "whenever")])
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
    let me = |b: &Browser| b.get("/api/v1/users/self");
    let sam = sign_in(&s, "sam.student").await;
    let r = sam.send(me(&sam)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["id"], 2);
    assert_eq!(r.headers["x-request-cost"], "0.05");
    let left = r.remaining();
    assert!(left > 90.0 && left <= 100.0, "{left}");

    // Two sessions of one user share a bucket: with room for about two requests in flight,
    // four at once from two sessions are throttled; another user is not.
    let sam2 = sign_in(&s, "sam.student").await;
    let stella = sign_in(&s, "stella.student").await;
    let replies =
        futures::future::join_all([&sam, &sam2, &sam, &sam2, &stella].map(|b| b.send(me(b)))).await;
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
    let create = || sam.post("/api/v1/users/self/tokens").form(&body);
    let r = sam.send(create()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = sam
        .send(create().header(browser::CSRF_HEADER, "not-the-token"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = sam
        .send(create().header(browser::CSRF_HEADER, sam.csrf()))
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
    let (id, value) = pending_for_stella(&s, "to activate").await;
    let anonymous = no_redirects();
    let url = format!("{}{}", s.base_url(), browser::activation_path(id));
    for accept in [
        None,
        Some("text/html,application/xhtml+xml,*/*;q=0.8"),
        Some("*/*"),
    ] {
        let mut request = anonymous.post(&url);
        if let Some(a) = accept {
            request = request.header("accept", a);
        }
        assert_sent_to_login(&Reply::of(request).await, &format!("{accept:?}"));
    }
    let r = Reply::of(anonymous.post(&url).header("accept", "application/json")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json(), unauthenticated());

    let stella = sign_in(&s, "stella.student").await;
    let no_token = stella
        .send(stella.activation(id).header("accept", "application/json"))
        .await;
    assert_eq!(no_token.status, StatusCode::UNPROCESSABLE_ENTITY);
    let wrong = stella
        .send(
            stella
                .activation(id)
                .form(&[("authenticity_token", "forged")]),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Another person's CSRF token does not do either.
    let sam = sign_in(&s, "sam.student").await;
    let crossed = stella
        .send(
            stella
                .activation(id)
                .header(browser::CSRF_HEADER, sam.csrf()),
        )
        .await;
    assert_eq!(crossed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_invalid_token(&api(&s, &value).me().await);
    // The form field works as well as the header.
    let r = stella
        .send(
            stella
                .activation(id)
                .header("accept", "application/json")
                .form(&[("authenticity_token", stella.csrf())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(api(&s, &value).me().await.status, StatusCode::OK);
}

// canvas-api.md §2: `as_user_id=N` acts as user N: a token created that way is N's and pending;
// an id the caller may not act as is 401 {"errors":"Invalid as_user_id"}.
#[tokio::test]
async fn as_user_id_acts_as_that_user() {
    let s = default_sim().await;
    let admin = api(&s, DEFAULT_ADMIN_TOKEN);
    let r = admin.user("self?as_user_id=3").await;
    assert_eq!(r.json()["id"], 3);
    let r = admin.user("self?as_user_id=sis_login_id:Sam.Student").await;
    assert_eq!(r.json()["id"], 2);
    // Acting as a student-only user: the student limit applies, and the token is theirs and
    // pending, with the admin as real_user_id.
    let as_user = |user: &str| format!("/api/v1/users/self/tokens?as_user_id={user}");
    let r = admin
        .post(&as_user("3"), &[("token[purpose]", "masqueraded")])
        .await;
    assert_eq!(r.json(), rendered("Expiration date is required"));
    let soon = date_in_days(30);
    let r = admin
        .create_with(
            "self",
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
    assert_invalid_token(&api(&s, &r.visible_token()).me().await);
    // As a teacher (no student limit), still pending.
    let r = admin
        .post(&as_user("4"), &[("token[purpose]", "as theo")])
        .await;
    assert_eq!(
        (
            r.json()["user_id"].clone(),
            r.json()["workflow_state"].clone()
        ),
        (json!(4), json!("pending"))
    );
    // Acting as oneself is no masquerade.
    let r = api(&s, DEFAULT_STUDENT_TOKEN)
        .user("self?as_user_id=2")
        .await;
    assert_eq!(r.json()["id"], 2);
    // Someone the caller may not act as, or nobody: 401 without a challenge.
    for (token, as_user) in [
        (DEFAULT_STUDENT_TOKEN, "3"),
        (DEFAULT_TEACHER_TOKEN, "1"),
        (DEFAULT_ADMIN_TOKEN, "999"),
        (DEFAULT_ADMIN_TOKEN, "sis_login_id:nobody"),
    ] {
        let r = api(&s, token)
            .user(&format!("self?as_user_id={as_user}"))
            .await;
        assert_unchallenged(&r, json!({"errors":"Invalid as_user_id"}));
    }
}

// canvas-api.md §2: `last_used_at` moves at most once every 10 minutes (AccessToken#used!), and
// moves `updated_at` with it.
#[tokio::test]
async fn last_used_at_moves_at_most_every_ten_minutes() {
    let s = default_sim().await;
    let (id, value, created) = api(&s, DEFAULT_TEACHER_TOKEN).create("self", "used").await;
    assert_eq!(created["last_used_at"], Value::Null);
    let owner = api(&s, &value);
    let show = || async {
        api(&s, DEFAULT_ADMIN_TOKEN)
            .get(&token_path(4, id))
            .await
            .json()
    };
    // Moves the clock on, uses the token, and shows it as the admin sees it.
    let use_after = |minutes: u64| {
        s.advance_clock(Duration::from_secs(minutes * 60));
        async move { (owner.me().await.status, show().await) }
    };
    let (status, first) = use_after(1).await;
    assert_eq!(status, StatusCode::OK);
    assert!(first["last_used_at"].is_string(), "{first}");
    assert_eq!(first["updated_at"], first["last_used_at"]);
    assert_ne!(first["updated_at"], created["updated_at"]);
    let (_, later) = use_after(9).await;
    assert_eq!(
        later["last_used_at"], first["last_used_at"],
        "9 minutes: unchanged"
    );
    assert_eq!(later["updated_at"], first["updated_at"]);
    let (_, moved) = use_after(1).await;
    assert_ne!(
        moved["last_used_at"], first["last_used_at"],
        "10 minutes: moved"
    );
    assert_eq!(moved["updated_at"], moved["last_used_at"]);
}

/// `--drop-after-rate 1`: the token is created, and the connection closes without an answer;
/// `--reset-rate 1`: the connection closes and nothing is created.
#[tokio::test]
async fn lost_answers_and_resets_close_the_connection() {
    let client = Client::new();
    let create = |s: &RunningSim| {
        client
            .post(format!(
                "{}/api/v1/users/sis_login_id:sam.student/tokens",
                s.base_url()
            ))
            .bearer_auth(DEFAULT_ADMIN_TOKEN)
            .form(&[("token[purpose]", "lost answer test")])
            .send()
    };
    let count = |s: &RunningSim| {
        client
            .get(format!(
                "{}/api/v1/users/sis_login_id:sam.student/user_generated_tokens?per_page=100",
                s.base_url()
            ))
            .bearer_auth(DEFAULT_ADMIN_TOKEN)
            .send()
    };
    for (faults, created) in [
        (
            tokendesk_canvas_sim::Faults {
                drop_after_rate: 1.0,
                ..Default::default()
            },
            1,
        ),
        (
            tokendesk_canvas_sim::Faults {
                reset_rate: 1.0,
                ..Default::default()
            },
            0,
        ),
    ] {
        let state = std::env::temp_dir().join(format!(
            "canvas-sim-faults-{}-{created}.json",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&state);
        let s = sim(SimConfig {
            throttle: None,
            faults,
            state_file: Some(state.clone()),
            ..Default::default()
        })
        .await;
        let err = create(&s).await.expect_err("no answer");
        assert!(!err.is_status(), "{err}");
        // Every request is cut, listing too: the state file says whether the token was made.
        let kept = std::fs::read_to_string(&state).unwrap_or_default();
        assert_eq!(kept.matches("lost answer test").count(), created, "{kept}");
        let _ = std::fs::remove_file(&state);
        let stats = s.stats();
        assert_eq!(
            (stats.dropped_after, stats.resets),
            if created == 1 { (1, 0) } else { (0, 1) }
        );
        assert!(count(&s).await.is_err(), "every request is cut");
        s.shutdown().await;
    }
    // The validation names the flag.
    let bad = SimConfig {
        faults: tokendesk_canvas_sim::Faults {
            drop_after_rate: 1.5,
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(bad.validate().unwrap_err().contains("--drop-after-rate"));
}

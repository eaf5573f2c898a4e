//! The browser side of the simulator: sign in as a seeded person, see one's tokens under
//! Approved Integrations, and activate a pending one (a session route, as in Canvas: no session
//! redirects a browser to the login page, and Rails' CSRF check applies — `canvas-api.md` §1).

use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::browser::{CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE as COOKIE};
use crate::errors::ApiError;
use crate::model::{WorkflowState, iso};
use crate::{Session, Shared};

/// The form field Rails reads the CSRF token from.
const CSRF_FIELD: &str = "authenticity_token";

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/profile/settings") }))
        .route("/login", get(login))
        .route("/logout", get(logout))
        .route("/profile/settings", get(settings))
        .route("/profile/tokens/{id}/activate", post(activate))
        .with_state(shared)
}

struct UserRow {
    name: String,
    login_id: String,
    admin: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct LoginPage {
    users: Vec<UserRow>,
}

struct TokenRow {
    id: u64,
    purpose: String,
    hint: String,
    state: &'static str,
    pending: bool,
    expires: String,
    last_used: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings.html")]
struct SettingsPage {
    name: String,
    tokens: Vec<TokenRow>,
    error: Option<String>,
    csrf_token: String,
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(rename = "as")]
    login: Option<String>,
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The signed-in session a request's cookie names, if any.
pub(crate) fn session_of(shared: &Shared, headers: &HeaderMap) -> Option<Session> {
    session_cookie(headers).and_then(|s| shared.session(&s))
}

/// Rails' `verified_request?`: the session's token in the `X-CSRF-Token` header or in the
/// `authenticity_token` parameter (query or form body).
pub(crate) fn csrf_ok(session: &Session, headers: &HeaderMap, query: Option<&str>) -> bool {
    csrf_ok_with_body(session, headers, query, &[])
}

fn csrf_ok_with_body(
    session: &Session,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> bool {
    let expected = session.csrf_token.as_str();
    let header = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if header == Some(expected) {
        return true;
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let in_query = query
        .into_iter()
        .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()));
    let in_body = url::form_urlencoded::parse(if form { body } else { &[] });
    in_query
        .chain(in_body)
        .any(|(k, v)| k == CSRF_FIELD && v == expected)
}

/// `GET /login?as=LOGIN_ID` signs in as that person; without `as`, a page to choose one.
async fn login(State(s): State<Arc<Shared>>, Query(q): Query<LoginQuery>) -> Response {
    let Some(login) = q.login else {
        let users = s
            .db()
            .users
            .values()
            .map(|u| UserRow {
                name: u.person.name.clone(),
                login_id: u.person.login_id.clone(),
                admin: u.person.admin,
            })
            .collect();
        return LoginPage { users }.into_response();
    };
    let user = s.db().user_by_login(&login).map(|u| u.person.id);
    let Some(user_id) = user else {
        return (
            StatusCode::NOT_FOUND,
            format!("There is no user with login {login:?} in this simulator."),
        )
            .into_response();
    };
    let (id, session) = s.new_session(user_id);
    let mut response = Redirect::to("/profile/settings").into_response();
    for cookie in [
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax"),
        format!("{CSRF_COOKIE}={}; Path=/; SameSite=Lax", session.csrf_token),
    ] {
        if let Ok(value) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

async fn logout() -> Response {
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
        )],
        Redirect::to("/login"),
    )
        .into_response()
}

fn settings_page(s: &Shared, session: &Session, error: Option<String>) -> Option<SettingsPage> {
    let user_id = session.user_id;
    let db = s.db();
    let user = db.user(user_id)?;
    let now = s.now();
    let tokens = db
        .tokens_of(user_id)
        .filter(|t| t.state != WorkflowState::Deleted)
        .map(|t| TokenRow {
            id: t.id,
            purpose: t.purpose.clone(),
            hint: t.hint.clone(),
            state: if t.expired(now) {
                "expired"
            } else {
                t.state.as_str()
            },
            pending: t.state == WorkflowState::Pending,
            expires: t.expires_at.map_or_else(|| "never".to_owned(), iso),
            last_used: t.last_used_at.map_or_else(|| "never".to_owned(), iso),
        })
        .collect();
    Some(SettingsPage {
        name: user.person.name.clone(),
        tokens,
        error,
        csrf_token: session.csrf_token.clone(),
    })
}

async fn settings(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match session_of(&s, &headers).and_then(|session| settings_page(&s, &session, None)) {
        Some(page) => page.into_response(),
        None => Redirect::to("/login").into_response(),
    }
}

/// The format Rails' `respond_to` picks: JSON only when the client asks for it before HTML;
/// a browser (or `*/*`) gets HTML.
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match (accept.find("application/json"), accept.find("text/html")) {
        (Some(json), Some(html)) => json < html,
        (Some(_), None) => true,
        _ => false,
    }
}

/// `POST /profile/tokens/:id/activate`: only the signed-in owner, only a pending token, only with
/// the session's CSRF token. Without a session a browser is redirected to the login page (a
/// client asking for JSON gets Canvas's 401). A browser form gets the settings page back; other
/// callers get Canvas's JSON.
async fn activate(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json = wants_json(&headers);
    let Some(session) = session_of(&s, &headers) else {
        if json {
            return (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({
                    "status": "unauthenticated",
                    "errors": [{"message": "user authorization required"}]
                })),
            )
                .into_response();
        }
        return (StatusCode::FOUND, [(header::LOCATION, "/login")]).into_response();
    };
    if !csrf_ok_with_body(&session, &headers, query.as_deref(), &body) {
        if json {
            return ApiError::InvalidAuthenticityToken.into_response();
        }
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "The form was not sent from the settings page (its CSRF token is missing or wrong): \
             reload the page and try again.",
        )
            .into_response();
    }
    let user_id = session.user_id;
    let now = s.now();
    let result = {
        let mut db = s.db();
        let result = db.activate(user_id, &id, now);
        if result.is_ok() {
            s.persist(&db);
        }
        result
    };
    match (result, !json) {
        (Ok(_), true) => Redirect::to("/profile/settings").into_response(),
        (Ok(json), false) => Json(json).into_response(),
        (Err(e), true) => {
            let message = match e {
                ApiError::NotFound => "There is no such token.".to_owned(),
                _ => "This token is not pending, so there is nothing to activate.".to_owned(),
            };
            match settings_page(&s, &session, Some(message)) {
                Some(page) => {
                    let mut response = page.into_response();
                    *response.status_mut() = StatusCode::BAD_REQUEST;
                    response
                }
                None => e.into_response(),
            }
        }
        (Err(e), false) => e.into_response(),
    }
}

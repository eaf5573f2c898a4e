//! The browser side of the simulator: sign in as a seeded person, see one's tokens under
//! Approved Integrations, and activate a pending one (a session route, as in Canvas).

use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::Shared;
use crate::errors::ApiError;
use crate::model::{WorkflowState, iso};

const COOKIE: &str = "canvas_sim_session";

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

fn signed_in(shared: &Shared, headers: &HeaderMap) -> Option<u64> {
    session_cookie(headers).and_then(|s| shared.session_user(&s))
}

/// `GET /login?as=LOGIN_ID` signs in as that person; without `as`, a page to choose one.
async fn login(State(s): State<Arc<Shared>>, Query(q): Query<LoginQuery>) -> Response {
    let Some(login) = q.login else {
        let users = s
            .db()
            .users
            .values()
            .map(|u| UserRow {
                name: u.name.clone(),
                login_id: u.login_id.clone(),
                admin: u.admin,
            })
            .collect();
        return LoginPage { users }.into_response();
    };
    let user = s.db().user_by_login(&login).map(|u| u.id);
    let Some(user_id) = user else {
        return (
            StatusCode::NOT_FOUND,
            format!("There is no user with login {login:?} in this simulator."),
        )
            .into_response();
    };
    let session = s.new_session(user_id);
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax"),
        )],
        Redirect::to("/profile/settings"),
    )
        .into_response()
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

fn settings_page(s: &Shared, user_id: u64, error: Option<String>) -> Option<SettingsPage> {
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
        name: user.name.clone(),
        tokens,
        error,
    })
}

async fn settings(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match signed_in(&s, &headers).and_then(|id| settings_page(&s, id, None)) {
        Some(page) => page.into_response(),
        None => Redirect::to("/login").into_response(),
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// `POST /profile/tokens/:id/activate`: only the signed-in owner, only a pending token. A browser
/// form gets the settings page back; other callers get Canvas's JSON.
async fn activate(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(user_id) = signed_in(&s, &headers) else {
        return ApiError::Unauthenticated.into_response();
    };
    let now = s.now();
    let result = {
        let mut db = s.db();
        let result = db.activate(user_id, &id, now);
        if result.is_ok() {
            s.persist(&db);
        }
        result
    };
    match (result, wants_html(&headers)) {
        (Ok(_), true) => Redirect::to("/profile/settings").into_response(),
        (Ok(json), false) => Json(json).into_response(),
        (Err(e), true) => {
            let message = match e {
                ApiError::NotFound => "There is no such token.".to_owned(),
                _ => "This token is not pending, so there is nothing to activate.".to_owned(),
            };
            match settings_page(&s, user_id, Some(message)) {
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

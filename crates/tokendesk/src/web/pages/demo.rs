//! The demo's sign-in page (`/demo/login`): pick one of the seeded people. Only when tokendesk
//! listens on loopback, so that nobody else can reach it.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::chrome::Chrome;
use super::error::PageError;
use super::session::see_other;
use crate::domain::{FieldError, Login};
use crate::web::auth::{ClientAddr, Demo};
use crate::web::cookies::Kind;
use crate::web::{ApiError, WebState};

#[derive(Template, WebTemplate)]
#[template(path = "pages/demo_login.html")]
pub struct DemoLoginPage<'a> {
    pub c: Chrome,
    pub people: &'a [(Login, String)],
}

/// The demo sign-in, or (not on loopback) a refusal.
fn demo_of(state: &WebState) -> Result<&Demo, ApiError> {
    state.auth.demo().ok_or_else(refused)
}

fn refused() -> ApiError {
    ApiError::forbidden("the demo sign-in works only when tokendesk listens on a loopback address")
}

/// `GET /demo/login`: the people of the demo, one button each.
pub async fn page(State(state): State<WebState>) -> Result<Response, Response> {
    let demo = demo_of(&state).map_err(IntoResponse::into_response)?;
    let page = DemoLoginPage {
        c: Chrome::anonymous("Sign in to the demo"),
        people: &demo.people,
    };
    let html = page
        .render()
        .map_err(|e| PageError::plain(ApiError::internal(&e)).into_response())?;
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct DemoLoginForm {
    login: String,
}

/// `POST /demo/login` (`login=…`): signs in as one of the demo people, then goes to `/`.
pub async fn login(
    State(state): State<WebState>,
    ClientAddr(addr): ClientAddr,
    form: Result<Form<DemoLoginForm>, FormRejection>,
) -> Result<Response, Response> {
    let demo = demo_of(&state).map_err(IntoResponse::into_response)?;
    let addr = addr.unwrap_or_default();
    state
        .limit(crate::limits::Limit::SignIn, &format!("addr:{addr}"))
        .map_err(|e| PageError::plain(e).into_response())?;
    let Form(form) = form.map_err(|e| {
        PageError::plain(ApiError::bad_request("bad_form", e.body_text())).into_response()
    })?;
    let login = Login::parse(&form.login)
        .ok()
        .filter(|login| demo.people.iter().any(|(l, _)| l == login))
        .ok_or_else(|| {
            PageError::plain(ApiError::invalid(vec![FieldError::new(
                "login",
                "unknown",
                "choose one of the people of the demo",
            )]))
            .into_response()
        })?;
    let sign_in = crate::app::SignIn {
        login: login.clone(),
        kind: crate::app::SessionKind::Demo,
        roles: crate::domain::Roles::default(),
        email: None,
        name: None,
        id_token: None,
        user_agent: None,
    };
    let ctx = crate::app::Ctx {
        client_addr: Some(addr).filter(|a| !a.is_empty()),
    };
    let value = state
        .app
        .start_session(&sign_in, &ctx)
        .await
        .map_err(|e| PageError::from(e).into_response())?;
    let mut response = see_other("/");
    state
        .cookies
        .add_set(response.headers_mut(), Kind::Session, &value);
    Ok(response)
}

/// `POST /demo/logout`: ends the session, then back to the sign-in page.
pub async fn logout(
    State(state): State<WebState>,
    ClientAddr(addr): ClientAddr,
    headers: axum::http::HeaderMap,
) -> Result<Response, Response> {
    demo_of(&state).map_err(IntoResponse::into_response)?;
    if let Some(cookie) = state.cookies.get(&headers, Kind::Session) {
        let ctx = crate::app::Ctx { client_addr: addr };
        state
            .app
            .end_session(&cookie, &ctx)
            .await
            .map_err(|e| PageError::from(e).into_response())?;
    }
    let mut response = see_other("/demo/login");
    state
        .cookies
        .add_clear(response.headers_mut(), Kind::Session);
    Ok(response)
}

//! `/e/{id}`: the delivery page. The server knows who the envelope is for and when it expires;
//! the key is in the link's fragment, which the browser never sends. `static/reveal.js` asks the
//! JSON API for the ciphertext (`Reveal`) and decrypts it with WebCrypto in the page.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::Response;
use serde::Deserialize;

use super::error::{PageError, sign_in_needed};
use super::session::{Chrome, MaybeViewer, PageForm, PagePath, Viewer, next_cookie, sign_in_url};
use super::{assets, view};
use crate::app::{AppError, EnvelopeView};
use crate::domain::envelope::EnvelopeState;
use crate::web::{API_PREFIX, ApiError, WebState};

#[derive(Template, WebTemplate)]
#[template(path = "pages/envelope.html")]
pub struct EnvelopePage {
    pub c: Chrome,
    pub id: String,
    pub request_id: i64,
    pub owner: String,
    pub expires: String,
    pub countdown: String,
    pub reveals_left: u32,
    /// The value can still be revealed.
    pub open: bool,
    pub burned: bool,
    pub expired: bool,
    pub reveal_url: String,
    pub canvas_settings_url: String,
    pub js: &'static str,
    /// The token, while pending in Canvas: its owner may say they activated it.
    pub pending_token: Option<i64>,
}

impl EnvelopePage {
    pub fn new(
        viewer: &Viewer,
        e: &EnvelopeView,
        now: time::OffsetDateTime,
        canvas_settings_url: String,
    ) -> EnvelopePage {
        EnvelopePage {
            c: viewer.chrome("Your Canvas access token"),
            id: e.id.clone(),
            request_id: e.request_id.0,
            owner: e.owner.to_string(),
            expires: view::when(e.expires_at),
            countdown: view::countdown(now, e.expires_at),
            reveals_left: e.reveals_left,
            open: e.state.is_open() && e.reveals_left > 0,
            burned: e.state == EnvelopeState::Burned,
            expired: e.state == EnvelopeState::Expired,
            reveal_url: format!("{API_PREFIX}/envelopes/{}/reveal", e.id),
            canvas_settings_url,
            js: assets::reveal_js_url(),
            pending_token: None,
        }
    }
}

/// `GET /e/{id}`. Signed out: a page whose script keeps the key in this tab and goes to sign
/// in (and back). Someone else's envelope: not found.
pub async fn show(
    State(state): State<WebState>,
    MaybeViewer(viewer): MaybeViewer,
    PagePath(id): PagePath<String>,
) -> Result<Response, PageError> {
    let Some(viewer) = viewer else {
        let back = format!(
            "/e/{}",
            url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        );
        let url = sign_in_url(&state, &back);
        let demo = url.is_some();
        let mut response = sign_in_needed(url, demo.then(|| id.clone()));
        if let Some(cookie) = next_cookie(&state.cookies, &back).filter(|_| demo) {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        return Ok(response);
    };
    state
        .limit_envelope_lookup(&viewer.actor, &viewer.ctx)
        .map_err(|e| viewer.fail(e))?;
    let envelope = state
        .app
        .envelope(&viewer.actor, &id)
        .await
        .map_err(|e| viewer.fail(e))?;
    let mut page = EnvelopePage::new(
        &viewer,
        &envelope,
        state.app.now(),
        state.app.canvas_settings_url(),
    );
    page.pending_token = state
        .app
        .request(&viewer.actor, envelope.request_id)
        .await
        .ok()
        .and_then(|v| v.token)
        .filter(|t| t.state == crate::domain::TokenState::Pending)
        .map(|t| t.id.0);
    Ok(viewer.page(StatusCode::OK, &page))
}

#[derive(Debug, Default, Deserialize)]
pub struct Empty {}

/// `POST /e/{id}/burn`: "I have saved it".
pub async fn burn(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<String>,
    PageForm(Empty {}): PageForm<Empty>,
) -> Result<Response, PageError> {
    let to = format!(
        "/e/{}",
        url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    );
    state
        .limit_envelope_lookup(&viewer.actor, &viewer.ctx)
        .map_err(|e| viewer.fail(e))?;
    match state.app.burn(&viewer.actor, &id, &viewer.ctx).await {
        Ok(_) => Ok(viewer.redirect(&to, true, "Done: the link is closed and the sealed copy is erased. Remember to activate the token in Canvas.")),
        Err(AppError::Domain(e @ (crate::domain::DomainError::WrongState { .. } | crate::domain::DomainError::Conflict { .. } | crate::domain::DomainError::Forbidden(_)))) => {
            Ok(viewer.redirect(&to, false, &ApiError::from(e).message))
        }
        Err(e) => Err(viewer.fail(e)),
    }
}

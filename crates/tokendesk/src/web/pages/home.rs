//! `/`: what a Canvas token is, the rules from the configured policy, and what to do next.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::error::PageError;
use super::session::{Chrome, Viewer, see_other, take_next};
use crate::app::RequestQuery;
use crate::web::WebState;
use crate::web::cookies::Kind;

/// Waiting requests are counted up to this many (the queue lists them all).
const WAITING_SHOWN: i64 = 50;

#[derive(Template, WebTemplate)]
#[template(path = "pages/home.html")]
pub struct HomePage {
    pub c: Chrome,
    pub max_lifetime_days: u32,
    pub link_ttl_days: u32,
    pub max_reveals: u32,
    pub max_open: u32,
    pub max_tokens: u32,
    pub canvas_settings_url: String,
    /// My requests still waiting or holding a token.
    pub my_open: u32,
    pub my_live: u32,
    /// How many requests wait for a decision (approvers only).
    pub waiting: Option<String>,
}

/// `GET /`. Right after signing in, goes back to the page that asked for it.
pub async fn show(
    State(state): State<WebState>,
    headers: HeaderMap,
    viewer: Viewer,
) -> Result<Response, PageError> {
    if let Some(next) = take_next(&state.cookies, &headers) {
        let mut response = see_other(&next);
        state.cookies.add_clear(response.headers_mut(), Kind::Next);
        return Ok(response);
    }
    let app = &state.app;
    // What the viewer holds, counted by the database (their own requests, whatever their role).
    let mine = app
        .holdings(&viewer.actor)
        .await
        .map_err(|e| viewer.fail(e))?;
    let waiting = if viewer.actor.roles.can_review() {
        let query = RequestQuery {
            state: Some("submitted".into()),
            everyone: true,
            limit: Some(WAITING_SHOWN + 1),
            ..RequestQuery::default()
        };
        let n = app
            .requests(&viewer.actor, &query)
            .await
            .map_err(|e| viewer.fail(e))?
            .len();
        Some(if n as i64 > WAITING_SHOWN {
            format!("More than {WAITING_SHOWN}")
        } else {
            n.to_string()
        })
    } else {
        None
    };
    let policy = app.policy();
    let page = HomePage {
        c: viewer.chrome("Canvas API tokens"),
        max_lifetime_days: policy.max_lifetime_days,
        link_ttl_days: policy.link_ttl_days,
        max_reveals: policy.max_reveals,
        max_open: policy.max_open_requests_per_person,
        max_tokens: policy.max_active_tokens_per_person,
        canvas_settings_url: app.canvas_settings_url(),
        my_open: mine.open_requests,
        my_live: mine.live_tokens,
        waiting,
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

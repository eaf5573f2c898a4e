//! `/me`: my requests and tokens, with the delivery link's countdown and the actions.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::error::PageError;
use super::session::{Chrome, PageQuery, Viewer};
use super::view::{AfterQuery, LinkRow, RequestRow, TokenRow, next_link};
use crate::app::RequestQuery;
use crate::domain::request::{self, Action, RequestState};
use crate::web::WebState;

/// One of my requests, with its delivery link when there is one.
pub struct MyRequest {
    pub r: RequestRow,
    pub link: Option<LinkRow>,
    /// The rules let me cancel it.
    pub can_cancel: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/me.html")]
pub struct MePage {
    pub c: Chrome,
    pub requests: Vec<MyRequest>,
    pub tokens: Vec<TokenRow>,
    pub mailbox: bool,
    /// The calendar feed's address, if one was made.
    pub calendar: Option<String>,
    /// My sessions (OIDC, demo), when people sign in to tokendesk itself.
    pub sessions: Option<Vec<SessionRow>>,
    /// The address of my next (older) requests, when this page is full.
    pub next: Option<String>,
}

/// A session, as the pages list it.
pub struct SessionRow {
    pub id: String,
    pub kind: String,
    pub started: String,
    pub last_seen: String,
    pub from: String,
    /// The browser showing the page uses it.
    pub this_one: bool,
}

impl SessionRow {
    pub fn new(s: &crate::store::StoredSession, current: Option<&str>) -> SessionRow {
        let when = super::view::when;
        SessionRow {
            id: s.public_id.clone(),
            kind: s.kind.clone(),
            started: when(s.created_at),
            last_seen: when(s.last_seen_at),
            from: s.client_addr.clone().unwrap_or_else(|| "unknown".into()),
            this_one: current == Some(s.public_id.as_str()),
        }
    }
}

/// `POST /me/sessions/{id}/end`: ends one of my sessions.
pub async fn end_session(
    State(state): State<WebState>,
    viewer: Viewer,
    super::session::PagePath(id): super::session::PagePath<String>,
    _form: super::session::PageForm<HashMap<String, String>>,
) -> Result<Response, PageError> {
    state
        .app
        .end_own_session(&viewer.actor, &id, &viewer.ctx)
        .await
        .map_err(|e| viewer.fail(e))?;
    Ok(viewer.redirect(
        "/me",
        true,
        "That session has ended: it must sign in again.",
    ))
}

/// My requests on a page of `/me`.
const MY_PAGE: i64 = 100;

/// `GET /me`.
pub async fn show(
    State(state): State<WebState>,
    viewer: Viewer,
    OriginalUri(uri): OriginalUri,
    PageQuery(q): PageQuery<AfterQuery>,
) -> Result<Response, PageError> {
    let app = &state.app;
    let actor = &viewer.actor;
    // My own requests, whatever my role.
    let query = RequestQuery {
        after: q.after().map_err(|e| viewer.fail(e))?,
        limit: Some(MY_PAGE),
        ..RequestQuery::default()
    };
    let list = app
        .requests(actor, &query)
        .await
        .map_err(|e| viewer.fail(e))?;
    let next = next_link(&uri, list.len(), MY_PAGE, list.last().map(|r| r.id.0));
    let tokens = app
        .tokens(actor, &crate::app::TokenQuery::default())
        .await
        .map_err(|e| viewer.fail(e))?;
    let now = app.now();
    let mut requests = Vec::with_capacity(list.len());
    for r in &list {
        // Only an issued request has a link still worth showing.
        let link = if r.state == RequestState::Issued {
            app.request(actor, r.id)
                .await
                .map_err(|e| viewer.fail(e))?
                .envelope
                .map(|e| LinkRow::new(&e, now))
        } else {
            None
        };
        let can_cancel = request::allowed(r, actor, Action::Cancel, None, &app.policy(), now);
        requests.push(MyRequest {
            r: RequestRow::new(r),
            link,
            can_cancel,
        });
    }
    let states: HashMap<i64, RequestState> = list.iter().map(|r| (r.id.0, r.state)).collect();
    let calendar = app.calendar_url(actor).await.map_err(|e| viewer.fail(e))?;
    let sessions = if viewer.has_sessions() {
        let list = app
            .sessions_of(actor, &actor.login)
            .await
            .map_err(|e| viewer.fail(e))?;
        Some(
            list.iter()
                .map(|s| SessionRow::new(s, viewer.session_id()))
                .collect(),
        )
    } else {
        None
    };
    let page = MePage {
        c: viewer.chrome("My requests and tokens"),
        requests,
        tokens: tokens
            .iter()
            .map(|t| TokenRow::new(t, states.get(&t.request_id.0).copied()))
            .collect(),
        mailbox: viewer.mailbox(),
        calendar,
        sessions,
        next,
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

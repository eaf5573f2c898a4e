//! `/me`: my requests and tokens, with the delivery link's countdown and the actions.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::error::PageError;
use super::session::{Chrome, Viewer};
use super::view::{LinkRow, RequestRow, TokenRow};
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
}

/// `GET /me`.
pub async fn show(State(state): State<WebState>, viewer: Viewer) -> Result<Response, PageError> {
    let app = &state.app;
    let actor = &viewer.actor;
    let list = app
        .requests(actor, &RequestQuery::default())
        .await
        .map_err(|e| viewer.fail(e))?;
    let tokens = app.tokens(actor, None).await.map_err(|e| viewer.fail(e))?;
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
        let can_cancel = request::allowed(r, actor, Action::Cancel, None, app.policy(), now);
        requests.push(MyRequest {
            r: RequestRow::new(r),
            link,
            can_cancel,
        });
    }
    let states: HashMap<i64, RequestState> = list.iter().map(|r| (r.id.0, r.state)).collect();
    let calendar = app.calendar_url(actor).await.map_err(|e| viewer.fail(e))?;
    let page = MePage {
        c: viewer.chrome("My requests and tokens"),
        requests,
        tokens: tokens
            .iter()
            .map(|t| TokenRow::new(t, states.get(&t.request_id.0).copied()))
            .collect(),
        mailbox: viewer.mailbox(),
        calendar,
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

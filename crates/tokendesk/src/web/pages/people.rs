//! `/people` and `/people/{login}`: the help desk looks a person up, sees their requests and
//! tokens, and revokes a token.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::error::PageError;
use super::session::{Chrome, PagePath, PageQuery, Viewer};
use super::view::{AfterQuery, RequestRow, TokenRow, next_link};
use crate::app::RequestQuery;
use crate::domain::request::RequestState;
use crate::web::WebState;

pub struct PersonRow {
    pub login: String,
    pub name: String,
    /// `/people/{login}`, the login percent-encoded.
    pub href: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/people.html")]
pub struct PeoplePage {
    pub c: Chrome,
    pub q: String,
    pub searched: bool,
    pub people: Vec<PersonRow>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// `GET /people?q=…`.
pub async fn search(
    State(state): State<WebState>,
    viewer: Viewer,
    PageQuery(query): PageQuery<SearchQuery>,
) -> Result<Response, PageError> {
    let term = query.q.unwrap_or_default();
    let found = state
        .app
        .people(&viewer.actor, &term)
        .await
        .map_err(|e| viewer.fail(e))?;
    let page = PeoplePage {
        c: viewer.chrome("People"),
        searched: !term.trim().is_empty(),
        q: term,
        people: found
            .into_iter()
            .map(|p| PersonRow {
                href: format!("/people/{}", p.login.path_segment()),
                login: p.login.to_string(),
                name: p.name.unwrap_or_default(),
            })
            .collect(),
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/person.html")]
pub struct PersonPage {
    pub c: Chrome,
    pub login: String,
    pub requests: Vec<RequestRow>,
    pub tokens: Vec<TokenRow>,
    pub can_revoke: bool,
    pub back: String,
    /// The person's live sessions (OIDC, demo), shown to the help desk.
    pub sessions: Option<Vec<super::me::SessionRow>>,
    /// The address of the person's older requests, when this page is full.
    pub next: Option<String>,
}

/// `POST /people/{login}/sessions/end`: the help desk ends every session of a person.
pub async fn end_sessions(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(login): PagePath<String>,
    _form: super::session::PageForm<HashMap<String, String>>,
) -> Result<Response, PageError> {
    // A path that is not a login names nobody.
    let login = crate::domain::Login::parse(&login)
        .map_err(|_| viewer.fail(crate::web::ApiError::not_found()))?;
    let ended = state
        .app
        .end_all_sessions(&viewer.actor, &login, &viewer.ctx)
        .await
        .map_err(|e| viewer.fail(e))?;
    let back = format!("/people/{}", login.path_segment());
    Ok(viewer.redirect(
        &back,
        true,
        &format!("Ended {ended} session(s) of {login}: they must sign in again everywhere."),
    ))
}

/// A person's requests on a page of `/people/{login}`.
const PERSON_PAGE: i64 = 200;

/// `GET /people/{login}`.
pub async fn show(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(login): PagePath<String>,
    OriginalUri(uri): OriginalUri,
    PageQuery(q): PageQuery<AfterQuery>,
) -> Result<Response, PageError> {
    let app = &state.app;
    let query = RequestQuery {
        requester: Some(login.clone()),
        after: q.after().map_err(|e| viewer.fail(e))?,
        limit: Some(PERSON_PAGE),
        ..RequestQuery::default()
    };
    let list = app
        .requests(&viewer.actor, &query)
        .await
        .map_err(|e| viewer.fail(e))?;
    let next = next_link(&uri, list.len(), PERSON_PAGE, list.last().map(|r| r.id.0));
    let tokens = app
        .tokens(&viewer.actor, &crate::app::TokenQuery::of(&login))
        .await
        .map_err(|e| viewer.fail(e))?;
    let states: HashMap<i64, RequestState> = list.iter().map(|r| (r.id.0, r.state)).collect();
    let login = crate::domain::Login::parse(&login)
        .map_err(|e| viewer.fail(crate::web::ApiError::invalid(vec![e])))?;
    let sessions = if viewer.has_sessions() && viewer.actor.roles.can_support() {
        let list = app
            .sessions_of(&viewer.actor, &login)
            .await
            .map_err(|e| viewer.fail(e))?;
        Some(
            list.iter()
                .map(|s| super::me::SessionRow::new(s, viewer.session_id()))
                .collect(),
        )
    } else {
        None
    };
    let page = PersonPage {
        c: viewer.chrome(login.as_str()),
        back: format!("/people/{}", login.path_segment()),
        login: login.to_string(),
        requests: list.iter().map(RequestRow::new).collect(),
        tokens: tokens
            .iter()
            .map(|t| TokenRow::new(t, states.get(&t.request_id.0).copied()))
            .collect(),
        can_revoke: viewer.actor.roles.can_support(),
        sessions,
        next,
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

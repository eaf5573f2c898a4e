//! `/tokens/{id}`: one token's page (its owner, the help desk and admins): its state, expiry,
//! hint, activation and last use, its history; Renew, Revoke and "I have activated it".

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::error::PageError;
use super::requests::{after, id_of};
use super::session::{Chrome, PageForm, PagePath, Viewer, local_path};
use super::view::{self, RequestRow, TokenRow};
use crate::domain::request::{self, Action, RawNewRequest};
use crate::domain::{TokenId, TokenState};
use crate::web::WebState;

/// One line of a token's history.
pub struct HistoryRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub request: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/token.html")]
pub struct TokenPage {
    pub c: Chrome,
    pub t: TokenRow,
    pub r: RequestRow,
    pub owner: String,
    pub activated: String,
    pub last_used: String,
    /// Canvas holds another expiry than tokendesk's (as last seen).
    pub canvas_expiry: Option<String>,
    pub earlier: Vec<RequestRow>,
    pub renewals: Vec<RequestRow>,
    pub history: Vec<HistoryRow>,
    pub can_renew: bool,
    pub can_revoke: bool,
    pub can_check: bool,
    pub min_date: String,
    pub max_date: String,
    pub back: String,
}

/// `GET /tokens/{id}`.
pub async fn show(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<String>,
) -> Result<Response, PageError> {
    let id = TokenId(id_of(&id)?);
    let app = &state.app;
    let v = app
        .token_page(&viewer.actor, id)
        .await
        .map_err(|e| viewer.fail(e))?;
    let own = viewer.actor.is(&v.token.owner);
    let now = app.now();
    let today = now.date();
    let allowed =
        |action| request::allowed(&v.request, &viewer.actor, action, None, &app.policy(), now);
    let canvas_expiry = v
        .token
        .canvas_expires_at
        .filter(|at| (*at - v.token.expires_at).abs() > time::Duration::minutes(1))
        .map(view::when);
    let page = TokenPage {
        c: viewer.chrome(&format!("Token {}", id.0)),
        t: TokenRow::new(&v.token, Some(v.request.state)),
        r: RequestRow::new(&v.request),
        owner: v.token.owner.to_string(),
        activated: v
            .token
            .activated_at
            .map_or_else(|| "not yet".to_owned(), view::when),
        last_used: match (v.token.last_used_at, v.token.reconciled_at) {
            (Some(at), _) => view::when(at),
            (None, Some(_)) => "never, as far as Canvas says".to_owned(),
            (None, None) => "not known yet (Canvas is asked every hour)".to_owned(),
        },
        canvas_expiry,
        earlier: v.earlier.iter().map(RequestRow::new).collect(),
        renewals: v.renewals.iter().map(RequestRow::new).collect(),
        history: v
            .history
            .iter()
            .map(|e| HistoryRow {
                at: view::when(e.at),
                actor: e.actor.clone(),
                action: e.action.clone(),
                outcome: e.outcome.clone(),
                request: e.target.trim_start_matches("request:").to_owned(),
            })
            .collect(),
        can_renew: own && v.renewals.is_empty() && allowed(Action::Renew),
        can_revoke: v.token.state != TokenState::Deleted && allowed(Action::Revoke),
        can_check: own && v.token.state == TokenState::Pending && v.request.state.holds_token(),
        min_date: view::date(today.next_day().unwrap_or(today)),
        max_date: view::date(request::latest_expiry(&app.policy(), today)),
        back: format!("/tokens/{}", id.0),
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

#[derive(Debug, Default, Deserialize)]
pub struct RenewForm {
    #[serde(default)]
    expires_on: String,
    #[serde(default)]
    purpose: String,
}

/// `POST /tokens/{id}/renew` (`expires_on`, `purpose`): a renewal request.
pub async fn renew(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<String>,
    PageForm(form): PageForm<RenewForm>,
) -> Result<Response, PageError> {
    let id = TokenId(id_of(&id)?);
    state
        .limit(
            crate::limits::Limit::Submit,
            &format!("login:{}", viewer.actor.login),
        )
        .map_err(|e| viewer.fail(e))?;
    let raw = RawNewRequest {
        purpose: Some(form.purpose),
        expires_on: Some(form.expires_on),
        application: None,
    };
    let result = state
        .app
        .renew(&viewer.actor, id, &raw, &viewer.ctx)
        .await
        .map(|r| {
            format!(
                "Renewal requested: request #{} waits for an approver.",
                r.id
            )
        });
    after(&viewer, &format!("/tokens/{}", id.0), result)
}

#[derive(Debug, Default, Deserialize)]
pub struct BackForm {
    #[serde(default)]
    back: String,
}

/// `POST /tokens/{id}/check-activation` ("I have activated it"; `back`: where to return).
pub async fn check_activation(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<String>,
    PageForm(form): PageForm<BackForm>,
) -> Result<Response, PageError> {
    let id = TokenId(id_of(&id)?);
    let back = local_path(&form.back).unwrap_or("/me").to_owned();
    match state.app.check_activation(&viewer.actor, id).await {
        Ok(check) if check.active => Ok(viewer.redirect(&back, true, &check.message)),
        // Still pending is an answer, not a failure: where to activate it.
        Ok(check) => {
            let message = match &check.activate_at {
                Some(url) => format!("{} Activate it at {url}", check.message),
                None => check.message,
            };
            Ok(viewer.redirect(&back, true, &message))
        }
        Err(e) => after(&viewer, &back, Err(e)),
    }
}

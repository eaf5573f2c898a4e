//! Requests: the form, one request (with the approver's and the owner's actions), the queue,
//! and the form POSTs that change them.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::Extension;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::PagesConfig;
use super::error::PageError;
use super::session::{Chrome, PageForm, PagePath, PageQuery, Viewer, local_path};
use super::view::{self, LinkRow, RequestRow, TokenRow};
use crate::app::{AppError, RequestQuery};
use crate::domain::request::{self, Action, RawNewRequest, RequestState};
use crate::domain::{DomainError, FieldError, RequestId, TokenId};
use crate::web::{ApiError, WebState};

pub(super) fn id_of(raw: &str) -> Result<i64, PageError> {
    raw.parse::<i64>()
        .map_err(|_| PageError::plain(ApiError::not_found()))
}

// ---- the form ----------------------------------------------------------------------------

/// The errors of the request form, by field.
#[derive(Debug, Default)]
pub struct FormErrors {
    pub purpose: Option<String>,
    pub expires_on: Option<String>,
    pub application: Option<String>,
    pub ack: Option<String>,
    /// Not about one field (e.g. a per-person limit).
    pub other: Vec<String>,
}

impl FormErrors {
    fn add(&mut self, e: &FieldError) {
        let slot = match e.field {
            "purpose" => &mut self.purpose,
            "expires_on" => &mut self.expires_on,
            "application" => &mut self.application,
            "ack" => &mut self.ack,
            _ => {
                self.other.push(e.message.clone());
                return;
            }
        };
        slot.get_or_insert_with(|| e.message.clone());
    }

    pub fn any(&self) -> bool {
        self.purpose.is_some()
            || self.expires_on.is_some()
            || self.application.is_some()
            || self.ack.is_some()
            || !self.other.is_empty()
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/new_request.html")]
pub struct NewRequestPage {
    pub c: Chrome,
    pub purpose: String,
    pub expires_on: String,
    pub application: String,
    pub ack: bool,
    pub min_date: String,
    pub max_date: String,
    pub max_lifetime_days: u32,
    pub purpose_min: u32,
    pub terms: String,
    pub e: FormErrors,
}

#[derive(Debug, Default, Deserialize)]
pub struct NewRequestForm {
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    expires_on: String,
    #[serde(default)]
    application: String,
    ack: Option<String>,
}

fn form_page(
    state: &WebState,
    viewer: &Viewer,
    config: &PagesConfig,
    form: NewRequestForm,
    e: FormErrors,
) -> NewRequestPage {
    let today = state.app.now().date();
    let policy = state.app.policy();
    NewRequestPage {
        c: viewer.chrome("Request a token"),
        purpose: form.purpose,
        expires_on: form.expires_on,
        application: form.application,
        ack: form.ack.is_some(),
        min_date: view::date(today.next_day().unwrap_or(today)),
        max_date: view::date(request::latest_expiry(&policy, today)),
        max_lifetime_days: policy.max_lifetime_days,
        purpose_min: policy.purpose_min_chars,
        terms: config.terms.clone(),
        e,
    }
}

/// `GET /requests/new`.
pub async fn new_form(
    State(state): State<WebState>,
    Extension(config): Extension<Arc<PagesConfig>>,
    viewer: Viewer,
) -> Response {
    let page = form_page(
        &state,
        &viewer,
        &config,
        NewRequestForm::default(),
        FormErrors::default(),
    );
    viewer.page(StatusCode::OK, &page)
}

/// `POST /requests/new`: submits, or shows the form again with the errors and the values.
pub async fn submit(
    State(state): State<WebState>,
    Extension(config): Extension<Arc<PagesConfig>>,
    viewer: Viewer,
    PageForm(form): PageForm<NewRequestForm>,
) -> Result<Response, PageError> {
    state
        .limit(
            crate::limits::Limit::Submit,
            &format!("login:{}", viewer.actor.login),
        )
        .map_err(|e| viewer.fail(e))?;
    let raw = RawNewRequest {
        purpose: Some(form.purpose.clone()),
        expires_on: Some(form.expires_on.clone()),
        application: Some(form.application.clone()),
    };
    let mut errors = FormErrors::default();
    if form.ack.is_none() {
        errors.add(&FieldError::new(
            "ack",
            "required",
            "Tick the box to accept the terms of use",
        ));
        // Report the other fields at the same time (the same parsing the service does).
        if let Err(DomainError::Invalid(fields)) =
            request::parse_new_request(&raw, &state.app.policy(), state.app.now().date())
        {
            fields.iter().for_each(|f| errors.add(f));
        }
    } else {
        match state.app.submit(&viewer.actor, &raw, &viewer.ctx).await {
            Ok(created) => {
                let message = format!(
                    "Request #{} was sent to the approvers. You will get an email when they decide.",
                    created.id
                );
                return Ok(viewer.redirect(&format!("/requests/{}", created.id), true, &message));
            }
            Err(AppError::Domain(DomainError::Invalid(fields))) => {
                fields.iter().for_each(|f| errors.add(f))
            }
            Err(AppError::Domain(DomainError::Conflict { message, .. })) => {
                errors.other.push(message)
            }
            Err(e) => return Err(viewer.fail(e)),
        }
    }
    let page = form_page(&state, &viewer, &config, form, errors);
    Ok(viewer.page(StatusCode::UNPROCESSABLE_ENTITY, &page))
}

// ---- one request -------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "pages/request.html")]
pub struct RequestPage {
    pub c: Chrome,
    pub r: RequestRow,
    pub token: Option<TokenRow>,
    pub link: Option<LinkRow>,
    pub mailbox: bool,
    pub can_approve: bool,
    pub can_deny: bool,
    pub can_retry: bool,
    pub can_cancel: bool,
    pub can_revoke: bool,
    pub can_resend: bool,
    pub min_date: String,
    /// This page, for the forms to come back to.
    pub back: String,
    /// The requester's other requests and live tokens (approvers and the help desk).
    pub history: Option<(Vec<RequestRow>, Vec<TokenRow>)>,
    /// A renewal: the request it renews, beside it.
    pub renewed: Option<RequestRow>,
}

/// `GET /requests/{id}`.
pub async fn show(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<String>,
) -> Result<Response, PageError> {
    let id = RequestId(id_of(&id)?);
    let app = &state.app;
    let v = app
        .request(&viewer.actor, id)
        .await
        .map_err(|e| viewer.fail(e))?;
    let roles = viewer.actor.roles;
    let own = viewer.actor.is(&v.request.requester);
    let state_now = v.request.state;
    let history = if !own && roles.can_look_up_people() {
        let query = RequestQuery {
            requester: Some(v.request.requester.to_string()),
            limit: Some(50),
            ..RequestQuery::default()
        };
        let earlier = app
            .requests(&viewer.actor, &query)
            .await
            .map_err(|e| viewer.fail(e))?;
        let states: HashMap<i64, RequestState> =
            earlier.iter().map(|r| (r.id.0, r.state)).collect();
        let tokens = app
            .tokens(
                &viewer.actor,
                &crate::app::TokenQuery::of(v.request.requester.as_str()),
            )
            .await
            .map_err(|e| viewer.fail(e))?;
        let rows = earlier
            .iter()
            .filter(|r| r.id != id)
            .map(RequestRow::new)
            .collect();
        let live = tokens
            .iter()
            .map(|t| TokenRow::new(t, states.get(&t.request_id.0).copied()))
            .filter(|t| t.live)
            .collect();
        Some((rows, live))
    } else {
        None
    };
    let renewed = match v.request.renews {
        Some(old) => app
            .request(&viewer.actor, old)
            .await
            .ok()
            .map(|o| RequestRow::new(&o.request)),
        None => None,
    };
    let now = app.now();
    let today = now.date();
    let page = RequestPage {
        c: viewer.chrome(&format!("Request #{}", id.0)),
        r: RequestRow::new(&v.request),
        token: v.token.as_ref().map(|t| TokenRow::new(t, Some(state_now))),
        link: v
            .envelope
            .as_ref()
            .filter(|_| own)
            .map(|e| LinkRow::new(e, now)),
        mailbox: viewer.mailbox(),
        can_approve: app.allowed(&viewer.actor, &v, Action::Approve),
        can_deny: app.allowed(&viewer.actor, &v, Action::Deny),
        can_retry: app.allowed(&viewer.actor, &v, Action::Retry),
        can_cancel: app.allowed(&viewer.actor, &v, Action::Cancel),
        can_revoke: v.token.is_some() && app.allowed(&viewer.actor, &v, Action::Revoke),
        can_resend: app.allowed(&viewer.actor, &v, Action::ResendLink),
        min_date: view::date(today.next_day().unwrap_or(today)),
        back: format!("/requests/{}", id.0),
        history,
        renewed,
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

#[derive(Debug, Default, Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    expires_on: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    back: String,
}

/// After a form: back to the request page, with what happened (or why not).
pub(super) fn after(
    viewer: &Viewer,
    to: &str,
    result: Result<String, AppError>,
) -> Result<Response, PageError> {
    match result {
        Ok(message) => Ok(viewer.redirect(to, true, &message)),
        // Refusals a person can act on are shown on the page they came from; what they may
        // not do at all is a 403 page, as in the API.
        Err(AppError::Domain(
            e @ (DomainError::Invalid(_)
            | DomainError::WrongState { .. }
            | DomainError::Conflict { .. }),
        )) => {
            let message = ApiError::from(e).message;
            Ok(viewer.redirect(to, false, &message))
        }
        Err(AppError::Conflict) => Ok(viewer.redirect(to, false, &AppError::Conflict.to_string())),
        Err(e) => Err(viewer.fail(e)),
    }
}

/// `POST /requests/{id}/approve` (`expires_on` optional, earlier than requested).
pub async fn approve(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<String>,
    PageForm(form): PageForm<DecisionForm>,
) -> Result<Response, PageError> {
    let id = RequestId(id_of(&id)?);
    let expires_on = Some(form.expires_on.as_str()).filter(|s| !s.trim().is_empty());
    let result = state
        .app
        .approve(&viewer.actor, id, expires_on, &viewer.ctx)
        .await;
    let result = result.map(|r| {
        format!(
            "Request #{} approved: the token is being created in Canvas (expires {}).",
            r.id, r.expires_on
        )
    });
    after(&viewer, &format!("/requests/{}", id.0), result)
}

/// `POST /requests/{id}/deny` (`reason` required).
pub async fn deny(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<String>,
    PageForm(form): PageForm<DecisionForm>,
) -> Result<Response, PageError> {
    let id = RequestId(id_of(&id)?);
    let result = state
        .app
        .deny(&viewer.actor, id, Some(&form.reason), &viewer.ctx)
        .await;
    let result = result.map(|r| {
        format!(
            "Request #{} denied; {} will be told why.",
            r.id, r.requester
        )
    });
    after(&viewer, &format!("/requests/{}", id.0), result)
}

/// `POST /requests/{id}/cancel`.
pub async fn cancel(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<String>,
    PageForm(_): PageForm<DecisionForm>,
) -> Result<Response, PageError> {
    let id = RequestId(id_of(&id)?);
    let result = state.app.cancel(&viewer.actor, id, &viewer.ctx).await;
    let result = result.map(|r| format!("Request #{} cancelled.", r.id));
    after(&viewer, &format!("/requests/{}", id.0), result)
}

/// `POST /requests/{id}/retry`.
pub async fn retry(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<String>,
    PageForm(_): PageForm<DecisionForm>,
) -> Result<Response, PageError> {
    let id = RequestId(id_of(&id)?);
    let result = state.app.retry(&viewer.actor, id, &viewer.ctx).await;
    let result = result.map(|r| format!("Request #{}: creating the token in Canvas again.", r.id));
    after(&viewer, &format!("/requests/{}", id.0), result)
}

/// `POST /requests/{id}/resend-link`: the help desk sends a new delivery link.
pub async fn resend_link(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<String>,
    PageForm(_): PageForm<DecisionForm>,
) -> Result<Response, PageError> {
    let id = RequestId(id_of(&id)?);
    let result = state.app.resend_link(&viewer.actor, id, &viewer.ctx).await;
    let result = result.map(|r| {
        format!(
            "Request #{}: a new link was emailed to {}; the old one no longer works.",
            r.id, r.requester
        )
    });
    after(&viewer, &format!("/requests/{}", id.0), result)
}

/// `POST /tokens/{id}/revoke` (`reason` required; `back`: the page to return to).
pub async fn revoke(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<String>,
    PageForm(form): PageForm<DecisionForm>,
) -> Result<Response, PageError> {
    let id = TokenId(id_of(&id)?);
    let back = local_path(&form.back).unwrap_or("/me").to_owned();
    let result = state
        .app
        .revoke(&viewer.actor, id, Some(&form.reason), &viewer.ctx)
        .await;
    let result = result.map(|r| {
        format!(
            "The token of request #{} was revoked: Canvas no longer accepts it.",
            r.id
        )
    });
    after(&viewer, &back, result)
}

// ---- the queue ---------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "pages/queue.html")]
pub struct QueuePage {
    pub c: Chrome,
    pub rows: Vec<RequestRow>,
    pub state: String,
    pub requester: String,
    pub states: Vec<&'static str>,
    pub error: Option<String>,
    /// Waiting requests only their own requester could approve (shown to admins).
    pub stuck: Vec<String>,
    /// The next page's address, when this one is full.
    pub next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct QueueQuery {
    state: Option<String>,
    #[serde(default)]
    requester: String,
    #[serde(flatten)]
    after: super::view::AfterQuery,
}

/// Requests on a page of the queue.
const QUEUE_PAGE: i64 = 200;

/// `GET /queue`: submitted requests, oldest first; filters by state and requester.
pub async fn queue(
    State(state): State<WebState>,
    viewer: Viewer,
    OriginalUri(uri): OriginalUri,
    PageQuery(q): PageQuery<QueueQuery>,
) -> Result<Response, PageError> {
    if !viewer.actor.roles.can_review() {
        return Err(viewer.fail(ApiError::forbidden("only approvers see the queue")));
    }
    let wanted = q.state.unwrap_or_else(|| "submitted".to_owned());
    let query = RequestQuery {
        state: Some(wanted.clone()).filter(|s| !s.is_empty()),
        requester: Some(q.requester.trim().to_owned()).filter(|s| !s.is_empty()),
        everyone: true,
        oldest_first: true,
        after: q.after.after().map_err(|e| viewer.fail(e))?,
        limit: Some(QUEUE_PAGE),
    };
    let (list, error) = match state.app.requests(&viewer.actor, &query).await {
        Ok(list) => (list, None),
        Err(AppError::Domain(DomainError::Invalid(fields))) => {
            (Vec::new(), fields.first().map(|f| f.message.clone()))
        }
        Err(e) => return Err(viewer.fail(e)),
    };
    // Admins are told of waiting requests nobody but their requester could approve.
    let stuck: Vec<String> = if viewer.actor.roles.admin {
        list.iter()
            .filter(|r| r.state == RequestState::Submitted)
            .filter(|r| state.app.possible_approvers(&r.requester).is_empty())
            .map(|r| format!("#{} ({})", r.id, r.requester))
            .collect()
    } else {
        Vec::new()
    };
    let rows = list.iter().map(RequestRow::new).collect();
    let next = super::view::next_link(&uri, list.len(), QUEUE_PAGE, list.last().map(|r| r.id.0));
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let page = QueuePage {
        c: viewer.chrome("Queue"),
        rows,
        state: wanted,
        requester: q.requester,
        states: RequestState::ALL.iter().map(|s| s.as_str()).collect(),
        error,
        stuck,
        next,
    };
    Ok(viewer.page(status, &page))
}

//! `/api/v1/requests`: ask for a token, read requests, and decide on them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{IdPath, JsonBody, NoFields, QueryParams, bool_param, int_param};
use super::{Routes, WebState, utc};
use crate::app::{RequestQuery, RequestView};
use crate::domain::RequestId;
use crate::domain::request::{RawNewRequest, Request};

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .post("/requests", create)
        .get("/requests", list)
        .get("/requests/{id}", show)
        .post("/requests/{id}/approve", approve)
        .post("/requests/{id}/deny", deny)
        .post("/requests/{id}/cancel", cancel)
        .post("/requests/{id}/retry", retry)
}

/// A request as the API shows it.
#[derive(Debug, Serialize)]
pub struct RequestJson {
    pub id: i64,
    pub state: &'static str,
    pub requester: String,
    pub purpose: String,
    pub application: Option<String>,
    /// The expiry in force (YYYY-MM-DD).
    pub expires_on: String,
    /// The expiry the requester asked for.
    pub requested_expires_on: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envelope_id: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub envelope_expires_at: Option<OffsetDateTime>,
}

impl From<Request> for RequestJson {
    fn from(r: Request) -> RequestJson {
        RequestJson {
            id: r.id.0,
            state: r.state.as_str(),
            requester: r.requester.to_string(),
            purpose: r.purpose,
            application: r.application,
            expires_on: r.expires_on.to_string(),
            requested_expires_on: r.requested_expires_on.to_string(),
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
            decided_by: r.decided_by.map(|l| l.to_string()),
            reason: r.reason,
            token_id: None,
            envelope_id: None,
            envelope_expires_at: None,
        }
    }
}

impl From<RequestView> for RequestJson {
    fn from(view: RequestView) -> RequestJson {
        let mut json = RequestJson::from(view.request);
        json.token_id = view.token.map(|t| t.id.0);
        if let Some(envelope) = view.envelope {
            json.envelope_expires_at = Some(utc(envelope.expires_at));
            json.envelope_id = Some(envelope.id);
        }
        json
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequestBody {
    purpose: Option<String>,
    expires_on: Option<String>,
    application: Option<String>,
}

async fn create(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    JsonBody(body): JsonBody<NewRequestBody>,
) -> ApiResult<Response> {
    let raw = RawNewRequest {
        purpose: body.purpose,
        expires_on: body.expires_on,
        application: body.application,
    };
    let created = state.app.submit(&actor, &raw, &ctx).await?;
    let location = format!("/api/v1/requests/{}", created.id);
    Ok((
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(RequestJson::from(created)),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    requester: Option<String>,
    queue: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Vec<RequestJson>>> {
    let query = RequestQuery {
        state: q.state,
        requester: q.requester,
        oldest_first: bool_param("queue", q.queue.as_deref())?,
        limit: int_param("limit", q.limit.as_deref())?,
    };
    let requests = state.app.requests(&actor, &query).await?;
    Ok(Json(requests.into_iter().map(RequestJson::from).collect()))
}

async fn show(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    IdPath(id): IdPath,
) -> ApiResult<Json<RequestJson>> {
    let view = state.app.request(&actor, RequestId(id)).await?;
    Ok(Json(view.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    expires_on: Option<String>,
}

async fn approve(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    IdPath(id): IdPath,
    JsonBody(body): JsonBody<ApproveBody>,
) -> ApiResult<Json<RequestJson>> {
    let request = state
        .app
        .approve(&actor, RequestId(id), body.expires_on.as_deref(), &ctx)
        .await?;
    Ok(Json(request.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    pub reason: Option<String>,
}

async fn deny(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    IdPath(id): IdPath,
    JsonBody(body): JsonBody<ReasonBody>,
) -> ApiResult<Json<RequestJson>> {
    let request = state
        .app
        .deny(&actor, RequestId(id), body.reason.as_deref(), &ctx)
        .await?;
    Ok(Json(request.into()))
}

async fn cancel(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    IdPath(id): IdPath,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<RequestJson>> {
    let request = state.app.cancel(&actor, RequestId(id), &ctx).await?;
    Ok(Json(request.into()))
}

async fn retry(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    IdPath(id): IdPath,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<RequestJson>> {
    let request = state.app.retry(&actor, RequestId(id), &ctx).await?;
    Ok(Json(request.into()))
}

//! `/api/v1/requests`: ask for a token, read requests, and decide on them.

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{IdPath, JsonBody, NoFields, Paged, QueryParams, bool_param, int_param};
use super::openapi::{
    Always, Body, Checked, Conflicting, InCanvas, Limited, Named, Query, Refusable,
};
use super::{WebState, utc};
use crate::app::{RequestQuery, RequestView};
use crate::domain::RequestId;
use crate::domain::policy::{APPLICATION_MAX_CHARS, PURPOSE_MAX_CHARS, REASON_MAX_CHARS};
use crate::domain::request::{RawNewRequest, Request, RequestState};

pub(super) fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(approve))
        .routes(routes!(deny))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(resend_link))
}

/// A request as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Request)]
pub struct RequestJson {
    pub id: i64,
    pub state: RequestState,
    /// The login of the person who asked.
    pub requester: String,
    /// What the token is for.
    pub purpose: String,
    /// The program that will use it.
    pub application: Option<String>,
    /// The expiry in force: the requested one, or an approver's earlier one.
    #[schema(format = Date)]
    pub expires_on: String,
    /// The expiry the requester asked for.
    #[schema(format = Date)]
    pub requested_expires_on: String,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// The approver who approved or denied it.
    pub decided_by: Option<String>,
    /// Why it was denied, why issuance failed, or why the token was revoked or expired.
    pub reason: Option<String>,
    /// The earlier request whose token this one renews.
    pub renews: Option<i64>,
    /// Once issued (one request, not lists): the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<i64>,
    /// Once issued (one request, not lists): the delivery envelope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envelope_id: Option<String>,
    /// When the delivery link expires.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub envelope_expires_at: Option<OffsetDateTime>,
}

impl From<Request> for RequestJson {
    fn from(r: Request) -> RequestJson {
        RequestJson {
            id: r.id.0,
            state: r.state,
            requester: r.requester.to_string(),
            purpose: r.purpose,
            application: r.application,
            expires_on: r.expires_on.to_string(),
            requested_expires_on: r.requested_expires_on.to_string(),
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
            decided_by: r.decided_by.map(|l| l.to_string()),
            reason: r.reason,
            renews: r.renews.map(|id| id.0),
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

/// A new request. The purpose's least length is the policy's `purpose_min_chars`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequestBody {
    /// What the token is for (required; a missing one is a 422 naming the field).
    #[schema(max_length = 200, required = true, nullable = false)]
    purpose: Option<String>,
    /// From tomorrow to `max_lifetime_days` (default 120) after today (required).
    #[schema(format = Date, required = true, nullable = false)]
    expires_on: Option<String>,
    /// The program that will use the token.
    #[schema(max_length = 100)]
    application: Option<String>,
}

const _: () = assert!(PURPOSE_MAX_CHARS == 200 && APPLICATION_MAX_CHARS == 100);

/// Ask for a token.
#[utoipa::path(
    post,
    path = "/requests",
    tag = "requests",
    operation_id = "createRequest",
    request_body = NewRequestBody,
    responses(
        (status = 201, description = "Submitted; the approvers are told", body = RequestJson,
            headers(("Location" = String, description = "The new request"))),
        Always, Body, Conflicting, Checked, Limited, Refusable,
    ),
)]
async fn create(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    JsonBody(body): JsonBody<NewRequestBody>,
) -> ApiResult<Response> {
    state.limit(
        crate::limits::Limit::Submit,
        &format!("login:{}", actor.login),
    )?;
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only requests in this state.
    #[param(value_type = Option<RequestState>)]
    state: Option<String>,
    /// Only this person's requests (approvers and the help desk; anyone else may name only
    /// themselves).
    requester: Option<String>,
    /// Oldest first (the approvers' queue) instead of newest first.
    #[param(value_type = Option<bool>)]
    queue: Option<String>,
    /// At most this many (default 200).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The page after this request: the last id of the previous page (the `Link` header's
    /// `rel="next"` address carries it).
    #[param(value_type = Option<i64>, minimum = 1)]
    after: Option<String>,
}

// The schema says what the app checks.
const _: () =
    assert!(crate::app::REQUEST_LIST.max == 1000 && crate::app::REQUEST_LIST.default == 200);

/// List requests: the caller's own; approvers and the help desk see everyone's (or one
/// person's, with `requester`). Newest first, or oldest first with `queue=true`. List items
/// carry no `token_id` or `envelope_id`: read one request for those. A full page has a
/// `Link: <…>; rel="next"` header with the address of the next one.
#[utoipa::path(
    get,
    path = "/requests",
    tag = "requests",
    operation_id = "listRequests",
    params(ListQuery),
    responses(
        (status = 200, description = "The requests", body = Vec<RequestJson>,
            headers(("Link" = String, description = "`<address>; rel=\"next\"` when the page is full"))),
        Always, Query, Refusable, Checked,
    ),
)]
async fn list(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    OriginalUri(uri): OriginalUri,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Paged<RequestJson>> {
    let query = RequestQuery {
        state: q.state,
        // Without a requester, an approver's or the help desk's list is everyone's.
        everyone: q.requester.is_none(),
        requester: q.requester,
        oldest_first: bool_param("queue", q.queue.as_deref())?,
        after: int_param("after", q.after.as_deref())?,
        limit: int_param("limit", q.limit.as_deref())?,
    };
    let requests = state.app.requests(&actor, &query).await?;
    let limit = query.limit.unwrap_or(crate::app::REQUEST_LIST.default);
    let items = requests.into_iter().map(RequestJson::from).collect();
    Ok(Paged::new(
        &uri,
        items,
        limit,
        "after",
        |r: &RequestJson| r.id,
    ))
}

/// One request, with its token and delivery envelope once issued.
#[utoipa::path(
    get,
    path = "/requests/{id}",
    tag = "requests",
    operation_id = "getRequest",
    params(("id" = i64, Path, description = "The request")),
    responses(
        (status = 200, description = "The request", body = RequestJson),
        Always, Named,
    ),
)]
async fn show(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    IdPath(id): IdPath,
) -> ApiResult<Json<RequestJson>> {
    let view = state.app.request(&actor, RequestId(id)).await?;
    Ok(Json(view.into()))
}

/// An approval: optionally with an earlier expiry than requested.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// An earlier expiry than the requester asked for (leave it out to keep theirs).
    #[schema(format = Date)]
    expires_on: Option<String>,
}

/// Approve a submitted request (approvers; not one's own). The token is then created in
/// Canvas and its link emailed, in the background.
#[utoipa::path(
    post,
    path = "/requests/{id}/approve",
    tag = "requests",
    operation_id = "approveRequest",
    params(("id" = i64, Path, description = "The request")),
    request_body = ApproveBody,
    responses(
        (status = 200, description = "Approved", body = RequestJson),
        Always, Body, Named, Refusable, Conflicting, Checked,
    ),
)]
async fn approve(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    IdPath(id): IdPath,
    JsonBody(body): JsonBody<ApproveBody>,
) -> ApiResult<Json<RequestJson>> {
    super::extract::date_param("expires_on", body.expires_on.as_deref())?;
    let request = state
        .app
        .approve(&actor, RequestId(id), body.expires_on.as_deref(), &ctx)
        .await?;
    Ok(Json(request.into()))
}

/// Why: a denial or a revocation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why, for the person it concerns (required; a missing one is a 422 naming the field).
    #[schema(min_length = 1, max_length = 1000, required = true, nullable = false)]
    pub reason: Option<String>,
}

const _: () = assert!(REASON_MAX_CHARS == 1000);

/// Deny a submitted (or failed) request with a reason, which the requester is emailed.
#[utoipa::path(
    post,
    path = "/requests/{id}/deny",
    tag = "requests",
    operation_id = "denyRequest",
    params(("id" = i64, Path, description = "The request")),
    request_body = ReasonBody,
    responses(
        (status = 200, description = "Denied", body = RequestJson),
        Always, Body, Named, Refusable, Conflicting, Checked,
    ),
)]
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

/// Withdraw one's own request before it has a token.
#[utoipa::path(
    post,
    path = "/requests/{id}/cancel",
    tag = "requests",
    operation_id = "cancelRequest",
    params(("id" = i64, Path, description = "The request")),
    request_body = NoFields,
    responses(
        (status = 200, description = "Cancelled", body = RequestJson),
        Always, Body, Named, Refusable, Conflicting,
    ),
)]
async fn cancel(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    IdPath(id): IdPath,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<RequestJson>> {
    let request = state.app.cancel(&actor, RequestId(id), &ctx).await?;
    Ok(Json(request.into()))
}

/// Try a failed issuance again (approvers).
#[utoipa::path(
    post,
    path = "/requests/{id}/retry",
    tag = "requests",
    operation_id = "retryRequest",
    params(("id" = i64, Path, description = "The request")),
    request_body = NoFields,
    responses(
        (status = 200, description = "Approved again; issuance is queued", body = RequestJson),
        Always, Body, Named, Refusable, Conflicting,
    ),
)]
async fn retry(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    IdPath(id): IdPath,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<RequestJson>> {
    let request = state.app.retry(&actor, RequestId(id), &ctx).await?;
    Ok(Json(request.into()))
}

/// Send a new delivery link (the help desk), while the token is still pending in Canvas and its
/// link was never opened or has expired: the token gets a new value in Canvas, sealed in a new
/// envelope; the old link stops working; the owner is emailed the new one.
#[utoipa::path(
    post,
    path = "/requests/{id}/resend-link",
    tag = "requests",
    operation_id = "resendLink",
    params(("id" = i64, Path, description = "The request")),
    request_body = NoFields,
    responses(
        (status = 200, description = "Sent: the request with its new envelope", body = RequestJson),
        Always, Body, Named, Refusable, Conflicting, InCanvas,
    ),
)]
async fn resend_link(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    IdPath(id): IdPath,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<RequestJson>> {
    state.app.resend_link(&actor, RequestId(id), &ctx).await?;
    let view = state.app.request(&actor, RequestId(id)).await?;
    Ok(Json(view.into()))
}

//! `/api/v1/tokens`: the tokens tokendesk created in Canvas, and revoking one.

use axum::Json;
use axum::extract::{OriginalUri, State};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{IdPath, JsonBody, Paged, QueryParams, int_param};
use super::openapi::{
    Always, Body, Checked, Conflicting, InCanvas, Limited, Named, Query, Refusable,
};
use super::requests::ReasonBody;
use super::{WebState, utc};
use crate::app::TokenQuery;
use crate::domain::{TokenId, TokenState};
use crate::store::StoredToken;

pub(super) fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(revoke))
        .routes(routes!(check_activation))
        .routes(routes!(renew))
}

/// A token as the API shows it (never its value).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Token)]
pub struct TokenJson {
    pub id: i64,
    pub request_id: i64,
    pub owner: String,
    pub canvas_token_id: i64,
    pub canvas_user_id: i64,
    /// The few characters Canvas shows to recognise the token (never the value).
    pub hint: String,
    /// `pending` (not activated yet), `active` or `deleted`.
    pub state: TokenState,
    /// The day it expires, as chosen: it works through the end of this day (UTC).
    #[schema(format = Date)]
    pub expires_on: String,
    /// The instant it stops working: the end of `expires_on`. RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    /// When Canvas was first seen to report it active. RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub activated_at: Option<OffsetDateTime>,
    /// When it was last used in Canvas, as Canvas last reported. RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
    /// The expiry Canvas holds, as reconciliation last saw it. RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub canvas_expires_at: Option<OffsetDateTime>,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<StoredToken> for TokenJson {
    fn from(t: StoredToken) -> TokenJson {
        TokenJson {
            id: t.id.0,
            request_id: t.request_id.0,
            owner: t.owner.to_string(),
            canvas_token_id: t.canvas_token_id,
            canvas_user_id: t.canvas_user_id,
            hint: t.hint,
            state: t.state,
            expires_on: crate::domain::request::expiry_day(t.expires_at).to_string(),
            expires_at: utc(t.expires_at),
            activated_at: t.activated_at.map(utc),
            last_used_at: t.last_used_at.map(utc),
            canvas_expires_at: t.canvas_expires_at.map(utc),
            created_at: utc(t.created_at),
            updated_at: utc(t.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Whose tokens (the help desk and approvers; anyone else may name only themselves).
    owner: Option<String>,
    /// At most this many (default 500).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The page after this token: the last id of the previous page (the `Link` header's
    /// `rel="next"` address carries it).
    #[param(value_type = Option<i64>, minimum = 1)]
    after: Option<String>,
}

// The schema says what the app checks.
const _: () = assert!(crate::app::TOKEN_LIST.max == 1000 && crate::app::TOKEN_LIST.default == 500);

/// The caller's tokens, newest first; the help desk and approvers may ask for anyone's. A full
/// page has a `Link: <…>; rel="next"` header with the address of the next one.
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    operation_id = "listTokens",
    params(ListQuery),
    responses(
        (status = 200, description = "The tokens", body = Vec<TokenJson>,
            headers(("Link" = String, description = "`<address>; rel=\"next\"` when the page is full"))),
        Always, Query, Refusable, Checked,
    ),
)]
async fn list(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    OriginalUri(uri): OriginalUri,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Paged<TokenJson>> {
    let query = TokenQuery {
        owner: q.owner,
        after: int_param("after", q.after.as_deref())?,
        limit: int_param("limit", q.limit.as_deref())?,
    };
    let tokens = state.app.tokens(&actor, &query).await?;
    let limit = query.limit.unwrap_or(crate::app::TOKEN_LIST.default);
    let items = tokens.into_iter().map(TokenJson::from).collect();
    Ok(Paged::new(&uri, items, limit, "after", |t: &TokenJson| {
        t.id
    }))
}

/// One token (its owner, the help desk and approvers).
#[utoipa::path(
    get,
    path = "/tokens/{id}",
    tag = "tokens",
    operation_id = "getToken",
    params(("id" = i64, Path, description = "The token")),
    responses(
        (status = 200, description = "The token", body = TokenJson),
        Always, Named,
    ),
)]
async fn show(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    IdPath(id): IdPath,
) -> ApiResult<Json<TokenJson>> {
    let (token, _) = state.app.token(&actor, TokenId(id)).await?;
    Ok(Json(token.into()))
}

/// Revoke a token (its owner or the help desk): it is deleted in Canvas, then recorded, with
/// the owner emailed when someone else revoked it. If Canvas refuses or is down, nothing changes.
#[utoipa::path(
    post,
    path = "/tokens/{id}/revoke",
    tag = "tokens",
    operation_id = "revokeToken",
    params(("id" = i64, Path, description = "The token")),
    request_body = ReasonBody,
    responses(
        (status = 200, description = "Revoked: the token as it is now", body = TokenJson),
        Always, Body, Named, Refusable, Conflicting, Checked, InCanvas,
    ),
)]
async fn revoke(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    IdPath(id): IdPath,
    JsonBody(body): JsonBody<ReasonBody>,
) -> ApiResult<Json<TokenJson>> {
    let id = TokenId(id);
    state
        .app
        .revoke(&actor, id, body.reason.as_deref(), &ctx)
        .await?;
    let (token, _) = state.app.token(&actor, id).await?;
    Ok(Json(token.into()))
}

/// What Canvas says of a token the owner says they activated.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ActivationCheck)]
pub struct ActivationJson {
    pub token_id: i64,
    /// `active`, or `pending` (not activated yet in Canvas).
    pub state: TokenState,
    /// What to tell the person.
    pub message: String,
    /// While pending: where the owner activates it (Canvas's settings page).
    pub activate_at: Option<String>,
}

/// "I have activated it": the owner asks tokendesk to look in Canvas now (instead of at the
/// next scheduled check).
#[utoipa::path(
    post,
    path = "/tokens/{id}/check-activation",
    tag = "tokens",
    operation_id = "checkActivation",
    params(("id" = i64, Path, description = "The token")),
    request_body = super::extract::NoFields,
    responses(
        (status = 200, description = "What Canvas says now", body = ActivationJson),
        Always, Body, Named, Refusable, Conflicting, InCanvas,
    ),
)]
async fn check_activation(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    IdPath(id): IdPath,
    JsonBody(_empty): JsonBody<super::extract::NoFields>,
) -> ApiResult<Json<ActivationJson>> {
    let check = state.app.check_activation(&actor, TokenId(id)).await?;
    Ok(Json(ActivationJson {
        token_id: check.token_id.0,
        state: if check.active {
            TokenState::Active
        } else {
            TokenState::Pending
        },
        message: check.message,
        activate_at: check.activate_at,
    }))
}

/// A renewal: a new expiry, and optionally a new purpose (the old one is kept otherwise).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// From tomorrow to `max_lifetime_days` (default 120) after today (required).
    #[schema(format = Date, required = true, nullable = false)]
    expires_on: Option<String>,
    /// What the token is for, if it changed.
    #[schema(max_length = 200)]
    purpose: Option<String>,
    /// The program that uses it, if it changed.
    #[schema(max_length = 100)]
    application: Option<String>,
}

/// Ask to renew a live token (its owner): a new request marked as a renewal of this token's,
/// waiting for an approver. Approved, it makes a new token (`policy.renewal = "new"`, the old one
/// works until the new one is activated) or moves this token's expiry (`"extend"`).
#[utoipa::path(
    post,
    path = "/tokens/{id}/renew",
    tag = "tokens",
    operation_id = "renewToken",
    params(("id" = i64, Path, description = "The token")),
    request_body = RenewBody,
    responses(
        (status = 201, description = "The renewal request; the approvers are told", body = super::requests::RequestJson,
            headers(("Location" = String, description = "The new request"))),
        Always, Body, Named, Refusable, Conflicting, Checked, Limited,
    ),
)]
async fn renew(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    IdPath(id): IdPath,
    JsonBody(body): JsonBody<RenewBody>,
) -> ApiResult<axum::response::Response> {
    use axum::http::StatusCode;
    use axum::http::header::LOCATION;
    use axum::response::IntoResponse as _;
    state.limit(
        crate::limits::Limit::Submit,
        &format!("login:{}", actor.login),
    )?;
    let raw = crate::domain::request::RawNewRequest {
        purpose: body.purpose,
        expires_on: body.expires_on,
        application: body.application,
    };
    let created = state.app.renew(&actor, TokenId(id), &raw, &ctx).await?;
    let location = format!("/api/v1/requests/{}", created.id);
    Ok((
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(super::requests::RequestJson::from(created)),
    )
        .into_response())
}

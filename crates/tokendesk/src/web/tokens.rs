//! `/api/v1/tokens`: the tokens tokendesk created in Canvas, and revoking one.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{IdPath, JsonBody, QueryParams};
use super::openapi::{Always, Body, Checked, Conflicting, InCanvas, Named, Query, Refusable};
use super::requests::ReasonBody;
use super::{WebState, utc};
use crate::domain::{TokenId, TokenState};
use crate::store::StoredToken;

pub(super) fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(revoke))
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
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
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
            expires_at: utc(t.expires_at),
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
}

/// The caller's tokens, newest first; the help desk and approvers may ask for anyone's.
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    operation_id = "listTokens",
    params(ListQuery),
    responses(
        (status = 200, description = "The tokens", body = Vec<TokenJson>),
        Always, Query, Refusable, Checked,
    ),
)]
async fn list(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Vec<TokenJson>>> {
    let tokens = state.app.tokens(&actor, q.owner.as_deref()).await?;
    Ok(Json(tokens.into_iter().map(TokenJson::from).collect()))
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

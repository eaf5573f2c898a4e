//! `/api/v1/tokens`: the tokens tokendesk created in Canvas, and revoking one.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{IdPath, JsonBody, QueryParams};
use super::requests::ReasonBody;
use super::{Routes, WebState, utc};
use crate::domain::TokenId;
use crate::store::StoredToken;

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .get("/tokens", list)
        .get("/tokens/{id}", show)
        .post("/tokens/{id}/revoke", revoke)
}

/// A token as the API shows it (never its value).
#[derive(Debug, Serialize)]
pub struct TokenJson {
    pub id: i64,
    pub request_id: i64,
    pub owner: String,
    pub canvas_token_id: i64,
    pub canvas_user_id: i64,
    /// The few characters Canvas shows to recognise the token.
    pub hint: String,
    /// `pending` (not activated yet), `active` or `deleted`.
    pub state: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
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
            state: t.state.as_str(),
            expires_at: utc(t.expires_at),
            created_at: utc(t.created_at),
            updated_at: utc(t.updated_at),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    owner: Option<String>,
}

async fn list(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Vec<TokenJson>>> {
    let tokens = state.app.tokens(&actor, q.owner.as_deref()).await?;
    Ok(Json(tokens.into_iter().map(TokenJson::from).collect()))
}

async fn show(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    IdPath(id): IdPath,
) -> ApiResult<Json<TokenJson>> {
    let (token, _) = state.app.token(&actor, TokenId(id)).await?;
    Ok(Json(token.into()))
}

/// Deletes the token in Canvas and records it; answers with the token as it is now.
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

//! `/api/v1/me/sessions` and `/api/v1/people/{login}/sessions/end`: sign-in sessions (OIDC and
//! demo). One's own sessions can be listed and ended; the help desk ends all of a person's.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::WebState;
use super::auth::SignedIn;
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, NoFields, StrPath};
use super::openapi::{Always, Body, Named, Refusable};
use crate::domain::Login;

pub(super) fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(end_one))
        .routes(routes!(end_all))
}

/// A sign-in session.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionJson {
    /// Names the session (not its secret).
    pub id: String,
    /// `oidc` or `demo`.
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: time::OffsetDateTime,
    /// When it ends at the latest, used or not.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: time::OffsetDateTime,
    pub client_addr: Option<String>,
}

impl From<crate::store::StoredSession> for SessionJson {
    fn from(s: crate::store::StoredSession) -> Self {
        SessionJson {
            id: s.public_id,
            kind: s.kind,
            created_at: super::utc(s.created_at),
            last_seen_at: super::utc(s.last_seen_at),
            expires_at: super::utc(s.expires_at),
            client_addr: s.client_addr,
        }
    }
}

/// How many sessions were ended.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SessionsEnded)]
pub struct EndedJson {
    pub ended: u64,
}

/// The caller's live sessions, newest first (empty behind a sign-in proxy).
#[utoipa::path(
    get,
    path = "/me/sessions",
    tag = "people",
    operation_id = "mySessions",
    responses((status = 200, description = "The sessions", body = Vec<SessionJson>), Always),
)]
async fn list(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
) -> ApiResult<Json<Vec<SessionJson>>> {
    let sessions = state.app.sessions_of(&actor, &actor.login).await?;
    Ok(Json(sessions.into_iter().map(SessionJson::from).collect()))
}

/// End one of the caller's sessions: that browser must sign in again.
#[utoipa::path(
    post,
    path = "/me/sessions/{id}/end",
    tag = "people",
    operation_id = "endMySession",
    params(("id" = String, Path, description = "The session's id")),
    request_body = NoFields,
    responses(
        (status = 200, description = "Ended", body = EndedJson),
        Always, Body, Named,
    ),
)]
async fn end_one(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    StrPath(id): StrPath,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<EndedJson>> {
    state.app.end_own_session(&actor, &id, &ctx).await?;
    Ok(Json(EndedJson { ended: 1 }))
}

/// End every session of a person (the help desk, or the person): they must sign in again
/// everywhere. Audited.
#[utoipa::path(
    post,
    path = "/people/{login}/sessions/end",
    tag = "people",
    operation_id = "endSessionsOf",
    params(("login" = String, Path, description = "The person's login")),
    request_body = NoFields,
    responses(
        (status = 200, description = "How many sessions were ended", body = EndedJson),
        Always, Body, Named, Refusable,
    ),
)]
async fn end_all(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    StrPath(login): StrPath,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<EndedJson>> {
    // A path that is not a login names nobody.
    let login = Login::parse(&login).map_err(|_| ApiError::not_found())?;
    let ended = state.app.end_all_sessions(&actor, &login, &ctx).await?;
    Ok(Json(EndedJson { ended }))
}

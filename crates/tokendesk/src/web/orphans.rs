//! `/api/v1/orphans`: tokens in Canvas whose purpose says tokendesk made them but that it does
//! not know (reconciliation finds them), for admins to delete.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{IdPath, JsonBody, NoFields};
use super::openapi::{Always, Body, InCanvas, Named, Refusable};
use super::{WebState, utc};
use crate::store::Orphan;

pub(super) fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(delete))
}

/// A token in Canvas that says tokendesk made it, unknown to tokendesk.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Orphan)]
pub struct OrphanJson {
    pub id: i64,
    pub canvas_user_id: i64,
    pub canvas_token_id: i64,
    /// The login of its Canvas user, when tokendesk knows it.
    pub owner: Option<String>,
    /// Its purpose in Canvas (`tokendesk #…`).
    pub purpose: String,
    /// The few characters Canvas shows of it (never the value).
    pub hint: String,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub canvas_expires_at: Option<OffsetDateTime>,
    /// When reconciliation first saw it. RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub found_at: OffsetDateTime,
    /// When reconciliation last saw it. RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub seen_at: OffsetDateTime,
}

impl From<Orphan> for OrphanJson {
    fn from(o: Orphan) -> OrphanJson {
        OrphanJson {
            id: o.id,
            canvas_user_id: o.canvas_user_id,
            canvas_token_id: o.canvas_token_id,
            owner: o.owner.map(|l| l.to_string()),
            purpose: o.purpose,
            hint: o.hint,
            canvas_expires_at: o.canvas_expires_at.map(utc),
            found_at: utc(o.found_at),
            seen_at: utc(o.seen_at),
        }
    }
}

/// The orphans, oldest found first (admins).
#[utoipa::path(
    get,
    path = "/orphans",
    tag = "orphans",
    operation_id = "listOrphans",
    responses(
        (status = 200, description = "The orphans", body = Vec<OrphanJson>),
        Always, Refusable,
    ),
)]
async fn list(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
) -> ApiResult<Json<Vec<OrphanJson>>> {
    let orphans = state.app.orphans(&actor).await?;
    Ok(Json(orphans.into_iter().map(OrphanJson::from).collect()))
}

/// Delete an orphan in Canvas (admins); audited. If Canvas refuses or is down, nothing changes.
#[utoipa::path(
    post,
    path = "/orphans/{id}/delete",
    tag = "orphans",
    operation_id = "deleteOrphan",
    params(("id" = i64, Path, description = "The orphan")),
    request_body = NoFields,
    responses(
        (status = 200, description = "Deleted in Canvas: the orphan as it was", body = OrphanJson),
        Always, Body, Named, Refusable, InCanvas,
    ),
)]
async fn delete(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    IdPath(id): IdPath,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<OrphanJson>> {
    let orphan = state.app.delete_orphan(&actor, id, &ctx).await?;
    Ok(Json(orphan.into()))
}

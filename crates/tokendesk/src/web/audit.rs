//! `/api/v1/audit`: the audit trail, for auditors and admins.

use axum::extract::{OriginalUri, State};
use serde::Deserialize;

use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::WebState;
use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{Paged, QueryParams, int_param};
use super::openapi::{Always, Checked, Query, Refusable};
use crate::app::AuditQuery;
use crate::store::AuditEvent;

pub(super) fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only events by this actor (a login, or `system`).
    actor: Option<String>,
    /// Only this action, e.g. `request.approve`.
    action: Option<String>,
    /// Only events about this target, e.g. `request:12`.
    target: Option<String>,
    /// From this time: a date (`2026-11-28`) or an RFC 3339 time.
    since: Option<String>,
    /// Before this time: a date or an RFC 3339 time.
    until: Option<String>,
    /// Only events after this sequence number (for paging).
    #[param(value_type = Option<i64>, minimum = 0)]
    after_seq: Option<String>,
    /// At most this many.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 5000)]
    limit: Option<String>,
}

// The schema says what the app checks.
const _: () = assert!(crate::app::AUDIT_LIST.max == 5000);

/// The audit trail, oldest first (auditors and admins).
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    operation_id = "listAudit",
    params(AuditParams),
    responses(
        (status = 200, description = "The events", body = Vec<AuditEvent>,
            headers(("Link" = String, description = "`<address>; rel=\"next\"` when the page is full"))),
        Always, Query, Refusable, Checked,
    ),
)]
async fn list(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    OriginalUri(uri): OriginalUri,
    QueryParams(q): QueryParams<AuditParams>,
) -> ApiResult<Paged<AuditEvent>> {
    let query = AuditQuery {
        actor: q.actor,
        action: q.action,
        target: q.target,
        since: q.since,
        until: q.until,
        after_seq: int_param("after_seq", q.after_seq.as_deref())?,
        limit: int_param("limit", q.limit.as_deref())?,
    };
    let events = state.app.audit_events(&actor, &query).await?;
    let limit = query.limit.unwrap_or(crate::app::AUDIT_LIST.default);
    Ok(Paged::new(
        &uri,
        events,
        limit,
        "after_seq",
        |e: &AuditEvent| e.seq,
    ))
}

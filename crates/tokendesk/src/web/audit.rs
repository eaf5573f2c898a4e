//! `/api/v1/audit`: the audit trail, for auditors and admins.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{QueryParams, int_param};
use super::{Routes, WebState};
use crate::app::AuditQuery;
use crate::store::AuditEvent;

pub(super) fn routes(routes: Routes) -> Routes {
    routes.get("/audit", list)
}

#[derive(Debug, Deserialize)]
pub struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after_seq: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    QueryParams(q): QueryParams<AuditParams>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let query = AuditQuery {
        actor: q.actor,
        action: q.action,
        target: q.target,
        since: q.since,
        until: q.until,
        after_seq: int_param("after_seq", q.after_seq.as_deref())?,
        limit: int_param("limit", q.limit.as_deref())?,
    };
    Ok(Json(state.app.audit_events(&actor, &query).await?))
}

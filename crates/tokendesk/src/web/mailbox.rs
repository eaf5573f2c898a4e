//! `/api/v1/mailbox`: the delivered email of the mailbox transport (the demo's inbox).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{QueryParams, int_param};
use super::{Routes, WebState};
use crate::store::MailboxMessage;

pub(super) fn routes(routes: Routes) -> Routes {
    routes.get("/mailbox", list)
}

#[derive(Debug, Deserialize)]
pub struct MailboxQuery {
    to: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    QueryParams(q): QueryParams<MailboxQuery>,
) -> ApiResult<Json<Vec<MailboxMessage>>> {
    let limit = int_param("limit", q.limit.as_deref())?;
    Ok(Json(
        state.app.mailbox(&actor, q.to.as_deref(), limit).await?,
    ))
}

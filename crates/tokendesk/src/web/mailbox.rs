//! `/api/v1/mailbox`: the delivered email of the mailbox transport (the demo's inbox).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::WebState;
use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{QueryParams, int_param};
use super::openapi::{Always, Checked, Named, Query, Refusable};
use crate::store::MailboxMessage;

pub(super) fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MailboxQuery {
    /// One person's mail (admins; anyone else reads only their own).
    to: Option<String>,
    /// At most this many.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
}

// The schema says what the app checks.
const _: () = assert!(crate::app::MAILBOX_LIST.max == 200);

/// The demo's inbox (the mailbox transport only; 404 when email goes by SMTP): delivered
/// messages, newest first.
#[utoipa::path(
    get,
    path = "/mailbox",
    tag = "mailbox",
    operation_id = "listMailbox",
    params(MailboxQuery),
    responses(
        (status = 200, description = "The messages", body = Vec<MailboxMessage>),
        Always, Query, Named, Refusable, Checked,
    ),
)]
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

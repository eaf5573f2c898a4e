//! `/healthz` (the process answers) and `/readyz` (the database answers).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::WebState;

/// How the service is.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Status)]
pub struct StatusJson {
    /// `ok` or `unavailable`.
    status: &'static str,
    /// Why it is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    security(()),
    responses((status = 200, description = "Up", body = StatusJson)),
)]
pub async fn healthz() -> Json<StatusJson> {
    Json(StatusJson {
        status: "ok",
        reason: None,
    })
}

/// The database answers (for a load balancer).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    security(()),
    responses(
        (status = 200, description = "Ready", body = StatusJson),
        (status = 503, description = "The database does not answer", body = StatusJson),
    ),
)]
pub async fn readyz(State(state): State<WebState>) -> (StatusCode, Json<StatusJson>) {
    // Known down: answer at once (the server's probe finds when it is back). Otherwise one
    // ping, bounded so that a load balancer gets its answer within a second.
    let ready = if state.app.database_is_down() {
        Err(())
    } else {
        state.app.ping().await.map_err(|_| ())
    };
    match ready {
        Ok(()) => (
            StatusCode::OK,
            Json(StatusJson {
                status: "ok",
                reason: None,
            }),
        ),
        Err(()) => {
            // The store logged the outage (once); a load balancer asks often.
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(StatusJson {
                    status: "unavailable",
                    reason: Some("the database does not answer"),
                }),
            )
        }
    }
}

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
    match state.app.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(StatusJson {
                status: "ok",
                reason: None,
            }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "readiness check: the database does not answer");
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

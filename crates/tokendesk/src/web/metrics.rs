//! `/metrics`, in Prometheus's text format (see [`crate::telemetry`]): on the main address only
//! with `metrics.bearer_key` (and then only to that key), or on its own `metrics.listen`
//! address without authentication.

use axum::Router;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq as _;

use super::{ApiError, WebState};
use crate::app::App;

/// The path, on either address.
pub const PATH: &str = "/metrics";

/// Prometheus's text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn answer(app: &App) -> Response {
    match crate::telemetry::render(app).await {
        Ok(text) => (
            [(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT))],
            text,
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Metrics in Prometheus's text format, to the monitoring system's key (`metrics.bearer_key`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    security(()),
    responses(
        (status = 200, description = "Prometheus's text format (version 0.0.4)", content_type = "text/plain", body = String),
        (status = 401, description = "Without the metrics key as `Authorization: Bearer` (`unauthenticated`)", body = super::error::ApiErrorBody),
        (status = 404, description = "Not served on this address: `metrics.bearer_key` is not set (`not_found`)", body = super::error::ApiErrorBody),
        (status = 503, description = "The database does not answer", body = super::error::ApiErrorBody),
    ),
)]
pub async fn scrape(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let Some(key) = &state.metrics_key else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are not served here: set metrics.bearer_key_file (or metrics.listen for an address of their own)",
        )
        .into_response();
    };
    let given = super::auth::bearer(&headers).unwrap_or_default();
    if !bool::from(given.as_bytes().ct_eq(key.expose_secret().as_bytes())) {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send the metrics key (metrics.bearer_key) as Authorization: Bearer",
        )
        .into_response();
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    answer(&state.app).await
}

/// The router of `metrics.listen`: `/metrics` and nothing else.
pub fn own_router(app: App) -> Router {
    Router::new().route(
        PATH,
        get(move || {
            let app = app.clone();
            async move { answer(&app).await }
        }),
    )
}

/// The key that opens `/metrics` on the main address.
pub type MetricsKey = Option<SecretString>;

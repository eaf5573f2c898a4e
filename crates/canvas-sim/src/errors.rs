//! Canvas's error responses, each in the exact shape Canvas sends (`canvas-api.md` §3).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why Canvas refuses a request.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// No credentials at all.
    Unauthenticated,
    /// A token that is unknown, pending, expired or deleted.
    InvalidToken,
    /// Authenticated but not allowed; the status is 401 (older) or 403 (newer instances).
    Unauthorized(StatusCode),
    NotFound,
    /// `render_error`: a top-level array with one message.
    BadRequest(String),
    /// An ActiveRecord validation failure on one attribute.
    Validation {
        attribute: &'static str,
        kind: &'static str,
    },
    /// A body of Canvas's own making, sent as is with 400.
    BadRequestBody(serde_json::Value),
    /// The leaky bucket is full: 403 as canvas-api.md documents (or 429, which newer
    /// instances are reported to send).
    Throttled(StatusCode),
    /// An injected failure (`--fail-rate`).
    Injected(StatusCode),
}

const WWW_AUTHENTICATE: &str = "Bearer realm=\"canvas-lms\"";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let with_challenge = |body: serde_json::Value| {
            let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE),
            );
            response
        };
        match self {
            ApiError::Unauthenticated => with_challenge(json!({
                "status": "unauthenticated",
                "errors": [{"message": "user authorization required"}]
            })),
            ApiError::InvalidToken => {
                with_challenge(json!({"errors": [{"message": "Invalid access token."}]}))
            }
            ApiError::Unauthorized(status) => (
                status,
                axum::Json(json!({
                    "status": "unauthorized",
                    "errors": [{"message": "user not authorized to perform that action"}]
                })),
            )
                .into_response(),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                axum::Json(
                    json!({"errors": [{"message": "The specified resource does not exist."}]}),
                ),
            )
                .into_response(),
            ApiError::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!([{ "message": message }])),
            )
                .into_response(),
            ApiError::Validation { attribute, kind } => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"errors": {attribute: [{
                    "attribute": attribute, "type": kind, "message": kind
                }]}})),
            )
                .into_response(),
            ApiError::BadRequestBody(body) => {
                (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
            }
            ApiError::Throttled(status) => (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                if status == StatusCode::FORBIDDEN {
                    "403 Forbidden (Rate Limit Exceeded)\n"
                } else {
                    "429 Too Many Requests (Rate Limit Exceeded)\n"
                },
            )
                .into_response(),
            ApiError::Injected(status) => (
                status,
                axum::Json(json!({"errors": [{"message": "An error occurred."}]})),
            )
                .into_response(),
        }
    }
}

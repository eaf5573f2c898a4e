//! Canvas's error responses, each in the exact shape Canvas sends (`canvas-api.md` §3).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why Canvas refuses a request.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// No credentials at all.
    Unauthenticated,
    /// A token that is unknown or pending.
    InvalidToken,
    /// A token past its `expires_at` (given here in Canvas's ISO-8601 form).
    ExpiredToken {
        expired_at: String,
    },
    /// A deleted token.
    RevokedToken,
    /// `as_user_id` names nobody, or someone the caller may not act as.
    InvalidAsUserId,
    /// A session request that changes something without the session's CSRF token (Rails'
    /// `protect_from_forgery`): 422.
    InvalidAuthenticityToken,
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
    /// The leaky bucket is full: 429 (hosted Canvas since 2025-10-08) or 403 (older).
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
            ApiError::ExpiredToken { expired_at } => with_challenge(json!({"errors": [{
                "message": "Expired access token.",
                "expired_at": expired_at
            }]})),
            ApiError::RevokedToken => {
                with_challenge(json!({"errors": [{"message": "Revoked access token."}]}))
            }
            ApiError::InvalidAsUserId => (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"errors": "Invalid as_user_id"})),
            )
                .into_response(),
            ApiError::InvalidAuthenticityToken => (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"errors": [{"message": "Invalid authenticity token"}]})),
            )
                .into_response(),
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
                // canvas-api.md §3: both bodies say "Forbidden".
                if status == StatusCode::FORBIDDEN {
                    "403 Forbidden (Rate Limit Exceeded)\n"
                } else {
                    "429 Forbidden (Rate Limit Exceeded)\n"
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

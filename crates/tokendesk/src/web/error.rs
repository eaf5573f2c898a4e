//! The API's errors: one type, one JSON shape `{"error":{"code","message","field"?,"fields"?}}`,
//! one status per kind. 5xx are logged with their full cause; the person sees only a safe message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokendesk_canvas::CanvasError;

use crate::app::AppError;
use crate::domain::{DomainError, FieldError};

use super::middleware::current_request_id;

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Every wrong field (422).
    pub fields: Vec<FieldError>,
    /// 429: how many seconds until it may be tried again (`Retry-After`).
    pub retry_after: Option<u32>,
}

/// Every error answer of the API.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiErrorBody<'a> {
    error: ApiErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ApiErrorDetail<'a> {
    /// A stable, machine-readable code, e.g. `not_found`, `wrong_state`, `unknown_field`,
    /// `required`.
    code: &'a str,
    /// What went wrong and what to do, for people.
    message: &'a str,
    /// The field at fault (400: a JSON field; 422: the first invalid field).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    /// 422: every invalid field.
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    fields: &'a [FieldError],
    /// The request's id (also in `X-Request-Id`), to quote to the help desk.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            fields: Vec::new(),
            retry_after: None,
        }
    }

    /// 429: over a rate limit; `wait` until the next one is allowed.
    pub fn too_many(what: &str, wait: std::time::Duration) -> ApiError {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let secs = u32::try_from(secs).unwrap_or(u32::MAX);
        ApiError {
            retry_after: Some(secs.max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!(
                    "too many {what} for now; try again in {} second(s)",
                    secs.max(1)
                ),
            )
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn unauthenticated() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "sign in first: this needs a signed-in person",
        )
    }

    /// Signed in by the proxy with a login tokendesk cannot use: not signed in (401), saying
    /// why, with `field` "login".
    pub fn invalid_login(why: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!(
                "the sign-in proxy vouched for a login tokendesk cannot use: {}; ask the help desk to have your account's login checked",
                why.into()
            ),
        )
        .with_field("login")
    }

    /// Whether this is the refusal of an unusable login (see [`ApiError::invalid_login`]).
    pub fn is_invalid_login(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED && self.field.as_deref() == Some("login")
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "there is nothing here")
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this address does not accept that method; see /api/openapi.json",
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json (use {} when there is nothing to send)",
        )
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than the {limit} bytes allowed"),
        )
    }

    pub fn invalid(fields: Vec<FieldError>) -> ApiError {
        let (code, message, field) = match fields.first() {
            Some(first) => (
                first.code,
                first.message.clone(),
                Some(first.field.to_owned()),
            ),
            None => ("invalid", "invalid input".to_owned(), None),
        };
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message,
            field,
            fields,
            retry_after: None,
        }
    }

    /// 503: the database does not answer (the store logs the outage once, and its end).
    pub fn database_down() -> ApiError {
        ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "tokendesk cannot reach its database right now; nothing was changed: try again in a few seconds",
            )
        }
    }

    /// 503: the database cannot store anything (its disk is full or read-only). Logged with
    /// its cause for the operator; the person is told nothing was changed.
    pub fn storage_refused(cause: &(dyn std::error::Error + 'static)) -> ApiError {
        tracing::error!(
            error = %crate::logging::chain(cause),
            "the database cannot store anything: its disk is full or read-only"
        );
        ApiError {
            retry_after: Some(60),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "tokendesk cannot save anything right now (its database's disk is full or read-only); nothing was changed: try again later, and tell the help desk if it lasts",
            )
        }
    }

    /// A failure that is ours: logged in full, shown as "internal error" with the request id.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> ApiError {
        tracing::error!(error = %crate::logging::chain(cause), "internal error");
        let message = match current_request_id() {
            Some(id) => format!("internal error (request id {id})"),
            None => "internal error".to_owned(),
        };
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            error: ApiErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
                fields: &self.fields,
                request_id: current_request_id().filter(|id| !id.is_empty()),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        match e {
            DomainError::Invalid(fields) => ApiError::invalid(fields),
            DomainError::Forbidden(message) => ApiError::forbidden(message),
            DomainError::NotFound => ApiError::not_found(),
            e @ DomainError::WrongState { .. } => {
                ApiError::new(StatusCode::CONFLICT, "wrong_state", e.to_string())
            }
            DomainError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
        }
    }
}

impl From<CanvasError> for ApiError {
    fn from(e: CanvasError) -> ApiError {
        if e.is_transient() {
            tracing::warn!(error = %e, "Canvas unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "canvas_unavailable",
                "Canvas is not answering right now, so nothing was changed; try again in a few minutes",
            )
        } else {
            tracing::error!(error = %e, "Canvas refused");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "canvas_error",
                format!("nothing was changed: {e}"),
            )
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        match e {
            AppError::Domain(e) => e.into(),
            AppError::Canvas(e) => e.into(),
            AppError::Store(e) if e.is_unreachable() => ApiError::database_down(),
            AppError::Store(e) if e.is_storage_refused() => ApiError::storage_refused(&e),
            AppError::Store(e) => ApiError::internal(&e),
            e @ AppError::Conflict => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            AppError::Unavailable(message) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::request::RequestState;
    use crate::store::StoreError;

    fn status(e: impl Into<ApiError>) -> (u16, &'static str) {
        let e = e.into();
        (e.status.as_u16(), e.code)
    }

    #[test]
    fn every_error_has_its_status() {
        let invalid = DomainError::Invalid(vec![
            FieldError::new("purpose", "too_short", "purpose is too short"),
            FieldError::new("expires_on", "required", "expires_on is required"),
        ]);
        let e = ApiError::from(invalid);
        assert_eq!(
            (e.status.as_u16(), e.code, e.field.as_deref()),
            (422, "too_short", Some("purpose"))
        );
        assert_eq!(e.fields.len(), 2);
        assert_eq!(
            status(DomainError::Forbidden("no".into())),
            (403, "forbidden")
        );
        assert_eq!(status(DomainError::NotFound), (404, "not_found"));
        let wrong = DomainError::WrongState {
            action: "approve",
            current: RequestState::Denied,
        };
        assert_eq!(status(wrong), (409, "wrong_state"));
        let limit = DomainError::Conflict {
            code: "too_many_tokens",
            message: "too many".into(),
        };
        assert_eq!(status(limit), (409, "too_many_tokens"));
        assert_eq!(status(AppError::Conflict), (409, "conflict"));
        assert_eq!(
            status(AppError::Unavailable("no mailbox".into())),
            (404, "not_found")
        );
        assert_eq!(
            status(AppError::Canvas(CanvasError::Throttled)),
            (503, "canvas_unavailable")
        );
        let timeout = CanvasError::Timeout {
            after: Duration::from_secs(5),
        };
        assert_eq!(
            status(AppError::Canvas(timeout)),
            (503, "canvas_unavailable")
        );
        let down = CanvasError::Unavailable {
            status: Some(502),
            detail: "bad gateway".into(),
        };
        assert_eq!(status(AppError::Canvas(down)), (503, "canvas_unavailable"));
        let refused = CanvasError::NotPermitted {
            message: "user not authorized".into(),
        };
        assert_eq!(status(AppError::Canvas(refused)), (502, "canvas_error"));
        let store = AppError::Store(StoreError::Corrupt("secret detail".into()));
        let e = ApiError::from(store);
        assert_eq!((e.status.as_u16(), e.code), (500, "internal"));
        assert!(!e.message.contains("secret detail"), "{}", e.message);
    }
}

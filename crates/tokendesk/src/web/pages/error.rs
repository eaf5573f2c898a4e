//! Errors as HTML pages: the same codes, statuses and messages as the JSON API's
//! [`ApiError`], rendered in the layout.

use askama::Template;
use askama_web::WebTemplate;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::session::{Chrome, Viewer};
use crate::app::AppError;
use crate::web::ApiError;

/// An error shown as a page.
#[derive(Debug)]
pub struct PageError {
    pub error: ApiError,
    viewer: Option<Box<Viewer>>,
}

impl PageError {
    pub fn new(error: ApiError, viewer: Option<Viewer>) -> PageError {
        PageError {
            error,
            viewer: viewer.map(Box::new),
        }
    }

    /// Without the signed-in layout.
    pub fn plain(error: ApiError) -> PageError {
        PageError::new(error, None)
    }
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> PageError {
        PageError::plain(error)
    }
}

impl From<AppError> for PageError {
    fn from(error: AppError) -> PageError {
        PageError::plain(error.into())
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/error.html")]
pub struct ErrorPage {
    pub c: Chrome,
    pub status: u16,
    pub heading: &'static str,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
}

fn heading(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "Sign in first",
        403 => "Not allowed",
        404 => "Not found",
        409 => "That cannot be done now",
        400 | 413 | 415 | 422 => "Check what was sent",
        503 => "Try again in a few minutes",
        _ => "Something went wrong",
    }
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.error.status;
        let title = heading(status);
        let c = match &self.viewer {
            Some(v) => v.chrome(title),
            None => Chrome::anonymous(title),
        };
        let page = ErrorPage {
            c,
            status: status.as_u16(),
            heading: title,
            code: self.error.code,
            message: self.error.message.clone(),
            fields: self
                .error
                .fields
                .iter()
                .map(|f| f.message.clone())
                .collect(),
        };
        let mut response = match page.render() {
            Ok(body) => html(status, body),
            Err(e) => {
                tracing::error!(error = %e, "cannot render the error page");
                (status, self.error.message).into_response()
            }
        };
        if let Some(v) = &self.viewer {
            v.finish(response.headers_mut());
        }
        response
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/sign_in.html")]
pub struct SignInPage {
    pub c: Chrome,
    /// The demo sign-in page with `next`, or `None` behind a sign-in proxy.
    pub sign_in_url: Option<String>,
    /// The delivery page: the reveal script keeps the link's key in this tab across sign-in.
    pub envelope_id: Option<String>,
    pub js: &'static str,
}

/// 401: who you are is not known. In the demo, a link to the sign-in page; behind a proxy, an
/// explanation (the proxy signs people in, so reaching this page means it did not).
pub fn sign_in_needed(sign_in_url: Option<String>, envelope_id: Option<String>) -> Response {
    let page = SignInPage {
        c: Chrome::anonymous("Sign in"),
        sign_in_url,
        envelope_id,
        js: super::assets::reveal_js_url(),
    };
    match page.render() {
        Ok(body) => html(StatusCode::UNAUTHORIZED, body),
        Err(e) => PageError::plain(ApiError::internal(&e)).into_response(),
    }
}

//! Errors as HTML pages: the same codes, statuses and messages as the JSON API's
//! [`ApiError`], rendered in the layout.

use askama::Template;
use askama_web::WebTemplate;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::chrome::Chrome;
use crate::app::AppError;
use crate::web::ApiError;
use crate::web::middleware::current_request_id;

/// An error shown as a page: in the signed-in layout when `chrome` is given, with the cookies
/// that page would have set.
#[derive(Debug)]
pub struct PageError {
    pub error: ApiError,
    chrome: Option<Box<Chrome>>,
    headers: Box<HeaderMap>,
}

impl PageError {
    /// In the layout `chrome` (titled after the error), setting `headers`' cookies.
    pub fn new(error: ApiError, chrome: Option<Chrome>, headers: HeaderMap) -> PageError {
        PageError {
            error,
            chrome: chrome.map(Box::new),
            headers: Box::new(headers),
        }
    }

    /// Without the signed-in layout.
    pub fn plain(error: ApiError) -> PageError {
        PageError::new(error, None, HeaderMap::new())
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
    /// The request's id, to quote to the help desk (also in the `X-Request-Id` header).
    pub request_id: Option<String>,
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
        let c = match self.chrome {
            Some(chrome) => Chrome {
                title: title.to_owned(),
                ..*chrome
            },
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
            request_id: current_request_id(),
        };
        let mut response = match page.render() {
            Ok(body) => html(status, body),
            Err(e) => {
                tracing::error!(error = %e, "cannot render the error page");
                (status, self.error.message).into_response()
            }
        };
        response.headers_mut().extend(*self.headers);
        if let Some(secs) = self.error.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
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

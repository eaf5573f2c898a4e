//! The stylesheet and the reveal script, embedded in the binary and served under names that
//! carry a hash of their content, so they can be cached for a year.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const APP_CSS: &str = include_str!("../../../static/app.css");
const REVEAL_JS: &str = include_str!("../../../static/reveal.js");

struct Asset {
    /// `/static/app.0123abcd.css`.
    url: String,
    content_type: &'static str,
    body: &'static str,
}

fn asset(stem: &str, ext: &str, content_type: &'static str, body: &'static str) -> Asset {
    let digest = Sha256::digest(body.as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    Asset {
        url: format!("/static/{stem}.{hash}.{ext}"),
        content_type,
        body,
    }
}

static CSS: LazyLock<Asset> =
    LazyLock::new(|| asset("app", "css", "text/css; charset=utf-8", APP_CSS));
static JS: LazyLock<Asset> =
    LazyLock::new(|| asset("reveal", "js", "text/javascript; charset=utf-8", REVEAL_JS));

/// The address of the stylesheet.
pub fn css_url() -> &'static str {
    &CSS.url
}

/// The address of the reveal script.
pub fn reveal_js_url() -> &'static str {
    &JS.url
}

/// `GET /static/{file}`: only the current versions exist.
pub async fn serve(file: Result<Path<String>, PathRejection>) -> Response {
    let file = file.map(|Path(f)| f).unwrap_or_default();
    for asset in [&*CSS, &*JS] {
        if asset.url.strip_prefix("/static/") == Some(file.as_str()) {
            return (
                [
                    (CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
                    (
                        CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=31536000, immutable"),
                    ),
                ],
                asset.body,
            )
                .into_response();
        }
    }
    (
        StatusCode::NOT_FOUND,
        [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        "not found",
    )
        .into_response()
}

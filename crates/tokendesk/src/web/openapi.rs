//! `GET /api/openapi.json`: the API's OpenAPI 3.1 description (hand-written, `openapi.json`).

use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        DOCUMENT,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        assert_eq!(doc["openapi"].as_str().unwrap(), "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let routes = super::super::api_routes();
        assert!(routes.len() >= 16, "{routes:?}");
        for (method, path) in routes {
            let key = path.strip_prefix("/api/v1").unwrap();
            let item = paths
                .get(key)
                .unwrap_or_else(|| panic!("{path} is not in openapi.json"));
            assert!(
                item.get(method.as_str().to_lowercase()).is_some(),
                "{method} {path} is not in openapi.json"
            );
        }
    }
}

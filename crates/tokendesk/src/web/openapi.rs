//! `GET /api/openapi.json`: the API's OpenAPI 3.1 description, made from the code. Every route
//! is registered through `utoipa-axum` with its `#[utoipa::path]` (its parameters, body and
//! every status it can answer with); the API's types carry their schemas (`ToSchema`,
//! `IntoParams`). What depends on the configuration (the sign-in header's name, the policy's
//! limits) is filled in when the router is built. The API tests check every JSON answer they
//! receive against this document.

use std::collections::BTreeMap;

use axum::Extension;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder,
};
use utoipa::{IntoResponses, OpenApi};

use crate::domain::Policy;
use crate::web::cookies::Kind;

/// The document's fixed parts; the paths come from the routes (see `web::api`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tokendesk API",
        version = "1",
        description = include_str!("openapi.md"),
    ),
    servers((url = "/api/v1")),
    tags(
        (name = "people", description = "Who is signed in"),
        (name = "requests", description = "Asking for a token, and the decisions on it"),
        (name = "tokens", description = "The tokens tokendesk created in Canvas"),
        (name = "envelopes", description = "The sealed delivery of a token's value"),
        (name = "mailbox", description = "The demo's inbox"),
        (name = "audit", description = "The audit trail"),
        (name = "orphans", description = "Tokens in Canvas that say tokendesk made them, unknown to it"),
        (name = "health", description = "For load balancers and monitoring (outside /api/v1)"),
    ),
    components(schemas(super::error::ApiErrorBody, crate::domain::FieldError)),
)]
pub struct ApiDoc;

/// The operations outside `/api/v1`; their paths say so with a server of their own.
#[derive(OpenApi)]
#[openapi(paths(
    super::health::healthz,
    super::health::readyz,
    super::metrics::scrape,
    serve
))]
struct RootDoc;

/// A failure an operation can answer with, documented once.
#[derive(Debug, Clone, Copy)]
enum Failure {
    BadBody,
    BadQuery,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    TooLarge,
    NotJson,
    Invalid,
    TooMany,
    Internal,
    CanvasRefused,
    Unavailable,
}

impl Failure {
    fn status(self) -> &'static str {
        match self {
            Failure::BadBody | Failure::BadQuery => "400",
            Failure::Unauthorized => "401",
            Failure::Forbidden => "403",
            Failure::NotFound => "404",
            Failure::MethodNotAllowed => "405",
            Failure::Conflict => "409",
            Failure::TooLarge => "413",
            Failure::NotJson => "415",
            Failure::Invalid => "422",
            Failure::TooMany => "429",
            Failure::Internal => "500",
            Failure::CanvasRefused => "502",
            Failure::Unavailable => "503",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Failure::BadBody => {
                "The body is not JSON of the right shape: `malformed_json`, `invalid_json` (a field of the wrong type) or `unknown_field`; `field` names the field"
            }
            Failure::BadQuery => {
                "The query string cannot be read (`bad_query`): a parameter of the wrong type or given twice"
            }
            Failure::Unauthorized => "Nobody is signed in (`unauthenticated`)",
            Failure::Forbidden => "Signed in, but not allowed to do this (`forbidden`)",
            Failure::NotFound => {
                "Unknown, or not the caller's to see (`not_found`); also a feature that is off here"
            }
            Failure::MethodNotAllowed => {
                "This address does not take that method (`method_not_allowed`)"
            }
            Failure::Conflict => {
                "Not in a state that allows this (`wrong_state`), changed by someone else meanwhile (`conflict`), or a per-person limit (`too_many_open_requests`, `too_many_tokens`, `expiry_passed`, an envelope's `envelope_expired`, `envelope_burned`, `no_reveals_left`, `envelope_empty`)"
            }
            Failure::TooLarge => "The body is larger than `max_body_bytes` (`payload_too_large`)",
            Failure::NotJson => {
                "The body is not sent as `Content-Type: application/json` (`unsupported_media_type`)"
            }
            Failure::Invalid => {
                "One or more fields are invalid; `field` names the first, `fields` every one, each with its `code` (`required`, `too_short`, `too_long`, `invalid_date`, `out_of_range`, `later_than_requested`, …)"
            }
            Failure::TooMany => {
                "Over a rate limit of `[limits]` (`too_many_requests`); `Retry-After` says when to try again"
            }
            Failure::Internal => "tokendesk failed (`internal`); the message quotes the request id",
            Failure::CanvasRefused => {
                "Canvas refused the change (`canvas_error`); nothing was changed here"
            }
            Failure::Unavailable => {
                "The database (`unavailable`, with `Retry-After`) or Canvas (`canvas_unavailable`) is not answering, or the database's disk is full or read-only (`storage_unavailable`); nothing was changed, try again later"
            }
        }
    }

    fn response(self) -> RefOr<Response> {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ApiErrorBody")))
            .build();
        let id = HeaderBuilder::new()
            .description(Some("The request's id, also in the logs"))
            .build();
        RefOr::T(
            ResponseBuilder::new()
                .description(self.description())
                .content("application/json", content)
                .header("X-Request-Id", id)
                .build(),
        )
    }
}

fn responses(failures: &[Failure]) -> BTreeMap<String, RefOr<Response>> {
    let mut map = BTreeMap::new();
    for f in failures {
        map.insert(f.status().to_owned(), f.response());
    }
    map
}

/// Declares a set of failures as a type for `#[utoipa::path(responses(…))]`.
macro_rules! failures {
    ($($(#[$doc:meta])* $name:ident = [$($f:ident),*];)*) => {$(
        $(#[$doc])*
        pub struct $name;
        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                responses(&[$(Failure::$f),*])
            }
        }
    )*};
}

failures! {
    /// What every operation can answer with.
    Always = [Unauthorized, MethodNotAllowed, Internal, Unavailable];
    /// Operations with a query string.
    Query = [BadQuery];
    /// Operations that take a JSON body.
    Body = [BadBody, TooLarge, NotJson];
    /// Operations on one thing named in the path.
    Named = [NotFound];
    /// Operations some callers may not do.
    Refusable = [Forbidden];
    /// Changes that depend on the current state.
    Conflicting = [Conflict];
    /// Input checked field by field.
    Checked = [Invalid];
    /// Changes made in Canvas first.
    InCanvas = [CanvasRefused, Unavailable];
    /// Rate-limited operations.
    Limited = [TooMany];
}

/// The document as served: the routes' paths, the sign-in schemes with the configured header,
/// and the policy's limits on the new-request body.
pub fn document(mut doc: Document, header: &str, policy: &Policy) -> Document {
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        "trustedHeader".to_owned(),
        RefOr::T(SecurityScheme::ApiKey(ApiKey::Header(
            ApiKeyValue::with_description(
                header,
                "The login, set by the sign-in proxy; believed only from `auth.trusted_proxies`",
            ),
        ))),
    );
    components.security_schemes.insert(
        "session".to_owned(),
        RefOr::T(SecurityScheme::ApiKey(ApiKey::Cookie(
            ApiKeyValue::with_description(
                Kind::Session.base_name(),
                "A sign-in session (`auth.mode` `oidc`: set by GET /auth/callback; `demo`: by POST /demo/login); named `__Host-tokendesk_session` over https",
            ),
        ))),
    );
    components.security_schemes.insert(
        "serviceKey".to_owned(),
        RefOr::T(SecurityScheme::Http(
            utoipa::openapi::security::HttpBuilder::new()
                .scheme(utoipa::openapi::security::HttpAuthScheme::Bearer)
                .description(Some(
                    "A service key (`tokendesk admin keys create`): acts as `key:NAME` with exactly its role (auditor or helpdesk)",
                ))
                .build(),
        )),
    );
    if let Some(RefOr::T(utoipa::openapi::schema::Schema::Object(body))) =
        components.schemas.get_mut("NewRequestBody")
        && let Some(RefOr::T(utoipa::openapi::schema::Schema::Object(purpose))) =
            body.properties.get_mut("purpose")
    {
        purpose.min_length = Some(policy.purpose_min_chars.max(1) as usize);
    }
    for (path, mut item) in RootDoc::openapi().paths.paths {
        item.servers = Some(vec![utoipa::openapi::Server::new("/")]);
        doc.paths.paths.insert(path, item);
    }
    if let Some(components) = RootDoc::openapi().components {
        let target = doc.components.get_or_insert_with(Default::default);
        target.schemas.extend(components.schemas);
    }
    doc.security = Some(vec![
        SecurityRequirement::new("trustedHeader", Vec::<String>::new()),
        SecurityRequirement::new("session", Vec::<String>::new()),
        SecurityRequirement::new("serviceKey", Vec::<String>::new()),
    ]);
    add_links(&mut doc);
    doc
}

/// Where the ids in an answer lead (OpenAPI links): `(operation, status, field, target)`; the
/// target takes the field's value as its `id`. Clients and stateful fuzzers follow them.
pub const LINKS: &[(&str, &str, &str, &str)] = &[
    ("createRequest", "201", "id", "getRequest"),
    ("createRequest", "201", "id", "approveRequest"),
    ("createRequest", "201", "id", "denyRequest"),
    ("createRequest", "201", "id", "cancelRequest"),
    ("getRequest", "200", "id", "retryRequest"),
    ("getRequest", "200", "id", "resendLink"),
    ("getRequest", "200", "token_id", "getToken"),
    ("getRequest", "200", "token_id", "revokeToken"),
    ("getRequest", "200", "envelope_id", "getEnvelope"),
    ("getRequest", "200", "envelope_id", "revealEnvelope"),
    ("getRequest", "200", "envelope_id", "burnEnvelope"),
    ("getRequest", "200", "token_id", "checkActivation"),
    ("getRequest", "200", "token_id", "renewToken"),
];

fn add_links(doc: &mut Document) {
    use utoipa::openapi::link::Link;
    for item in doc.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            let Some(id) = operation.operation_id.clone() else {
                continue;
            };
            for (_, status, field, target) in LINKS.iter().filter(|(from, ..)| *from == id) {
                if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) {
                    let link = Link::builder()
                        .operation_id(*target)
                        .parameter("id", format!("$response.body#/{field}"))
                        .build();
                    response.links.insert((*target).to_owned(), RefOr::T(link));
                }
            }
        }
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "health",
    operation_id = "openapi",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value)),
)]
pub async fn serve(Extension(json): Extension<std::sync::Arc<String>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json.as_str().to_owned(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::LINKS;

    /// Every link starts at an answer that exists, with the field it names, and leads to an
    /// operation that exists.
    #[test]
    fn every_link_is_placed_and_leads_somewhere() {
        let doc = crate::web::openapi_document("X-Remote-User", &Default::default());
        let doc = serde_json::to_value(&doc).unwrap();
        let mut operations = std::collections::BTreeMap::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                if let Some(id) = op.get("operationId").and_then(|v| v.as_str()) {
                    operations.insert(id.to_owned(), op.clone());
                }
            }
        }
        let schema_of = |response: &serde_json::Value| {
            let reference = response["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            doc["components"]["schemas"][reference].clone()
        };
        for (from, status, field, target) in LINKS {
            let response = &operations[*from]["responses"][*status];
            assert_eq!(
                response["links"][*target]["operationId"], *target,
                "{from} {status} → {target}"
            );
            assert!(operations.contains_key(*target), "{target} exists");
            assert!(
                schema_of(response)["properties"].get(*field).is_some(),
                "{from} {status} answers with {field}"
            );
        }
    }
}

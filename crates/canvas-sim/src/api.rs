//! The REST API under `/api/v1`: throttle, latency and failure injection in one gate in front of
//! every endpoint, then the token and user endpoints.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use rand::RngExt;
use serde_json::Value;

use crate::Shared;
use crate::errors::ApiError;
use crate::model::Caller;
use crate::params::Params;
use crate::throttle::Admission;

type ApiResult = Result<Response, ApiError>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/users/{user_id}", get(show_user))
        .route("/users/{user_id}/tokens", axum::routing::post(create_token))
        .route(
            "/users/{user_id}/tokens/{id}",
            get(show_token).put(update_token).delete(delete_token),
        )
        .route(
            "/users/{user_id}/user_generated_tokens",
            get(user_generated_tokens),
        )
        .route("/accounts/{account_id}", get(show_account))
        .route("/accounts/{account_id}/users", get(account_users))
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared);
    Router::new().nest("/api/v1", api)
}

/// The bearer token of a request: the `Authorization` header or the `access_token` parameter.
fn bearer(req: &Request) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
            .filter(|t| !t.is_empty());
    }
    req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    })
}

/// Settles the request's up-front cost even if the client goes away mid-request.
struct Hold<'a> {
    shared: &'a Shared,
    key: String,
    settled: bool,
}

impl Hold<'_> {
    fn settle(mut self) -> Option<(f64, f64)> {
        self.settled = true;
        self.shared.throttle.as_ref().map(|t| t.settle(&self.key))
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if !self.settled
            && let Some(t) = &self.shared.throttle
        {
            t.settle(&self.key);
        }
    }
}

fn set_header(response: &mut Response, name: &'static str, value: f64) {
    if let Ok(v) = HeaderValue::from_str(&format!("{value:.4}")) {
        response.headers_mut().insert(name, v);
    }
}

/// Every API request: take the up-front cost and check the bucket, wait out the latency while
/// holding it, maybe fail on purpose, authenticate, run, settle to the real cost.
async fn gate(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let counters = &shared.counters;
    counters.api_requests.fetch_add(1, Ordering::Relaxed);
    let token = bearer(&req);
    let key = match &token {
        Some(t) => format!("token:{t}"),
        None => "anonymous".to_owned(),
    };
    if let Some(throttle) = &shared.throttle
        && let Admission::Throttled { remaining } = throttle.admit(&key)
    {
        counters.throttled.fetch_add(1, Ordering::Relaxed);
        let mut response = ApiError::Throttled(shared.throttle_status).into_response();
        set_header(&mut response, "x-rate-limit-remaining", remaining);
        return response;
    }
    let hold = Hold {
        shared: &shared,
        key,
        settled: false,
    };
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    let fail_rate = shared.fail_rate();
    let mut response = if fail_rate > 0.0 && rand::rng().random::<f64>() < fail_rate {
        counters.injected_failures.fetch_add(1, Ordering::Relaxed);
        let status = if rand::rng().random::<bool>() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        ApiError::Injected(status).into_response()
    } else {
        let caller = match token {
            None => Err(ApiError::Unauthenticated),
            Some(t) => {
                let now = shared.now();
                shared.db().authenticate(&t, now)
            }
        };
        match caller {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                next.run(req).await
            }
            Err(e) => e.into_response(),
        }
    };
    if let Some((cost, remaining)) = hold.settle() {
        set_header(&mut response, "x-request-cost", cost);
        set_header(&mut response, "x-rate-limit-remaining", remaining);
    }
    response
}

async fn show_user(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(user_ref): Path<String>,
) -> ApiResult {
    let db = s.db();
    let user_id = db.resolve_user(caller, &user_ref)?;
    Ok(Json(db.show_user(caller, user_id, s.unauthorized_status)?).into_response())
}

async fn create_token(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(user_ref): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(query.as_deref(), &headers, &body)?;
    let now = s.now();
    let mut db = s.db();
    let owner = db.resolve_user(caller, &user_ref)?;
    let json = db.create_token(caller, owner, params.token(), now, s.unauthorized_status)?;
    s.persist(&db);
    Ok(Json(json).into_response())
}

async fn show_token(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((user_ref, id)): Path<(String, String)>,
) -> ApiResult {
    let db = s.db();
    let owner = db.resolve_user(caller, &user_ref)?;
    Ok(Json(db.show_token(caller, owner, &id, s.now(), s.unauthorized_status)?).into_response())
}

async fn update_token(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((user_ref, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let params = Params::parse(query.as_deref(), &headers, &body)?;
    let now = s.now();
    let mut db = s.db();
    let owner = db.resolve_user(caller, &user_ref)?;
    let json = db.update_token(
        caller,
        owner,
        &id,
        params.token(),
        now,
        s.unauthorized_status,
    )?;
    s.persist(&db);
    Ok(Json(json).into_response())
}

async fn delete_token(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((user_ref, id)): Path<(String, String)>,
) -> ApiResult {
    let now = s.now();
    let mut db = s.db();
    let owner = db.resolve_user(caller, &user_ref)?;
    let json = db.delete_token(caller, owner, &id, now, s.unauthorized_status)?;
    s.persist(&db);
    Ok(Json(json).into_response())
}

/// `per_page`: 10 by default, clamped to 1–100.
fn per_page(params: &Params) -> usize {
    params
        .get("per_page")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map_or(10, |n| n.clamp(1, 100) as usize)
}

/// A `Link` header with absolute URLs carrying the original query plus `page` and `per_page`.
fn link_header(
    headers: &HeaderMap,
    path: &str,
    params: &Params,
    per_page: usize,
    entries: &[(&str, String)],
) -> Option<HeaderValue> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = params.without(&["page", "per_page", "access_token"]);
    let links: Vec<String> = entries
        .iter()
        .map(|(rel, page)| {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &base {
                query.append_pair(k, v);
            }
            query.append_pair("page", page);
            query.append_pair("per_page", &per_page.to_string());
            format!("<http://{host}{path}?{}>; rel=\"{rel}\"", query.finish())
        })
        .collect();
    HeaderValue::from_str(&links.join(",")).ok()
}

fn paginated(items: Vec<Value>, link: Option<HeaderValue>) -> Response {
    let mut response = Json(Value::Array(items)).into_response();
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

const BOOKMARK: &str = "bookmark:";

fn bookmark_for(id: u64) -> String {
    let json = format!("[{id}]");
    let hex: String = json.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{BOOKMARK}{hex}")
}

/// The id a bookmark points after; an unknown bookmark starts from the beginning, as in Canvas.
fn bookmark_after(page: Option<&str>) -> u64 {
    let Some(hex) = page.and_then(|p| p.strip_prefix(BOOKMARK)) else {
        return 0;
    };
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect();
    bytes
        .and_then(|b| serde_json::from_slice::<Vec<u64>>(&b).ok())
        .and_then(|v| v.first().copied())
        .unwrap_or(0)
}

async fn user_generated_tokens(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(user_ref): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    OriginalUri(req_uri): OriginalUri,
) -> ApiResult {
    let params = Params::parse(query.as_deref(), &headers, &Bytes::new())?;
    let now = s.now();
    let db = s.db();
    let owner = db.resolve_user(caller, &user_ref)?;
    let tokens = db.user_generated_tokens(caller, owner, s.unauthorized_status)?;
    let per = per_page(&params);
    let page = params.get("page");
    let after = bookmark_after(page);
    let rest: Vec<_> = tokens.into_iter().filter(|t| t.id > after).collect();
    let items: Vec<Value> = rest.iter().take(per).map(|t| t.json(None, now)).collect();
    let current = page.unwrap_or("first").to_owned();
    let mut entries = vec![("current", current)];
    if rest.len() > per
        && let Some(last) = rest.get(per - 1)
    {
        entries.push(("next", bookmark_for(last.id)));
    }
    entries.push(("first", "first".to_owned()));
    let link = link_header(&headers, req_uri.path(), &params, per, &entries);
    Ok(paginated(items, link))
}

/// The simulator has one root account, id 1 (`self` also names it).
fn check_account(account: &str) -> Result<(), ApiError> {
    if account == "1" || account == "self" {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

/// `GET /api/v1/accounts/:id`: the root account, for admins.
async fn show_account(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
) -> ApiResult {
    check_account(&account)?;
    Ok(Json(s.db().account_json(caller, s.unauthorized_status)?).into_response())
}

async fn account_users(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    OriginalUri(req_uri): OriginalUri,
) -> ApiResult {
    check_account(&account)?;
    let params = Params::parse(query.as_deref(), &headers, &Bytes::new())?;
    let users = s
        .db()
        .search_users(caller, params.get("search_term"), s.unauthorized_status)?;
    let per = per_page(&params);
    let page = params
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let last = users.len().div_ceil(per).max(1);
    let items: Vec<Value> = users
        .into_iter()
        .skip((page - 1).saturating_mul(per))
        .take(per)
        .collect();
    let mut entries = vec![("current", page.to_string())];
    if page < last {
        entries.push(("next", (page + 1).to_string()));
    }
    if page > 1 {
        entries.push(("prev", (page - 1).to_string()));
    }
    entries.push(("first", "1".to_owned()));
    entries.push(("last", last.to_string()));
    let link = link_header(&headers, req_uri.path(), &params, per, &entries);
    Ok(paginated(items, link))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookmarks_round_trip() {
        assert_eq!(bookmark_after(Some(&bookmark_for(42))), 42);
        assert_eq!(bookmark_after(Some("first")), 0);
        assert_eq!(bookmark_after(Some("bookmark:zz")), 0);
        assert_eq!(bookmark_after(None), 0);
    }
}

//! The REST API under `/api/v1`: throttle, latency and failure injection in one gate in front of
//! every endpoint, then the token and user endpoints.

use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{FromRequestParts, OriginalUri, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt;
use serde_json::Value;

use crate::errors::ApiError;
use crate::model::{Caller, Db, TokenCall, TokenRecord, iso};
use crate::params::Params;
use crate::throttle::Admission;
use crate::{Session, Shared, web};

type ApiResult = Result<Response, ApiError>;

/// How `user_generated_tokens` pages (`canvas-api.md` §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pagination {
    /// `page=1`, `2`, … with a `last` link: what every single-shard install answers, because
    /// `ShardedBookmarkedCollection.build` returns the plain relation there.
    #[default]
    Numbered,
    /// `page=first`, `page=bookmark:…`, no `last`: a multi-shard instance's merged collection.
    Bookmarks,
}

impl FromStr for Pagination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "numbered" => Ok(Pagination::Numbered),
            "bookmarks" => Ok(Pagination::Bookmarks),
            other => Err(format!(
                "--pagination must be numbered or bookmarks, not {other:?}"
            )),
        }
    }
}

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

/// What a request presents to prove who it is.
enum Credential {
    Token(String),
    /// A browser session cookie that names a signed-in user.
    Session(Session),
    None,
}

impl Credential {
    fn of(shared: &Shared, req: &Request) -> Credential {
        if let Some(token) = bearer(req) {
            return Credential::Token(token);
        }
        match web::session_of(shared, req.headers()) {
            Some(session) => Credential::Session(session),
            None => Credential::None,
        }
    }

    /// The throttle's bucket (`request_throttle.rb`'s client identifier): the token, else the
    /// signed-in user, else the client address (all simulated clients share loopback).
    fn bucket(&self) -> String {
        match self {
            Credential::Token(t) => format!("token:{t}"),
            Credential::Session(s) => format!("user:{}", s.user_id),
            Credential::None => "ip:loopback".to_owned(),
        }
    }
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

/// A float as Ruby's `Float#to_s` prints it (`canvas-api.md` §4): the shortest form that reads
/// back, always with a decimal point (`0.05`, `600.0`), in exponent form below 1e-4 and from
/// 1e16 on (`1.0e-05`).
pub(crate) fn ruby_float(value: f64) -> String {
    if !value.is_finite() {
        return if value.is_nan() {
            "NaN".to_owned()
        } else if value > 0.0 {
            "Infinity".to_owned()
        } else {
            "-Infinity".to_owned()
        };
    }
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_owned()
        } else {
            format!("{mantissa}.0")
        };
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let text = format!("{value}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

fn set_header(response: &mut Response, name: &'static str, value: f64) {
    if let Ok(v) = HeaderValue::from_str(&ruby_float(value)) {
        response.headers_mut().insert(name, v);
    }
}

/// Bodies are read whole to find `as_user_id` among the parameters; API bodies are small.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Every API request: take the up-front cost and check the bucket, wait out the latency while
/// holding it, maybe fail on purpose, authenticate (token, else session), apply `as_user_id`,
/// run, settle to the real cost.
async fn gate(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let counters = &shared.counters;
    counters.api_requests.fetch_add(1, Ordering::Relaxed);
    let credential = Credential::of(&shared, &req);
    let key = credential.bucket();
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
    let faults = shared.faults;
    if faults.spike_rate > 0.0 && rand::rng().random::<f64>() < faults.spike_rate {
        tokio::time::sleep(faults.spike).await;
    }
    if faults.reset_rate > 0.0 && rand::rng().random::<f64>() < faults.reset_rate {
        counters.resets.fetch_add(1, Ordering::Relaxed);
        tracing::info!("injected fault: connection reset before the request was carried out");
        let mut response = Response::default();
        response.extensions_mut().insert(crate::net::Unanswered);
        return response;
    }
    let fail_rate = shared.fail_rate();
    let mut response = if fail_rate > 0.0 && rand::rng().random::<f64>() < fail_rate {
        counters.injected_failures.fetch_add(1, Ordering::Relaxed);
        tracing::info!("injected fault: a 500 or 503 instead of the answer");
        let status = if rand::rng().random::<bool>() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        ApiError::Injected(status).into_response()
    } else {
        match admit(&shared, credential, req).await {
            Ok(req) => next.run(req).await,
            Err(e) => e.into_response(),
        }
    };
    if let Some((cost, remaining)) = hold.settle() {
        set_header(&mut response, "x-request-cost", cost);
        set_header(&mut response, "x-rate-limit-remaining", remaining);
    }
    // Done, and the answer lost on the way back.
    if faults.drop_after_rate > 0.0 && rand::rng().random::<f64>() < faults.drop_after_rate {
        counters.dropped_after.fetch_add(1, Ordering::Relaxed);
        tracing::info!("injected fault: request carried out, its answer dropped");
        response.extensions_mut().insert(crate::net::Unanswered);
    }
    response
}

/// Authenticates a request and decides who it acts as; the request comes back with its
/// [`Caller`] and its [`Params`] (its body is read once, here).
async fn admit(shared: &Shared, credential: Credential, req: Request) -> Result<Request, ApiError> {
    let real_user_id = match credential {
        Credential::None => return Err(ApiError::Unauthenticated),
        Credential::Token(token) => {
            let now = shared.now();
            let mut db = shared.db();
            let (user_id, changed) = db.authenticate(&token, now)?;
            if changed {
                shared.persist(&db);
            }
            user_id
        }
        Credential::Session(session) => {
            // Rails' CSRF check applies to session requests that change something; a token
            // request is exempt.
            let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            if !safe && !web::csrf_ok(&session, req.headers(), req.uri().query()) {
                return Err(ApiError::InvalidAuthenticityToken);
            }
            session.user_id
        }
    };
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| ApiError::BadRequest("the request body is too large".into()))?;
    let params = Params::parse(parts.uri.query(), &parts.headers, &body)?;
    let mut caller = Caller::new(real_user_id);
    // canvas-api.md §2: `as_user_id` acts as that user, if the caller may.
    if let Some(as_user) = params.get("as_user_id").filter(|v| !v.trim().is_empty()) {
        let db = shared.db();
        let target = db
            .resolve_user(real_user_id, as_user)
            .ok()
            .filter(|target| db.may_act_as(real_user_id, *target))
            .ok_or(ApiError::InvalidAsUserId)?;
        caller.user_id = target;
    }
    let mut req = Request::from_parts(parts, Body::from(body));
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(Arc::new(params));
    Ok(req)
}

async fn show_user(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(user_ref): Path<String>,
) -> ApiResult {
    let db = s.db();
    let user_id = db.resolve_user(caller.user_id, &user_ref)?;
    Ok(Json(db.show_user(caller, user_id)?).into_response())
}

/// A call by `caller` on the tokens of the person `user_ref` names, now.
fn token_call(s: &Shared, db: &Db, caller: Caller, user_ref: &str) -> Result<TokenCall, ApiError> {
    Ok(TokenCall {
        caller,
        owner: db.resolve_user(caller.user_id, user_ref)?,
        now: s.now(),
        deny: s.unauthorized_status,
    })
}

/// Changes the tokens of the person `user_ref` names, writes the state file and answers the
/// token's JSON.
fn change_tokens(
    s: &Shared,
    caller: Caller,
    user_ref: &str,
    change: impl FnOnce(&mut Db, TokenCall) -> Result<Value, ApiError>,
) -> ApiResult {
    let mut db = s.db();
    let call = token_call(s, &db, caller, user_ref)?;
    let json = change(&mut db, call)?;
    s.persist(&db);
    Ok(Json(json).into_response())
}

async fn create_token(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Extension(params): Extension<Arc<Params>>,
    Path(user_ref): Path<String>,
) -> ApiResult {
    change_tokens(&s, caller, &user_ref, |db, call| {
        db.create_token(call, params.token())
    })
}

async fn show_token(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((user_ref, id)): Path<(String, String)>,
) -> ApiResult {
    let db = s.db();
    let call = token_call(&s, &db, caller, &user_ref)?;
    Ok(Json(db.show_token(call, &id)?).into_response())
}

async fn update_token(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Extension(params): Extension<Arc<Params>>,
    Path((user_ref, id)): Path<(String, String)>,
) -> ApiResult {
    change_tokens(&s, caller, &user_ref, |db, call| {
        db.update_token(call, &id, params.token())
    })
}

async fn delete_token(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path((user_ref, id)): Path<(String, String)>,
) -> ApiResult {
    change_tokens(&s, caller, &user_ref, |db, call| db.delete_token(call, &id))
}

/// What a list endpoint needs of its request: the parameters, and the path and host its `Link`
/// URLs are built from.
struct Listing {
    params: Arc<Params>,
    path: String,
    host: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Listing {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let OriginalUri(uri) = OriginalUri::from_request_parts(parts, state).await?;
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        Ok(Listing {
            // Put there by `admit`, which every API request passes.
            params: parts.extensions.get().cloned().unwrap_or_default(),
            path: uri.path().to_owned(),
            host: host.to_owned(),
        })
    }
}

/// Where `Link` URLs start (`canvas-api.md` §5): a bare path for endpoints Canvas builds with a
/// `_path` helper, `http://HOST` for those built with `_url`.
enum LinkBase {
    Relative,
    Absolute,
}

impl Listing {
    /// `per_page`: 10 by default, clamped to 1–100.
    fn per_page(&self) -> usize {
        self.params
            .get("per_page")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map_or(10, |n| n.clamp(1, 100) as usize)
    }

    /// A numbered page of `items` (`page`: 1 when absent or unreadable) and its links:
    /// `current`, `next` (unless this is the last page), `prev` (unless this is the first),
    /// `first`, and `last` when the total is counted.
    fn numbered<T>(&self, items: Vec<T>, with_last: bool) -> (Vec<T>, Vec<(&'static str, String)>) {
        let per = self.per_page();
        let page = self
            .params
            .get("page")
            .and_then(|p| p.trim().parse::<usize>().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(1);
        let last = items.len().div_ceil(per).max(1);
        let mut entries = vec![("current", page.to_string())];
        if page < last {
            entries.push(("next", (page + 1).to_string()));
        }
        if page > 1 {
            entries.push(("prev", (page - 1).to_string()));
        }
        entries.push(("first", "1".to_owned()));
        if with_last {
            entries.push(("last", last.to_string()));
        }
        let items = items
            .into_iter()
            .skip((page - 1).saturating_mul(per))
            .take(per)
            .collect();
        (items, entries)
    }

    /// The items as a JSON array, with a `Link` header that carries the original query plus
    /// `page` and `per_page`, entries joined by a bare comma.
    fn respond(&self, base: LinkBase, items: Vec<Value>, entries: &[(&str, String)]) -> Response {
        let origin = match base {
            LinkBase::Relative => String::new(),
            LinkBase::Absolute => format!("http://{}", self.host),
        };
        let (path, per_page) = (&self.path, self.per_page());
        let kept = self
            .params
            .without(&["page", "per_page", "access_token", "api_key"]);
        let links: Vec<String> = entries
            .iter()
            .map(|(rel, page)| {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in &kept {
                    query.append_pair(k, v);
                }
                let mut query = query.finish();
                if !query.is_empty() {
                    query.push('&');
                }
                // `Api.build_links` writes the page as it is (`page=bookmark:…`); its characters
                // (digits, `bookmark:`, URL-safe base64) need no escaping.
                format!("<{origin}{path}?{query}page={page}&per_page={per_page}>; rel=\"{rel}\"")
            })
            .collect();
        let mut response = Json(Value::Array(items)).into_response();
        if let Ok(link) = HeaderValue::from_str(&links.join(",")) {
            response.headers_mut().insert(header::LINK, link);
        }
        response
    }
}

const BOOKMARK: &str = "bookmark:";

/// `SimpleBookmarker(AccessToken, :created_at, :id)`: the JSON `[created_at, id]` of the last
/// item, in `JSONToken`'s URL-safe base64 without padding.
fn bookmark_for(token: &TokenRecord) -> String {
    let json = serde_json::json!([iso(token.created_at), token.id]).to_string();
    format!("{BOOKMARK}{}", URL_SAFE_NO_PAD.encode(json))
}

/// The `(created_at, id)` a bookmark points after; an unreadable bookmark (or `first`, or a
/// page number) starts from the beginning.
fn bookmark_after(page: Option<&str>) -> Option<(String, u64)> {
    let encoded = page?.strip_prefix(BOOKMARK)?;
    let json = URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<(String, u64)>(&json).ok()
}

/// A bookmarked page of `tokens` (oldest first) and its links: `current`, `next` (unless this
/// is the last page) and `first`, never `last`.
fn bookmarked<'a>(
    listing: &Listing,
    tokens: Vec<&'a TokenRecord>,
) -> (Vec<&'a TokenRecord>, Vec<(&'static str, String)>) {
    let per = listing.per_page();
    let raw_page = listing.params.get("page");
    let after = bookmark_after(raw_page);
    let rest: Vec<&TokenRecord> = tokens
        .into_iter()
        .filter(|t| {
            after
                .as_ref()
                .is_none_or(|(at, id)| (iso(t.created_at), t.id) > (at.clone(), *id))
        })
        .collect();
    let current = match (&after, raw_page) {
        (Some(_), Some(p)) => p.to_owned(),
        _ => "first".to_owned(),
    };
    let mut entries = vec![("current", current)];
    if rest.len() > per
        && let Some(last) = rest.get(per - 1)
    {
        entries.push(("next", bookmark_for(last)));
    }
    entries.push(("first", "first".to_owned()));
    (rest.into_iter().take(per).collect(), entries)
}

async fn user_generated_tokens(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(user_ref): Path<String>,
    listing: Listing,
) -> ApiResult {
    let db = s.db();
    let call = token_call(&s, &db, caller, &user_ref)?;
    let tokens = db.user_generated_tokens(call)?;
    let (items, entries) = match s.pagination {
        Pagination::Numbered => listing.numbered(tokens, true),
        Pagination::Bookmarks => bookmarked(&listing, tokens),
    };
    let items = items.into_iter().map(|t| t.json(None, call.now)).collect();
    // Built from `api_v1_user_generated_tokens_path`: relative URLs.
    Ok(listing.respond(LinkBase::Relative, items, &entries))
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

/// `GET /api/v1/accounts/:id/users`: numbered pages without a total (no `last`), absolute URLs
/// (`api_v1_account_users_url`), `canvas-api.md` §2 and §5.
async fn account_users(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(account): Path<String>,
    listing: Listing,
) -> ApiResult {
    check_account(&account)?;
    let params = &listing.params;
    let include_email = params.all("include[]").iter().any(|i| i == "email");
    let users = s.db().search_users(
        caller,
        params.get("search_term"),
        include_email,
        s.unauthorized_status,
    )?;
    let (items, entries) = listing.numbered(users, false);
    Ok(listing.respond(LinkBase::Absolute, items, &entries))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bookmarks_round_trip() {
        let t = TokenRecord {
            id: 42,
            user_id: 1,
            real_user_id: None,
            purpose: String::new(),
            crypted: String::new(),
            hint: String::new(),
            state: crate::model::WorkflowState::Active,
            scopes: Vec::new(),
            created_at: time::macros::datetime!(2030-01-02 03:04:05 UTC),
            updated_at: time::macros::datetime!(2030-01-02 03:04:05 UTC),
            expires_at: None,
            last_used_at: None,
        };
        let bookmark = bookmark_for(&t);
        assert_eq!(
            bookmark_after(Some(&bookmark)),
            Some(("2030-01-02T03:04:05Z".to_owned(), 42))
        );
        assert_eq!(bookmark_after(Some("first")), None);
        assert_eq!(bookmark_after(Some("bookmark:zz")), None);
        assert_eq!(bookmark_after(Some("2")), None);
        assert_eq!(bookmark_after(None), None);
    }

    // canvas-api.md §4: X-Request-Cost and X-Rate-Limit-Remaining print as Ruby floats.
    #[test]
    fn floats_print_as_ruby_prints_them() {
        assert_eq!(ruby_float(0.05), "0.05");
        assert_eq!(ruby_float(600.0), "600.0");
        assert_eq!(ruby_float(599.95), "599.95");
        assert_eq!(ruby_float(0.0), "0.0");
        assert_eq!(ruby_float(-50.0), "-50.0");
        assert_eq!(ruby_float(0.00001), "1.0e-05");
        assert_eq!(ruby_float(1.5e20), "1.5e+20");
    }
}

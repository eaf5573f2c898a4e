//! The Canvas REST client.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{HeaderMap, LINK, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use crate::error::{CanvasError, classify};
use crate::governor::{Governor, ThrottleConfig};
use crate::ids::{CanvasAccountId, TokenRef, UserRef};
use crate::link::find_rel;
use crate::model::{CreatedToken, NewToken, Token, TokenUpdate, User, is_full_value, token_hint};

/// `SearchTermHelper::MIN_SEARCH_TERM_LENGTH` in current Canvas (older releases: 3).
const MIN_SEARCH_TERM: usize = 2;
/// Pages are requested at Canvas's maximum size.
const PER_PAGE: &str = "100";
/// Guard against a Canvas (or proxy) that never stops paginating.
const MAX_PAGES: usize = 10_000;

/// Builds a [`CanvasClient`]; see [`CanvasClient::builder`].
pub struct CanvasClientBuilder {
    base_url: String,
    token: SecretString,
    timeout: Duration,
    connect_timeout: Duration,
    max_retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    retry_ambiguous_writes: bool,
    throttle: ThrottleConfig,
    user_agent: String,
}

impl fmt::Debug for CanvasClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CanvasClientBuilder")
            .field("base_url", &self.base_url)
            .field("token", &"[REDACTED]")
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl CanvasClientBuilder {
    /// Whole-request timeout (connect, send, read the body). Default 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connection timeout. Default 10 s (capped by `timeout`).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Retries after a throttled or transient failure (0 = none). Default 4.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// First backoff delay (doubled per retry, with jitter) and the largest delay.
    /// Default 250 ms and 10 s.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    /// Whether a token creation (`POST`) is retried after a failure that may have happened
    /// *after* Canvas processed it (timeout, 5xx, dropped connection). Default `false`: such a
    /// retry could create a second token. Creations are always retried when Canvas provably did
    /// not process them (throttled, connection refused).
    pub fn retry_ambiguous_writes(mut self, retry: bool) -> Self {
        self.retry_ambiguous_writes = retry;
        self
    }

    /// Tuning of the throttle-aware concurrency governor.
    pub fn throttle(mut self, throttle: ThrottleConfig) -> Self {
        self.throttle = throttle;
        self
    }

    /// Overrides the `User-Agent` (default `tokendesk/<version>`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    pub fn build(self) -> Result<CanvasClient, CanvasError> {
        let invalid = |message: String| CanvasError::InvalidInput { message };
        let base = Url::parse(self.base_url.trim())
            .map_err(|e| invalid(format!("Canvas base URL {:?}: {e}", self.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid(format!(
                "Canvas base URL {:?} must be an http(s) URL",
                self.base_url
            )));
        }
        if self.token.expose_secret().trim().is_empty() {
            return Err(invalid("the Canvas access token is empty".to_owned()));
        }
        let http = reqwest::Client::builder()
            .user_agent(self.user_agent)
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout.min(self.timeout))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        let prefix = base.path().trim_end_matches('/').to_owned();
        Ok(CanvasClient {
            inner: Arc::new(Inner {
                http,
                base,
                prefix,
                token: self.token,
                timeout: self.timeout,
                max_retries: self.max_retries,
                backoff_base: self.backoff_base,
                backoff_max: self.backoff_max,
                retry_ambiguous_writes: self.retry_ambiguous_writes,
                governor: Governor::new(self.throttle),
                requests: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
                retries: AtomicU64::new(0),
            }),
        })
    }
}

/// Counters of what the client saw, for diagnostics and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientStats {
    /// HTTP requests sent (every attempt counts).
    pub requests: u64,
    /// Responses that were throttling (429, or 403 "Rate Limit Exceeded").
    pub throttled: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// The governor's current concurrency ceiling (back to its start when nothing runs).
    pub concurrency_limit: usize,
    /// The highest concurrency ceiling the governor reached.
    pub peak_concurrency_limit: usize,
}

/// A typed async client for the Canvas token-management API. Cheap to clone; clones share the
/// connection pool, the concurrency governor and the counters.
///
/// Every request goes through a throttle-aware governor (see [`ThrottleConfig`]), so running many
/// calls at once (e.g. with [`CanvasClient::concurrent`]) stays under Canvas's rate limit.
#[derive(Clone)]
pub struct CanvasClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    prefix: String,
    token: SecretString,
    timeout: Duration,
    max_retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    retry_ambiguous_writes: bool,
    governor: Arc<Governor>,
    requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
}

impl fmt::Debug for CanvasClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CanvasClient")
            .field("base_url", &self.inner.base.as_str())
            .field("token", &"[REDACTED]")
            .field("timeout", &self.inner.timeout)
            .field("max_retries", &self.inner.max_retries)
            .finish_non_exhaustive()
    }
}

/// Whether repeating a request is harmless even if Canvas already processed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    Unsafe,
}

struct RawResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl CanvasClient {
    /// Starts building a client for the Canvas at `base_url` (e.g. `https://canvas.example.edu`)
    /// acting with the access token `token`.
    pub fn builder(base_url: impl Into<String>, token: SecretString) -> CanvasClientBuilder {
        CanvasClientBuilder {
            base_url: base_url.into(),
            token,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_retries: 4,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            retry_ambiguous_writes: false,
            throttle: ThrottleConfig::default(),
            user_agent: format!("tokendesk/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// The Canvas base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Counters since the client was built.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.inner.requests.load(Ordering::Relaxed),
            throttled: self.inner.throttled.load(Ordering::Relaxed),
            retries: self.inner.retries.load(Ordering::Relaxed),
            concurrency_limit: self.inner.governor.limit(),
            peak_concurrency_limit: self.inner.governor.peak(),
        }
    }

    // ---- users ------------------------------------------------------------------------------

    /// `GET /api/v1/users/:user_id`.
    pub async fn get_user(&self, user: &UserRef) -> Result<User, CanvasError> {
        let url = self.url(&["api", "v1", "users", &user.path_segment()]);
        let raw = self.execute(Method::GET, url, None, Repeat::Safe).await?;
        decode(&raw, "user")
    }

    /// `GET /api/v1/accounts/:account_id/users?search_term=…`, all pages (numbered, absolute
    /// `Link` URLs). The term must have at least 2 characters, as current Canvas requires
    /// (checked before sending; an older Canvas that wants 3 answers
    /// [`CanvasError::BadRequest`]). A blank term, which Canvas takes as "everyone", is refused
    /// here too.
    pub async fn search_users(
        &self,
        account: CanvasAccountId,
        term: &str,
    ) -> Result<Vec<User>, CanvasError> {
        let term = term.trim();
        if term.chars().count() < MIN_SEARCH_TERM {
            return Err(CanvasError::InvalidInput {
                message: format!(
                    "the user search term {term:?} is too short: Canvas needs at least \
                     {MIN_SEARCH_TERM} characters (a blank term would list every user)"
                ),
            });
        }
        let mut url = self.url(&["api", "v1", "accounts", &account.to_string(), "users"]);
        url.query_pairs_mut()
            .append_pair("search_term", term)
            .append_pair("per_page", PER_PAGE);
        self.get_all(url, "users").await
    }

    // ---- tokens -----------------------------------------------------------------------------

    /// `POST /api/v1/users/:user_id/tokens`. For another user than the caller Canvas creates the
    /// token `pending`: unusable until its owner activates it. An empty purpose is sent as
    /// missing, so Canvas answers [`CanvasError::BadRequest`].
    ///
    /// Not retried after an ambiguous failure (timeout, 5xx) unless
    /// [`CanvasClientBuilder::retry_ambiguous_writes`] is set: list the user's tokens before
    /// creating again.
    pub async fn create_token(
        &self,
        user: &UserRef,
        new: &NewToken,
    ) -> Result<CreatedToken, CanvasError> {
        let mut form = Vec::new();
        if !new.purpose.trim().is_empty() {
            form.push(("token[purpose]".to_owned(), new.purpose.clone()));
        }
        if let Some(at) = new.expires_at {
            form.push(("token[expires_at]".to_owned(), format_time(at)?));
        }
        for scope in &new.scopes {
            form.push(("token[scopes][]".to_owned(), scope.clone()));
        }
        let url = self.url(&["api", "v1", "users", &user.path_segment(), "tokens"]);
        let raw = self
            .execute(Method::POST, url, Some(&form), Repeat::Unsafe)
            .await?;
        with_value(decode(&raw, "token")?, &raw)
    }

    /// `GET /api/v1/users/:user_id/tokens/:id` (id or 5-character hint).
    pub async fn show_token(&self, user: &UserRef, token: &TokenRef) -> Result<Token, CanvasError> {
        let url = self.token_url(user, token);
        let raw = self.execute(Method::GET, url, None, Repeat::Safe).await?;
        decode(&raw, "token")
    }

    /// `PUT /api/v1/users/:user_id/tokens/:id`: change purpose, expiry or scopes.
    pub async fn update_token(
        &self,
        user: &UserRef,
        token: &TokenRef,
        update: &TokenUpdate,
    ) -> Result<Token, CanvasError> {
        let mut form = Vec::new();
        if let Some(purpose) = &update.purpose {
            form.push(("token[purpose]".to_owned(), purpose.clone()));
        }
        if let Some(at) = update.expires_at {
            form.push(("token[expires_at]".to_owned(), format_time(at)?));
        }
        if let Some(scopes) = &update.scopes {
            for scope in scopes {
                form.push(("token[scopes][]".to_owned(), scope.clone()));
            }
        }
        let url = self.token_url(user, token);
        let raw = self
            .execute(Method::PUT, url, Some(&form), Repeat::Safe)
            .await?;
        decode(&raw, "token")
    }

    /// `PUT /api/v1/users/:user_id/tokens/:id` with `token[regenerate]=1`: a new value (returned
    /// once), optionally with a new expiry (required when the token has expired). The old value
    /// stops working; regenerating someone else's token puts it back to `pending`.
    ///
    /// Retried after ambiguous failures: a repeated regeneration only replaces a value that was
    /// never received.
    pub async fn regenerate_token(
        &self,
        user: &UserRef,
        token: &TokenRef,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<CreatedToken, CanvasError> {
        let mut form = vec![("token[regenerate]".to_owned(), "1".to_owned())];
        if let Some(at) = expires_at {
            form.push(("token[expires_at]".to_owned(), format_time(at)?));
        }
        let url = self.token_url(user, token);
        let raw = self
            .execute(Method::PUT, url, Some(&form), Repeat::Safe)
            .await?;
        with_value(decode(&raw, "token")?, &raw)
    }

    /// `DELETE /api/v1/users/:user_id/tokens/:id`: soft delete; the token stops working at once
    /// and Canvas returns it with `workflow_state: "deleted"`. A deleted token is no longer
    /// found: deleting it again (e.g. a retry after a lost response) answers
    /// [`CanvasError::NotFound`], as do showing and updating it.
    pub async fn delete_token(
        &self,
        user: &UserRef,
        token: &TokenRef,
    ) -> Result<Token, CanvasError> {
        let url = self.token_url(user, token);
        let raw = self
            .execute(Method::DELETE, url, None, Repeat::Safe)
            .await?;
        decode(&raw, "token")
    }

    /// `GET /api/v1/users/:user_id/user_generated_tokens`, all pages, oldest first: the user's
    /// active and pending tokens, expired ones included, deleted ones never. Follows numbered
    /// pages (single-shard Canvas, relative `Link` URLs) and bookmark pages (multi-shard) alike.
    pub async fn list_user_tokens(&self, user: &UserRef) -> Result<Vec<Token>, CanvasError> {
        let mut url = self.url(&[
            "api",
            "v1",
            "users",
            &user.path_segment(),
            "user_generated_tokens",
        ]);
        url.query_pairs_mut().append_pair("per_page", PER_PAGE);
        self.get_all(url, "tokens").await
    }

    // ---- bulk -------------------------------------------------------------------------------

    /// Shows many tokens of one user concurrently, as fast as Canvas's throttling allows.
    /// Results are in the order of `tokens`.
    pub async fn show_tokens(
        &self,
        user: &UserRef,
        tokens: impl IntoIterator<Item = TokenRef>,
    ) -> Vec<Result<Token, CanvasError>> {
        self.concurrent(tokens, |token| async move {
            self.show_token(user, &token).await
        })
        .await
    }

    /// Runs `call` for every item concurrently and returns the outputs in input order. The
    /// client's governor decides how many requests actually run at once; this only bounds how
    /// many calls wait for it.
    pub async fn concurrent<I, F, Fut>(&self, items: I, call: F) -> Vec<Fut::Output>
    where
        I: IntoIterator,
        F: FnMut(I::Item) -> Fut,
        Fut: Future,
    {
        futures::stream::iter(items)
            .map(call)
            .buffered(self.inner.governor.max_concurrency())
            .collect()
            .await
    }

    // ---- plumbing ---------------------------------------------------------------------------

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        // Segments are already percent-encoded (`UserRef::path_segment`) or plain ASCII.
        url.set_path(&format!("{}/{}", self.inner.prefix, segments.join("/")));
        url.set_query(None);
        url.set_fragment(None);
        url
    }

    fn token_url(&self, user: &UserRef, token: &TokenRef) -> Url {
        self.url(&[
            "api",
            "v1",
            "users",
            &user.path_segment(),
            "tokens",
            &token.path_segment(),
        ])
    }

    /// Follows `rel="next"` (`canvas-api.md` §5) — an absolute URL or a path, resolved against
    /// the page it came with; numbered or bookmark pages — until there is none, never off the
    /// Canvas host.
    async fn get_all<T: DeserializeOwned>(
        &self,
        first: Url,
        what: &str,
    ) -> Result<Vec<T>, CanvasError> {
        let mut items = Vec::new();
        let mut url = first;
        for _ in 0..MAX_PAGES {
            let raw = self
                .execute(Method::GET, url.clone(), None, Repeat::Safe)
                .await?;
            let page: Vec<T> = decode(&raw, what)?;
            let empty = page.is_empty();
            items.extend(page);
            let next = raw
                .headers
                .get_all(LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| find_rel(v, "next"));
            let Some(next) = next else {
                return Ok(items);
            };
            if empty {
                return Ok(items);
            }
            let next = Url::parse(&next)
                .or_else(|_| url.join(&next))
                .map_err(|e| CanvasError::UnexpectedResponse {
                    status: Some(raw.status.as_u16()),
                    detail: format!("unparsable next-page link: {e}"),
                })?;
            // Never send the access token to another host.
            if next.origin() != self.inner.base.origin() {
                return Err(CanvasError::UnexpectedResponse {
                    status: Some(raw.status.as_u16()),
                    detail: format!(
                        "next-page link points to another host ({})",
                        next.host_str().unwrap_or("?")
                    ),
                });
            }
            if next == url {
                return Ok(items);
            }
            url = next;
        }
        Err(CanvasError::UnexpectedResponse {
            status: None,
            detail: format!("more than {MAX_PAGES} pages of {what}"),
        })
    }

    /// Sends one request through the governor, retrying throttled and transient failures.
    async fn execute(
        &self,
        method: Method,
        url: Url,
        form: Option<&[(String, String)]>,
        repeat: Repeat,
    ) -> Result<RawResponse, CanvasError> {
        let inner = &self.inner;
        let mut attempt: u32 = 0;
        loop {
            let (error, processed) = {
                let permit = inner.governor.acquire().await;
                inner.requests.fetch_add(1, Ordering::Relaxed);
                let started = std::time::Instant::now();
                let result = self.send_once(&method, &url, form).await;
                let endpoint = endpoint_of(&method, &url);
                metrics::histogram!("tokendesk_canvas_request_duration_seconds", "endpoint" => endpoint.clone())
                    .record(started.elapsed().as_secs_f64());
                let outcome = match result {
                    Ok(raw) => {
                        let remaining = raw
                            .headers
                            .get("x-rate-limit-remaining")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<f64>().ok());
                        if let Some(remaining) = remaining {
                            metrics::gauge!("tokendesk_canvas_rate_limit_remaining").set(remaining);
                        }
                        if raw.status.is_success() {
                            count_call(endpoint, "ok");
                            inner.governor.observe(&permit, remaining, false);
                            tracing::debug!(
                                method = %method,
                                path = url.path(),
                                status = raw.status.as_u16(),
                                remaining,
                                attempt,
                                "Canvas request"
                            );
                            return Ok(raw);
                        }
                        let error = classify(
                            raw.status.as_u16(),
                            raw.headers.contains_key(WWW_AUTHENTICATE),
                            &raw.body,
                        );
                        let throttled = error == CanvasError::Throttled;
                        count_call(
                            endpoint,
                            if throttled {
                                "throttled"
                            } else if raw.status.is_client_error() {
                                "client_error"
                            } else {
                                "server_error"
                            },
                        );
                        if throttled {
                            inner.throttled.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("tokendesk_canvas_throttled_total").increment(1);
                        }
                        inner.governor.observe(&permit, remaining, throttled);
                        tracing::debug!(
                            method = %method,
                            path = url.path(),
                            status = raw.status.as_u16(),
                            remaining,
                            attempt,
                            "Canvas request failed"
                        );
                        // A throttled request was refused before Canvas ran it.
                        (error, !throttled)
                    }
                    Err(failure) => {
                        count_call(endpoint, "transport_error");
                        failure
                    }
                };
                drop(permit);
                outcome
            };
            let retryable = error.is_transient()
                && (!processed || repeat == Repeat::Safe || inner.retry_ambiguous_writes);
            if !retryable || attempt >= inner.max_retries {
                return Err(error);
            }
            let delay = self.backoff(attempt);
            tracing::warn!(
                method = %method,
                path = url.path(),
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "retrying Canvas request"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
            inner.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One HTTP exchange. On a transport failure returns the error and whether Canvas may have
    /// processed the request.
    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        form: Option<&[(String, String)]>,
    ) -> Result<RawResponse, (CanvasError, bool)> {
        let mut request = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(self.inner.token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(form) = form {
            request = request.form(form);
        }
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?
            .to_vec();
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    fn transport_error(&self, error: reqwest::Error) -> (CanvasError, bool) {
        let connect = error.is_connect();
        let mapped = if error.is_timeout() {
            CanvasError::Timeout {
                after: self.inner.timeout,
            }
        } else {
            CanvasError::Unavailable {
                status: None,
                detail: describe(error),
            }
        };
        // A failed connect never reached Canvas.
        (mapped, !connect)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.inner.backoff_base.as_secs_f64();
        let max = self.inner.backoff_max.as_secs_f64();
        let exp = (base * 2f64.powi(attempt.min(30) as i32)).min(max);
        // Jitter in [50 %, 100 %] so that many throttled callers do not come back together.
        Duration::from_secs_f64(exp * rand::random_range(0.5..=1.0))
    }
}

/// The error and its causes, without the URL.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn format_time(at: OffsetDateTime) -> Result<String, CanvasError> {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| CanvasError::InvalidInput {
            message: format!("cannot format the expiry date: {e}"),
        })
}

/// Decodes a success body. The error detail names only the position, never content (a body
/// may hold a token value).
fn decode<T: DeserializeOwned>(raw: &RawResponse, what: &str) -> Result<T, CanvasError> {
    serde_json::from_slice(&raw.body).map_err(|e| CanvasError::UnexpectedResponse {
        status: Some(raw.status.as_u16()),
        detail: format!(
            "cannot read the {what} in the response ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}

/// Moves the once-shown value out of `visible_token`, leaving the hint.
fn with_value(mut token: Token, raw: &RawResponse) -> Result<CreatedToken, CanvasError> {
    if !is_full_value(&token.visible_token) {
        return Err(CanvasError::UnexpectedResponse {
            status: Some(raw.status.as_u16()),
            detail: "the response has no token value in visible_token".to_owned(),
        });
    }
    let value = std::mem::take(&mut token.visible_token);
    token.visible_token = format!("{}...", token_hint(&value));
    Ok(CreatedToken {
        token,
        value: SecretString::from(value),
    })
}

/// The endpoint a request went to, for metrics: the method and the path with its ids replaced
/// (`GET /api/v1/users/:id/tokens/:id`), so that the labels stay few.
fn endpoint_of(method: &Method, url: &Url) -> String {
    let mut out = format!("{method} ");
    let mut after_collection = false;
    for segment in url.path().split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if after_collection {
            out.push_str(":id");
        } else {
            out.push_str(segment);
        }
        after_collection = matches!(segment, "users" | "tokens" | "accounts");
    }
    out
}

/// One Canvas call, by endpoint and outcome (`ok`, `throttled`, `client_error`,
/// `server_error`, `transport_error`).
fn count_call(endpoint: String, outcome: &'static str) {
    metrics::counter!("tokendesk_canvas_requests_total", "endpoint" => endpoint, "outcome" => outcome)
        .increment(1);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_no_ids() {
        let url = Url::parse("https://canvas.example.edu/api/v1/users/sis_login_id:sam/tokens/17")
            .unwrap();
        assert_eq!(
            endpoint_of(&Method::DELETE, &url),
            "DELETE /api/v1/users/:id/tokens/:id"
        );
        let url =
            Url::parse("https://canvas.example.edu/api/v1/accounts/1/users?search_term=x").unwrap();
        assert_eq!(
            endpoint_of(&Method::GET, &url),
            "GET /api/v1/accounts/:id/users"
        );
    }
}

//! Sign-in with OpenID Connect (`auth.mode = "oidc"`): the authorization code flow with PKCE,
//! `state` and `nonce`, through the `openidconnect` crate.
//!
//! - `GET /auth/login?next=PATH`: remembers the sign-in (state hash, nonce, PKCE verifier) in
//!   the database, binds it to this browser with a short-lived cookie holding the state, and
//!   sends the browser to the provider.
//! - `GET /auth/callback`: the provider's answer. The state must be this browser's and unused;
//!   the code is exchanged (with the PKCE verifier and the client secret); the ID token's
//!   signature, issuer, audience, expiry, `iat` and nonce are checked (a key id the provider's
//!   key set does not hold triggers one refetch of the key set, for key rotation); the login
//!   comes from `auth.oidc.login_claim`, checked like every login; roles from the groups claim.
//!   Then a new session begins (a fresh id: nothing known before sign-in carries over).
//! - `POST /auth/logout`: ends the session and, when the provider has an
//!   `end_session_endpoint`, continues there with `id_token_hint` and
//!   `post_logout_redirect_uri` = `<public_url>auth/signed-out`.
//!
//! Every failure at the callback is a page that says what happened and how to retry.

use std::time::{Duration, Instant};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_TYPE, SET_COOKIE, USER_AGENT};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    JsonWebKeySet, Nonce, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, Scope, SignatureVerificationError, TokenResponse as _,
};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::WebState;
use super::auth::ClientAddr;
use super::cookies::Kind;
use super::pages::chrome::Chrome;
use super::pages::session::{local_path, see_other};
use crate::app::{Ctx, SessionKind, SignIn};
use crate::config::{OidcConfig, RolesConfig};
use crate::domain::{Login, Roles};
use crate::store::OidcFlow;

/// How long a provider's discovery document (and key set) is used before it is fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// A key set is fetched again for an unknown key id at most this often.
const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(10);
/// The clock skew allowed between tokendesk and the provider, in seconds.
const SKEW_SECS: i64 = 120;
/// An answer from the provider larger than this is refused.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The OpenID provider, as tokendesk uses it. Cheap to share.
pub struct Oidc {
    config: OidcConfig,
    groups: GroupRoles,
    redirect: RedirectUrl,
    post_logout: PostLogoutRedirectUrl,
    http: reqwest::Client,
    provider: RwLock<Option<(ProviderMetadataWithLogout, Instant)>>,
    last_jwks_fetch: Mutex<Option<Instant>>,
}

/// `[roles] *_groups`: the groups that give each role.
#[derive(Debug, Clone, Default)]
pub struct GroupRoles {
    approver: Vec<String>,
    helpdesk: Vec<String>,
    auditor: Vec<String>,
    admin: Vec<String>,
}

impl GroupRoles {
    pub fn from_config(roles: &RolesConfig) -> GroupRoles {
        GroupRoles {
            approver: roles.approver_groups.clone(),
            helpdesk: roles.helpdesk_groups.clone(),
            auditor: roles.auditor_groups.clone(),
            admin: roles.admin_groups.clone(),
        }
    }

    /// The roles a person in `groups` holds.
    pub fn roles_of(&self, groups: &[String]) -> Roles {
        let any = |wanted: &[String]| wanted.iter().any(|g| groups.contains(g));
        Roles {
            approver: any(&self.approver),
            helpdesk: any(&self.helpdesk),
            auditor: any(&self.auditor),
            admin: any(&self.admin),
        }
    }
}

/// Why the provider could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    #[error("{0}")]
    Http(#[from] http::Error),
    #[error("the answer is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

async fn send(
    client: reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let mut builder = client
        .request(parts.method, parts.uri.to_string())
        .body(body);
    for (name, value) in &parts.headers {
        builder = builder.header(name, value);
    }
    let response = builder.send().await?;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(HttpError::TooLarge);
    }
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    if bytes.len() > MAX_RESPONSE_BYTES {
        return Err(HttpError::TooLarge);
    }
    let mut out = http::Response::builder()
        .status(status)
        .body(bytes.to_vec())?;
    *out.headers_mut() = headers;
    Ok(out)
}

/// What went wrong with a sign-in, for the page that says so.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub heading: &'static str,
    pub what: String,
    pub advice: &'static str,
}

const RETRY: &str = "Sign in again. If it keeps failing, tell the help desk what this page says.";

impl Problem {
    fn new(
        status: StatusCode,
        code: &'static str,
        heading: &'static str,
        what: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            code,
            heading,
            what: what.into(),
            advice: RETRY,
        }
    }

    fn provider(e: impl std::fmt::Display) -> Problem {
        tracing::warn!(error = %e, "the OpenID provider could not be used");
        Problem {
            advice: "The sign-in service may be down for a moment: wait a minute and sign in again. If it keeps failing, tell the help desk.",
            ..Problem::new(
                StatusCode::BAD_GATEWAY,
                "provider_unavailable",
                "The sign-in service did not answer",
                "tokendesk could not reach your institution's sign-in service, or did not understand its answer.",
            )
        }
    }

    fn token(e: &ClaimsVerificationError) -> Problem {
        tracing::warn!(error = %e, "an ID token was refused");
        let (code, what) = match e {
            // The issue-time check reports through `Expired` too.
            ClaimsVerificationError::Expired(why) if why.starts_with("issued") => (
                "clock_skew",
                format!("The answer's issue time does not fit this server's clock ({why}). The clocks of tokendesk and the sign-in service may differ."),
            ),
            ClaimsVerificationError::Expired(_) => (
                "token_expired",
                "The sign-in service's answer had expired, or this computer's clock is far off. Check the date and time of this computer.".to_owned(),
            ),
            ClaimsVerificationError::InvalidAudience(_) => (
                "wrong_audience",
                "The sign-in service's answer was meant for another application.".to_owned(),
            ),
            ClaimsVerificationError::InvalidIssuer(_) => (
                "wrong_issuer",
                "The answer came from another sign-in service than the one tokendesk trusts.".to_owned(),
            ),
            ClaimsVerificationError::InvalidNonce(_) => (
                "wrong_nonce",
                "The answer belongs to another sign-in than the one this browser began.".to_owned(),
            ),
            ClaimsVerificationError::SignatureVerification(_) => (
                "bad_signature",
                "The answer's signature could not be verified, so it was not trusted.".to_owned(),
            ),
            _ => (
                "token_refused",
                "The sign-in service's answer could not be verified, so it was not trusted.".to_owned(),
            ),
        };
        Problem::new(
            StatusCode::UNAUTHORIZED,
            code,
            "Sign-in did not complete",
            what,
        )
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/sign_in_problem.html")]
struct ProblemPage {
    c: Chrome,
    heading: &'static str,
    what: String,
    advice: &'static str,
    retry: &'static str,
    status: u16,
    code: &'static str,
    request_id: Option<String>,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let page = ProblemPage {
            c: Chrome::anonymous(self.heading),
            heading: self.heading,
            what: self.what,
            advice: self.advice,
            retry: "/auth/login",
            status: self.status.as_u16(),
            code: self.code,
            request_id: super::middleware::current_request_id(),
        };
        html(self.status, page.render())
    }
}

fn html(status: StatusCode, body: Result<String, askama::Error>) -> Response {
    match body {
        Ok(body) => (
            status,
            [(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            super::pages::error::PageError::plain(super::ApiError::internal(&e)).into_response()
        }
    }
}

/// The ID token's claims tokendesk reads, taken from its verified payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub login: Login,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

impl Oidc {
    pub fn new(
        config: OidcConfig,
        groups: GroupRoles,
        public_url: &url::Url,
    ) -> Result<Oidc, String> {
        let redirect = RedirectUrl::new(format!("{public_url}auth/callback"))
            .map_err(|e| format!("the redirect URI cannot be made from public_url: {e}"))?;
        let post_logout = PostLogoutRedirectUrl::new(format!("{public_url}auth/signed-out"))
            .map_err(|e| format!("the post-logout URI cannot be made from public_url: {e}"))?;
        let http = reqwest::Client::builder()
            // Following redirects would open the client to server-side request forgery.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Oidc {
            config,
            groups,
            redirect,
            post_logout,
            http,
            provider: RwLock::new(None),
            last_jwks_fetch: Mutex::new(None),
        })
    }

    fn http(
        &self,
    ) -> impl Fn(
        openidconnect::HttpRequest,
    ) -> futures::future::BoxFuture<
        'static,
        Result<openidconnect::HttpResponse, HttpError>,
    > + use<'_> {
        let client = self.http.clone();
        move |request| Box::pin(send(client.clone(), request))
    }

    /// The provider's metadata and keys: discovered at first use, again after an hour.
    async fn metadata(&self) -> Result<ProviderMetadataWithLogout, Problem> {
        if let Some((metadata, at)) = self.provider.read().await.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(metadata.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone()).map_err(Problem::provider)?;
        let http = self.http();
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &http)
            .await
            .map_err(Problem::provider)?;
        *self.provider.write().await = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    /// Fetches the key set again (a key id it did not hold), at most once per
    /// [`JWKS_REFETCH_EVERY`]; `false` when it was fetched too recently.
    async fn refetch_keys(
        &self,
        mut metadata: ProviderMetadataWithLogout,
    ) -> Result<Option<ProviderMetadataWithLogout>, Problem> {
        {
            let mut last = self.last_jwks_fetch.lock().await;
            if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_EVERY) {
                return Ok(None);
            }
            *last = Some(Instant::now());
        }
        let http = self.http();
        let jwks = JsonWebKeySet::fetch_async(metadata.jwks_uri(), &http)
            .await
            .map_err(Problem::provider)?;
        tracing::info!(
            "fetched the OpenID provider's keys again (an ID token named a key it did not hold)"
        );
        metadata = metadata.set_jwks(jwks);
        *self.provider.write().await = Some((metadata.clone(), Instant::now()));
        Ok(Some(metadata))
    }

    fn client(
        &self,
        metadata: ProviderMetadataWithLogout,
    ) -> CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(
                secrecy::ExposeSecret::expose_secret(&self.config.client_secret).to_owned(),
            )),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// The login a claim value names: the domain stripped, then checked like every login.
    pub fn login_from(&self, raw: &str) -> Result<Login, String> {
        Login::parse_scoped(raw, self.config.strip_domain.as_deref()).map_err(|e| e.message)
    }

    /// The claims tokendesk reads from a verified ID token's payload.
    fn read_claims(&self, jwt: &str) -> Result<Claims, Problem> {
        let refused = |what: String| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "claims",
                "Sign-in did not complete",
                what,
            )
        };
        let payload = jwt
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .ok_or_else(|| refused("The sign-in service's answer could not be read.".into()))?;
        let text = |name: &str| {
            payload
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let claim = &self.config.login_claim;
        let raw = text(claim).ok_or_else(|| {
            refused(format!(
                "The sign-in service did not say who you are: its answer has no `{claim}` claim (auth.oidc.login_claim). Tell the help desk."
            ))
        })?;
        let login = self.login_from(&raw).map_err(|why| {
            refused(format!(
                "Your account's login cannot be used in tokendesk: {why}. Tell the help desk."
            ))
        })?;
        let groups = match payload.get(&self.config.groups_claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(Claims {
            login,
            email: text("email").filter(|e| e.contains('@') && e.len() <= 254),
            name: text("name").map(|n| n.chars().take(200).collect()),
            groups,
        })
    }

    /// Verifies the ID token of a code exchange and reads its claims.
    fn verify(
        &self,
        client: &CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        id_token: &openidconnect::core::CoreIdToken,
        nonce: &Nonce,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ClaimsVerificationError> {
        let verifier = client
            .id_token_verifier()
            .set_time_fn(move || now)
            .set_issue_time_verifier_fn(move |iat| {
                let age = (now - iat).num_seconds();
                if age < -SKEW_SECS {
                    Err(format!("issued {}s in the future", -age))
                } else if age > crate::app::OIDC_FLOW_SECS + SKEW_SECS {
                    Err(format!("issued {age}s ago"))
                } else {
                    Ok(())
                }
            });
        id_token.claims(&verifier, nonce).map(|_| ())
    }
}

/// `GET /auth/login?next=PATH`.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// The "not found" page: OIDC routes exist only with `auth.mode = "oidc"`.
fn no_oidc() -> Response {
    super::pages::error::PageError::plain(super::ApiError::not_found()).into_response()
}

pub async fn login(
    State(state): State<WebState>,
    ClientAddr(addr): ClientAddr,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(oidc) = state.auth.oidc() else {
        return no_oidc();
    };
    if let Err(e) = state.limit(
        crate::limits::Limit::SignIn,
        &format!("addr:{}", addr.unwrap_or_default()),
    ) {
        return super::pages::error::PageError::plain(e).into_response();
    }
    let next = query
        .ok()
        .and_then(|Query(q)| q.next)
        .and_then(|n| local_path(&n).map(str::to_owned));
    let metadata = match oidc.metadata().await {
        Ok(m) => m,
        Err(p) => return p.into_response(),
    };
    let client = oidc.client(metadata);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in oidc.config.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, csrf, nonce) = request.url();
    let flow = OidcFlow {
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
        next_path: next,
        created_at: state.app.now(),
    };
    if let Err(e) = state.app.begin_oidc(csrf.secret(), &flow).await {
        return super::pages::error::PageError::from(e).into_response();
    }
    let mut response = see_other(url.as_str());
    state
        .cookies
        .add_set(response.headers_mut(), Kind::OidcState, csrf.secret());
    response
}

/// `GET /auth/callback?code=…&state=…` (or `?error=…`).
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub async fn callback(
    State(state): State<WebState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(oidc) = state.auth.oidc() else {
        return no_oidc();
    };
    let mut response = match finish(&state, oidc, addr, &headers, query).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    };
    // The state cookie has done its work, whatever the outcome.
    state
        .cookies
        .add_clear(response.headers_mut(), Kind::OidcState);
    response
}

async fn finish(
    state: &WebState,
    oidc: &Oidc,
    addr: Option<String>,
    headers: &HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let bad = |code, what: &str| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            code,
            "Sign-in did not complete",
            what,
        )
    };
    let Query(q) = query.map_err(|_| {
        bad(
            "bad_callback",
            "The sign-in service's answer could not be read.",
        )
    })?;
    if let Some(error) = q.error {
        let detail = q.error_description.unwrap_or_default();
        let detail: String = detail
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let what = match error.as_str() {
            "access_denied" => "You (or the sign-in service) declined to let tokendesk know who you are, so you are not signed in.".to_owned(),
            "login_required" | "interaction_required" | "consent_required" => "The sign-in service needs you to sign in there first.".to_owned(),
            other => format!(
                "The sign-in service refused the sign-in (`{}`{}).",
                other.chars().filter(|c| c.is_ascii_graphic()).take(60).collect::<String>(),
                if detail.is_empty() { String::new() } else { format!(": {detail}") }
            ),
        };
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "denied",
            "Sign-in did not complete",
            what,
        ));
    }
    let (Some(code), Some(returned_state)) = (q.code, q.state) else {
        return Err(bad(
            "bad_callback",
            "The sign-in service's answer is missing its code or state.",
        ));
    };
    // The state must be the one this browser was given, and unused.
    let cookie = state
        .cookies
        .get(headers, Kind::OidcState)
        .unwrap_or_default();
    let same = !cookie.is_empty()
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            cookie.as_bytes(),
            returned_state.as_bytes(),
        ));
    if !same {
        return Err(bad(
            "bad_state",
            "This answer does not belong to a sign-in begun in this browser (the state does not match), so it was refused. Sign-ins must finish in the browser that began them, within ten minutes.",
        ));
    }
    let flow = state
        .app
        .take_oidc(&returned_state)
        .await
        .map_err(Problem::provider)?
        .ok_or_else(|| bad("used_state", "This sign-in was already completed, or took longer than ten minutes. Each answer of the sign-in service can be used once."))?;
    let metadata = oidc.metadata().await?;
    let client = oidc.client(metadata.clone());
    let http = oidc.http();
    let exchange = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(Problem::provider)?
        .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier.clone()))
        .request_async(&http)
        .await;
    let tokens = match exchange {
        Ok(tokens) => tokens,
        Err(openidconnect::RequestTokenError::ServerResponse(e)) => {
            tracing::warn!(error = %e, "the OpenID provider refused the code");
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "code_refused",
                "Sign-in did not complete",
                "The sign-in service did not accept this answer's code: it may have been used already or be too old.",
            ));
        }
        Err(e) => return Err(Problem::provider(e)),
    };
    let id_token = tokens.id_token().ok_or_else(|| {
        Problem::provider("the token response has no ID token (is `openid` among the scopes?)")
    })?;
    let nonce = Nonce::new(flow.nonce.clone());
    let now_secs = state.app.now().unix_timestamp();
    let now = chrono::DateTime::<chrono::Utc>::from_timestamp(now_secs, 0).unwrap_or_default();
    let mut verified = oidc.verify(&client, id_token, &nonce, now);
    if let Err(ClaimsVerificationError::SignatureVerification(
        SignatureVerificationError::NoMatchingKey,
    )) = &verified
        && let Some(fresh) = oidc.refetch_keys(metadata).await?
    {
        verified = oidc.verify(&oidc.client(fresh), id_token, &nonce, now);
    }
    verified.map_err(|e| Problem::token(&e))?;
    let jwt = id_token.to_string();
    let claims = oidc.read_claims(&jwt)?;
    let sign_in = SignIn {
        login: claims.login.clone(),
        kind: SessionKind::Oidc,
        roles: oidc.groups.roles_of(&claims.groups),
        email: claims.email,
        name: claims.name,
        id_token: Some(jwt),
        user_agent: headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(200).collect()),
    };
    let ctx = Ctx { client_addr: addr };
    let cookie = state
        .app
        .start_session(&sign_in, &ctx)
        .await
        .map_err(Problem::provider)?;
    let mut response = see_other(flow.next_path.as_deref().unwrap_or("/"));
    state
        .cookies
        .add_set(response.headers_mut(), Kind::Session, &cookie);
    Ok(response)
}

/// Where the provider's sign-out goes on to, for a session with this ID token.
pub async fn end_session_url(oidc: &Oidc, id_token: Option<&str>) -> Option<String> {
    let metadata = oidc.metadata().await.ok()?;
    let endpoint = metadata
        .additional_metadata()
        .end_session_endpoint
        .clone()?;
    let mut request = openidconnect::LogoutRequest::from(endpoint)
        .set_client_id(ClientId::new(oidc.config.client_id.clone()))
        .set_post_logout_redirect_uri(oidc.post_logout.clone());
    if let Some(raw) = id_token {
        // The hint is sent as the provider gave it; it was verified at sign-in.
        let mut url = request.http_get_url();
        url.query_pairs_mut().append_pair("id_token_hint", raw);
        return Some(url.to_string());
    }
    request = request.set_state(CsrfToken::new_random());
    Some(request.http_get_url().to_string())
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/signed_out.html")]
struct SignedOutPage {
    c: Chrome,
    sign_in: &'static str,
}

/// `GET /auth/signed-out`: where the provider's sign-out returns.
pub async fn signed_out(State(state): State<WebState>) -> Response {
    let sign_in = if state.auth.demo_allowed() {
        "/demo/login"
    } else {
        "/auth/login"
    };
    html(
        StatusCode::OK,
        SignedOutPage {
            c: Chrome::anonymous("Signed out"),
            sign_in,
        }
        .render(),
    )
}

/// `POST /auth/logout`: ends this browser's session (OIDC or demo), then the provider's.
pub async fn logout(
    State(state): State<WebState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let cookie = state
        .cookies
        .get(&headers, Kind::Session)
        .unwrap_or_default();
    let ctx = Ctx { client_addr: addr };
    let ended = if cookie.is_empty() {
        None
    } else {
        match state.app.end_session(&cookie, &ctx).await {
            Ok(s) => s,
            Err(e) => return super::pages::error::PageError::from(e).into_response(),
        }
    };
    let provider = match (state.auth.oidc(), &ended) {
        (Some(oidc), Some(session)) if session.kind == SessionKind::Oidc.as_str() => {
            end_session_url(oidc, session.id_token.as_deref()).await
        }
        _ => None,
    };
    let mut response = match provider {
        // The pages' CSP keeps forms (and the redirects after them) on this site, so the way on
        // to the provider's sign-out is a page of ours that goes there by itself.
        Some(url) => html(
            StatusCode::OK,
            LeavingPage {
                c: Chrome::anonymous("Signing out"),
                url,
            }
            .render(),
        ),
        None => see_other("/auth/signed-out"),
    };
    state
        .cookies
        .add_clear(response.headers_mut(), Kind::Session);
    if let Some(v) = state.cookies.clear(Kind::Csrf) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/signing_out.html")]
struct LeavingPage {
    c: Chrome,
    /// The provider's end-session address.
    url: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn oidc(strip: Option<&str>) -> Oidc {
        let config = OidcConfig {
            issuer: "http://127.0.0.1:1".into(),
            client_id: "tokendesk".into(),
            client_secret: secrecy::SecretString::from("s"),
            client_secret_source: crate::config::SecretSource::Code,
            scopes: vec!["openid".into()],
            login_claim: "preferred_username".into(),
            strip_domain: strip.map(str::to_owned),
            groups_claim: "groups".into(),
        };
        Oidc::new(
            config,
            GroupRoles::default(),
            &"http://127.0.0.1:8080/".parse().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn strip_domain_then_the_login_rules() {
        let o = oidc(Some("@wisc.edu"));
        assert_eq!(
            o.login_from("Bucky.Badger@WISC.edu").unwrap().as_str(),
            "bucky.badger"
        );
        // Another domain stays, and the login rules still apply.
        assert_eq!(
            o.login_from("ann@other.edu").unwrap().as_str(),
            "ann@other.edu"
        );
        assert!(
            o.login_from("key:audit@wisc.edu").is_err(),
            "service keys' names"
        );
        assert!(o.login_from("../admin@wisc.edu").is_err());
        assert!(o.login_from("eve\u{202E}@wisc.edu").is_err());
        assert!(oidc(None).login_from("").is_err());
        let claims = o
            .read_claims(&format!(
                "h.{}.s",
                URL_SAFE_NO_PAD.encode(br#"{"preferred_username":"sam@wisc.edu","groups":["a","b"],"email":"sam@wisc.edu"}"#)
            ))
            .unwrap();
        assert_eq!(claims.login.as_str(), "sam");
        assert_eq!(claims.groups, vec!["a".to_owned(), "b".to_owned()]);
        assert!(o.read_claims("h.e30.s").is_err(), "no login claim");
    }

    #[test]
    fn groups_map_to_roles() {
        let roles = RolesConfig {
            approver_groups: vec!["canvas-admins".into()],
            helpdesk_groups: vec!["it-helpdesk".into()],
            auditor_groups: vec!["audit".into(), "canvas-admins".into()],
            admin_groups: vec![],
            ..RolesConfig::default()
        };
        let g = GroupRoles::from_config(&roles);
        let r = g.roles_of(&["canvas-admins".into(), "students".into()]);
        assert!(r.approver && r.auditor && !r.helpdesk && !r.admin);
        assert_eq!(g.roles_of(&[]), Roles::default());
        assert_eq!(g.roles_of(&["Canvas-Admins".into()]), Roles::default());
    }
}

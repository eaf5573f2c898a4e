//! `/api/v1/reports` (a leaked token, reported by anyone signed in) and bulk revocation:
//! `/api/v1/revocations` (preview, start, progress) and
//! `/api/v1/people/{login}/revoke-all` (off-boarding, for the identity team's scripts with a
//! help-desk service key).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::SignedIn;
use super::error::{ApiError, ApiResult};
use super::extract::{IdPath, JsonBody, QueryParams, StrPath};
use super::openapi::{Always, Body, Checked, Limited, Named, Query, Refusable};
use super::{WebState, utc};
use crate::domain::Login;
use crate::domain::request::RevokeFilter;
use crate::store::RevokeRun;

pub(super) fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(report))
        .routes(routes!(preview))
        .routes(routes!(start))
        .routes(routes!(progress))
        .routes(routes!(revoke_all))
}

/// A leaked token: its value, or its 5-character hint, and where it was found.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// The token as found, or the 5 characters Canvas shows of it. Never stored.
    #[schema(min_length = 1, max_length = 200, required = true, nullable = false)]
    value: Option<String>,
    /// Where it was found (a repository URL, a chat), up to 500 characters.
    #[schema(min_length = 1, max_length = 500, required = true, nullable = false)]
    #[serde(rename = "where")]
    where_found: Option<String>,
}

/// What the reporter learns: the same answer for anything that is not a live token issued here.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReportOutcome)]
pub struct ReportJson {
    /// `revoked` or `not_found`.
    pub outcome: &'static str,
    pub message: &'static str,
}

/// Report a leaked token (anyone signed in; rate-limited). A match is revoked at once, its
/// owner and the help desk emailed; the answer never says whose it was.
#[utoipa::path(
    post,
    path = "/reports",
    tag = "incidents",
    operation_id = "reportLeak",
    request_body = ReportBody,
    responses(
        (status = 200, description = "What became of it", body = ReportJson),
        Always, Body, Checked, Limited, Refusable,
    ),
)]
async fn report(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    JsonBody(body): JsonBody<ReportBody>,
) -> ApiResult<Json<ReportJson>> {
    state.limit(
        crate::limits::Limit::Report,
        &format!("login:{}", actor.login),
    )?;
    let outcome = state
        .app
        .report_leak(
            &actor,
            body.value.as_deref().unwrap_or_default(),
            body.where_found.as_deref().unwrap_or_default(),
            &ctx,
        )
        .await?;
    Ok(Json(ReportJson {
        outcome: outcome.as_str(),
        message: outcome.message(),
    }))
}

/// Which tokens: exactly one of the four.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct FilterQuery {
    /// Every token of this person (the help desk).
    owner: Option<String>,
    /// Tokens issued before this day, `YYYY-MM-DD` (admins).
    #[param(format = Date)]
    issued_before: Option<String>,
    /// Tokens whose purpose contains this text, any case (admins).
    purpose: Option<String>,
    /// `true`: every token tokendesk issued (admins).
    all: Option<bool>,
}

impl FilterQuery {
    fn filter(&self) -> Result<RevokeFilter, crate::domain::DomainError> {
        RevokeFilter::parse(
            self.owner.as_deref(),
            self.issued_before.as_deref(),
            self.purpose.as_deref(),
            self.all.unwrap_or(false),
        )
    }
}

/// How many tokens a revocation would take.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RevocationPreview)]
pub struct PreviewJson {
    /// What the filter takes, in words.
    pub what: String,
    pub count: i64,
    /// The owners with most tokens among them (at most 50), most first.
    pub owners: Vec<OwnerCount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OwnerCount {
    pub login: String,
    pub count: i64,
}

/// Preview a bulk revocation: how many live tokens, and whose.
#[utoipa::path(
    get,
    path = "/revocations/preview",
    tag = "incidents",
    operation_id = "previewRevocation",
    params(FilterQuery),
    responses(
        (status = 200, description = "What it would take", body = PreviewJson),
        Always, Query, Checked, Refusable,
    ),
)]
async fn preview(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    QueryParams(q): QueryParams<FilterQuery>,
) -> ApiResult<Json<PreviewJson>> {
    let p = state.app.revoke_preview(&actor, q.filter()?).await?;
    Ok(Json(PreviewJson {
        what: p.filter.describe(),
        count: p.count,
        owners: p
            .owners
            .into_iter()
            .map(|(login, count)| OwnerCount { login, count })
            .collect(),
    }))
}

/// A bulk revocation to start: one filter, a reason, and for `all` the typed confirmation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    owner: Option<String>,
    #[schema(format = Date)]
    issued_before: Option<String>,
    purpose: Option<String>,
    all: Option<bool>,
    /// Why (3 to 500 characters); the owners read it.
    #[schema(min_length = 3, max_length = 500, required = true, nullable = false)]
    reason: Option<String>,
    /// With `all`: the words `REVOKE ALL`.
    confirm: Option<String>,
}

/// A bulk revocation run and how far it got.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Revocation)]
pub struct RunJson {
    pub id: i64,
    /// What it revokes, as stored (JSON).
    pub filter: serde_json::Value,
    pub reason: String,
    pub actor: String,
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    pub remaining: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<time::OffsetDateTime>,
    /// The tokens that could not be revoked, with why.
    pub failures: Vec<FailureJson>,
    /// Said when the run took nothing.
    pub message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FailureJson {
    pub request_id: i64,
    pub owner: String,
    pub error: String,
}

impl From<RevokeRun> for RunJson {
    fn from(r: RevokeRun) -> Self {
        RunJson {
            id: r.id,
            filter: serde_json::from_str(&r.filter).unwrap_or(serde_json::Value::Null),
            remaining: r.remaining(),
            message: (r.total == 0).then(|| {
                "nothing to revoke: no live token matches (or each is in another run already)"
                    .into()
            }),
            reason: r.reason,
            actor: r.actor,
            total: r.total,
            done: r.done,
            failed: r.failed,
            created_at: utc(r.created_at),
            finished_at: r.finished_at.map(utc),
            failures: r
                .failures
                .into_iter()
                .map(|(request_id, owner, error)| FailureJson {
                    request_id,
                    owner,
                    error,
                })
                .collect(),
        }
    }
}

/// Start a bulk revocation (the help desk: a person's tokens; admins: by date, purpose, or
/// all with the typed confirmation). Each token is a queued job; a restart resumes the run.
#[utoipa::path(
    post,
    path = "/revocations",
    tag = "incidents",
    operation_id = "startRevocation",
    request_body = StartBody,
    responses(
        (status = 202, description = "Started (or nothing to revoke)", body = RunJson),
        Always, Body, Checked, Refusable,
    ),
)]
async fn start(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    JsonBody(body): JsonBody<StartBody>,
) -> ApiResult<(StatusCode, Json<RunJson>)> {
    super::extract::date_param("issued_before", body.issued_before.as_deref())?;
    let filter = RevokeFilter::parse(
        body.owner.as_deref(),
        body.issued_before.as_deref(),
        body.purpose.as_deref(),
        body.all.unwrap_or(false),
    )?;
    let run = state
        .app
        .start_revocation(
            &actor,
            filter,
            body.reason.as_deref().unwrap_or_default(),
            body.confirm.as_deref(),
            &ctx,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(run.into())))
}

/// A bulk revocation's progress.
#[utoipa::path(
    get,
    path = "/revocations/{id}",
    tag = "incidents",
    operation_id = "getRevocation",
    params(("id" = i64, Path, description = "The run")),
    responses(
        (status = 200, description = "The run", body = RunJson),
        Always, Named,
    ),
)]
async fn progress(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    IdPath(id): IdPath,
) -> ApiResult<Json<RunJson>> {
    Ok(Json(state.app.revocation(&actor, id).await?.into()))
}

/// Why a person's tokens are revoked (off-boarding by default).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeAllBody {
    /// Shown to the person (default: they left the university).
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// Off-boarding: revoke every live token of a person (the help desk; a help-desk service key
/// for the identity team's scripts). Idempotent: a second call revokes nothing and says so.
#[utoipa::path(
    post,
    path = "/people/{login}/revoke-all",
    tag = "incidents",
    operation_id = "revokeAllOf",
    params(("login" = String, Path, description = "The person's login")),
    request_body = RevokeAllBody,
    responses(
        (status = 202, description = "Started (or nothing to revoke)", body = RunJson),
        Always, Body, Checked, Named, Refusable,
    ),
)]
async fn revoke_all(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    StrPath(login): StrPath,
    JsonBody(body): JsonBody<RevokeAllBody>,
) -> ApiResult<(StatusCode, Json<RunJson>)> {
    // A path that is not a login names nobody.
    let login = Login::parse(&login).map_err(|_| ApiError::not_found())?;
    if !actor.roles.can_look_up_people() {
        return Err(ApiError::not_found());
    }
    let reason = body
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or(OFFBOARDING_REASON);
    let run = state
        .app
        .start_revocation(&actor, RevokeFilter::Owner(login), reason, None, &ctx)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(run.into())))
}

/// The reason given when off-boarding names none.
pub const OFFBOARDING_REASON: &str =
    "off-boarding: your account is leaving the university, so its Canvas tokens were revoked";

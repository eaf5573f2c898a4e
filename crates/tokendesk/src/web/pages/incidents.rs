//! `/report` (report a leaked token), `/revocations` (bulk revocation: a filter, its preview,
//! then the run), `/revocations/{id}` (its progress, refreshing itself until it is done) and
//! `/people/{login}/revoke-all` (off-boarding, from the person's page).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::error::PageError;
use super::session::{Chrome, PageForm, PagePath, PageQuery, Viewer};
use crate::domain::Login;
use crate::domain::request::{REVOKE_ALL_CONFIRMATION, RevokeFilter};
use crate::store::RevokeRun;
use crate::web::{ApiError, WebState};

#[derive(Template, WebTemplate)]
#[template(path = "pages/report.html")]
pub struct ReportPage {
    pub c: Chrome,
}

/// `GET /report`.
pub async fn report_form(viewer: Viewer) -> Result<Response, PageError> {
    Ok(viewer.page(
        StatusCode::OK,
        &ReportPage {
            c: viewer.chrome("Report a leaked token"),
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct ReportForm {
    value: Option<String>,
    #[serde(rename = "where")]
    where_found: Option<String>,
}

/// `POST /report`: the outcome, as the API says it, on the form's page.
pub async fn report(
    State(state): State<WebState>,
    viewer: Viewer,
    PageForm(form): PageForm<ReportForm>,
) -> Result<Response, PageError> {
    state
        .limit(
            crate::limits::Limit::Report,
            &format!("login:{}", viewer.actor.login),
        )
        .map_err(|e| viewer.fail(e))?;
    let outcome = state
        .app
        .report_leak(
            &viewer.actor,
            form.value.as_deref().unwrap_or_default(),
            form.where_found.as_deref().unwrap_or_default(),
            &viewer.ctx,
        )
        .await;
    match outcome {
        // Either outcome is news, not a refusal.
        Ok(outcome) => Ok(viewer.redirect("/report", true, outcome.message())),
        Err(crate::app::AppError::Domain(crate::domain::DomainError::Invalid(fields))) => {
            let message = fields
                .iter()
                .map(|f| f.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            Ok(viewer.redirect("/report", false, &message))
        }
        Err(e) => Err(viewer.fail(e)),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct FilterFields {
    owner: Option<String>,
    issued_before: Option<String>,
    purpose: Option<String>,
    all: Option<String>,
    reason: Option<String>,
    confirm: Option<String>,
}

impl FilterFields {
    fn filter(&self) -> Result<RevokeFilter, crate::domain::DomainError> {
        RevokeFilter::parse(
            self.owner.as_deref(),
            self.issued_before.as_deref(),
            self.purpose.as_deref(),
            self.all
                .as_deref()
                .is_some_and(|a| a == "yes" || a == "true"),
        )
    }

    fn any(&self) -> bool {
        [&self.owner, &self.issued_before, &self.purpose, &self.all]
            .iter()
            .any(|f| f.as_deref().is_some_and(|v| !v.trim().is_empty()))
    }
}

/// A preview, as the page shows it.
pub struct PreviewRow {
    pub what: String,
    pub count: i64,
    pub owners: Vec<(String, i64)>,
    /// Hidden fields that repeat the filter in the form that starts the run.
    pub fields: Vec<(&'static str, String)>,
    pub all: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/revocations.html")]
pub struct RevocationsPage {
    pub c: Chrome,
    pub admin: bool,
    pub preview: Option<PreviewRow>,
    pub error: Option<String>,
    pub confirmation: &'static str,
}

/// `GET /revocations[?owner=…|issued_before=…|purpose=…|all=yes]`: the filter form, and what
/// it would take.
pub async fn revocations(
    State(state): State<WebState>,
    viewer: Viewer,
    PageQuery(q): PageQuery<FilterFields>,
) -> Result<Response, PageError> {
    if !viewer.actor.roles.can_support() {
        return Err(viewer.fail(ApiError::forbidden(
            "bulk revocation is for the help desk and admins",
        )));
    }
    let (mut preview, mut error) = (None, None);
    if q.any() {
        match q.filter() {
            Err(e) => error = Some(e.to_string()),
            Ok(filter) => match state.app.revoke_preview(&viewer.actor, filter).await {
                Ok(p) => {
                    let mut fields = Vec::new();
                    for (name, value) in [
                        ("owner", &q.owner),
                        ("issued_before", &q.issued_before),
                        ("purpose", &q.purpose),
                        ("all", &q.all),
                    ] {
                        if let Some(v) = value.as_deref().filter(|v| !v.trim().is_empty()) {
                            fields.push((name, v.to_owned()));
                        }
                    }
                    preview = Some(PreviewRow {
                        what: p.filter.describe(),
                        count: p.count,
                        owners: p.owners,
                        fields,
                        all: p.filter == RevokeFilter::All,
                    });
                }
                Err(crate::app::AppError::Domain(e)) => error = Some(e.to_string()),
                Err(e) => return Err(viewer.fail(e)),
            },
        }
    }
    let page = RevocationsPage {
        c: viewer.chrome("Revoke tokens in bulk"),
        admin: viewer.actor.roles.admin,
        preview,
        error,
        confirmation: REVOKE_ALL_CONFIRMATION,
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

/// `POST /revocations`: starts the run, then its progress page.
pub async fn start(
    State(state): State<WebState>,
    viewer: Viewer,
    PageForm(form): PageForm<FilterFields>,
) -> Result<Response, PageError> {
    let filter = form.filter().map_err(|e| viewer.fail(e))?;
    let run = state
        .app
        .start_revocation(
            &viewer.actor,
            filter,
            form.reason.as_deref().unwrap_or_default(),
            form.confirm.as_deref(),
            &viewer.ctx,
        )
        .await;
    match run {
        Ok(run) => Ok(viewer.redirect(
            &format!("/revocations/{}", run.id),
            true,
            &format!("Revoking {} token(s).", run.total),
        )),
        Err(crate::app::AppError::Domain(e @ crate::domain::DomainError::Invalid(_))) => {
            Ok(viewer.redirect("/revocations", false, &e.to_string()))
        }
        Err(e) => Err(viewer.fail(e)),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/revocation.html")]
pub struct RevocationPage {
    pub c: Chrome,
    pub run: RevokeRun,
    pub remaining: i64,
    pub finished: bool,
    pub started: String,
}

/// `GET /revocations/{id}`: done, remaining and failed; the page refreshes itself until the
/// run is finished.
pub async fn show(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<i64>,
) -> Result<Response, PageError> {
    let run = state
        .app
        .revocation(&viewer.actor, id)
        .await
        .map_err(|e| viewer.fail(e))?;
    let page = RevocationPage {
        c: viewer.chrome(&format!("Revocation {id}")),
        remaining: run.remaining(),
        finished: run.finished_at.is_some(),
        started: super::view::when(run.created_at),
        run,
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

#[derive(Debug, Deserialize)]
pub struct RevokeAllForm {
    reason: Option<String>,
}

/// `POST /people/{login}/revoke-all`: off-boarding from the person's page.
pub async fn revoke_all(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(login): PagePath<String>,
    PageForm(form): PageForm<RevokeAllForm>,
) -> Result<Response, PageError> {
    let login = Login::parse(&login).map_err(|_| viewer.fail(ApiError::not_found()))?;
    if !viewer.actor.roles.can_look_up_people() {
        return Err(viewer.fail(ApiError::not_found()));
    }
    let reason = form
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or(crate::web::OFFBOARDING_REASON);
    let run = state
        .app
        .start_revocation(
            &viewer.actor,
            RevokeFilter::Owner(login.clone()),
            reason,
            None,
            &viewer.ctx,
        )
        .await
        .map_err(|e| viewer.fail(e))?;
    if run.total == 0 {
        let back = format!("/people/{}", login.path_segment());
        return Ok(viewer.redirect(&back, true, "Nothing to revoke: no live tokens."));
    }
    Ok(viewer.redirect(
        &format!("/revocations/{}", run.id),
        true,
        &format!("Revoking {} token(s) of {login}.", run.total),
    ))
}

//! `/audit`: the audit trail for auditors, filterable, with exports (JSON lines and CSV) of
//! everything the filters select.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::PageError;
use super::session::{Chrome, PageQuery, Viewer};
use super::view;
use crate::app::{AppError, AuditQuery};
use crate::domain::DomainError;
use crate::store::AuditEvent;
use crate::web::WebState;

const PAGE_SIZE: i64 = 100;
const EXPORT_BATCH: i64 = 1000;

#[derive(Debug, Default, Clone, Deserialize)]
pub struct AuditForm {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after: String,
}

impl AuditForm {
    fn query(&self, after_seq: Option<i64>, limit: i64) -> AuditQuery {
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        AuditQuery {
            actor: text(&self.actor),
            action: text(&self.action),
            target: text(&self.target),
            since: text(&self.since),
            until: text(&self.until),
            after_seq,
            limit: Some(limit),
        }
    }

    /// The filters as a query string (without the page).
    fn encoded(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("actor", &self.actor)
            .append_pair("action", &self.action)
            .append_pair("target", &self.target)
            .append_pair("since", &self.since)
            .append_pair("until", &self.until)
            .finish()
    }
}

pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub details: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/audit.html")]
pub struct AuditPage {
    pub c: Chrome,
    pub f: AuditForm,
    pub rows: Vec<AuditRow>,
    pub filters: String,
    pub next: Option<String>,
    pub error: Option<String>,
}

/// `GET /audit`.
pub async fn show(
    State(state): State<WebState>,
    viewer: Viewer,
    PageQuery(f): PageQuery<AuditForm>,
) -> Result<Response, PageError> {
    let after = f.after.trim().parse::<i64>().ok();
    let (events, error) = match state
        .app
        .audit_events(&viewer.actor, &f.query(after, PAGE_SIZE))
        .await
    {
        Ok(events) => (events, None),
        Err(AppError::Domain(DomainError::Invalid(fields))) => (
            Vec::new(),
            Some(
                fields
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        ),
        Err(e) => return Err(viewer.fail(e)),
    };
    let filters = f.encoded();
    let next = (events.len() as i64 == PAGE_SIZE)
        .then(|| {
            events
                .last()
                .map(|e| format!("/audit?{filters}&after={}", e.seq))
        })
        .flatten();
    let rows = events
        .iter()
        .map(|e| AuditRow {
            seq: e.seq,
            at: view::when(e.at),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            outcome: e.outcome.clone(),
            details: if e.details.as_object().is_some_and(|o| o.is_empty()) {
                String::new()
            } else {
                e.details.to_string()
            },
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let page = AuditPage {
        c: viewer.chrome("Audit trail"),
        f,
        rows,
        filters,
        next,
        error,
    };
    Ok(viewer.page(status, &page))
}

/// Every event the filters select, in pages.
async fn all_events(
    state: &WebState,
    viewer: &Viewer,
    f: &AuditForm,
) -> Result<Vec<AuditEvent>, PageError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let batch = state
            .app
            .audit_events(&viewer.actor, &f.query(after, EXPORT_BATCH))
            .await
            .map_err(|e| viewer.fail(e))?;
        let done = (batch.len() as i64) < EXPORT_BATCH;
        after = batch.last().map(|e| e.seq);
        all.extend(batch);
        if done || after.is_none() {
            return Ok(all);
        }
    }
}

fn download(content_type: &'static str, name: &'static str, body: String) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CONTENT_DISPOSITION, name)],
        body,
    )
        .into_response()
}

/// `GET /audit/export.jsonl`: one JSON object per line.
pub async fn export_jsonl(
    State(state): State<WebState>,
    viewer: Viewer,
    PageQuery(f): PageQuery<AuditForm>,
) -> Result<Response, PageError> {
    let events = all_events(&state, &viewer, &f).await?;
    let mut body = String::new();
    for e in &events {
        let line = serde_json::to_string(e)
            .map_err(|e| viewer.fail(crate::web::ApiError::internal(&e)))?;
        body.push_str(&line);
        body.push('\n');
    }
    Ok(download(
        "application/x-ndjson",
        "attachment; filename=\"audit.jsonl\"",
        body,
    ))
}

/// `GET /audit/export.csv`.
pub async fn export_csv(
    State(state): State<WebState>,
    viewer: Viewer,
    PageQuery(f): PageQuery<AuditForm>,
) -> Result<Response, PageError> {
    let events = all_events(&state, &viewer, &f).await?;
    let mut body = format!("{}\r\n", crate::store::AuditEvent::CSV_HEADER);
    for e in &events {
        body.push_str(&e.csv_row());
        body.push_str("\r\n");
    }
    Ok(download(
        "text/csv; charset=utf-8",
        "attachment; filename=\"audit.csv\"",
        body,
    ))
}

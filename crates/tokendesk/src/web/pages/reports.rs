//! `/reports` (admins and auditors): how requests and tokens have gone. Each report of
//! [`Chart::ALL`] is a chart drawn on the server as inline SVG (see [`super::charts`]), a
//! sentence saying what it shows, a table of its numbers and a CSV file at
//! `/reports/{slug}.csv` (the chart alone at `/reports/{slug}.svg`).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::charts;
use super::error::PageError;
use super::session::{Chrome, PagePath, Viewer};
use super::view;
use crate::app::{Chart, ReportData};
use crate::web::{ApiError, WebState};

/// One report on the page.
pub struct Section {
    pub slug: &'static str,
    pub title: &'static str,
    pub summary: String,
    /// The chart, inline (`None` for a report that is only a table).
    pub svg: Option<String>,
    pub header: Vec<String>,
    /// How many of a row's first cells are labels (the rest are numbers).
    pub labels: usize,
    pub rows: Vec<Vec<String>>,
    /// Rows left off the page's table (each group, a month, shows its first
    /// [`ROWS_PER_GROUP`]); the CSV file has them all.
    pub more: usize,
}

impl Section {
    pub fn rows_per_group(&self) -> usize {
        ROWS_PER_GROUP
    }
}

/// A report grouped by month shows this many rows of each month on the page (the most
/// requested purposes first); the CSV file has every row.
pub const ROWS_PER_GROUP: usize = 20;

#[derive(Template, WebTemplate)]
#[template(path = "pages/reports.html")]
pub struct ReportsPage {
    pub c: Chrome,
    pub as_of: String,
    pub sections: Vec<Section>,
}

fn drawing_failed(viewer: &Viewer, why: String) -> PageError {
    viewer.fail(ApiError::internal(&std::io::Error::other(why)))
}

fn section(viewer: &Viewer, data: &ReportData) -> Result<Section, PageError> {
    let slug = data.chart.slug();
    let summary_id = format!("{slug}-summary");
    let svg = charts::svg(data, Some(&summary_id)).map_err(|e| drawing_failed(viewer, e))?;
    // A table grouped by its first label (a month) shows that group's first rows only.
    let grouped = data.label_columns.len() > 1;
    let mut in_group = 0;
    let mut last_group: Option<&str> = None;
    let shown: Vec<&crate::app::ReportRow> = data
        .rows
        .iter()
        .filter(|r| {
            if !grouped {
                return true;
            }
            let group = r.labels.first().map(String::as_str);
            if group != last_group {
                last_group = group;
                in_group = 0;
            }
            in_group += 1;
            in_group <= ROWS_PER_GROUP
        })
        .collect();
    let more = data.rows.len() - shown.len();
    let rows = shown
        .into_iter()
        .map(|r| {
            r.labels
                .iter()
                .cloned()
                .chain(
                    data.cells(r)
                        .into_iter()
                        .map(|c| if c.is_empty() { "–".to_owned() } else { c }),
                )
                .collect()
        })
        .collect();
    Ok(Section {
        slug,
        title: data.chart.title(),
        summary: data.summary.clone(),
        svg,
        header: data.header(),
        labels: data.label_columns.len(),
        rows,
        more,
    })
}

/// `GET /reports`.
pub async fn show(State(state): State<WebState>, viewer: Viewer) -> Result<Response, PageError> {
    let reports = state
        .app
        .reports(&viewer.actor)
        .await
        .map_err(|e| viewer.fail(e))?;
    let as_of = reports
        .first()
        .map_or_else(|| view::when(state.app.now()), |r| view::when(r.as_of));
    let sections = reports
        .iter()
        .map(|r| section(&viewer, r))
        .collect::<Result<Vec<_>, _>>()?;
    let page = ReportsPage {
        c: viewer.chrome("Reports"),
        as_of,
        sections,
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

fn download(content_type: &'static str, name: String, body: String) -> Response {
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CONTENT_DISPOSITION, disposition),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// `GET /reports/{file}`: `{slug}.csv`, the report's numbers; `{slug}.svg`, its chart alone.
pub async fn file(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(file): PagePath<String>,
) -> Result<Response, PageError> {
    let (slug, ext) = file.rsplit_once('.').unwrap_or((file.as_str(), ""));
    let chart = Chart::from_slug(slug)
        .filter(|c| ext == "csv" || (ext == "svg" && c.drawing() != crate::app::Drawing::TableOnly))
        .ok_or_else(|| viewer.fail(ApiError::not_found()))?;
    let data = state
        .app
        .report(&viewer.actor, chart)
        .await
        .map_err(|e| viewer.fail(e))?;
    if ext == "csv" {
        return Ok(download(
            "text/csv; charset=utf-8",
            file.clone(),
            data.csv(),
        ));
    }
    let svg = charts::svg(&data, None)
        .map_err(|e| drawing_failed(&viewer, e))?
        .ok_or_else(|| viewer.fail(ApiError::not_found()))?;
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static("image/svg+xml")),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{svg}"),
    )
        .into_response())
}

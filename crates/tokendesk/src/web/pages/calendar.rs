//! `/calendar/SECRET.ics` (the feed, for calendar clients: no sign-in, the address is the key)
//! and `/me/calendar`, `/me/calendar/stop` (make a new address, stop the feed).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::envelope::Empty;
use super::error::PageError;
use super::requests::after;
use super::session::{PageForm, PagePath, Viewer};
use crate::web::{ApiError, WebState};

/// `GET /calendar/{secret}.ics`.
pub async fn feed(
    State(state): State<WebState>,
    PagePath(file): PagePath<String>,
) -> Result<Response, PageError> {
    let secret = file.strip_suffix(".ics").unwrap_or("");
    let feed = state
        .app
        .calendar_feed(secret)
        .await
        .map_err(|e| PageError::plain(e.into()))?
        .ok_or_else(|| PageError::plain(ApiError::not_found()))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/calendar; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "inline; filename=\"canvas-tokens.ics\"",
            ),
        ],
        feed,
    )
        .into_response())
}

/// `POST /me/calendar`: a new feed address (the old one stops working).
pub async fn create(
    State(state): State<WebState>,
    viewer: Viewer,
    PageForm(Empty {}): PageForm<Empty>,
) -> Result<Response, PageError> {
    let result = state
        .app
        .new_calendar(&viewer.actor, &viewer.ctx)
        .await
        .map(|_| {
            "A new calendar address is ready below; any earlier one no longer works.".to_owned()
        });
    after(&viewer, "/me#calendar", result)
}

/// `POST /me/calendar/stop`.
pub async fn stop(
    State(state): State<WebState>,
    viewer: Viewer,
    PageForm(Empty {}): PageForm<Empty>,
) -> Result<Response, PageError> {
    let result = state
        .app
        .stop_calendar(&viewer.actor, &viewer.ctx)
        .await
        .map(|_| "The calendar feed is stopped: its address no longer works.".to_owned());
    after(&viewer, "/me#calendar", result)
}

//! `/api/v1/me/calendar`: the signed-in person's calendar feed address (see
//! [`crate::app::App::calendar_feed`]); the feed itself is served at `/calendar/SECRET.ics`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::WebState;
use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{JsonBody, NoFields};
use super::openapi::{Always, Body, Refusable};

pub(super) fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(show))
        .routes(routes!(create))
        .routes(routes!(stop))
}

/// A person's calendar feed.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CalendarFeed)]
pub struct CalendarJson {
    /// The feed's secret address (iCalendar), or none. Anyone with it can read the feed: the
    /// expiry days and purposes of the person's tokens.
    pub url: Option<String>,
}

/// The caller's feed address, if they made one.
#[utoipa::path(
    get,
    path = "/me/calendar",
    tag = "people",
    operation_id = "getCalendar",
    responses((status = 200, description = "The feed", body = CalendarJson), Always),
)]
async fn show(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
) -> ApiResult<Json<CalendarJson>> {
    Ok(Json(CalendarJson {
        url: state.app.calendar_url(&actor).await?,
    }))
}

/// A new feed address for the caller; an earlier one stops working.
#[utoipa::path(
    post,
    path = "/me/calendar",
    tag = "people",
    operation_id = "newCalendar",
    request_body = NoFields,
    responses((status = 200, description = "The new feed", body = CalendarJson), Always, Body, Refusable),
)]
async fn create(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<CalendarJson>> {
    Ok(Json(CalendarJson {
        url: Some(state.app.new_calendar(&actor, &ctx).await?),
    }))
}

/// Stop the caller's feed: its address stops working.
#[utoipa::path(
    post,
    path = "/me/calendar/stop",
    tag = "people",
    operation_id = "stopCalendar",
    request_body = NoFields,
    responses((status = 200, description = "No feed any more", body = CalendarJson), Always, Body),
)]
async fn stop(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<CalendarJson>> {
    state.app.stop_calendar(&actor, &ctx).await?;
    Ok(Json(CalendarJson { url: None }))
}

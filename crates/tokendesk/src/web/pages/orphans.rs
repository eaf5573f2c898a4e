//! `/orphans` (admins): tokens in Canvas whose purpose says tokendesk made them but that it does
//! not know, each with Delete.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::envelope::Empty;
use super::error::PageError;
use super::requests::{after, id_of};
use super::session::{Chrome, PageForm, PagePath, Viewer};
use super::view;
use crate::web::WebState;

pub struct OrphanRow {
    pub id: i64,
    pub canvas_user_id: i64,
    pub canvas_token_id: i64,
    pub owner: String,
    pub purpose: String,
    pub hint: String,
    pub expires: String,
    pub found: String,
    pub seen: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/orphans.html")]
pub struct OrphansPage {
    pub c: Chrome,
    pub rows: Vec<OrphanRow>,
}

/// `GET /orphans`.
pub async fn show(State(state): State<WebState>, viewer: Viewer) -> Result<Response, PageError> {
    let orphans = state
        .app
        .orphans(&viewer.actor)
        .await
        .map_err(|e| viewer.fail(e))?;
    let rows = orphans
        .iter()
        .map(|o| OrphanRow {
            id: o.id,
            canvas_user_id: o.canvas_user_id,
            canvas_token_id: o.canvas_token_id,
            owner: o
                .owner
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            purpose: o.purpose.clone(),
            hint: o.hint.clone(),
            expires: o
                .canvas_expires_at
                .map_or_else(|| "never".to_owned(), view::when),
            found: view::when(o.found_at),
            seen: view::when(o.seen_at),
        })
        .collect();
    let page = OrphansPage {
        c: viewer.chrome("Orphaned tokens"),
        rows,
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

/// `POST /orphans/{id}/delete`.
pub async fn delete(
    State(state): State<WebState>,
    viewer: Viewer,
    PagePath(id): PagePath<String>,
    PageForm(Empty {}): PageForm<Empty>,
) -> Result<Response, PageError> {
    let id = id_of(&id)?;
    let result = state
        .app
        .delete_orphan(&viewer.actor, id, &viewer.ctx)
        .await
        .map(|o| {
            format!(
                "Deleted in Canvas: token {} of Canvas user {}.",
                o.canvas_token_id, o.canvas_user_id
            )
        });
    after(&viewer, "/orphans", result)
}

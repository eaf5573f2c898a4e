//! `/api/v1/envelopes`: the owner's sealed delivery of a token value.
//!
//! The server holds only the ciphertext; the key is in the owner's emailed link (its fragment),
//! so `reveal` hands out the ciphertext and the browser decrypts it.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use time::OffsetDateTime;

use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{JsonBody, NoFields, StrPath};
use super::{Routes, WebState, utc};
use crate::app::EnvelopeView;

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .get("/envelopes/{id}", show)
        .post("/envelopes/{id}/reveal", reveal)
        .post("/envelopes/{id}/burn", burn)
}

/// An envelope as its owner sees it.
#[derive(Debug, Serialize)]
pub struct EnvelopeJson {
    pub id: String,
    pub request_id: i64,
    pub owner: String,
    /// `sealed`, `revealed`, `burned` or `expired`.
    pub state: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub reveals_left: u32,
}

impl From<EnvelopeView> for EnvelopeJson {
    fn from(e: EnvelopeView) -> EnvelopeJson {
        EnvelopeJson {
            id: e.id,
            request_id: e.request_id.0,
            owner: e.owner.to_string(),
            state: e.state.as_str(),
            expires_at: utc(e.expires_at),
            reveals_left: e.reveals_left,
        }
    }
}

/// What a reveal hands out: AES-256-GCM nonce and ciphertext (tag appended), base64url.
#[derive(Debug, Serialize)]
pub struct RevealJson {
    pub nonce: String,
    pub ciphertext: String,
    pub reveals_left: u32,
    pub state: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

async fn show(
    State(state): State<WebState>,
    SignedIn { actor, .. }: SignedIn,
    StrPath(id): StrPath,
) -> ApiResult<Json<EnvelopeJson>> {
    let envelope = state.app.envelope(&actor, &id).await?;
    Ok(Json(envelope.into()))
}

async fn reveal(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    StrPath(id): StrPath,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<RevealJson>> {
    let (sealed, view) = state.app.reveal(&actor, &id, &ctx).await?;
    Ok(Json(RevealJson {
        nonce: sealed.nonce_b64(),
        ciphertext: sealed.ciphertext_b64(),
        reveals_left: view.reveals_left,
        state: view.state.as_str(),
        expires_at: utc(view.expires_at),
    }))
}

async fn burn(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    StrPath(id): StrPath,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<EnvelopeJson>> {
    let envelope = state.app.burn(&actor, &id, &ctx).await?;
    Ok(Json(envelope.into()))
}

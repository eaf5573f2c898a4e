//! `/api/v1/envelopes`: the owner's sealed delivery of a token value.
//!
//! The server holds only the ciphertext; the key is in the owner's emailed link (its fragment),
//! so `reveal` hands out the ciphertext and the browser decrypts it.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use time::OffsetDateTime;

use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::SignedIn;
use super::error::ApiResult;
use super::extract::{JsonBody, NoFields, StrPath};
use super::openapi::{Always, Body, Conflicting, Limited, Named};
use super::{WebState, utc};
use crate::app::EnvelopeView;
use crate::domain::envelope::EnvelopeState;

pub(super) fn routes() -> OpenApiRouter<WebState> {
    OpenApiRouter::new()
        .routes(routes!(show))
        .routes(routes!(reveal))
        .routes(routes!(burn))
}

/// An envelope as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Envelope)]
pub struct EnvelopeJson {
    pub id: String,
    pub request_id: i64,
    pub owner: String,
    /// `sealed`, `revealed`, `burned` or `expired`.
    pub state: EnvelopeState,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    pub reveals_left: u32,
}

impl From<EnvelopeView> for EnvelopeJson {
    fn from(e: EnvelopeView) -> EnvelopeJson {
        EnvelopeJson {
            id: e.id,
            request_id: e.request_id.0,
            owner: e.owner.to_string(),
            state: e.state,
            expires_at: utc(e.expires_at),
            reveals_left: e.reveals_left,
        }
    }
}

/// What a reveal hands out: AES-256-GCM nonce and ciphertext (tag appended). The key is only in
/// the owner's emailed link.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Reveal)]
pub struct RevealJson {
    /// The 12-byte AES-GCM nonce, base64url without padding.
    pub nonce: String,
    /// The ciphertext with the 16-byte tag appended, base64url without padding.
    pub ciphertext: String,
    pub reveals_left: u32,
    pub state: EnvelopeState,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

/// An envelope (its owner only; anyone else: not found).
#[utoipa::path(
    get,
    path = "/envelopes/{id}",
    tag = "envelopes",
    operation_id = "getEnvelope",
    params(("id" = String, Path, description = "The envelope")),
    responses(
        (status = 200, description = "The envelope", body = EnvelopeJson),
        Always, Named, Limited,
    ),
)]
async fn show(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    StrPath(id): StrPath,
) -> ApiResult<Json<EnvelopeJson>> {
    state.limit_envelope_lookup(&actor, &ctx)?;
    let envelope = state.app.envelope(&actor, &id).await?;
    Ok(Json(envelope.into()))
}

/// Reveal the sealed value (counted; at most `max_reveals` times): the ciphertext, which the
/// browser opens with the key from its link.
#[utoipa::path(
    post,
    path = "/envelopes/{id}/reveal",
    tag = "envelopes",
    operation_id = "revealEnvelope",
    params(("id" = String, Path, description = "The envelope")),
    request_body = NoFields,
    responses(
        (status = 200, description = "The sealed value", body = RevealJson),
        Always, Body, Named, Conflicting, Limited,
    ),
)]
async fn reveal(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    StrPath(id): StrPath,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<RevealJson>> {
    state.limit_envelope_lookup(&actor, &ctx)?;
    state.limit(
        crate::limits::Limit::Reveal,
        &format!("login:{}", actor.login),
    )?;
    let (sealed, view) = state.app.reveal(&actor, &id, &ctx).await?;
    Ok(Json(RevealJson {
        nonce: sealed.nonce_b64(),
        ciphertext: sealed.ciphertext_b64(),
        reveals_left: view.reveals_left,
        state: view.state,
        expires_at: utc(view.expires_at),
    }))
}

/// Destroy the envelope ("I have saved it"): its ciphertext is erased.
#[utoipa::path(
    post,
    path = "/envelopes/{id}/burn",
    tag = "envelopes",
    operation_id = "burnEnvelope",
    params(("id" = String, Path, description = "The envelope")),
    request_body = NoFields,
    responses(
        (status = 200, description = "Burned", body = EnvelopeJson),
        Always, Body, Named, Conflicting, Limited,
    ),
)]
async fn burn(
    State(state): State<WebState>,
    SignedIn { actor, ctx }: SignedIn,
    StrPath(id): StrPath,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult<Json<EnvelopeJson>> {
    state.limit_envelope_lookup(&actor, &ctx)?;
    let envelope = state.app.burn(&actor, &id, &ctx).await?;
    Ok(Json(envelope.into()))
}

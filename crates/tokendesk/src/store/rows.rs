//! Reading rows back into domain values.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::{Date, OffsetDateTime};

use super::{Person, StoreError, StoreResult, from_ts};
use crate::domain::envelope::{Envelope, EnvelopeState};
use crate::domain::request::{Request, RequestState, parse_date};
use crate::domain::{Login, RequestId, TokenId};

fn login(raw: String) -> StoreResult<Login> {
    Login::parse(&raw).map_err(|e| StoreError::Corrupt(format!("login {raw:?}: {}", e.message)))
}

fn date(raw: &str) -> StoreResult<Date> {
    parse_date("date", raw).map_err(|_| StoreError::Corrupt(format!("date {raw:?}")))
}

pub(super) fn person(r: &AnyRow) -> StoreResult<Person> {
    Ok(Person {
        login: login(r.try_get("login")?)?,
        name: r.try_get("name")?,
        email: r.try_get("email")?,
        canvas_user_id: r.try_get("canvas_user_id")?,
    })
}

pub(super) fn request(r: &AnyRow) -> StoreResult<Request> {
    let state: String = r.try_get("state")?;
    Ok(Request {
        id: RequestId(r.try_get("id")?),
        requester: login(r.try_get("requester")?)?,
        purpose: r.try_get("purpose")?,
        application: r.try_get("application")?,
        requested_expires_on: date(&r.try_get::<String, _>("requested_expires_on")?)?,
        expires_on: date(&r.try_get::<String, _>("expires_on")?)?,
        state: state
            .parse::<RequestState>()
            .map_err(|_| StoreError::Corrupt(format!("request state {state:?}")))?,
        created_at: from_ts(r.try_get("created_at")?)?,
        updated_at: from_ts(r.try_get("updated_at")?)?,
        decided_by: r
            .try_get::<Option<String>, _>("decided_by")?
            .map(login)
            .transpose()?,
        reason: r.try_get("reason")?,
    })
}

/// A Canvas token's state as tokendesk last saw it (Canvas's `workflow_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Pending,
    Active,
    Deleted,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Pending => "pending",
            TokenState::Active => "active",
            TokenState::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "pending" => Ok(TokenState::Pending),
            "active" => Ok(TokenState::Active),
            "deleted" => Ok(TokenState::Deleted),
            other => Err(StoreError::Corrupt(format!("token state {other:?}"))),
        }
    }
}

/// A token tokendesk created in Canvas. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub id: TokenId,
    pub request_id: RequestId,
    pub owner: Login,
    pub canvas_user_id: i64,
    pub canvas_token_id: i64,
    pub hint: String,
    pub state: TokenState,
    pub expires_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

pub(super) fn token(r: &AnyRow) -> StoreResult<StoredToken> {
    token_in(r, "")
}

/// The token whose columns are named `{prefix}id`, `{prefix}owner`, … (a joined row).
pub(super) fn token_in(r: &AnyRow, prefix: &str) -> StoreResult<StoredToken> {
    let col = |name: &str| format!("{prefix}{name}");
    Ok(StoredToken {
        id: TokenId(r.try_get(col("id").as_str())?),
        request_id: RequestId(r.try_get(col("request_id").as_str())?),
        owner: login(r.try_get(col("owner").as_str())?)?,
        canvas_user_id: r.try_get(col("canvas_user_id").as_str())?,
        canvas_token_id: r.try_get(col("canvas_token_id").as_str())?,
        hint: r.try_get(col("hint").as_str())?,
        state: TokenState::parse(&r.try_get::<String, _>(col("state").as_str())?)?,
        expires_at: from_ts(r.try_get(col("expires_at").as_str())?)?,
        created_at: from_ts(r.try_get(col("created_at").as_str())?)?,
        updated_at: from_ts(r.try_get(col("updated_at").as_str())?)?,
    })
}

/// An envelope with its sealed content while it is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    pub envelope: Envelope,
    /// `(nonce, ciphertext with tag)`; `None` once erased.
    pub sealed: Option<(Vec<u8>, Vec<u8>)>,
}

pub(super) fn envelope(r: &AnyRow) -> StoreResult<StoredEnvelope> {
    let nonce: Option<Vec<u8>> = r.try_get("nonce")?;
    let ciphertext: Option<Vec<u8>> = r.try_get("ciphertext")?;
    Ok(StoredEnvelope {
        envelope: envelope_in(r, "")?,
        sealed: nonce.zip(ciphertext),
    })
}

/// The envelope (without its sealed content) whose columns are named `{prefix}id`, … .
pub(super) fn envelope_in(r: &AnyRow, prefix: &str) -> StoreResult<Envelope> {
    let col = |name: &str| format!("{prefix}{name}");
    let state: String = r.try_get(col("state").as_str())?;
    let reveals: i64 = r.try_get(col("reveals").as_str())?;
    Ok(Envelope {
        id: r.try_get(col("id").as_str())?,
        request_id: RequestId(r.try_get(col("request_id").as_str())?),
        owner: login(r.try_get(col("owner").as_str())?)?,
        state: EnvelopeState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("envelope state {state:?}")))?,
        reveals: u32::try_from(reveals)
            .map_err(|_| StoreError::Corrupt(format!("reveals {reveals}")))?,
        created_at: from_ts(r.try_get(col("created_at").as_str())?)?,
        expires_at: from_ts(r.try_get(col("expires_at").as_str())?)?,
    })
}

//! A token request and its lifecycle:
//! `submitted → approved → issued → activated → expired | revoked`, with the side exits
//! `denied`, `cancelled` and `failed` (issuance gave up; an approver may retry).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Date, Duration, OffsetDateTime};

use super::policy::{APPLICATION_MAX_CHARS, PURPOSE_MAX_CHARS, REASON_MAX_CHARS};
use super::{
    Actor, AuditRecord, Change, DomainError, Effect, FieldError, Login, Policy, RequestId, SYSTEM,
};

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Submitted,
    Approved,
    Issued,
    Activated,
    Expired,
    Revoked,
    Denied,
    Cancelled,
    Failed,
}

impl RequestState {
    pub const ALL: [RequestState; 9] = [
        RequestState::Submitted,
        RequestState::Approved,
        RequestState::Issued,
        RequestState::Activated,
        RequestState::Expired,
        RequestState::Revoked,
        RequestState::Denied,
        RequestState::Cancelled,
        RequestState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Submitted => "submitted",
            RequestState::Approved => "approved",
            RequestState::Issued => "issued",
            RequestState::Activated => "activated",
            RequestState::Expired => "expired",
            RequestState::Revoked => "revoked",
            RequestState::Denied => "denied",
            RequestState::Cancelled => "cancelled",
            RequestState::Failed => "failed",
        }
    }

    /// Still waiting for a token: counts against `max_open_requests_per_person`.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            RequestState::Submitted | RequestState::Approved | RequestState::Failed
        )
    }

    /// A token exists in Canvas for it: counts against `max_active_tokens_per_person`.
    pub fn holds_token(self) -> bool {
        matches!(self, RequestState::Issued | RequestState::Activated)
    }
}

impl super::StateSet for RequestState {
    const ALL: &'static [RequestState] = &RequestState::ALL;

    fn as_str(self) -> &'static str {
        RequestState::as_str(self)
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestState {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RequestState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = RequestState::ALL.iter().map(|s| s.as_str()).collect();
                FieldError::new(
                    "state",
                    "invalid",
                    format!("unknown state {s:?}; use one of {}", names.join(", ")),
                )
            })
    }
}

/// A request as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: RequestId,
    pub requester: Login,
    pub purpose: String,
    pub application: Option<String>,
    /// The expiry date the requester asked for.
    pub requested_expires_on: Date,
    /// The expiry date in force: the requested one, or the earlier one an approver set.
    pub expires_on: Date,
    pub state: RequestState,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// The approver who approved or denied it.
    pub decided_by: Option<Login>,
    /// Why it was denied, why issuance failed, or why the token was revoked or expired.
    pub reason: Option<String>,
    /// The earlier request whose token this one renews.
    pub renews: Option<RequestId>,
}

/// A validated new request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    pub purpose: String,
    pub application: Option<String>,
    pub expires_on: Date,
    /// The earlier request whose token this one renews.
    pub renews: Option<RequestId>,
}

/// The raw fields of a request form or API body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawNewRequest {
    pub purpose: Option<String>,
    pub expires_on: Option<String>,
    pub application: Option<String>,
}

/// What a person already has, for the per-person limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holdings {
    pub open_requests: u32,
    pub live_tokens: u32,
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(field: &'static str, raw: &str) -> Result<Date, FieldError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(raw.trim(), &format).map_err(|_| {
        FieldError::new(
            field,
            "invalid_date",
            format!("{field} must be a date written YYYY-MM-DD, such as 2027-01-31"),
        )
    })
}

/// The latest expiry date allowed today.
pub fn latest_expiry(policy: &Policy, today: Date) -> Date {
    today.saturating_add(Duration::days(i64::from(policy.max_lifetime_days)))
}

fn check_expiry(
    field: &'static str,
    date: Date,
    policy: &Policy,
    today: Date,
) -> Result<(), FieldError> {
    let earliest = today.saturating_add(Duration::days(1));
    let latest = latest_expiry(policy, today);
    if date < earliest || date > latest {
        return Err(FieldError::new(
            field,
            "out_of_range",
            format!(
                "{field} must be between {earliest} and {latest} (from tomorrow to {} days from today)",
                policy.max_lifetime_days
            ),
        ));
    }
    Ok(())
}

/// A free-text field: trimmed; `None` when empty and optional.
pub(crate) fn text(
    field: &'static str,
    raw: Option<&str>,
    min: usize,
    max: usize,
) -> Result<Option<String>, FieldError> {
    let value = raw.map(str::trim).unwrap_or("");
    let chars = value.chars().count();
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(FieldError::new(
            field,
            "invalid",
            format!("{field} contains control characters"),
        ));
    }
    if let Some(c) = value.chars().find(|c| super::is_bidi_or_invisible(*c)) {
        return Err(FieldError::new(
            field,
            "invisible_characters",
            format!(
                "{field} contains U+{:04X}, a character that reorders or hides text (so that what an approver reads is not what was written); remove it",
                u32::from(c)
            ),
        ));
    }
    if chars == 0 && min == 0 {
        return Ok(None);
    }
    if chars < min.max(1) {
        let message = if min <= 1 {
            format!("{field} is required")
        } else {
            format!("{field} must be at least {min} characters: say what the token is for")
        };
        return Err(FieldError::new(
            field,
            if chars == 0 { "required" } else { "too_short" },
            message,
        ));
    }
    if chars > max {
        return Err(FieldError::new(
            field,
            "too_long",
            format!("{field} must be at most {max} characters (it has {chars})"),
        ));
    }
    Ok(Some(value.to_owned()))
}

/// Validates a new request; reports every wrong field at once.
pub fn parse_new_request(
    raw: &RawNewRequest,
    policy: &Policy,
    today: Date,
) -> Result<NewRequest, DomainError> {
    let mut errors = Vec::new();
    let min = policy.purpose_min_chars as usize;
    let purpose = text(
        "purpose",
        raw.purpose.as_deref(),
        min.max(1),
        PURPOSE_MAX_CHARS,
    )
    .map_err(|e| errors.push(e))
    .ok()
    .flatten();
    let application = text(
        "application",
        raw.application.as_deref(),
        0,
        APPLICATION_MAX_CHARS,
    )
    .map_err(|e| errors.push(e))
    .ok()
    .flatten();
    let expires_on = match raw.expires_on.as_deref().map(str::trim) {
        None | Some("") => {
            errors.push(FieldError::new(
                "expires_on",
                "required",
                format!(
                    "expires_on is required: a date from tomorrow to {} days from today",
                    policy.max_lifetime_days
                ),
            ));
            None
        }
        Some(s) => parse_date("expires_on", s)
            .and_then(|d| check_expiry("expires_on", d, policy, today).map(|()| d))
            .map_err(|e| errors.push(e))
            .ok(),
    };
    match (purpose, expires_on) {
        (Some(purpose), Some(expires_on)) if errors.is_empty() => Ok(NewRequest {
            purpose,
            application,
            expires_on,
            renews: None,
        }),
        _ => Err(DomainError::Invalid(errors)),
    }
}

/// A person asks for a token.
pub fn submit(
    actor: &Actor,
    new: NewRequest,
    holdings: Holdings,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<Change<NewRequest>, DomainError> {
    if holdings.open_requests >= policy.max_open_requests_per_person {
        return Err(DomainError::Conflict {
            code: "too_many_open_requests",
            message: format!(
                "you already have {} open request(s), the most allowed; wait for a decision or cancel one",
                holdings.open_requests
            ),
        });
    }
    // A renewal replaces the token it renews: it does not add one.
    if new.renews.is_none() && holdings.live_tokens >= policy.max_active_tokens_per_person {
        return Err(DomainError::Conflict {
            code: "too_many_tokens",
            message: format!(
                "you already hold {} live token(s), the most allowed; revoke one you no longer need first",
                holdings.live_tokens
            ),
        });
    }
    let _ = now;
    let audit = AuditRecord {
        actor: actor.login.to_string(),
        action: if new.renews.is_some() {
            "request.renew"
        } else {
            "request.submit"
        },
        target: String::new(),
        outcome: "ok",
        details: json!({
            "expires_on": new.expires_on.to_string(),
            "application": new.application,
            "purpose_chars": new.purpose.chars().count(),
            "renews": new.renews.map(|id| id.0),
        }),
    };
    Ok(Change {
        state: new,
        audit,
        effects: vec![Effect::NotifyApprovers],
    })
}

fn audit(
    actor: &str,
    action: &'static str,
    request: &Request,
    details: serde_json::Value,
) -> AuditRecord {
    AuditRecord {
        actor: actor.to_owned(),
        action,
        target: format!("request:{}", request.id),
        outcome: "ok",
        details,
    }
}

fn require_state(
    request: &Request,
    action: &'static str,
    allowed: &[RequestState],
) -> Result<(), DomainError> {
    if allowed.contains(&request.state) {
        Ok(())
    } else {
        Err(DomainError::WrongState {
            action,
            current: request.state,
        })
    }
}

/// Whether the actor may see the request at all (owner, reviewers, support).
pub fn visible_to(request: &Request, actor: &Actor) -> bool {
    actor.is(&request.requester) || actor.roles.can_look_up_people()
}

fn require_reviewer(request: &Request, actor: &Actor, action: &str) -> Result<(), DomainError> {
    if !visible_to(request, actor) {
        return Err(DomainError::NotFound);
    }
    if !actor.roles.can_review() {
        return Err(DomainError::Forbidden(format!(
            "only approvers can {action} requests"
        )));
    }
    if actor.is(&request.requester) {
        return Err(DomainError::Forbidden(format!(
            "you cannot {action} your own request; another approver must"
        )));
    }
    Ok(())
}

fn reason(raw: Option<&str>) -> Result<String, DomainError> {
    text("reason", raw, 1, REASON_MAX_CHARS)
        .map_err(|e| DomainError::Invalid(vec![e]))?
        .ok_or_else(|| DomainError::field("reason", "required", "reason is required"))
}

fn moved(request: &Request, state: RequestState, now: OffsetDateTime) -> Request {
    Request {
        state,
        updated_at: now,
        ..request.clone()
    }
}

/// What a person may do to a request. The pages offer exactly the actions [`allowed`] says,
/// and every transition checks the same rule (`may_*`) first, so the two cannot differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Approve,
    Deny,
    Cancel,
    Retry,
    Revoke,
    /// The help desk sends a new delivery link.
    ResendLink,
    /// The owner asks for a renewal of a live token.
    Renew,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Approve,
        Action::Deny,
        Action::Cancel,
        Action::Retry,
        Action::Revoke,
        Action::ResendLink,
        Action::Renew,
    ];
}

/// Where the delivery of an issued token stands, for [`Action::ResendLink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The token is still pending in Canvas (not activated).
    pub token_pending: bool,
    /// The newest envelope's state now, and how often it was revealed.
    pub envelope: Option<(super::envelope::EnvelopeState, u32)>,
}

/// Whether the rules let `actor` take `action` on `request` now (before any input such as a
/// reason or a date is looked at): the same checks the action's transition makes.
pub fn allowed(
    request: &Request,
    actor: &Actor,
    action: Action,
    delivery: Option<Delivery>,
    policy: &Policy,
    now: OffsetDateTime,
) -> bool {
    match action {
        Action::Approve => may_approve(request, actor).is_ok(),
        Action::Deny => may_deny(request, actor).is_ok(),
        Action::Cancel => may_cancel(request, actor).is_ok(),
        Action::Retry => may_retry(request, actor, policy, now).is_ok(),
        Action::Revoke => may_revoke(request, actor).is_ok(),
        Action::ResendLink => delivery.is_some_and(|d| may_resend_link(request, actor, d).is_ok()),
        Action::Renew => may_renew(request, actor).is_ok(),
    }
}

/// Approvers approve submitted requests, never their own.
pub fn may_approve(request: &Request, actor: &Actor) -> Result<(), DomainError> {
    require_reviewer(request, actor, "approve")?;
    require_state(request, "approve", &[RequestState::Submitted])
}

/// Approvers deny submitted (or failed) requests, never their own.
pub fn may_deny(request: &Request, actor: &Actor) -> Result<(), DomainError> {
    require_reviewer(request, actor, "deny")?;
    require_state(
        request,
        "deny",
        &[RequestState::Submitted, RequestState::Failed],
    )
}

/// What only the request's owner may do: unknown to those who may not see it, refused (with
/// `refusal`) to those who may.
fn owner_only(request: &Request, actor: &Actor, refusal: &str) -> Result<(), DomainError> {
    if !visible_to(request, actor) {
        return Err(DomainError::NotFound);
    }
    if !actor.is(&request.requester) {
        return Err(DomainError::Forbidden(refusal.to_owned()));
    }
    Ok(())
}

/// The requester withdraws a request that has no token yet and is not being issued.
pub fn may_cancel(request: &Request, actor: &Actor) -> Result<(), DomainError> {
    owner_only(
        request,
        actor,
        "only the requester can cancel a request; approvers deny instead",
    )?;
    require_state(
        request,
        "cancel",
        &[RequestState::Submitted, RequestState::Failed],
    )
}

/// Approvers retry a failed issuance whose expiry is still allowed.
pub fn may_retry(
    request: &Request,
    actor: &Actor,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<(), DomainError> {
    if !visible_to(request, actor) {
        return Err(DomainError::NotFound);
    }
    if !actor.roles.can_review() {
        return Err(DomainError::Forbidden(
            "only approvers can retry issuance".into(),
        ));
    }
    require_state(request, "retry", &[RequestState::Failed])?;
    check_expiry("expires_on", request.expires_on, policy, now.date()).map_err(|_| {
        DomainError::Conflict {
            code: "expiry_passed",
            message: format!(
                "the approved expiry {} is no longer allowed; deny this request and ask for a new one",
                request.expires_on
            ),
        }
    })
}

/// The owner or the help desk revokes a live token.
pub fn may_revoke(request: &Request, actor: &Actor) -> Result<(), DomainError> {
    let owner = actor.is(&request.requester);
    if !owner && !actor.roles.can_look_up_people() {
        return Err(DomainError::NotFound);
    }
    if !owner && !actor.roles.can_support() {
        return Err(DomainError::Forbidden(
            "only the owner or the help desk can revoke a token".into(),
        ));
    }
    require_state(
        request,
        "revoke",
        &[RequestState::Issued, RequestState::Activated],
    )
}

/// The help desk sends a new delivery link while the token is still pending in Canvas and its
/// link was never opened, or has expired.
pub fn may_resend_link(
    request: &Request,
    actor: &Actor,
    delivery: Delivery,
) -> Result<(), DomainError> {
    use super::envelope::EnvelopeState;
    if !visible_to(request, actor) {
        return Err(DomainError::NotFound);
    }
    if !actor.roles.can_support() {
        return Err(DomainError::Forbidden(
            "only the help desk sends new delivery links".into(),
        ));
    }
    require_state(request, "re-send the link of", &[RequestState::Issued])?;
    if !delivery.token_pending {
        return Err(DomainError::Conflict {
            code: "token_activated",
            message: "the token is already activated in Canvas: its owner has it".into(),
        });
    }
    match delivery.envelope {
        Some((EnvelopeState::Expired, _)) => Ok(()),
        Some((EnvelopeState::Sealed, 0)) | None => Ok(()),
        _ => Err(DomainError::Conflict {
            code: "link_opened",
            message: "the link was opened and has not expired: its owner can still use it; a new link is for a link never opened, or expired".into(),
        }),
    }
}

/// The help desk sent a new delivery link (a new value, a new envelope, the old one closed).
pub fn link_resent(
    request: &Request,
    actor: &Actor,
    delivery: Delivery,
    details: serde_json::Value,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    may_resend_link(request, actor, delivery)?;
    Ok(Change {
        state: moved(request, RequestState::Issued, now),
        audit: audit(
            actor.login.as_str(),
            "request.resend_link",
            request,
            details,
        ),
        effects: vec![],
    })
}

/// An approver approves, optionally with an earlier expiry; issuance is queued.
pub fn approve(
    request: &Request,
    actor: &Actor,
    expires_on: Option<Date>,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    may_approve(request, actor)?;
    let today = now.date();
    let expires_on = match expires_on {
        Some(date) => {
            if date > request.requested_expires_on {
                return Err(DomainError::field(
                    "expires_on",
                    "later_than_requested",
                    format!(
                        "expires_on can only be shortened: the requester asked for {}",
                        request.requested_expires_on
                    ),
                ));
            }
            check_expiry("expires_on", date, policy, today)
                .map_err(|e| DomainError::Invalid(vec![e]))?;
            date
        }
        None => {
            let date = request.requested_expires_on;
            check_expiry("expires_on", date, policy, today).map_err(|_| {
                DomainError::field(
                    "expires_on",
                    "requested_date_passed",
                    format!(
                        "the requested expiry {date} is no longer allowed; give an expiry date from {} on",
                        today.saturating_add(Duration::days(1))
                    ),
                )
            })?;
            date
        }
    };
    let mut next = moved(request, RequestState::Approved, now);
    next.expires_on = expires_on;
    next.decided_by = Some(actor.login.clone());
    next.reason = None;
    let audit = audit(
        actor.login.as_str(),
        "request.approve",
        request,
        json!({"expires_on": expires_on.to_string(), "shortened": expires_on != request.requested_expires_on}),
    );
    Ok(Change {
        state: next,
        audit,
        effects: vec![issuance_of(request, policy)],
    })
}

/// An approver denies with a reason; the requester is told.
pub fn deny(
    request: &Request,
    actor: &Actor,
    raw_reason: Option<&str>,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    may_deny(request, actor)?;
    let reason = reason(raw_reason)?;
    let mut next = moved(request, RequestState::Denied, now);
    next.decided_by = Some(actor.login.clone());
    next.reason = Some(reason.clone());
    let audit = audit(
        actor.login.as_str(),
        "request.deny",
        request,
        json!({"reason": reason}),
    );
    Ok(Change {
        state: next,
        audit,
        effects: vec![Effect::NotifyDenied],
    })
}

/// The requester withdraws a request that has no token yet.
pub fn cancel(
    request: &Request,
    actor: &Actor,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    may_cancel(request, actor)?;
    let next = moved(request, RequestState::Cancelled, now);
    let audit = audit(actor.login.as_str(), "request.cancel", request, json!({}));
    Ok(Change {
        state: next,
        audit,
        effects: vec![],
    })
}

/// What issues an approved request's token: a new token, or (a renewal under
/// `policy.renewal = "extend"`) the renewed token's expiry moved in Canvas.
fn issuance_of(request: &Request, policy: &Policy) -> Effect {
    match (request.renews, policy.renewal) {
        (Some(_), super::policy::RenewalMode::Extend) => Effect::ExtendToken,
        _ => Effect::IssueToken,
    }
}

/// The owner of a live token asks to renew it: a new request, marked as renewing the old one,
/// with the old purpose (and application) unless new ones are given. `expires_on` is checked
/// as for any request.
pub fn renewal(
    old: &Request,
    actor: &Actor,
    raw: &RawNewRequest,
    policy: &Policy,
    today: Date,
) -> Result<NewRequest, DomainError> {
    may_renew(old, actor)?;
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let raw = RawNewRequest {
        purpose: given(&raw.purpose).or_else(|| Some(old.purpose.clone())),
        application: given(&raw.application).or_else(|| old.application.clone()),
        expires_on: raw.expires_on.clone(),
    };
    let mut new = parse_new_request(&raw, policy, today)?;
    new.renews = Some(old.id);
    Ok(new)
}

/// The owner renews a token that is live (issued or activated).
pub fn may_renew(request: &Request, actor: &Actor) -> Result<(), DomainError> {
    owner_only(request, actor, "only the token's owner can ask to renew it")?;
    require_state(
        request,
        "renew",
        &[RequestState::Issued, RequestState::Activated],
    )
}

/// An approver retries a failed issuance.
pub fn retry(
    request: &Request,
    actor: &Actor,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    may_retry(request, actor, policy, now)?;
    let mut next = moved(request, RequestState::Approved, now);
    next.reason = None;
    let audit = audit(actor.login.as_str(), "request.retry", request, json!({}));
    Ok(Change {
        state: next,
        audit,
        effects: vec![issuance_of(request, policy)],
    })
}

/// The worker created, sealed and sent the token.
pub fn issued(
    request: &Request,
    details: serde_json::Value,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    require_state(request, "issue", &[RequestState::Approved])?;
    Ok(Change {
        state: moved(request, RequestState::Issued, now),
        audit: audit(SYSTEM, "request.issue", request, details),
        effects: vec![],
    })
}

/// A new delivery link was made for an issued token whose link was lost (regenerated in Canvas,
/// sealed in a new envelope; the old envelope is closed).
pub fn link_reissued(
    request: &Request,
    details: serde_json::Value,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    require_state(request, "re-send the link of", &[RequestState::Issued])?;
    Ok(Change {
        state: moved(request, RequestState::Issued, now),
        audit: audit(SYSTEM, "request.reissue_link", request, details),
        effects: vec![],
    })
}

/// The worker gave up on issuance; an approver sees the reason and may retry.
pub fn issue_failed(
    request: &Request,
    why: &str,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    require_state(request, "fail", &[RequestState::Approved])?;
    let mut next = moved(request, RequestState::Failed, now);
    next.reason = Some(why.to_owned());
    let mut audit = audit(SYSTEM, "request.issue", request, json!({"reason": why}));
    audit.outcome = "failed";
    Ok(Change {
        state: next,
        audit,
        effects: vec![],
    })
}

/// Canvas reports the owner activated the token.
pub fn activated(request: &Request, now: OffsetDateTime) -> Result<Change<Request>, DomainError> {
    require_state(request, "activate", &[RequestState::Issued])?;
    Ok(Change {
        state: moved(request, RequestState::Activated, now),
        audit: audit(SYSTEM, "request.activate", request, json!({})),
        effects: vec![],
    })
}

/// The owner or the help desk removes the token (deleted in Canvas before this is recorded).
pub fn revoke(
    request: &Request,
    actor: &Actor,
    raw_reason: Option<&str>,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    may_revoke(request, actor)?;
    let owner = actor.is(&request.requester);
    let reason = reason(raw_reason)?;
    let mut next = moved(request, RequestState::Revoked, now);
    next.reason = Some(reason.clone());
    let audit = audit(
        actor.login.as_str(),
        "token.revoke",
        request,
        json!({"reason": reason}),
    );
    Ok(Change {
        state: next,
        audit,
        effects: if owner {
            vec![]
        } else {
            vec![Effect::NotifyRevoked]
        },
    })
}

/// A live token's request, revoked by `actor` for `reason`: the state, the audit event (its
/// details `details` with the reason added) and the follow-up `effects`.
fn revoked_by(
    request: &Request,
    actor: &str,
    reason: String,
    mut details: serde_json::Value,
    effects: Vec<Effect>,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    require_state(
        request,
        "revoke",
        &[RequestState::Issued, RequestState::Activated],
    )?;
    let mut next = moved(request, RequestState::Revoked, now);
    details["reason"] = json!(reason);
    next.reason = Some(reason);
    Ok(Change {
        audit: audit(actor, "token.revoke", request, details),
        state: next,
        effects,
    })
}

/// The token was reported leaked and matched: revoked at once by the system, whoever reported
/// it (the reporter may hold no role). The owner is told.
pub fn revoke_reported(
    request: &Request,
    report_id: i64,
    by_hint: bool,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    revoked_by(
        request,
        super::SYSTEM,
        "reported as leaked: the token was found where others can see it, so it was revoked at once"
            .into(),
        json!({"report": report_id, "matched_by": if by_hint { "hint" } else { "value" }}),
        vec![Effect::NotifyRevoked],
        now,
    )
}

/// One token of a bulk revocation (off-boarding, an emergency): its owner hears once per run,
/// not once per token, so this asks for no notice.
pub fn revoke_in_run(
    request: &Request,
    actor: &str,
    run_id: i64,
    reason: &str,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    revoked_by(
        request,
        actor,
        reason.to_owned(),
        json!({"run": run_id}),
        vec![],
        now,
    )
}

/// Which live tokens a bulk revocation takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeFilter {
    /// Every token of one person (off-boarding): the help desk.
    Owner(Login),
    /// Tokens issued before this day: admins.
    IssuedBefore(Date),
    /// Tokens whose purpose contains this text (any case): admins.
    PurposeContains(String),
    /// Every token tokendesk issued (the emergency switch): admins, with a typed confirmation.
    All,
}

/// What the emergency switch must be given, typed, to go.
pub const REVOKE_ALL_CONFIRMATION: &str = "REVOKE ALL";

impl RevokeFilter {
    /// What the filter is, in words (for pages, the CLI and the audit trail).
    pub fn describe(&self) -> String {
        match self {
            RevokeFilter::Owner(login) => format!("every token of {login}"),
            RevokeFilter::IssuedBefore(day) => format!("every token issued before {day}"),
            RevokeFilter::PurposeContains(text) => {
                format!("every token whose purpose contains \"{text}\"")
            }
            RevokeFilter::All => "every token tokendesk issued".into(),
        }
    }

    /// As stored with the run.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            RevokeFilter::Owner(login) => json!({"owner": login.as_str()}),
            RevokeFilter::IssuedBefore(day) => json!({"issued_before": day.to_string()}),
            RevokeFilter::PurposeContains(text) => json!({"purpose": text}),
            RevokeFilter::All => json!({"all": true}),
        }
    }

    /// One filter from the fields a form, the API or the CLI give: exactly one of them.
    pub fn parse(
        owner: Option<&str>,
        issued_before: Option<&str>,
        purpose: Option<&str>,
        all: bool,
    ) -> Result<RevokeFilter, DomainError> {
        fn given(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|s| !s.is_empty())
        }
        let (owner, before, purpose) = (given(owner), given(issued_before), given(purpose));
        let count = [owner.is_some(), before.is_some(), purpose.is_some(), all]
            .iter()
            .filter(|x| **x)
            .count();
        if count != 1 {
            return Err(DomainError::field(
                "filter",
                "one_filter",
                "give exactly one of owner, issued_before, purpose or all",
            ));
        }
        if let Some(owner) = owner {
            return Login::parse(owner)
                .map(RevokeFilter::Owner)
                .map_err(|mut e| {
                    e.field = "owner";
                    DomainError::Invalid(vec![e])
                });
        }
        if let Some(day) = before {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            return Date::parse(day, &format)
                .map(RevokeFilter::IssuedBefore)
                .map_err(|_| {
                    DomainError::field(
                        "issued_before",
                        "invalid",
                        format!(
                            "`{}` is not a day: write it as YYYY-MM-DD",
                            day.escape_default()
                        ),
                    )
                });
        }
        if let Some(raw) = purpose {
            let found = text("purpose", Some(raw), 1, PURPOSE_MAX_CHARS)
                .map_err(|e| DomainError::Invalid(vec![e]))?
                .unwrap_or_default();
            if found.chars().count() < 3 {
                return Err(DomainError::field(
                    "purpose",
                    "too_short",
                    "give at least 3 characters of the purpose to match",
                ));
            }
            return Ok(RevokeFilter::PurposeContains(found));
        }
        Ok(RevokeFilter::All)
    }

    /// Who may revoke by this filter: the help desk a person's tokens, admins anything.
    pub fn allowed(&self, actor: &Actor) -> Result<(), DomainError> {
        match self {
            RevokeFilter::Owner(_) if actor.roles.can_support() => Ok(()),
            _ if actor.roles.admin => Ok(()),
            RevokeFilter::Owner(_) => Err(DomainError::Forbidden(
                "only the help desk can revoke all of a person's tokens".into(),
            )),
            _ => Err(DomainError::Forbidden(
                "only admins can revoke tokens by date, purpose or all at once".into(),
            )),
        }
    }
}

/// Canvas no longer has the token (deleted there, e.g. by a Canvas admin).
pub fn gone_from_canvas(
    request: &Request,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    require_state(
        request,
        "revoke",
        &[RequestState::Issued, RequestState::Activated],
    )?;
    let mut next = moved(request, RequestState::Revoked, now);
    next.reason = Some("revoked in Canvas: the token was deleted there".into());
    Ok(Change {
        state: next,
        audit: audit(SYSTEM, "token.gone_from_canvas", request, json!({})),
        effects: vec![],
    })
}

/// The token's expiry date has come; with `policy.delete_expired` it is deleted in Canvas too.
pub fn expire(
    request: &Request,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    require_state(
        request,
        "expire",
        &[RequestState::Issued, RequestState::Activated],
    )?;
    if request.expires_on > now.date() {
        return Err(DomainError::Conflict {
            code: "not_expired",
            message: format!("the token expires on {}", request.expires_on),
        });
    }
    Ok(Change {
        state: moved(request, RequestState::Expired, now),
        audit: audit(SYSTEM, "request.expire", request, json!({})),
        effects: if policy.delete_expired {
            vec![Effect::DeleteToken]
        } else {
            vec![]
        },
    })
}

/// Why a delivered token was never put to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unused {
    /// Its delivery link expired before it was revealed.
    LinkExpiredUnrevealed,
    /// It was not activated in Canvas within `policy.activation_grace_days` of issuance.
    NotActivated { days: u32 },
}

impl Unused {
    /// The request's reason, for its owner.
    pub fn reason(self) -> String {
        match self {
            Unused::LinkExpiredUnrevealed => {
                "the delivery link expired before the token was revealed; the token was deleted in Canvas".to_owned()
            }
            Unused::NotActivated { days } => format!(
                "the token was not activated in Canvas within {days} days of delivery; it was deleted there"
            ),
        }
    }
}

/// A delivered token that was never put to use (deleted in Canvas before this is recorded):
/// the request ends `expired`, and its owner is told how to ask again.
pub fn expire_unused(
    request: &Request,
    why: Unused,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    require_state(request, "expire", &[RequestState::Issued])?;
    let mut next = moved(request, RequestState::Expired, now);
    next.reason = Some(why.reason());
    Ok(Change {
        state: next,
        audit: audit(
            SYSTEM,
            "request.expire_unused",
            request,
            json!({"reason": why.reason()}),
        ),
        effects: vec![Effect::NotifyExpiredUnused],
    })
}

/// A renewal's new token was activated (or the old one ran out): the old token is retired, and
/// deleted in Canvas.
pub fn replaced(
    old: &Request,
    by: RequestId,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    require_state(
        old,
        "replace",
        &[RequestState::Issued, RequestState::Activated],
    )?;
    let mut next = moved(old, RequestState::Expired, now);
    next.reason = Some(format!("replaced by the renewed token of request #{by}"));
    Ok(Change {
        state: next,
        audit: audit(SYSTEM, "request.replace", old, json!({"by": by.0})),
        effects: vec![Effect::DeleteToken],
    })
}

/// A renewal under `policy.renewal = "extend"`: the renewed token's expiry was moved in Canvas
/// and the token now belongs to the renewal (`state` is the token's: issued while pending).
pub fn extended(
    renewal: &Request,
    state: RequestState,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    require_state(renewal, "extend", &[RequestState::Approved])?;
    let old = renewal.renews.ok_or_else(|| DomainError::Conflict {
        code: "not_a_renewal",
        message: format!("request #{} renews no token", renewal.id),
    })?;
    Ok(Change {
        state: moved(renewal, state, now),
        audit: audit(
            SYSTEM,
            "request.extend",
            renewal,
            json!({"renews": old.0, "expires_on": renewal.expires_on.to_string()}),
        ),
        effects: vec![Effect::NotifyExtended],
    })
}

/// The request whose token a renewal extended: it ends, its token carried over.
pub fn carried_over(
    old: &Request,
    by: &Request,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    require_state(
        old,
        "renew",
        &[RequestState::Issued, RequestState::Activated],
    )?;
    let mut next = moved(old, RequestState::Expired, now);
    next.reason = Some(format!(
        "renewed by request #{}: the same token now expires on {}",
        by.id, by.expires_on
    ));
    Ok(Change {
        state: next,
        audit: audit(SYSTEM, "request.carry_over", old, json!({"by": by.id.0})),
        effects: vec![],
    })
}

/// An active token unused in Canvas for `days` days, seven days after its owner was warned
/// (deleted in Canvas before this is recorded).
pub fn unused_revoked(
    request: &Request,
    days: u32,
    now: OffsetDateTime,
) -> Result<Change<Request>, DomainError> {
    require_state(request, "revoke", &[RequestState::Activated])?;
    let reason = format!("the token was not used in Canvas for {days} days");
    let mut next = moved(request, RequestState::Revoked, now);
    next.reason = Some(reason.clone());
    Ok(Change {
        state: next,
        audit: audit(
            SYSTEM,
            "token.revoke_unused",
            request,
            json!({"reason": reason}),
        ),
        effects: vec![Effect::NotifyRevoked],
    })
}

/// The Canvas purpose of the token made for a request.
pub fn canvas_purpose(id: RequestId, purpose: &str) -> String {
    format!("tokendesk #{id}: {purpose}")
}

/// How a token's expiry is named to people, everywhere (pages, emails, the calendar): the day
/// they chose and the instant it ends, e.g. `2026-12-31 (ends 2027-01-01 00:00 UTC)`.
pub fn expiry_text(expires_on: Date) -> String {
    let end = canvas_expiry(expires_on);
    format!(
        "{expires_on} (ends {} {:02}:{:02} UTC)",
        end.date(),
        end.hour(),
        end.minute()
    )
}

/// The day a token's end-of-day expiry instant belongs to (the inverse of [`canvas_expiry`]).
pub fn expiry_day(expires_at: OffsetDateTime) -> Date {
    (expires_at.to_offset(time::UtcOffset::UTC) - Duration::SECOND).date()
}

/// The instant a token made for `expires_on` stops working in Canvas: the end of that day, UTC.
pub fn canvas_expiry(expires_on: Date) -> OffsetDateTime {
    expires_on
        .saturating_add(Duration::days(1))
        .midnight()
        .assume_utc()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;
    use crate::domain::Roles;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    fn actor(login: &str, roles: Roles) -> Actor {
        Actor {
            login: Login::parse(login).unwrap(),
            roles,
        }
    }

    fn sam() -> Actor {
        actor("sam", Roles::default())
    }

    fn ada() -> Actor {
        actor(
            "ada",
            Roles {
                approver: true,
                ..Roles::default()
            },
        )
    }

    fn helpdesk() -> Actor {
        actor(
            "hal",
            Roles {
                helpdesk: true,
                ..Roles::default()
            },
        )
    }

    fn raw(purpose: &str, expires_on: &str) -> RawNewRequest {
        RawNewRequest {
            purpose: Some(purpose.into()),
            expires_on: Some(expires_on.into()),
            application: None,
        }
    }

    fn request(state: RequestState) -> Request {
        Request {
            id: RequestId(7),
            requester: Login::parse("sam").unwrap(),
            purpose: "grading scripts for my course".into(),
            application: None,
            requested_expires_on: date!(2027 - 01 - 31),
            expires_on: date!(2027 - 01 - 31),
            renews: None,
            state,
            created_at: NOW,
            updated_at: NOW,
            decided_by: None,
            reason: None,
        }
    }

    #[test]
    fn new_requests_are_validated_field_by_field() {
        let p = Policy::default();
        let today = NOW.date();
        let ok = parse_new_request(
            &raw("  grading scripts for my course ", "2027-01-31"),
            &p,
            today,
        )
        .unwrap();
        assert_eq!(ok.purpose, "grading scripts for my course");
        assert_eq!(ok.expires_on, date!(2027 - 01 - 31));

        let fields = |r: RawNewRequest| match parse_new_request(&r, &p, today) {
            Err(DomainError::Invalid(errors)) => errors
                .into_iter()
                .map(|e| (e.field, e.code))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            fields(raw("short", "2027-01-31")),
            vec![("purpose", "too_short")]
        );
        assert_eq!(
            fields(raw("", "")),
            vec![("purpose", "required"), ("expires_on", "required")]
        );
        assert_eq!(
            fields(raw(&"x".repeat(201), "2027-01-31")),
            vec![("purpose", "too_long")]
        );
        assert_eq!(
            fields(raw("grading scripts for my course", "31/01/2027")),
            vec![("expires_on", "invalid_date")]
        );
        // Today is too early, tomorrow is the first day; 120 days is the last.
        assert_eq!(
            fields(raw("grading scripts for my course", "2026-11-28")),
            vec![("expires_on", "out_of_range")]
        );
        assert!(
            parse_new_request(
                &raw("grading scripts for my course", "2026-11-29"),
                &p,
                today
            )
            .is_ok()
        );
        assert!(
            parse_new_request(
                &raw("grading scripts for my course", "2027-03-28"),
                &p,
                today
            )
            .is_ok()
        );
        assert_eq!(
            fields(raw("grading scripts for my course", "2027-03-29")),
            vec![("expires_on", "out_of_range")]
        );
        let mut with_app = raw("grading scripts for my course", "2027-01-31");
        with_app.application = Some(" ".into());
        assert_eq!(
            parse_new_request(&with_app, &p, today).unwrap().application,
            None
        );
    }

    #[test]
    fn text_that_reorders_itself_is_refused() {
        let p = Policy::default();
        let mut r = raw("grading scripts \u{202E}for my course", "2027-01-31");
        r.application = Some("tool\u{2066}.py".into());
        match parse_new_request(&r, &p, NOW.date()) {
            Err(DomainError::Invalid(errors)) => {
                let fields: Vec<(&str, &str)> = errors.iter().map(|e| (e.field, e.code)).collect();
                assert_eq!(
                    fields,
                    [
                        ("purpose", "invisible_characters"),
                        ("application", "invisible_characters")
                    ]
                );
                assert!(errors[0].message.contains("U+202E"));
            }
            other => panic!("{other:?}"),
        }
        let submitted = request(RequestState::Submitted);
        assert!(matches!(
            deny(&submitted, &ada(), Some("no \u{202D}reason"), NOW),
            Err(DomainError::Invalid(_))
        ));
        let issued = request(RequestState::Issued);
        assert!(matches!(
            revoke(&issued, &sam(), Some("\u{200F}x"), NOW),
            Err(DomainError::Invalid(_))
        ));
    }

    #[test]
    fn per_person_limits_hold() {
        let p = Policy::default();
        let new = parse_new_request(
            &raw("grading scripts for my course", "2027-01-31"),
            &p,
            NOW.date(),
        )
        .unwrap();
        assert!(submit(&sam(), new.clone(), Holdings::default(), &p, NOW).is_ok());
        let open = Holdings {
            open_requests: 1,
            live_tokens: 0,
        };
        assert!(matches!(
            submit(&sam(), new.clone(), open, &p, NOW),
            Err(DomainError::Conflict {
                code: "too_many_open_requests",
                ..
            })
        ));
        let full = Holdings {
            open_requests: 0,
            live_tokens: 2,
        };
        assert!(matches!(
            submit(&sam(), new, full, &p, NOW),
            Err(DomainError::Conflict {
                code: "too_many_tokens",
                ..
            })
        ));
    }

    #[test]
    fn approval_may_shorten_but_never_lengthen() {
        let p = Policy::default();
        let r = request(RequestState::Submitted);
        let c = approve(&r, &ada(), None, &p, NOW).unwrap();
        assert_eq!(c.state.state, RequestState::Approved);
        assert_eq!(c.state.expires_on, r.requested_expires_on);
        assert_eq!(c.effects, vec![Effect::IssueToken]);
        assert_eq!(c.audit.action, "request.approve");
        let c = approve(&r, &ada(), Some(date!(2026 - 12 - 15)), &p, NOW).unwrap();
        assert_eq!(c.state.expires_on, date!(2026 - 12 - 15));
        let e = approve(&r, &ada(), Some(date!(2027 - 02 - 01)), &p, NOW).unwrap_err();
        assert!(matches!(e, DomainError::Invalid(ref v) if v[0].code == "later_than_requested"));
        let e = approve(&r, &ada(), Some(NOW.date()), &p, NOW).unwrap_err();
        assert!(matches!(e, DomainError::Invalid(ref v) if v[0].code == "out_of_range"));
        // A request left in the queue past its requested expiry needs a new date.
        let late = datetime!(2027-02-01 09:00 UTC);
        assert!(
            matches!(approve(&r, &ada(), None, &p, late), Err(DomainError::Invalid(ref v)) if v[0].code == "requested_date_passed")
        );
    }

    #[test]
    fn who_may_decide() {
        let p = Policy::default();
        let r = request(RequestState::Submitted);
        assert_eq!(
            approve(&r, &actor("eve", Roles::default()), None, &p, NOW),
            Err(DomainError::NotFound)
        );
        assert!(matches!(
            approve(&r, &helpdesk(), None, &p, NOW),
            Err(DomainError::Forbidden(_))
        ));
        let own = Actor {
            login: r.requester.clone(),
            roles: ada().roles,
        };
        assert!(
            matches!(approve(&r, &own, None, &p, NOW), Err(DomainError::Forbidden(m)) if m.contains("own request"))
        );
        assert!(matches!(
            deny(&r, &ada(), Some("  "), NOW),
            Err(DomainError::Invalid(_))
        ));
        let d = deny(&r, &ada(), Some("use the course API key instead"), NOW).unwrap();
        assert_eq!(d.state.state, RequestState::Denied);
        assert_eq!(d.effects, vec![Effect::NotifyDenied]);
        // Deciding twice is a wrong-state conflict.
        assert_eq!(
            approve(&d.state, &ada(), None, &p, NOW),
            Err(DomainError::WrongState {
                action: "approve",
                current: RequestState::Denied
            })
        );
    }

    #[test]
    fn cancel_retry_and_the_worker_outcomes() {
        let p = Policy::default();
        let r = request(RequestState::Submitted);
        assert!(matches!(
            cancel(&r, &ada(), NOW),
            Err(DomainError::Forbidden(_))
        ));
        assert_eq!(
            cancel(&r, &actor("eve", Roles::default()), NOW),
            Err(DomainError::NotFound)
        );
        assert_eq!(
            cancel(&r, &sam(), NOW).unwrap().state.state,
            RequestState::Cancelled
        );
        let approved = approve(&r, &ada(), None, &p, NOW).unwrap().state;
        assert!(matches!(
            cancel(&approved, &sam(), NOW),
            Err(DomainError::WrongState { .. })
        ));
        let failed = issue_failed(&approved, "Canvas is unavailable", NOW).unwrap();
        assert_eq!(
            failed.state.reason.as_deref(),
            Some("Canvas is unavailable")
        );
        assert_eq!(failed.audit.outcome, "failed");
        assert!(matches!(
            retry(&failed.state, &sam(), &p, NOW),
            Err(DomainError::Forbidden(_))
        ));
        let retried = retry(&failed.state, &ada(), &p, NOW).unwrap();
        assert_eq!(retried.effects, vec![Effect::IssueToken]);
        let issued = issued(&retried.state, json!({}), NOW).unwrap().state;
        assert_eq!(issued.state, RequestState::Issued);
        assert_eq!(
            activated(&issued, NOW).unwrap().state.state,
            RequestState::Activated
        );
    }

    #[test]
    fn revocation_and_expiry() {
        let issued = request(RequestState::Issued);
        assert_eq!(
            revoke(&issued, &actor("eve", Roles::default()), Some("x"), NOW),
            Err(DomainError::NotFound)
        );
        assert!(matches!(
            revoke(&issued, &ada(), Some("x"), NOW),
            Err(DomainError::Forbidden(_))
        ));
        assert!(matches!(
            revoke(&issued, &helpdesk(), None, NOW),
            Err(DomainError::Invalid(_))
        ));
        let by_desk = revoke(&issued, &helpdesk(), Some("leaked in a public repo"), NOW).unwrap();
        assert_eq!(by_desk.effects, vec![Effect::NotifyRevoked]);
        let by_owner = revoke(&issued, &sam(), Some("no longer needed"), NOW).unwrap();
        assert!(by_owner.effects.is_empty());
        assert!(matches!(
            revoke(&by_owner.state, &sam(), Some("again"), NOW),
            Err(DomainError::WrongState { .. })
        ));
        assert!(matches!(
            expire(&issued, &Policy::default(), NOW),
            Err(DomainError::Conflict { .. })
        ));
        let later = datetime!(2027-01-31 00:00 UTC);
        assert_eq!(
            expire(&issued, &Policy::default(), later)
                .unwrap()
                .state
                .state,
            RequestState::Expired
        );
        assert_eq!(
            canvas_expiry(date!(2027 - 01 - 31)),
            datetime!(2027-02-01 00:00 UTC)
        );
        assert_eq!(canvas_purpose(RequestId(12), "x"), "tokendesk #12: x");
    }

    /// The pages' actions are the transitions' rules: for every state, actor and action,
    /// `allowed` says yes exactly when the transition (given good input) goes through.
    #[test]
    fn allowed_actions_are_the_transitions() {
        use super::super::envelope::EnvelopeState;
        let p = Policy::default();
        let actors = [sam(), ada(), helpdesk(), actor("eve", Roles::default())];
        let deliveries = [
            Delivery {
                token_pending: true,
                envelope: Some((EnvelopeState::Sealed, 0)),
            },
            Delivery {
                token_pending: true,
                envelope: Some((EnvelopeState::Revealed, 1)),
            },
            Delivery {
                token_pending: true,
                envelope: Some((EnvelopeState::Expired, 1)),
            },
            Delivery {
                token_pending: false,
                envelope: Some((EnvelopeState::Burned, 1)),
            },
        ];
        let mut yes = 0;
        for state in RequestState::ALL {
            let r = request(state);
            for a in &actors {
                for d in deliveries {
                    for action in Action::ALL {
                        let done = match action {
                            Action::Approve => approve(&r, a, None, &p, NOW).is_ok(),
                            Action::Deny => deny(&r, a, Some("no"), NOW).is_ok(),
                            Action::Cancel => cancel(&r, a, NOW).is_ok(),
                            Action::Retry => retry(&r, a, &p, NOW).is_ok(),
                            Action::Revoke => revoke(&r, a, Some("no"), NOW).is_ok(),
                            Action::ResendLink => link_resent(&r, a, d, json!({}), NOW).is_ok(),
                            Action::Renew => {
                                renewal(&r, a, &raw("", "2027-01-15"), &p, NOW.date()).is_ok()
                            }
                        };
                        assert_eq!(
                            allowed(&r, a, action, Some(d), &p, NOW),
                            done,
                            "{action:?} on {state} by {}",
                            a.login
                        );
                        yes += usize::from(done);
                    }
                }
            }
        }
        assert!(yes > 20, "{yes}");
        // The defect that was: an approved request offered Cancel.
        assert!(!allowed(
            &request(RequestState::Approved),
            &sam(),
            Action::Cancel,
            None,
            &p,
            NOW
        ));
    }

    #[test]
    fn states_parse_and_print() {
        for s in RequestState::ALL {
            assert_eq!(s.as_str().parse::<RequestState>().unwrap(), s);
        }
        assert!("nope".parse::<RequestState>().is_err());
    }
}

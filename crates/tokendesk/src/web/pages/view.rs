//! What pages show, as text: dates, times, countdowns, and the rows of the tables.

use time::{Date, OffsetDateTime, UtcOffset};

use crate::domain::envelope::{Envelope, EnvelopeState};
use crate::domain::request::{Request, RequestState};
use crate::store::{StoredToken, TokenState};

pub fn date(d: Date) -> String {
    d.to_string()
}

/// `2026-11-28 17:20 UTC`.
pub fn when(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!("{} {:02}:{:02} UTC", t.date(), t.hour(), t.minute())
}

/// How long until `until`: `6 days 23 hours`, `5 hours 10 minutes`, `40 minutes`; `None` once passed.
pub fn remaining(now: OffsetDateTime, until: OffsetDateTime) -> Option<String> {
    let left = until - now;
    if left <= time::Duration::ZERO {
        return None;
    }
    let days = left.whole_days();
    let hours = left.whole_hours() % 24;
    let minutes = (left.whole_minutes() % 60).max(if days == 0 && hours == 0 { 1 } else { 0 });
    let unit = |n: i64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    Some(if days > 0 {
        format!(
            "{} {}",
            unit(days, "day", "days"),
            unit(hours, "hour", "hours")
        )
    } else if hours > 0 {
        format!(
            "{} {}",
            unit(hours, "hour", "hours"),
            unit(minutes, "minute", "minutes")
        )
    } else {
        unit(minutes, "minute", "minutes")
    })
}

/// "expires in 6 days 23 hours" or "expired".
pub fn countdown(now: OffsetDateTime, until: OffsetDateTime) -> String {
    match remaining(now, until) {
        Some(left) => format!("expires in {left}"),
        None => "expired".to_owned(),
    }
}

/// What a state means, for people.
pub fn request_state_help(state: RequestState) -> &'static str {
    match state {
        RequestState::Submitted => "waiting for an approver",
        RequestState::Approved => "approved; the token is being created in Canvas",
        RequestState::Issued => {
            "created in Canvas; open the link in your email, then activate it in Canvas"
        }
        RequestState::Activated => "active in Canvas",
        RequestState::Expired => "expired",
        RequestState::Revoked => "revoked",
        RequestState::Denied => "denied",
        RequestState::Cancelled => "cancelled",
        RequestState::Failed => "creating the token in Canvas failed; an approver can retry",
    }
}

/// A request in a table.
#[derive(Debug, Clone)]
pub struct RequestRow {
    pub id: i64,
    pub requester: String,
    pub purpose: String,
    pub application: String,
    pub state: &'static str,
    pub state_help: &'static str,
    pub expires_on: String,
    pub requested_expires_on: String,
    pub created: String,
    pub decided_by: String,
    pub reason: String,
    /// An approver set an earlier expiry than asked for.
    pub shortened: bool,
    /// The request whose token this one renews.
    pub renews: Option<i64>,
}

impl RequestRow {
    pub fn new(r: &Request) -> RequestRow {
        RequestRow {
            id: r.id.0,
            requester: r.requester.to_string(),
            purpose: r.purpose.clone(),
            application: r.application.clone().unwrap_or_default(),
            state: r.state.as_str(),
            state_help: request_state_help(r.state),
            expires_on: crate::domain::request::expiry_text(r.expires_on),
            requested_expires_on: date(r.requested_expires_on),
            created: when(r.created_at),
            decided_by: r
                .decided_by
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            reason: r.reason.clone().unwrap_or_default(),
            shortened: r.expires_on != r.requested_expires_on,
            renews: r.renews.map(|id| id.0),
        }
    }
}

/// A token in a table.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub request_id: i64,
    pub hint: String,
    pub state: &'static str,
    pub expires: String,
    /// Still in Canvas (may be revoked).
    pub live: bool,
    /// Pending in Canvas: its owner may say they activated it.
    pub pending: bool,
}

impl TokenRow {
    /// `request_state`: the state of its request, when known.
    pub fn new(t: &StoredToken, request_state: Option<RequestState>) -> TokenRow {
        let live =
            t.state != TokenState::Deleted && request_state.is_none_or(RequestState::holds_token);
        TokenRow {
            id: t.id.0,
            request_id: t.request_id.0,
            hint: t.hint.clone(),
            state: t.state.as_str(),
            expires: crate::domain::request::expiry_text(crate::domain::request::expiry_day(
                t.expires_at,
            )),
            live,
            pending: live && t.state == TokenState::Pending,
        }
    }
}

/// A delivery envelope, as its owner's pages describe it.
#[derive(Debug, Clone)]
pub struct LinkRow {
    pub state: &'static str,
    pub expires: String,
    pub countdown: String,
    pub open: bool,
}

impl LinkRow {
    pub fn new(e: &Envelope, now: OffsetDateTime) -> LinkRow {
        let state = e.state_at(now);
        LinkRow {
            state: state.as_str(),
            expires: when(e.expires_at),
            countdown: match state {
                EnvelopeState::Burned => "saved and closed".to_owned(),
                _ => countdown(now, e.expires_at),
            },
            open: state.is_open(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    #[test]
    fn countdowns_read_naturally() {
        let now = datetime!(2026-11-28 12:00 UTC);
        assert_eq!(
            countdown(now, now + Duration::days(7) - Duration::minutes(30)),
            "expires in 6 days 23 hours"
        );
        assert_eq!(
            countdown(now, now + Duration::days(1)),
            "expires in 1 day 0 hours"
        );
        assert_eq!(
            countdown(now, now + Duration::minutes(125)),
            "expires in 2 hours 5 minutes"
        );
        assert_eq!(
            countdown(now, now + Duration::seconds(20)),
            "expires in 1 minute"
        );
        assert_eq!(countdown(now, now), "expired");
        assert_eq!(when(now), "2026-11-28 12:00 UTC");
    }
}

/// The address of a list page's next page (`after` the last row), when this one is full.
pub fn next_link(
    uri: &axum::http::Uri,
    shown: usize,
    limit: i64,
    last: Option<i64>,
) -> Option<String> {
    match last {
        Some(last) if shown as i64 >= limit => {
            Some(crate::web::extract::next_page(uri, "after", last))
        }
        _ => None,
    }
}

/// A list page's `?after=N` (the page after row N).
#[derive(Debug, Default, serde::Deserialize)]
pub struct AfterQuery {
    #[serde(default)]
    pub after: String,
}

impl AfterQuery {
    pub fn after(&self) -> Result<Option<i64>, crate::web::ApiError> {
        crate::web::extract::int_param("after", Some(&self.after))
    }
}

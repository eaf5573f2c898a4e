//! One error type, by what the caller should do about it.

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Why Canvas refused an access token (`canvas-api.md` §3): the `message` of its 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRejection {
    /// "Invalid access token.": unknown, or pending (not yet activated by its owner).
    Invalid,
    /// "Expired access token.": past its expiry, which Canvas gives as `expired_at`.
    Expired { expired_at: Option<OffsetDateTime> },
    /// "Revoked access token.": deleted.
    Revoked,
}

impl TokenRejection {
    fn advice(&self) -> String {
        match self {
            TokenRejection::Invalid => "check that it is correct and activated by its owner (not \
                                        pending), then configure a working one"
                .to_owned(),
            TokenRejection::Expired { expired_at } => {
                let when = expired_at
                    .and_then(|at| at.format(&Rfc3339).ok())
                    .map_or_else(String::new, |at| format!(" at {at}"));
                format!("it expired{when}; configure a new one")
            }
            TokenRejection::Revoked => "it was deleted in Canvas; configure a new one".to_owned(),
        }
    }
}

/// Everything that can go wrong talking to Canvas. Messages never contain the admin token or any
/// token value: Canvas's own error messages are included, response bodies of successful calls
/// never are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanvasError {
    /// 401 with `WWW-Authenticate`: the access token is wrong or pending, expired, or deleted;
    /// `reason` tells which.
    #[error("Canvas rejected the access token ({message}): {}", reason.advice())]
    InvalidCredentials {
        message: String,
        reason: TokenRejection,
    },

    /// 401 without `WWW-Authenticate`, or a 403 that is not throttling: authenticated, not allowed.
    #[error(
        "the Canvas user behind the access token may not do this ({message}): use a token of a \
         user holding the needed permissions (e.g. an admin with create/delete/view access tokens)"
    )]
    NotPermitted { message: String },

    /// 404: the user or token does not exist (or the token is not that user's).
    #[error("Canvas has no such resource ({message}): check the user and token ids")]
    NotFound { message: String },

    /// 400 (or 422): Canvas refused the input. Do not retry unchanged.
    #[error("Canvas refused the request as invalid: {message}; fix the input before retrying")]
    BadRequest { message: String },

    /// Throttled (still, after the retries configured): `429`, or `403` whose body says
    /// "Rate Limit Exceeded" on older instances (`canvas-api.md` §3).
    #[error(
        "Canvas is throttling this access token (Rate Limit Exceeded): wait a few seconds and \
         retry with fewer concurrent requests"
    )]
    Throttled,

    /// 5xx or no connection: Canvas is down or unreachable.
    #[error("Canvas is unavailable ({detail}): retry later")]
    Unavailable { status: Option<u16>, detail: String },

    /// No answer within the configured timeout.
    #[error(
        "Canvas did not answer within {after:?}: retry later (if this was a token creation, list \
         the user's tokens first: it may have been created)"
    )]
    Timeout { after: Duration },

    /// Canvas answered something this client cannot interpret.
    #[error(
        "Canvas sent an unexpected response ({detail}): check the Canvas base URL; if it is right, \
         this Canvas version is not supported — report it"
    )]
    UnexpectedResponse { status: Option<u16>, detail: String },

    /// Rejected by the client before sending anything.
    #[error("invalid request: {message}")]
    InvalidInput { message: String },
}

impl CanvasError {
    /// Whether a later retry of the same request may succeed (throttling, outages, timeouts).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CanvasError::Throttled | CanvasError::Unavailable { .. } | CanvasError::Timeout { .. }
        )
    }

    /// The HTTP status Canvas answered with, when it is known (a throttled answer may have been
    /// 429 or 403, a refusal 401 or 403).
    pub fn status(&self) -> Option<u16> {
        match self {
            CanvasError::InvalidCredentials { .. } => Some(401),
            CanvasError::NotFound { .. } => Some(404),
            CanvasError::BadRequest { .. } => Some(400),
            CanvasError::Unavailable { status, .. }
            | CanvasError::UnexpectedResponse { status, .. } => *status,
            CanvasError::Throttled
            | CanvasError::NotPermitted { .. }
            | CanvasError::Timeout { .. }
            | CanvasError::InvalidInput { .. } => None,
        }
    }
}

/// Maps a non-success Canvas response to an error (canvas-api.md §3).
pub(crate) fn classify(status: u16, www_authenticate: bool, body: &[u8]) -> CanvasError {
    let text = String::from_utf8_lossy(body);
    let message = || error_message(body).unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        // 429 is throttling; so is the older text/plain 403: check its body before anything else.
        429 => CanvasError::Throttled,
        403 if text.contains("Rate Limit Exceeded") => CanvasError::Throttled,
        401 if www_authenticate => CanvasError::InvalidCredentials {
            message: message(),
            reason: rejection(body),
        },
        401 | 403 => CanvasError::NotPermitted { message: message() },
        404 => CanvasError::NotFound { message: message() },
        400 | 422 => CanvasError::BadRequest { message: message() },
        500..=599 => CanvasError::Unavailable {
            status: Some(status),
            detail: format!("HTTP {status}"),
        },
        _ => CanvasError::UnexpectedResponse {
            status: Some(status),
            detail: format!("HTTP {status}: {}", message()),
        },
    }
}

/// Reads which token problem a 401 names (`{"errors":[{"message":"Expired access token.",
/// "expired_at":"…"}]}` and the like).
fn rejection(body: &[u8]) -> TokenRejection {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let first = value.get("errors").and_then(|e| e.get(0));
    let message = first.and_then(|e| e.get("message")).and_then(Value::as_str);
    match message.map(str::trim) {
        Some("Expired access token.") => TokenRejection::Expired {
            expired_at: first
                .and_then(|e| e.get("expired_at"))
                .and_then(Value::as_str)
                .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok()),
        },
        Some("Revoked access token.") => TokenRejection::Revoked,
        _ => TokenRejection::Invalid,
    }
}

const MAX_MESSAGE: usize = 300;

/// Extracts a human message from any of the error bodies Canvas produces:
/// `[{"message":..}]`, `{"errors":[{"message":..}]}`, `{"errors":{"message":".."}}`,
/// `{"errors":{"purpose":[{"attribute","type","message"}]}}`, `{"errors":{"token":["is ..."]}}`,
/// `{"message":".."}`, or a short plain-text body.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(value) => json_message(&value),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let first_line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
            // HTML error pages say nothing useful.
            (!first_line.starts_with('<')).then(|| first_line.to_owned())
        }
    }?;
    let message = message.trim().to_owned();
    if message.is_empty() {
        return None;
    }
    Some(truncate(message))
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn json_message(value: &Value) -> Option<String> {
    match value {
        Value::Array(items) => join(items.iter().filter_map(item_message)),
        Value::Object(map) => {
            if let Some(errors) = map.get("errors") {
                match errors {
                    Value::Array(items) => join(items.iter().filter_map(item_message)),
                    Value::String(s) => Some(s.clone()),
                    Value::Object(fields) => {
                        if let Some(Value::String(s)) = fields.get("message") {
                            return Some(s.clone());
                        }
                        join(
                            fields
                                .iter()
                                .flat_map(|(field, v)| field_messages(field, v)),
                        )
                    }
                    _ => None,
                }
            } else {
                match map.get("message") {
                    Some(Value::String(s)) => Some(s.clone()),
                    _ => None,
                }
            }
        }
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn item_message(item: &Value) -> Option<String> {
    match item {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => match map.get("message") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// `"purpose": [{"attribute":"purpose","type":"too_short","message":"is too short"}]` →
/// `"purpose is too short"`; `"token": ["is already active"]` → `"token is already active"`.
fn field_messages(field: &str, value: &Value) -> Vec<String> {
    let describe = |item: &Value| -> Option<String> {
        match item {
            Value::String(s) => Some(s.clone()),
            Value::Object(map) => map
                .get("message")
                .or_else(|| map.get("type"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        }
    };
    let items: Vec<String> = match value {
        Value::Array(items) => items.iter().filter_map(describe).collect(),
        other => describe(other).into_iter().collect(),
    };
    items
        .into_iter()
        .map(|m| {
            if m.starts_with(field) {
                m
            } else {
                format!("{field} {m}")
            }
        })
        .collect()
}

fn join(parts: impl IntoIterator<Item = String>) -> Option<String> {
    let parts: Vec<String> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn msg(body: &str) -> Option<String> {
        error_message(body.as_bytes())
    }

    #[test]
    fn every_400_shape() {
        assert_eq!(
            msg(r#"[{"message":"token[purpose] is missing"}]"#).as_deref(),
            Some("token[purpose] is missing")
        );
        assert_eq!(
            msg(r#"{"errors":[{"message":"a"},{"message":"b"}]}"#).as_deref(),
            Some("a; b")
        );
        assert_eq!(
            msg(r#"{"errors":{"purpose":[{"attribute":"purpose","type":"too_short","message":"is too short"}]}}"#)
                .as_deref(),
            Some("purpose is too short")
        );
        assert_eq!(
            msg(r#"{"errors":{"purpose":[{"attribute":"purpose","type":"blank"}]}}"#).as_deref(),
            Some("purpose blank")
        );
        assert_eq!(
            msg(r#"{"errors":{"message":"Invalid expiration date format"}}"#).as_deref(),
            Some("Invalid expiration date format")
        );
        assert_eq!(
            msg(r#"{"errors":{"token":["is already active"]}}"#).as_deref(),
            Some("token is already active")
        );
        assert_eq!(msg(r#"{"message":"nope"}"#).as_deref(), Some("nope"));
        assert_eq!(msg("<html><body>502</body></html>"), None);
        assert_eq!(msg(""), None);
        assert_eq!(msg("[]"), None);
    }

    #[test]
    fn statuses_map_to_variants() {
        let invalid = br#"{"errors":[{"message":"Invalid access token."}]}"#;
        assert_eq!(
            classify(401, true, invalid),
            CanvasError::InvalidCredentials {
                message: "Invalid access token.".into(),
                reason: TokenRejection::Invalid,
            }
        );
        // canvas-api.md §3: expired and revoked tokens are told apart.
        let expired = br#"{"errors":[{"message":"Expired access token.","expired_at":"2030-01-02T03:04:05Z"}]}"#;
        assert_eq!(
            classify(401, true, expired),
            CanvasError::InvalidCredentials {
                message: "Expired access token.".into(),
                reason: TokenRejection::Expired {
                    expired_at: Some(time::macros::datetime!(2030-01-02 03:04:05 UTC)),
                },
            }
        );
        let revoked = br#"{"errors":[{"message":"Revoked access token."}]}"#;
        assert!(matches!(
            classify(401, true, revoked),
            CanvasError::InvalidCredentials {
                reason: TokenRejection::Revoked,
                ..
            }
        ));
        let masquerade = br#"{"errors":"Invalid as_user_id"}"#;
        assert_eq!(
            classify(401, false, masquerade),
            CanvasError::NotPermitted {
                message: "Invalid as_user_id".into()
            }
        );
        let unauthorized = br#"{"status":"unauthorized","errors":[{"message":"user not authorized to perform that action"}]}"#;
        assert!(matches!(
            classify(401, false, unauthorized),
            CanvasError::NotPermitted { .. }
        ));
        assert!(matches!(
            classify(403, false, unauthorized),
            CanvasError::NotPermitted { .. }
        ));
        // canvas-api.md §3: both throttling forms.
        assert_eq!(
            classify(403, false, b"403 Forbidden (Rate Limit Exceeded)\n"),
            CanvasError::Throttled
        );
        assert_eq!(
            classify(429, false, b"429 Forbidden (Rate Limit Exceeded)\n"),
            CanvasError::Throttled
        );
        assert_eq!(classify(429, false, b""), CanvasError::Throttled);
        assert!(matches!(
            classify(404, false, b"{}"),
            CanvasError::NotFound { .. }
        ));
        assert!(matches!(
            classify(400, false, br#"[{"message":"x"}]"#),
            CanvasError::BadRequest { .. }
        ));
        assert!(matches!(
            classify(503, false, b"down"),
            CanvasError::Unavailable {
                status: Some(503),
                ..
            }
        ));
        assert!(matches!(
            classify(302, false, b""),
            CanvasError::UnexpectedResponse { .. }
        ));
    }

    #[test]
    fn display_says_what_to_do() {
        let e = CanvasError::Throttled.to_string();
        assert!(e.contains("retry"), "{e}");
        let e = CanvasError::InvalidCredentials {
            message: "Invalid access token.".into(),
            reason: TokenRejection::Invalid,
        }
        .to_string();
        assert!(
            e.contains("Invalid access token.") && e.contains("check"),
            "{e}"
        );
        let e = CanvasError::InvalidCredentials {
            message: "Expired access token.".into(),
            reason: TokenRejection::Expired {
                expired_at: Some(time::macros::datetime!(2030-01-02 03:04:05 UTC)),
            },
        }
        .to_string();
        assert!(e.contains("expired at 2030-01-02T03:04:05Z"), "{e}");
    }
}

/// Fuzz target: Canvas error bodies, any bytes under any status, and every documented shape
/// around any message.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// What a message may be at most once shortened (the cut, then `…`).
    const MOST: usize = MAX_MESSAGE + '…'.len_utf8();

    fn message_of(e: &CanvasError) -> Option<&str> {
        match e {
            CanvasError::InvalidCredentials { message, .. }
            | CanvasError::NotPermitted { message }
            | CanvasError::NotFound { message }
            | CanvasError::BadRequest { message } => Some(message),
            _ => None,
        }
    }

    proptest! {
        #[test]
        fn any_body_under_any_status_is_classified(
            status in 100u16..600,
            www_authenticate in any::<bool>(),
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let e = classify(status, www_authenticate, &body);
            match status {
                429 => prop_assert!(matches!(e, CanvasError::Throttled), "{:?}", e),
                500..=599 => prop_assert!(e.is_transient(), "{:?}", e),
                404 => prop_assert!(matches!(e, CanvasError::NotFound { .. }), "{:?}", e),
                400 | 422 => prop_assert!(matches!(e, CanvasError::BadRequest { .. }), "{:?}", e),
                _ => {}
            }
            if let Some(message) = message_of(&e) {
                prop_assert!(!message.is_empty() && message.len() <= MOST, "{:?}", message);
                prop_assert_eq!(message.trim(), message);
            }
            // The error says what to do whatever the body held.
            prop_assert!(!e.to_string().is_empty());
        }

        #[test]
        fn every_shape_gives_its_message(
            message in "[A-Za-z][\\PC]{0,400}",
            shape in 0usize..6,
        ) {
            let quoted = serde_json::to_string(&message).unwrap();
            let body = match shape {
                0 => format!(r#"[{{"message":{quoted}}}]"#),
                1 => format!(r#"{{"errors":[{{"message":{quoted}}}]}}"#),
                2 => format!(r#"{{"errors":{{"message":{quoted}}}}}"#),
                3 => format!(r#"{{"message":{quoted}}}"#),
                4 => format!(r#"{{"errors":{quoted}}}"#),
                _ => message.clone(),
            };
            let expected = if shape == 5 {
                message.lines().next().unwrap_or_default().trim().to_owned()
            } else {
                message.trim().to_owned()
            };
            let expected = truncate(expected);
            prop_assert_eq!(error_message(body.as_bytes()), Some(expected).filter(|m| !m.is_empty()));
        }

        #[test]
        fn an_expired_token_says_when(secs in 0i64..4_000_000_000) {
            let at = OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let body = format!(
                r#"{{"errors":[{{"message":"Expired access token.","expired_at":"{}"}}]}}"#,
                at.format(&Rfc3339).unwrap()
            );
            let e = classify(401, true, body.as_bytes());
            let CanvasError::InvalidCredentials { reason, .. } = e else {
                return Err(TestCaseError::fail(format!("{e:?}")));
            };
            prop_assert_eq!(reason, TokenRejection::Expired { expired_at: Some(at) });
        }
    }
}

//! Why a rule refused something.

use serde::Serialize;

use super::request::RequestState;

/// One field that is wrong, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            code,
            message: message.into(),
        }
    }
}

/// How many items a list answers with: `default` unless asked, from 1 to `max` when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListSize {
    pub default: i64,
    pub max: i64,
}

impl ListSize {
    /// The size asked for in `limit`, checked.
    pub fn check(self, asked: Option<i64>) -> Result<i64, FieldError> {
        match asked {
            None => Ok(self.default),
            Some(n) if (1..=self.max).contains(&n) => Ok(n),
            Some(n) => Err(FieldError::new(
                "limit",
                "out_of_range",
                format!("limit must be from 1 to {} (not {n})", self.max),
            )),
        }
    }
}

/// A refusal by the rules; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// One or more fields are invalid (422).
    #[error("{}", .0.first().map_or("invalid input", |e| e.message.as_str()))]
    Invalid(Vec<FieldError>),
    /// The actor may see the thing but not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown, or not the actor's to see (404).
    #[error("not found")]
    NotFound,
    /// The thing is not in a state that allows this (409).
    #[error("cannot {action} a request that is {current}")]
    WrongState {
        action: &'static str,
        current: RequestState,
    },
    /// Another kind of conflict with the current state, e.g. a per-person limit (409).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
}

impl DomainError {
    pub fn field(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        DomainError::Invalid(vec![FieldError::new(field, code, message)])
    }
}

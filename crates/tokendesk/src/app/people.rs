//! Looking people up, for the help desk and approvers.

use super::{App, AppResult};
use crate::domain::{Actor, DomainError};
use crate::store::{self, Person};

/// The most people one search returns.
const SEARCH_LIMIT: i64 = 50;

impl App {
    /// People whose login or name contains `term` (case-insensitive); the help desk and
    /// approvers only. An empty term lists the first people by login.
    pub async fn people(&self, actor: &Actor, term: &str) -> AppResult<Vec<Person>> {
        if !actor.roles.can_look_up_people() {
            return Err(DomainError::Forbidden(
                "only the help desk and approvers can look people up".into(),
            )
            .into());
        }
        let mut conn = self.read().await?;
        Ok(store::search_people(&mut conn, term.trim(), SEARCH_LIMIT).await?)
    }
}

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

impl App {
    /// The person in Canvas (found by `canvas.user_id_pattern`), remembered with their name
    /// and address.
    pub(super) async fn resolve_person(
        &self,
        login: &crate::domain::Login,
    ) -> Result<(tokendesk_canvas::UserRef, Person), super::WorkError> {
        use tokendesk_canvas::CanvasError;
        let reference = self
            .canvas_user_ref(login)
            .map_err(|e| super::WorkError::Permanent(e.message))?;
        let user = self
            .parts()
            .canvas
            .get_user(&reference)
            .await
            .map_err(|e| match e {
                CanvasError::NotFound { .. } => super::WorkError::Permanent(format!(
                    "Canvas has no user {reference} for the login {login}; check canvas.user_id_pattern"
                )),
                other => super::WorkError::canvas(other, "looking the person up in Canvas"),
            })?;
        self.owns_canvas_user(login, &user)
            .map_err(super::WorkError::Permanent)?;
        let person = Person {
            login: login.clone(),
            name: Some(user.name.clone()),
            email: user.email.clone(),
            canvas_user_id: i64::try_from(user.id.0).ok(),
        };
        let mut tx = self.write().await?;
        store::upsert_person(&mut tx, &person, self.now()).await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        Ok((tokendesk_canvas::UserRef::Id(user.id), person))
    }
}

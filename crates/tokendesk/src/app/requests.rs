//! Requests: submit, read, list, and the decisions on them.

use time::Date;

use super::{App, AppResult, Ctx};
use crate::domain::envelope::Envelope;
use crate::domain::request::{self, RawNewRequest, Request, RequestState, parse_date};
use crate::domain::{Actor, DomainError, FieldError, RequestId};
use crate::store::{self, Person, RequestFilter, StoreError, StoredToken, Whose};

/// A request with what was issued for it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestView {
    pub request: Request,
    pub token: Option<StoredToken>,
    pub envelope: Option<Envelope>,
}

/// What a list of requests may be narrowed to. By default it is the viewer's own requests:
/// someone else's are asked for by `requester`, everyone's by `everyone`.
#[derive(Debug, Clone, Default)]
pub struct RequestQuery {
    pub state: Option<String>,
    pub requester: Option<String>,
    /// Everyone's requests when no requester is named (approvers and the help desk; for
    /// anyone else the list stays their own).
    pub everyone: bool,
    /// The approvers' queue is oldest first.
    pub oldest_first: bool,
    /// The page after this request (its id, from the previous page's last row).
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

/// `GET /api/v1/requests`: how many requests a list answers with.
pub const REQUEST_LIST: crate::domain::ListSize = crate::domain::ListSize {
    default: 200,
    max: 1000,
};

impl App {
    /// A person asks for a token.
    pub async fn submit(
        &self,
        actor: &Actor,
        raw: &RawNewRequest,
        ctx: &Ctx,
    ) -> AppResult<Request> {
        super::person_only(actor)?;
        let new = request::parse_new_request(raw, &self.policy(), self.now().date())?;
        self.submit_new(actor, new, ctx).await
    }

    /// Records a validated new request (or renewal) of `actor`, if the rules let them have
    /// another, with its audit event and the approvers' notice.
    pub(super) async fn submit_new(
        &self,
        actor: &Actor,
        new: request::NewRequest,
        ctx: &Ctx,
    ) -> AppResult<Request> {
        let now = self.now();
        let stored = self.can_be_served(&actor.login).await?;
        let mut tx = self.write().await?;
        if !stored {
            // A request names its requester, who is then stored (nobody is ever removed, so
            // one found before the turn is still there in it).
            let me = Person {
                login: actor.login.clone(),
                name: None,
                email: None,
                canvas_user_id: None,
            };
            store::upsert_person(&mut tx, &me, now).await?;
        }
        let holdings = store::holdings(&mut tx, &actor.login).await?;
        let change = request::submit(actor, new, holdings, &self.policy(), now)?;
        let created = store::insert_request(&mut tx, &actor.login, &change.state, now).await?;
        let mut audit = change.audit;
        audit.target = format!("request:{}", created.id);
        self.audit(&mut tx, &audit, ctx).await?;
        self.apply_effects(&mut tx, created.id, &actor.login, &change.effects)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.wake();
        Ok(created)
    }

    /// Whether Canvas knows the person, so that a token could be made for them: told at
    /// submission rather than after an approval. A person tokendesk already found in Canvas is
    /// not looked up again; when Canvas cannot answer now, the submission goes ahead (issuance
    /// checks again). Returns whether the person is stored in tokendesk's database.
    async fn can_be_served(&self, login: &crate::domain::Login) -> AppResult<bool> {
        self.canvas_user_ref(login)
            .map_err(|e| DomainError::Invalid(vec![e]))?;
        let mut conn = self.read().await?;
        let stored = store::person(&mut conn, login).await?;
        drop(conn);
        if stored.as_ref().is_some_and(|p| p.canvas_user_id.is_some()) {
            return Ok(true);
        }
        match self.resolve_person(login).await {
            // Found in Canvas, and stored by `resolve_person`.
            Ok(_) => Ok(true),
            Err(super::WorkError::Permanent(why)) => {
                Err(DomainError::Invalid(vec![crate::domain::FieldError::new(
                    "login",
                    "not_in_canvas",
                    format!("a token cannot be made for you: {why}; ask the help desk"),
                )])
                .into())
            }
            Err(super::WorkError::Transient(why)) => {
                tracing::warn!(login = %login, error = %why, "cannot look the requester up in Canvas now; submitting anyway");
                Ok(stored.is_some())
            }
        }
    }

    /// The people who could decide on a request of `requester`: the approvers and admins
    /// other than the requester (nobody decides on their own request).
    pub fn possible_approvers(
        &self,
        requester: &crate::domain::Login,
    ) -> Vec<crate::domain::Login> {
        let roles = self.roles();
        let mut people: Vec<crate::domain::Login> = roles
            .approvers
            .iter()
            .chain(roles.admins.iter())
            .filter(|l| *l != requester)
            .cloned()
            .collect();
        people.sort();
        people.dedup();
        people
    }

    /// Whether the rules let `actor` take `action` on a request now (what the pages offer).
    pub fn allowed(&self, actor: &Actor, view: &RequestView, action: request::Action) -> bool {
        request::allowed(
            &view.request,
            actor,
            action,
            Some(self.delivery_of(view)),
            &self.policy(),
            self.now(),
        )
    }

    /// Where a request's delivery stands now.
    pub(super) fn delivery_of(&self, view: &RequestView) -> request::Delivery {
        let now = self.now();
        request::Delivery {
            token_pending: view
                .token
                .as_ref()
                .is_some_and(|t| t.state == crate::domain::TokenState::Pending),
            envelope: view.envelope.as_ref().map(|e| (e.state_at(now), e.reveals)),
        }
    }

    /// One request, if the actor may see it.
    pub async fn request(&self, actor: &Actor, id: RequestId) -> AppResult<RequestView> {
        let view = self
            .store()
            .request_view(id)
            .await?
            .filter(|v| request::visible_to(&v.0, actor))
            .ok_or(DomainError::NotFound)?;
        let (request, token, envelope) = view.as_ref().clone();
        Ok(RequestView {
            request,
            token,
            envelope,
        })
    }

    /// Requests: one's own; approvers and the help desk may ask for anyone's, or everyone's,
    /// and filter by state. A page at a time: `after` continues after a request of the last.
    pub async fn requests(&self, actor: &Actor, query: &RequestQuery) -> AppResult<Vec<Request>> {
        let mut errors = Vec::new();
        let state = match query.state.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => s.parse::<RequestState>().map_err(|e| errors.push(e)).ok(),
            None => None,
        };
        let may_see_others = actor.roles.can_look_up_people();
        let whose = match super::whose(
            actor,
            "requester",
            query.requester.as_deref(),
            may_see_others,
            "only approvers and the help desk can list other people's requests",
        )? {
            Some(login) => Whose::Person(login),
            None if query.everyone && may_see_others => Whose::Everyone,
            None => Whose::Person(actor.login.clone()),
        };
        let limit = REQUEST_LIST
            .check(query.limit)
            .map_err(|e| errors.push(e))
            .unwrap_or_default();
        let mut conn = self.read().await?;
        let after = match query.after {
            None => None,
            Some(id) => {
                let found = store::get_request(&mut conn, RequestId(id))
                    .await?
                    .filter(|r| request::visible_to(r, actor));
                if found.is_none() {
                    errors.push(FieldError::new(
                        "after",
                        "unknown",
                        format!(
                            "after must be the id of a request in the list (there is no request {id} to continue after): use the previous page's last id"
                        ),
                    ));
                }
                found.as_ref().map(store::RequestPosition::from)
            }
        };
        if !errors.is_empty() {
            return Err(DomainError::Invalid(errors).into());
        }
        let filter = RequestFilter {
            whose,
            state,
            oldest_first: query.oldest_first,
            after,
            limit,
        };
        Ok(store::list_requests(&mut conn, &filter).await?)
    }

    /// What `actor` holds now: open requests and live tokens, counted by the database.
    pub async fn holdings(&self, actor: &Actor) -> AppResult<request::Holdings> {
        let mut conn = self.read().await?;
        Ok(store::holdings(&mut conn, &actor.login).await?)
    }

    /// An approver approves; `expires_on` (YYYY-MM-DD) may shorten the requested expiry.
    pub async fn approve(
        &self,
        actor: &Actor,
        id: RequestId,
        expires_on: Option<&str>,
        ctx: &Ctx,
    ) -> AppResult<Request> {
        let expires_on: Option<Date> = match expires_on.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => {
                Some(parse_date("expires_on", s).map_err(|e| DomainError::Invalid(vec![e]))?)
            }
            None => None,
        };
        let now = self.now();
        self.transition(id, ctx, |r| {
            request::approve(r, actor, expires_on, &self.policy(), now)
        })
        .await
    }

    pub async fn deny(
        &self,
        actor: &Actor,
        id: RequestId,
        reason: Option<&str>,
        ctx: &Ctx,
    ) -> AppResult<Request> {
        let now = self.now();
        self.transition(id, ctx, |r| request::deny(r, actor, reason, now))
            .await
    }

    pub async fn cancel(&self, actor: &Actor, id: RequestId, ctx: &Ctx) -> AppResult<Request> {
        let now = self.now();
        self.transition(id, ctx, |r| request::cancel(r, actor, now))
            .await
    }

    pub async fn retry(&self, actor: &Actor, id: RequestId, ctx: &Ctx) -> AppResult<Request> {
        let now = self.now();
        self.transition(id, ctx, |r| request::retry(r, actor, &self.policy(), now))
            .await
    }
}

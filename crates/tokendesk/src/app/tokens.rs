//! Tokens: read them, and revoke one (deleted in Canvas first, then recorded).

use tokendesk_canvas::{CanvasError, CanvasTokenId, CanvasUserId, TokenRef, UserRef};

use super::{App, AppResult, Ctx};
use crate::domain::envelope::EnvelopeState;
use crate::domain::request::{self, Request};
use crate::domain::{Actor, DomainError, FieldError, TokenId};
use crate::store::{self, StoredToken, TokenState};

/// What a list of tokens may be narrowed to: by default the viewer's own.
#[derive(Debug, Clone, Default)]
pub struct TokenQuery {
    pub owner: Option<String>,
    /// The page after this token (its id, from the previous page's last row).
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

impl TokenQuery {
    /// The first page of `owner`'s tokens.
    pub fn of(owner: &str) -> TokenQuery {
        TokenQuery {
            owner: Some(owner.to_owned()),
            ..TokenQuery::default()
        }
    }
}

/// `GET /api/v1/tokens`: how many tokens a list answers with.
pub const TOKEN_LIST: crate::domain::ListSize = crate::domain::ListSize {
    default: 500,
    max: 1000,
};

impl App {
    /// Tokens, newest first: one's own; the help desk and approvers may ask for anyone's
    /// (`owner`). A page at a time: `after` continues after a token of the last.
    pub async fn tokens(&self, actor: &Actor, query: &TokenQuery) -> AppResult<Vec<StoredToken>> {
        let owner = super::whose(
            actor,
            "owner",
            query.owner.as_deref(),
            actor.roles.can_look_up_people(),
            "only the help desk and approvers can list other people's tokens",
        )?
        .unwrap_or_else(|| actor.login.clone());
        let limit = TOKEN_LIST
            .check(query.limit)
            .map_err(|e| DomainError::Invalid(vec![e]))?;
        let after = match query.after {
            Some(id) if id < 1 => {
                return Err(DomainError::Invalid(vec![FieldError::new(
                    "after",
                    "out_of_range",
                    format!("after must be a token id, 1 or more (not {id}): use the previous page's last id"),
                )])
                .into());
            }
            other => other.map(TokenId),
        };
        let mut conn = self.read().await?;
        Ok(store::list_tokens(&mut conn, &owner, after, limit).await?)
    }

    /// One token with its request, if the actor may see it.
    pub async fn token(&self, actor: &Actor, id: TokenId) -> AppResult<(StoredToken, Request)> {
        let mut conn = self.read().await?;
        let token = store::get_token(&mut conn, id)
            .await?
            .filter(|t| t.owner == actor.login || actor.roles.can_look_up_people())
            .ok_or(DomainError::NotFound)?;
        let request = store::get_request(&mut conn, token.request_id)
            .await?
            .ok_or(DomainError::NotFound)?;
        Ok((token, request))
    }

    /// The owner or the help desk revokes a token: it is deleted in Canvas, then the request,
    /// the token and its envelope are closed with the audit event and the owner's email in one
    /// transaction. If Canvas refuses or is down, nothing changes.
    pub async fn revoke(
        &self,
        actor: &Actor,
        id: TokenId,
        reason: Option<&str>,
        ctx: &Ctx,
    ) -> AppResult<Request> {
        let (token, request) = self.token(actor, id).await?;
        // Ask the rules first, so that Canvas is not touched for a refused revocation.
        request::revoke(&request, actor, reason, self.now())?;
        self.delete_in_canvas(&token).await?;
        let now = self.now();
        let (token_id, request_id) = (token.id, token.request_id);
        self.transition_with(
            token.request_id,
            ctx,
            |r| request::revoke(r, actor, reason, now),
            |tx, _| {
                Box::pin(async move {
                    store::set_token_state(tx, token_id, TokenState::Deleted, now).await?;
                    store::close_envelopes_of(tx, request_id, EnvelopeState::Burned).await?;
                    Ok(())
                })
            },
        )
        .await
        .map(|(request, ())| request)
    }
}

impl App {
    /// Deletes the token in Canvas; a token Canvas no longer has counts as deleted.
    pub(super) async fn delete_in_canvas(&self, token: &StoredToken) -> Result<(), CanvasError> {
        let user = UserRef::Id(CanvasUserId(token.canvas_user_id.unsigned_abs()));
        let id = TokenRef::Id(CanvasTokenId(token.canvas_token_id.unsigned_abs()));
        match self.parts().canvas.delete_token(&user, &id).await {
            Ok(_) | Err(CanvasError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// What a token's page shows.
#[derive(Debug, Clone)]
pub struct TokenPageView {
    pub token: StoredToken,
    pub request: Request,
    /// The requests this one renews, newest first (not including `request`).
    pub earlier: Vec<Request>,
    /// Renewals of this token waiting or holding a token.
    pub renewals: Vec<Request>,
    /// The audit events of the token's request and the requests it renews, oldest first.
    pub history: Vec<crate::store::AuditEvent>,
}

impl App {
    /// A token's page: its owner, the help desk and admins.
    pub async fn token_page(&self, actor: &Actor, id: TokenId) -> AppResult<TokenPageView> {
        let (token, request) = self.token(actor, id).await?;
        if !actor.is(&token.owner) && !actor.roles.can_support() {
            return Err(DomainError::Forbidden(
                "a token's page is for its owner and the help desk".into(),
            )
            .into());
        }
        let mut conn = self.read().await?;
        let mut chain = store::renewal_chain(&mut conn, request.id).await?;
        let earlier = chain.split_off(1.min(chain.len()));
        let renewals = store::renewals_of(&mut conn, request.id).await?;
        let mut history = Vec::new();
        for r in std::iter::once(&request).chain(earlier.iter()) {
            let filter = store::AuditFilter {
                actor: None,
                action: None,
                target: Some(format!("request:{}", r.id)),
                since: None,
                until: None,
                after_seq: 0,
                limit: 500,
            };
            history.extend(store::list_audit(&mut conn, &filter).await?);
        }
        history.sort_by_key(|e| e.seq);
        Ok(TokenPageView {
            token,
            request,
            earlier,
            renewals,
            history,
        })
    }
}

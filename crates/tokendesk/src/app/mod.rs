//! The service's operations: each reads what it needs, asks the domain whether and how the state
//! changes, and writes the new state, its audit event and its follow-up work in one transaction.
//! The web layer (JSON API and pages) and the CLI call these; none of them re-implements a rule.

mod calendar;
mod clock;
mod delivery;
mod email;
mod envelopes;
mod incidents;
mod issue;
mod lifecycle;
mod people;
mod reads;
mod reconcile;
mod reports;
mod requests;
mod sessions;
mod setup;
mod sweep;
mod tokens;
mod work;

use std::collections::HashSet;
use std::sync::Arc;

use tokendesk_canvas::{CanvasClient, CanvasError};
use url::Url;

pub use clock::{Clock, ManualClock, SystemClock};
pub use envelopes::EnvelopeView;
pub use incidents::{ReportOutcome, RevokePreview};
pub use lifecycle::ActivationCheck;
pub use reads::{AUDIT_LIST, AuditQuery, MAILBOX_LIST};
pub use reconcile::ReconcileReport;
pub use reports::{
    Chart, Column, Drawing, REPORT_FRESH, ReportData, ReportRow, Unit, format_value,
};
pub use requests::{REQUEST_LIST, RequestQuery, RequestView};
pub use sessions::{
    KEY_PREFIX, KEY_ROLES, KeyRefusal, LiveSession, NewKey, OIDC_FLOW_SECS, SessionKind,
    SessionRules, SignIn, check_key_name, parse_duration, random_secret, secret_hash,
};
pub use setup::{
    canvas_client, connect_store, connection_string, database_url, mailer, open_store,
    store_options,
};
pub use sweep::SweepReport;
pub use tokens::TokenPageView;
pub use tokens::{TOKEN_LIST, TokenQuery};
pub use work::{MAX_ATTEMPTS, WorkError, backoff};

use crate::delivery::email::SmtpSender;
use crate::delivery::envelope::AtRestKey;
use futures::future::BoxFuture;

use crate::domain::request::Request;
use crate::domain::{
    Actor, AuditRecord, Change, DomainError, Effect, EmailKind, Login, Policy, RequestId, Roles,
};
use crate::store::{self, QueuedEmail, Store, StoreError, Tx};

/// Where email goes.
#[derive(Clone)]
pub enum Mailer {
    /// Kept in the database and shown at the mailbox page (the demo's inbox).
    Mailbox,
    Smtp(SmtpSender),
}

/// The configured role lists.
#[derive(Debug, Clone, Default)]
pub struct RoleBook {
    pub approvers: HashSet<Login>,
    pub helpdesk: HashSet<Login>,
    pub auditors: HashSet<Login>,
    pub admins: HashSet<Login>,
}

impl RoleBook {
    pub fn roles_of(&self, login: &Login) -> Roles {
        Roles {
            approver: self.approvers.contains(login),
            helpdesk: self.helpdesk.contains(login),
            auditor: self.auditors.contains(login),
            admin: self.admins.contains(login),
        }
    }

    /// Who hears about new requests: the approvers, or the admins when there are none.
    pub fn reviewers(&self) -> Vec<Login> {
        self.or_admins(&self.approvers)
    }

    /// Who hears of leaked tokens: the help desk, or the admins when there is none.
    pub fn support(&self) -> Vec<Login> {
        self.or_admins(&self.helpdesk)
    }

    /// `holders`, or the admins when there are none, sorted.
    fn or_admins(&self, holders: &HashSet<Login>) -> Vec<Login> {
        let from = if holders.is_empty() {
            &self.admins
        } else {
            holders
        };
        let mut list: Vec<Login> = from.iter().cloned().collect();
        list.sort();
        list
    }
}

/// Everything the service needs, built once at start.
#[derive(Clone)]
pub struct AppParts {
    pub store: Store,
    pub policy: Policy,
    pub roles: RoleBook,
    pub canvas: CanvasClient,
    /// Canvas's base URL, for links in emails and pages.
    pub canvas_url: Url,
    /// How a login names its person in Canvas.
    pub canvas_user_pattern: crate::domain::UserIdPattern,
    /// The base of delivery links and links in emails.
    pub public_url: Url,
    pub mailer: Mailer,
    /// Keeps an unsent delivery email encrypted until it is sent (otherwise it is re-issued).
    pub outbox_key: Option<AtRestKey>,
    pub product_name: String,
    pub clock: Arc<dyn Clock>,
    /// `[notify]`.
    pub notify: crate::config::NotifyConfig,
    /// How long sign-in sessions last.
    pub sessions: SessionRules,
    /// `security.fingerprint_key`: fingerprints of issued tokens, for leak reports.
    pub fingerprint_key: Option<AtRestKey>,
}

/// How `login` names its person in Canvas under `pattern` (`canvas.user_id_pattern`).
pub fn user_ref(
    pattern: crate::domain::UserIdPattern,
    login: &Login,
) -> Result<tokendesk_canvas::UserRef, crate::domain::FieldError> {
    use crate::domain::UserIdPattern;
    use tokendesk_canvas::{CanvasUserId, UserRef};
    pattern.check(login)?;
    Ok(match pattern {
        UserIdPattern::SisLogin => UserRef::SisLoginId(login.to_string()),
        UserIdPattern::SisUser => UserRef::SisUserId(login.to_string()),
        UserIdPattern::CanvasId => {
            UserRef::Id(CanvasUserId(login.as_str().parse().map_err(|_| {
                crate::domain::FieldError::new("login", "not_a_canvas_id", "not a number")
            })?))
        }
    })
}

/// `/readyz` answers within a second, whatever the pool is doing.
pub const READY_WITHIN: std::time::Duration = std::time::Duration::from_millis(900);

impl AppError {
    /// Whether this is the database not answering (503, not 500; logged once by the store).
    pub fn is_database_down(&self) -> bool {
        matches!(self, AppError::Store(e) if e.is_unreachable())
    }
}

/// What a reload may change.
struct Live {
    policy: Policy,
    roles: Arc<RoleBook>,
}

/// The running service; cheap to clone.
#[derive(Clone)]
pub struct App(Arc<Inner>);

struct Inner {
    parts: AppParts,
    /// The rules a configuration reload may change while running (SIGHUP): the policy and the
    /// roles. `parts.policy` and `parts.roles` are only where they started.
    live: std::sync::RwLock<Live>,
    /// How this instance shares background work with the others.
    workers: WorkerSettings,
    /// This instance's name in `periodic_runs.owner` and the logs: `pid-RANDOM`.
    instance: String,
    /// Wakes the workers when work is queued.
    wake: tokio::sync::Notify,
    /// How many refusals of each person the audit trail has recorded lately.
    refusals: crate::limits::RateLimiter,
    /// Reports read lately (each is computed at most once a minute).
    reports: reports::ReportCache,
}

/// The audit trail records so many refusals of one person (such as opening somebody else's
/// envelope), then only logs them until the hour's allowance refills: probing cannot flood it.
pub const REFUSAL_RECORDS: crate::limits::Rate = crate::limits::Rate::per_hour(10);

/// Where a request came from, for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    pub client_addr: Option<String>,
}

impl Ctx {
    /// Work done by tokendesk itself.
    pub fn system() -> Ctx {
        Ctx::default()
    }
}

/// Why an operation did not happen. Nothing was changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("Canvas did not do it, so nothing was changed: {0}")]
    Canvas(#[from] CanvasError),
    #[error(transparent)]
    Store(StoreError),
    /// Two people changed the same thing at once; this one lost.
    #[error("someone else changed this at the same time; reload and try again")]
    Conflict,
    /// A feature that is off in this configuration.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => AppError::Conflict,
            StoreError::NotFound => AppError::Domain(DomainError::NotFound),
            other => AppError::Store(other),
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// Background work settings (`[workers]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    /// How long a claimed job or email is held before another instance may take it over.
    pub lease: time::Duration,
    /// The sweep runs once per this period across all instances.
    pub sweep_every: std::time::Duration,
    /// Reconciliation with Canvas runs once per this period across all instances.
    pub reconcile_every: std::time::Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            lease: time::Duration::minutes(5),
            sweep_every: std::time::Duration::from_secs(30),
            reconcile_every: std::time::Duration::from_secs(3600),
        }
    }
}

impl App {
    pub fn new(parts: AppParts) -> App {
        App::with_workers(parts, WorkerSettings::default())
    }

    /// An app whose workers use `workers` instead of the defaults.
    pub fn with_workers(parts: AppParts, workers: WorkerSettings) -> App {
        use rand::RngExt as _;
        let instance = format!("{}-{:08x}", std::process::id(), rand::rng().random::<u32>());
        let live = std::sync::RwLock::new(Live {
            policy: parts.policy,
            roles: Arc::new(parts.roles.clone()),
        });
        App(Arc::new(Inner {
            parts,
            live,
            workers,
            instance,
            wake: tokio::sync::Notify::new(),
            refusals: crate::limits::RateLimiter::default(),
            reports: reports::ReportCache::default(),
        }))
    }

    /// Background work settings.
    pub fn workers(&self) -> WorkerSettings {
        self.0.workers
    }

    /// This instance's name (process id and a random part), unique across instances.
    pub fn instance(&self) -> &str {
        &self.0.instance
    }

    /// What this app was built from (another instance on the same database is built from
    /// the same).
    pub fn parts_cloned(&self) -> AppParts {
        let mut parts = self.0.parts.clone();
        parts.policy = self.policy();
        parts.roles = (*self.roles()).clone();
        parts
    }

    /// Puts a reloaded configuration's policy and roles in force for the operations that start
    /// from now on.
    pub fn reload_rules(&self, policy: Policy, roles: RoleBook) {
        let mut live = self.0.live.write().unwrap_or_else(|e| e.into_inner());
        *live = Live {
            policy,
            roles: Arc::new(roles),
        };
    }

    /// The roles in force.
    pub fn roles(&self) -> Arc<RoleBook> {
        self.0
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .roles
            .clone()
    }

    /// The parts, for the operations (which live in this module's children).
    fn parts(&self) -> &AppParts {
        &self.0.parts
    }

    fn store(&self) -> &Store {
        &self.0.parts.store
    }

    pub fn now(&self) -> time::OffsetDateTime {
        self.parts().clock.now()
    }

    /// The institution's rules in force.
    pub fn policy(&self) -> Policy {
        self.0.live.read().unwrap_or_else(|e| e.into_inner()).policy
    }

    /// The base of tokendesk's links (ends with `/`).
    pub fn public_url(&self) -> &Url {
        &self.parts().public_url
    }

    /// Whether email goes to the mailbox page (the demo's inbox) instead of SMTP.
    pub fn uses_mailbox(&self) -> bool {
        matches!(self.parts().mailer, Mailer::Mailbox)
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> AppResult<()> {
        Ok(self.store().ping(READY_WITHIN).await?)
    }

    /// Whether the database is known not to answer (no waiting).
    pub fn database_is_down(&self) -> bool {
        self.store().is_down()
    }

    /// While the database is down: a short ping to learn when it is back (once a second, from
    /// the server).
    pub async fn probe_database(&self) {
        self.store().probe().await;
    }

    /// Counts for operators (`/metrics`, `tokendesk status`): no person asks, so no role is
    /// checked; only numbers leave.
    pub async fn stats(&self) -> AppResult<store::Stats> {
        let mut conn = self.read().await?;
        Ok(store::stats(&mut conn).await?)
    }

    /// How the status look-up cache has done.
    pub fn view_cache_stats(&self) -> store::ViewCacheStats {
        self.store().view_cache_stats()
    }

    /// Closes the database (at shutdown).
    pub async fn close(&self) {
        self.store().close().await;
    }

    /// The actor for a signed-in login, with the roles configuration gives it.
    pub fn actor(&self, login: Login) -> Actor {
        let roles = self.roles().roles_of(&login);
        Actor { login, roles }
    }

    /// A pooled connection for reads.
    async fn read(&self) -> AppResult<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.store().read().await?)
    }

    /// A write transaction.
    async fn write(&self) -> AppResult<Tx> {
        Ok(self.store().write().await?)
    }

    /// Wakes the workers (work was queued).
    pub fn wake(&self) {
        self.0.wake.notify_one();
    }

    pub async fn wait_for_work(&self) {
        self.0.wake.notified().await;
    }

    /// The Canvas `:user_id` of a login: exactly one kind of identifier, whatever the login
    /// says (a login `self` is the SIS login "self", never the admin token's own user).
    pub fn canvas_user_ref(
        &self,
        login: &Login,
    ) -> Result<tokendesk_canvas::UserRef, crate::domain::FieldError> {
        user_ref(self.parts().canvas_user_pattern, login)
    }

    /// Whether the person Canvas found for `login` is that person (see
    /// [`crate::domain::UserIdPattern::owns`]).
    pub(crate) fn owns_canvas_user(
        &self,
        login: &Login,
        user: &tokendesk_canvas::User,
    ) -> Result<(), String> {
        self.parts().canvas_user_pattern.owns(
            login,
            user.id.0,
            user.login_id.as_deref(),
            user.sis_user_id.as_deref(),
        )
    }

    /// Where a person activates tokens in Canvas.
    pub fn canvas_settings_url(&self) -> String {
        let canvas = &self.parts().canvas_url;
        canvas
            .join("profile/settings")
            .map(String::from)
            .unwrap_or_else(|_| canvas.to_string())
    }

    /// A page of tokendesk, absolute.
    pub fn page_url(&self, path: &str) -> String {
        let base = self.public_url();
        base.join(path.trim_start_matches('/'))
            .map(String::from)
            .unwrap_or_else(|_| format!("{base}{path}"))
    }

    /// Writes an audit event in the transaction.
    async fn audit(&self, tx: &mut Tx, record: &AuditRecord, ctx: &Ctx) -> AppResult<()> {
        tx.audit(record, self.now(), ctx.client_addr.as_deref())
            .await?;
        Ok(())
    }

    /// The one transition path: reads a request, asks the domain for the change, and writes the
    /// new state, its audit event, its follow-up work and whatever else belongs to the same
    /// change (`also`, in the same transaction). A request moved by someone else meanwhile is
    /// a conflict, and nothing is written.
    async fn transition_with<T: Send>(
        &self,
        id: RequestId,
        ctx: &Ctx,
        decide: impl FnOnce(&Request) -> Result<Change<Request>, DomainError>,
        also: impl for<'t> FnOnce(&'t mut Tx, &'t Request) -> BoxFuture<'t, AppResult<T>> + Send,
    ) -> AppResult<(Request, T)> {
        let mut tx = self.write().await?;
        let next = self.step(&mut tx, id, ctx, decide).await?;
        let extra = also(&mut tx, &next).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.wake();
        Ok((next, extra))
    }

    /// One transition inside a transaction the caller commits: reads the request, asks the
    /// domain, writes the new state, its audit event and its follow-up work.
    async fn step(
        &self,
        tx: &mut Tx,
        id: RequestId,
        ctx: &Ctx,
        decide: impl FnOnce(&Request) -> Result<Change<Request>, DomainError>,
    ) -> AppResult<Request> {
        let current = store::get_request(tx, id)
            .await?
            .ok_or(DomainError::NotFound)?;
        let change = decide(&current)?;
        store::update_request(tx, current.state, &change.state).await?;
        self.audit(tx, &change.audit, ctx).await?;
        self.apply_effects(tx, id, &current.requester, &change.effects)
            .await?;
        Ok(change.state)
    }

    /// [`App::transition_with`] with nothing more to write.
    async fn transition(
        &self,
        id: RequestId,
        ctx: &Ctx,
        decide: impl FnOnce(&Request) -> Result<Change<Request>, DomainError>,
    ) -> AppResult<Request> {
        self.transition_with(id, ctx, decide, |_, _| Box::pin(async { Ok(()) }))
            .await
            .map(|(request, ())| request)
    }

    /// Queues what a transition asks for, in its transaction.
    async fn apply_effects(
        &self,
        tx: &mut Tx,
        request: RequestId,
        requester: &Login,
        effects: &[Effect],
    ) -> AppResult<()> {
        let now = self.now();
        for effect in effects {
            match effect {
                Effect::IssueToken => {
                    store::enqueue_job(tx, store::JobKind::IssueToken, Some(request), now).await?;
                }
                Effect::DeleteToken => {
                    store::enqueue_job(tx, store::JobKind::DeleteToken, Some(request), now).await?;
                }
                Effect::ExtendToken => {
                    store::enqueue_job(tx, store::JobKind::ExtendToken, Some(request), now).await?;
                }
                Effect::NotifyExpiredUnused | Effect::NotifyExtended => {
                    let kind = match effect {
                        Effect::NotifyExtended => EmailKind::Extended,
                        _ => EmailKind::ExpiredUnused,
                    };
                    store::enqueue_email(
                        tx,
                        kind,
                        Some(request),
                        Some(requester),
                        &QueuedEmail::Notice,
                        None,
                        now,
                    )
                    .await?;
                }
                // With a digest, the approvers hear of it in their next one (see the sweep).
                Effect::NotifyApprovers if self.parts().notify.approver_digest_minutes > 0 => {}
                Effect::NotifyApprovers => {
                    let reviewers: Vec<Login> = self
                        .roles()
                        .reviewers()
                        .into_iter()
                        .filter(|r| r != requester)
                        .collect();
                    store::enqueue_notices(tx, EmailKind::NewRequest, request, &reviewers, now)
                        .await?;
                }
                Effect::NotifyDenied => {
                    store::enqueue_email(
                        tx,
                        EmailKind::Denied,
                        Some(request),
                        Some(requester),
                        &QueuedEmail::Notice,
                        None,
                        now,
                    )
                    .await?;
                }
                Effect::NotifyRevoked => {
                    store::enqueue_email(
                        tx,
                        EmailKind::Revoked,
                        Some(request),
                        Some(requester),
                        &QueuedEmail::Notice,
                        None,
                        now,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Writes an audit event on its own (a refusal worth recording, an event of the sweep).
    async fn record(&self, record: &AuditRecord, ctx: &Ctx) -> AppResult<()> {
        let mut tx = self.write().await?;
        self.audit(&mut tx, record, ctx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Records a refusal of `record.actor`, unless they have had [`REFUSAL_RECORDS`] lately; then
    /// it is only logged.
    async fn record_refusal(&self, record: &AuditRecord, ctx: &Ctx) -> AppResult<()> {
        let actor = record.actor.as_str();
        let limit = crate::limits::Limit::RefusalRecord;
        if self
            .0
            .refusals
            .check(limit, actor, REFUSAL_RECORDS)
            .is_err()
        {
            tracing::warn!(
                actor,
                action = record.action,
                target = %record.target,
                "refusal not recorded in the audit trail: too many from this person this hour"
            );
            return Ok(());
        }
        self.record(record, ctx).await
    }
}

/// What only a person may do (ask for tokens, keep a calendar): a service key acts with its
/// one role and nothing else.
fn person_only(actor: &Actor) -> Result<(), DomainError> {
    if actor.is_service_key() {
        return Err(DomainError::Forbidden(
            "a service key acts only with its role; it cannot ask for tokens or keep a calendar"
                .into(),
        ));
    }
    Ok(())
}

/// Whose things a list shows: the login given in `field` when the actor `may_see_others`
/// (`None`: everyone's), otherwise only the actor's own; naming someone else without that right
/// is refused with `refusal`.
fn whose(
    actor: &Actor,
    field: &'static str,
    raw: Option<&str>,
    may_see_others: bool,
    refusal: &str,
) -> Result<Option<Login>, DomainError> {
    let named = match raw.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Some(Login::parse(s).map_err(|mut e| {
            e.field = field;
            DomainError::Invalid(vec![e])
        })?),
        None => None,
    };
    if may_see_others {
        return Ok(named);
    }
    match named {
        Some(other) if other != actor.login => Err(DomainError::Forbidden(refusal.to_owned())),
        _ => Ok(Some(actor.login.clone())),
    }
}

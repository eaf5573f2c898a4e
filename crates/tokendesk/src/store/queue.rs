//! Work queued in the same transaction as the change that causes it: jobs (talk to Canvas) and
//! outgoing email. Workers claim a row with a lease; a worker that dies loses its lease and the
//! row is claimed again once the lease runs out. On PostgreSQL claiming uses
//! `FOR UPDATE SKIP LOCKED`; on SQLite the write lock already serialises claimers.

use sqlx::{AnyConnection, Row};
use time::{Duration, OffsetDateTime};

use super::sql::{Conditions, ListQuery, from_ts, state, ts};
use super::{Backend, Store, StoreResult};
use crate::delivery::email::OutgoingEmail;
use crate::domain::{EmailKind, Login, RequestId, StateSet};

/// Kinds of background job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Create the token in Canvas, seal it, send the link.
    IssueToken,
    /// Delete the request's token in Canvas (it expired, or a renewal replaced it).
    DeleteToken,
    /// Move the expiry of the token a renewal renews, and hand the token to the renewal.
    ExtendToken,
    /// Revoke the request's token as part of a bulk revocation run (`revoke_items`).
    RevokeToken,
}

impl StateSet for JobKind {
    const ALL: &'static [JobKind] = &[
        JobKind::IssueToken,
        JobKind::DeleteToken,
        JobKind::ExtendToken,
        JobKind::RevokeToken,
    ];

    fn as_str(self) -> &'static str {
        match self {
            JobKind::IssueToken => "issue_token",
            JobKind::DeleteToken => "delete_token",
            JobKind::ExtendToken => "extend_token",
            JobKind::RevokeToken => "revoke_token",
        }
    }
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        StateSet::as_str(self)
    }
}

/// Where a queued row is: waiting, held by a worker, finished, or given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueState {
    Queued,
    /// Held by a worker until its lease runs out (`running` for jobs, `sending` for emails).
    Held,
    /// Done (`done` for jobs, `sent` for emails).
    Finished,
    Dead,
}

/// The two queues: their table and the names of their states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queue {
    Jobs,
    Emails,
}

impl Queue {
    pub(super) fn table(self) -> &'static str {
        match self {
            Queue::Jobs => "jobs",
            Queue::Emails => "emails",
        }
    }

    pub(super) fn state(self, state: QueueState) -> &'static str {
        match (self, state) {
            (_, QueueState::Queued) => "queued",
            (Queue::Jobs, QueueState::Held) => "running",
            (Queue::Emails, QueueState::Held) => "sending",
            (Queue::Jobs, QueueState::Finished) => "done",
            (Queue::Emails, QueueState::Finished) => "sent",
            (_, QueueState::Dead) => "dead",
        }
    }
}

pub async fn enqueue_job(
    conn: &mut AnyConnection,
    kind: JobKind,
    request_id: Option<RequestId>,
    now: OffsetDateTime,
) -> StoreResult<i64> {
    let row = sqlx::query(
        "INSERT INTO jobs (kind, request_id, state, attempts, run_after, created_at, updated_at) \
         VALUES ($1, $2, $4, 0, $3, $3, $3) RETURNING id",
    )
    .bind(kind.as_str())
    .bind(request_id.map(|r| r.0))
    .bind(ts(now))
    .bind(Queue::Jobs.state(QueueState::Queued))
    .fetch_one(conn)
    .await?;
    Ok(row.try_get::<i64, _>(0)?)
}

/// A job a worker holds until `locked_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: i64,
    pub kind: JobKind,
    pub request_id: Option<RequestId>,
    /// Including this one.
    pub attempts: u32,
    pub locked_until: OffsetDateTime,
}

/// Claims the next due row of a queue table (or one whose holder's lease ran out) and returns
/// the asked-for columns. On PostgreSQL concurrent claimers skip each other's rows; on SQLite
/// the write transaction serialises them.
async fn claim_row(
    store: &Store,
    queue: Queue,
    columns: &str,
    now: OffsetDateTime,
    lease: Duration,
    holder: Option<&str>,
) -> StoreResult<Option<sqlx::any::AnyRow>> {
    let lock = match store.backend() {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let table = queue.table();
    let running = queue.state(QueueState::Held);
    let queued = queue.state(QueueState::Queued);
    // Jobs remember which instance last claimed them (for operators and tests).
    let holder_column = if queue == Queue::Jobs {
        ", locked_by = $3"
    } else {
        ""
    };
    // Two index-ordered picks (due rows, and rows whose holder's lease lapsed) instead of one
    // OR-ed condition, which would scan and sort the whole backlog.
    let sql = format!(
        "UPDATE {table} SET state = '{running}', attempts = attempts + 1, locked_until = $1{holder_column} \
         WHERE id = (SELECT id FROM ( \
             SELECT id, run_after FROM (SELECT id, run_after FROM {table} \
                 WHERE state = '{queued}' AND run_after <= $2 ORDER BY run_after, id LIMIT 1{lock}) AS due \
             UNION ALL \
             SELECT id, run_after FROM (SELECT id, run_after FROM {table} \
                 WHERE state = '{running}' AND locked_until <= $2 ORDER BY run_after, id LIMIT 1{lock}) AS lapsed \
             ) AS next ORDER BY run_after, id LIMIT 1) \
         RETURNING {columns}"
    );
    let mut tx = store.write().await?;
    // Round the lease's end up to the next whole second (times are stored in seconds), so that
    // a lease is never shorter than asked for.
    let until = now + lease;
    let until = ts(until) + i64::from(until.nanosecond() > 0);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(until)
        .bind(ts(now));
    if queue == Queue::Jobs {
        query = query.bind(holder);
    }
    let row = query.fetch_optional(&mut *tx).await?;
    tx.commit().await?;
    Ok(row)
}

/// Claims the next job that is due (or whose holder's lease ran out).
pub async fn claim_job(
    store: &Store,
    now: OffsetDateTime,
    lease: Duration,
) -> StoreResult<Option<ClaimedJob>> {
    claim_job_by(store, now, lease, None).await
}

/// [`claim_job`], recording the claiming instance in `jobs.locked_by`.
pub async fn claim_job_by(
    store: &Store,
    now: OffsetDateTime,
    lease: Duration,
    holder: Option<&str>,
) -> StoreResult<Option<ClaimedJob>> {
    let columns = "id, kind, request_id, attempts, locked_until";
    let Some(r) = claim_row(store, Queue::Jobs, columns, now, lease, holder).await? else {
        return Ok(None);
    };
    let attempts: i64 = r.try_get("attempts")?;
    Ok(Some(ClaimedJob {
        id: r.try_get("id")?,
        kind: state("job kind", &r.try_get::<String, _>("kind")?)?,
        request_id: r.try_get::<Option<i64>, _>("request_id")?.map(RequestId),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        locked_until: from_ts(r.try_get("locked_until")?)?,
    }))
}

pub async fn job_done(conn: &mut AnyConnection, id: i64, now: OffsetDateTime) -> StoreResult<()> {
    sqlx::query("UPDATE jobs SET state = $3, locked_until = NULL, updated_at = $1 WHERE id = $2")
        .bind(ts(now))
        .bind(id)
        .bind(Queue::Jobs.state(QueueState::Finished))
        .execute(conn)
        .await?;
    Ok(())
}

/// Puts the job back for another attempt at `run_after`, or buries it (`dead`) when `None`.
pub async fn job_retry(
    conn: &mut AnyConnection,
    id: i64,
    error: &str,
    run_after: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE jobs SET state = $1, run_after = COALESCE($2, run_after), locked_until = NULL, \
         last_error = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(Queue::Jobs.state(if run_after.is_some() {
        QueueState::Queued
    } else {
        QueueState::Dead
    }))
    .bind(run_after.map(ts))
    .bind(error)
    .bind(ts(now))
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// An email waiting to be sent.
#[derive(Debug, Clone)]
pub enum QueuedEmail {
    /// Composed when it is sent, from its kind, request and recipient (notifications), or, for
    /// a delivery email whose link was lost (its key lives only in memory), re-issued then.
    Notice,
    /// Ready to send; holds no secret.
    Clear(OutgoingEmail),
    /// A delivery email sealed under the outbox key until it is sent.
    /// `to_addr`, `subject` and the sealed serialized `OutgoingEmail`.
    Sealed {
        to_addr: String,
        subject: String,
        sealed: Vec<u8>,
    },
}

pub async fn enqueue_email(
    conn: &mut AnyConnection,
    kind: EmailKind,
    request_id: Option<RequestId>,
    to_login: Option<&Login>,
    email: &QueuedEmail,
    held_until: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> StoreResult<i64> {
    let (to_addr, subject, text, html, sealed) = match email {
        QueuedEmail::Notice => (None, None, None, None, None),
        QueuedEmail::Clear(e) => (
            Some(e.to.as_str()),
            Some(e.subject.as_str()),
            Some(e.text.as_str()),
            Some(e.html.as_str()),
            None,
        ),
        QueuedEmail::Sealed {
            to_addr,
            subject,
            sealed,
        } => (
            Some(to_addr.as_str()),
            Some(subject.as_str()),
            None,
            None,
            Some(sealed.as_slice()),
        ),
    };
    // A held email is claimed by the caller at once (it will send it from memory).
    let (state, locked_until) = match held_until {
        Some(until) => (QueueState::Held, Some(ts(until))),
        None => (QueueState::Queued, None),
    };
    let row = sqlx::query(
        "INSERT INTO emails (kind, request_id, to_login, to_addr, subject, body_text, body_html, \
         sealed_body, state, attempts, run_after, locked_until, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, $10) RETURNING id",
    )
    .bind(kind.as_str())
    .bind(request_id.map(|r| r.0))
    .bind(to_login.map(Login::as_str))
    .bind(to_addr)
    .bind(subject)
    .bind(text)
    .bind(html)
    .bind(sealed)
    .bind(Queue::Emails.state(state))
    .bind(ts(now))
    .bind(locked_until)
    .fetch_one(conn)
    .await?;
    Ok(row.try_get::<i64, _>(0)?)
}

/// Queues the same notice for each of `to` (about one request) in one statement: the new
/// request's notice to every approver, in the writer's turn, costs one statement whatever
/// their number.
pub async fn enqueue_notices(
    conn: &mut AnyConnection,
    kind: EmailKind,
    request_id: RequestId,
    to: &[Login],
    now: OffsetDateTime,
) -> StoreResult<()> {
    for to in to.chunks(NOTICE_ROWS) {
        let values = (0..to.len())
            .map(|i| format!("($1, $2, ${}, $3, 0, $4, $4)", i + 5))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO emails (kind, request_id, to_login, state, attempts, run_after, created_at) \
             VALUES {values}"
        );
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(kind.as_str())
            .bind(request_id.0)
            .bind(Queue::Emails.state(QueueState::Queued))
            .bind(ts(now));
        for login in to {
            insert = insert.bind(login.as_str());
        }
        insert.execute(&mut *conn).await?;
    }
    Ok(())
}

/// At most this many notices go into one `INSERT`.
const NOTICE_ROWS: usize = 500;

/// An email a worker holds until its lease runs out.
#[derive(Debug, Clone)]
pub struct ClaimedEmail {
    pub id: i64,
    pub kind: EmailKind,
    pub request_id: Option<RequestId>,
    pub to_login: Option<String>,
    pub attempts: u32,
    pub email: QueuedEmail,
    /// When it was queued.
    pub created_at: OffsetDateTime,
}

pub async fn claim_email(
    store: &Store,
    now: OffsetDateTime,
    lease: Duration,
) -> StoreResult<Option<ClaimedEmail>> {
    let columns = "id, kind, request_id, to_login, to_addr, subject, body_text, body_html, \
                   sealed_body, attempts, created_at";
    let Some(r) = claim_row(store, Queue::Emails, columns, now, lease, None).await? else {
        return Ok(None);
    };
    let to_addr: Option<String> = r.try_get("to_addr")?;
    let subject: Option<String> = r.try_get("subject")?;
    let sealed: Option<Vec<u8>> = r.try_get("sealed_body")?;
    let text: Option<String> = r.try_get("body_text")?;
    let email = match (to_addr, subject, sealed, text) {
        (Some(to_addr), Some(subject), Some(sealed), _) => QueuedEmail::Sealed {
            to_addr,
            subject,
            sealed,
        },
        (Some(to), Some(subject), None, Some(text)) => QueuedEmail::Clear(OutgoingEmail {
            to,
            to_name: None,
            subject,
            text,
            html: r
                .try_get::<Option<String>, _>("body_html")?
                .unwrap_or_default(),
        }),
        _ => QueuedEmail::Notice,
    };
    let attempts: i64 = r.try_get("attempts")?;
    Ok(Some(ClaimedEmail {
        id: r.try_get("id")?,
        kind: state("email kind", &r.try_get::<String, _>("kind")?)?,
        request_id: r.try_get::<Option<i64>, _>("request_id")?.map(RequestId),
        to_login: r.try_get("to_login")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        email,
        created_at: super::sql::from_ts(r.try_get("created_at")?)?,
    }))
}

/// Marks an email sent, recording to whom and what about. `keep` is the message as delivered,
/// whose body only the mailbox transport keeps (it is the demo's inbox); any sealed body is
/// dropped.
pub async fn email_done(
    tx: &mut super::Tx,
    id: i64,
    sent: &OutgoingEmail,
    keep_body: bool,
    now: OffsetDateTime,
) -> StoreResult<()> {
    tx.erases();
    sqlx::query(
        "UPDATE emails SET state = $7, sent_at = $1, locked_until = NULL, sealed_body = NULL, \
         to_addr = $2, subject = $3, body_text = $4, body_html = $5 WHERE id = $6",
    )
    .bind(ts(now))
    .bind(sent.to.as_str())
    .bind(sent.subject.as_str())
    .bind(keep_body.then_some(sent.text.as_str()))
    .bind(keep_body.then_some(sent.html.as_str()))
    .bind(id)
    .bind(Queue::Emails.state(QueueState::Finished))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Puts an email back for another attempt, or gives up (`dead`, sealed body dropped).
pub async fn email_retry(
    tx: &mut super::Tx,
    id: i64,
    error: &str,
    run_after: Option<OffsetDateTime>,
) -> StoreResult<()> {
    if run_after.is_none() {
        tx.erases();
    }
    sqlx::query(
        "UPDATE emails SET state = $1, run_after = COALESCE($2, run_after), locked_until = NULL, \
         last_error = $3, sealed_body = CASE WHEN $2 IS NULL THEN NULL ELSE sealed_body END \
         WHERE id = $4",
    )
    .bind(Queue::Emails.state(if run_after.is_some() {
        QueueState::Queued
    } else {
        QueueState::Dead
    }))
    .bind(run_after.map(ts))
    .bind(error)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Keeps an unsent delivery email sealed under the outbox key for another attempt.
pub async fn email_seal(
    conn: &mut AnyConnection,
    id: i64,
    to_addr: &str,
    subject: &str,
    sealed: &[u8],
    error: &str,
    run_after: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE emails SET state = $7, to_addr = $1, subject = $2, sealed_body = $3, \
         last_error = $4, run_after = $5, locked_until = NULL WHERE id = $6",
    )
    .bind(to_addr)
    .bind(subject)
    .bind(sealed)
    .bind(error)
    .bind(ts(run_after))
    .bind(id)
    .bind(Queue::Emails.state(QueueState::Queued))
    .execute(conn)
    .await?;
    Ok(())
}

/// A delivered message in the mailbox transport's inbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = MailMessage)]
pub struct MailboxMessage {
    pub id: i64,
    pub to: String,
    pub to_login: Option<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub sent_at: OffsetDateTime,
}

/// The query [`mailbox`] runs: sent messages, newest first (one login's from
/// `emails_by_login`).
pub fn mailbox_query(to_login: Option<&Login>, limit: i64) -> ListQuery {
    let mut q = Conditions::default();
    q.equals("state", Queue::Emails.state(QueueState::Finished));
    if let Some(login) = to_login {
        q.equals("to_login", login.as_str());
    }
    let limit = q.arg(limit);
    q.build(
        "SELECT id, to_addr, to_login, subject, body_text, body_html, sent_at FROM emails",
        &format!("ORDER BY sent_at DESC, id DESC LIMIT {limit}"),
    )
}

/// Sent messages, newest first, optionally for one login.
pub async fn mailbox(
    conn: &mut AnyConnection,
    to_login: Option<&Login>,
    limit: i64,
) -> StoreResult<Vec<MailboxMessage>> {
    let rows = mailbox_query(to_login, limit).fetch_all(conn).await?;
    rows.iter()
        .map(|r| {
            Ok(MailboxMessage {
                id: r.try_get("id")?,
                to: r
                    .try_get::<Option<String>, _>("to_addr")?
                    .unwrap_or_default(),
                to_login: r.try_get("to_login")?,
                subject: r
                    .try_get::<Option<String>, _>("subject")?
                    .unwrap_or_default(),
                text: r
                    .try_get::<Option<String>, _>("body_text")?
                    .unwrap_or_default(),
                html: r
                    .try_get::<Option<String>, _>("body_html")?
                    .unwrap_or_default(),
                sent_at: from_ts(r.try_get("sent_at")?)?,
            })
        })
        .collect()
}

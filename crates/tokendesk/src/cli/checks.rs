//! What `check-config --online` and `status` ask of the parts tokendesk stands on: the
//! database, Canvas (the admin token's permissions actually used) and SMTP. One check each,
//! shared by both commands.

use std::fmt::Write as _;

use time::OffsetDateTime;
use tokendesk_canvas::{NewToken, TokenRef, UserRef};

use crate::app::Mailer;
use crate::config::Config;
use crate::domain::Login;
use crate::store::Store;

/// One thing checked: what, and the problem if there is one.
#[derive(Debug)]
pub(super) struct Check {
    pub what: &'static str,
    pub detail: String,
    pub problem: Option<String>,
}

impl Check {
    fn ok(what: &'static str, detail: impl Into<String>) -> Check {
        Check {
            what,
            detail: detail.into(),
            problem: None,
        }
    }

    fn failed(what: &'static str, problem: impl Into<String>) -> Check {
        Check {
            what,
            detail: String::new(),
            problem: Some(problem.into()),
        }
    }
}

/// The report: one line per check, and the names of those that failed.
pub(super) fn report(checks: &[Check]) -> (String, Vec<&'static str>) {
    let mut out = String::new();
    let mut failed = Vec::new();
    for c in checks {
        match &c.problem {
            None => {
                let _ = writeln!(out, "ok      {:<10} {}", c.what, c.detail);
            }
            Some(problem) => {
                failed.push(c.what);
                let _ = writeln!(out, "PROBLEM {:<10} {problem}", c.what);
            }
        }
    }
    (out, failed)
}

/// The work queues (waiting, the oldest's age, given up; an item waiting over an hour is a
/// problem) and the audit chain's verification.
pub(super) async fn queues_and_audit(store: &Store) -> Vec<Check> {
    let now = OffsetDateTime::now_utc();
    let counted = async {
        let mut conn = store.pool().acquire().await?;
        let stats = crate::store::stats(&mut conn).await?;
        let chain = crate::store::verify_chain(&mut conn).await?;
        Ok::<_, crate::store::StoreError>((stats, chain))
    };
    let (stats, chain) = match counted.await {
        Ok(counted) => counted,
        Err(e) => return vec![Check::failed("queues", format!("cannot count: {e}"))],
    };
    let mut checks = Vec::new();
    for (what, q) in [("jobs", stats.jobs), ("emails", stats.emails)] {
        let age = q.oldest.map(|t| (now - t).whole_seconds().max(0));
        let detail = format!(
            "{} waiting{}, {} given up",
            q.waiting,
            age.map_or_else(String::new, |a| format!(", the oldest for {a} s")),
            q.dead
        );
        // Work waits minutes at most (back-off included); an hour means stuck.
        checks.push(match age.filter(|a| *a > 3600) {
            Some(a) => Check::failed(
                what,
                format!(
                    "{detail}: the oldest has waited {a} s; are the workers running? see the log"
                ),
            ),
            None => Check::ok(what, detail),
        });
    }
    checks.push(match chain {
        Ok(count) => Check::ok("audit", format!("chain intact: {count} events")),
        Err(broken) => Check::failed("audit", broken.to_string()),
    });
    checks
}

/// The database answers; its schema against this build's migrations.
pub(super) async fn database(config: &Config) -> (Check, Option<Store>) {
    const WHAT: &str = "database";
    let store = match crate::app::connect_store(config).await {
        Ok(store) => store,
        Err(e) => return (Check::failed(WHAT, format!("{e:#}")), None),
    };
    let kind = config.database.kind();
    let check = match store.schema().await {
        Err(e) => Check::failed(WHAT, format!("{kind}: cannot read the schema: {e}")),
        Ok(schema) => match schema.refuse_newer() {
            Err(e) => Check::failed(WHAT, e.to_string()),
            Ok(()) if !schema.pending.is_empty() => Check::failed(
                WHAT,
                format!(
                    "{kind} at migration {}, {} to apply ({:?}): run tokendesk migrate",
                    schema.applied.unwrap_or(0),
                    schema.pending.len(),
                    schema.pending
                ),
            ),
            Ok(()) => Check::ok(
                WHAT,
                format!(
                    "{kind} ({}), schema at migration {} (up to date)",
                    config.database, schema.known
                ),
            ),
        },
    };
    (check, Some(store))
}

/// Canvas answers, the admin token is valid, and it can create, view and delete a token: on
/// `check_user` (a pending token, deleted at once) or, without one, on the admin's own user.
pub(super) async fn canvas(config: &Config, check_user: Option<&Login>) -> Check {
    const WHAT: &str = "canvas";
    let client = match crate::app::canvas_client(config) {
        Ok(c) => c,
        Err(e) => return Check::failed(WHAT, format!("{e:#}")),
    };
    let me = match client.get_user(&UserRef::Self_).await {
        Ok(me) => me,
        Err(e) => {
            return Check::failed(
                WHAT,
                format!("{}: the admin token does not work: {e}", config.canvas.url),
            );
        }
    };
    let (user, whom) = match check_user {
        Some(login) => match crate::app::user_ref(config.canvas.user_id_pattern, login) {
            Ok(user) => (user, format!("user {login}")),
            Err(e) => return Check::failed(WHAT, format!("--check-user {login}: {}", e.message)),
        },
        None => (
            UserRef::Self_,
            format!("the admin's own user ({})", me.name),
        ),
    };
    let mut new = NewToken::new("tokendesk status check (deleted at once)");
    new.expires_at = Some(OffsetDateTime::now_utc() + time::Duration::hours(1));
    let created = match client.create_token(&user, &new).await {
        Ok(created) => created,
        Err(e) => {
            return Check::failed(
                WHAT,
                format!(
                    "the admin token cannot create a token for {whom} (create_access_tokens): {e}"
                ),
            );
        }
    };
    let token = TokenRef::Id(created.token.id);
    let viewed = client.show_token(&user, &token).await;
    let deleted = client.delete_token(&user, &token).await;
    match (viewed, deleted) {
        (_, Err(e)) => Check::failed(
            WHAT,
            format!(
                "the admin token created token {} for {whom} but cannot delete it (delete_access_tokens): {e}; delete it in Canvas by hand",
                created.token.id
            ),
        ),
        (Err(e), Ok(_)) => Check::failed(
            WHAT,
            format!(
                "the admin token cannot view {whom}'s tokens (view_user_generated_access_tokens): {e}"
            ),
        ),
        (Ok(_), Ok(_)) => Check::ok(
            WHAT,
            format!(
                "{} answers; the admin token created, viewed and deleted a token for {whom}",
                config.canvas.url
            ),
        ),
    }
}

/// The SMTP server answers and accepts the credentials (EHLO, STARTTLS or TLS as configured,
/// AUTH); nothing is sent.
pub(super) async fn smtp(config: &Config) -> Check {
    const WHAT: &str = "smtp";
    match crate::app::mailer(config) {
        Err(e) => Check::failed(WHAT, format!("{e:#}")),
        Ok(Mailer::Mailbox) => Check::ok(WHAT, "email.transport = mailbox: nothing to reach"),
        Ok(Mailer::Smtp(sender)) => match sender.check_connection().await {
            Ok(()) => Check::ok(
                WHAT,
                format!(
                    "{} answers and accepts tokendesk's greeting{}",
                    config
                        .email
                        .smtp
                        .as_ref()
                        .map_or_else(String::new, |s| format!("{}:{}", s.host, s.port)),
                    if config
                        .email
                        .smtp
                        .as_ref()
                        .is_some_and(|s| s.credentials.is_some())
                    {
                        " and credentials"
                    } else {
                        ""
                    }
                ),
            ),
            Err(e) => Check::failed(WHAT, e.to_string()),
        },
    }
}

//! Each person's calendar feed (iCalendar, RFC 5545) of their tokens' expiry days, at a secret
//! address (`/calendar/SECRET.ics`) they make, replace or stop from `/me`. The feed shows what a
//! calendar needs (the day, the instant it ends, the purpose, where to renew) and nothing
//! secret; the address is the only key to it, so a new one makes the old one stop working.

use serde_json::json;
use time::OffsetDateTime;

use super::{App, AppResult, Ctx};
use crate::domain::request::{self, Request, RequestState};
use crate::domain::{Actor, AuditRecord, Login};
use crate::store::{self, RequestFilter, StoreError, Whose};

/// A feed secret: 32 random bytes, base64url without padding.
const SECRET_LEN: usize = 43;

/// The reminder a calendar shows before each expiry day.
const ALARM: &str = "-P3D";

/// Whether `s` has the shape of a feed secret (before any database look-up).
pub fn is_secret(s: &str) -> bool {
    s.len() == SECRET_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl App {
    /// The address of `actor`'s feed, if they have one.
    pub async fn calendar_url(&self, actor: &Actor) -> AppResult<Option<String>> {
        let mut conn = self.read().await?;
        let secret = store::calendar_secret(&mut conn, &actor.login).await?;
        Ok(secret.map(|s| self.feed_url(&s)))
    }

    fn feed_url(&self, secret: &str) -> String {
        self.page_url(&format!("/calendar/{secret}.ics"))
    }

    /// Makes `actor` a feed address, replacing the old one (which stops working).
    pub async fn new_calendar(&self, actor: &Actor, ctx: &Ctx) -> AppResult<String> {
        super::person_only(actor)?;
        let secret = super::random_secret(32);
        let now = self.now();
        let mut tx = self.write().await?;
        let me = store::Person {
            login: actor.login.clone(),
            name: None,
            email: None,
            canvas_user_id: None,
        };
        store::upsert_person(&mut tx, &me, now).await?;
        store::set_calendar(&mut tx, &actor.login, &secret, now).await?;
        self.audit(
            &mut tx,
            &calendar_event(&actor.login, "calendar.create"),
            ctx,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(self.feed_url(&secret))
    }

    /// Stops `actor`'s feed; whether there was one.
    pub async fn stop_calendar(&self, actor: &Actor, ctx: &Ctx) -> AppResult<bool> {
        let mut tx = self.write().await?;
        let stopped = store::drop_calendar(&mut tx, &actor.login).await?;
        if stopped {
            self.audit(&mut tx, &calendar_event(&actor.login, "calendar.stop"), ctx)
                .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(stopped)
    }

    /// The feed at this secret, or `None` (unknown, or stopped).
    pub async fn calendar_feed(&self, secret: &str) -> AppResult<Option<String>> {
        if !is_secret(secret) {
            return Ok(None);
        }
        let mut conn = self.read().await?;
        let Some(owner) = store::calendar_owner(&mut conn, secret).await? else {
            return Ok(None);
        };
        // Newest first: live tokens are among a person's latest requests.
        let filter = RequestFilter::of(Whose::Person(owner.clone()), 1000);
        let requests = store::list_requests(&mut conn, &filter).await?;
        drop(conn);
        let live: Vec<&Request> = requests
            .iter()
            .rev()
            .filter(|r| r.state.holds_token() || r.state == RequestState::Approved)
            .collect();
        Ok(Some(self.ics(&owner, &live)))
    }

    /// The iCalendar text: one all-day event on each live token's expiry day.
    fn ics(&self, owner: &Login, requests: &[&Request]) -> String {
        let now = self.now();
        let host = self
            .public_url()
            .host_str()
            .unwrap_or("tokendesk")
            .to_owned();
        let mut out = Ics::default();
        out.line("BEGIN:VCALENDAR");
        out.line("VERSION:2.0");
        out.line("PRODID:-//tokendesk//Canvas token expiry//EN");
        out.line("CALSCALE:GREGORIAN");
        out.line("METHOD:PUBLISH");
        out.property("X-WR-CALNAME", &format!("Canvas tokens of {owner}"));
        for r in requests {
            let day = r.expires_on;
            let page = self.page_url(&format!("/requests/{}", r.id));
            out.line("BEGIN:VEVENT");
            out.property("UID", &format!("tokendesk-request-{}@{host}", r.id));
            out.line(&format!("DTSTAMP:{}", stamp(now)));
            out.line(&format!("DTSTART;VALUE=DATE:{}", compact(day)));
            out.line(&format!(
                "DTEND;VALUE=DATE:{}",
                compact(day.next_day().unwrap_or(day))
            ));
            out.property(
                "SUMMARY",
                &format!("Canvas token expires (request #{})", r.id),
            );
            out.property(
                "DESCRIPTION",
                &format!(
                    "The Canvas API access token of request #{} expires on {}.\nPurpose: {}\nRenew or revoke it: {page}",
                    r.id,
                    request::expiry_text(day),
                    r.purpose
                ),
            );
            out.property("URL", &page);
            out.line("TRANSP:TRANSPARENT");
            out.line("BEGIN:VALARM");
            out.line("ACTION:DISPLAY");
            out.line(&format!("TRIGGER:{ALARM}"));
            out.property(
                "DESCRIPTION",
                &format!("Canvas token of request #{} expires in 3 days", r.id),
            );
            out.line("END:VALARM");
            out.line("END:VEVENT");
        }
        out.line("END:VCALENDAR");
        out.0
    }
}

fn calendar_event(login: &Login, action: &'static str) -> AuditRecord {
    AuditRecord {
        actor: login.to_string(),
        action,
        target: format!("person:{login}"),
        outcome: "ok",
        details: json!({}),
    }
}

/// `20261231`.
fn compact(day: time::Date) -> String {
    format!(
        "{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// `20261201T120000Z`.
fn stamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{}T{:02}{:02}{:02}Z",
        compact(at.date()),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// iCalendar text: CRLF lines folded at 75 octets, text values escaped.
#[derive(Default)]
struct Ics(String);

impl Ics {
    /// A content line, folded (RFC 5545 §3.1): no line longer than 75 octets, continuations
    /// start with a space, never inside a character.
    fn line(&mut self, line: &str) {
        let mut width = 0;
        for c in line.chars() {
            let len = c.len_utf8();
            if width + len > 75 {
                self.0.push_str("\r\n ");
                width = 1;
            }
            self.0.push(c);
            width += len;
        }
        self.0.push_str("\r\n");
    }

    /// `NAME:value` with the value escaped as TEXT (§3.3.11).
    fn property(&mut self, name: &str, value: &str) {
        let mut escaped = String::with_capacity(value.len());
        for c in value.chars() {
            match c {
                '\\' => escaped.push_str("\\\\"),
                ';' => escaped.push_str("\\;"),
                ',' => escaped.push_str("\\,"),
                '\n' => escaped.push_str("\\n"),
                '\r' => {}
                c if c.is_control() => {}
                c => escaped.push(c),
            }
        }
        self.line(&format!("{name}:{escaped}"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_fold_at_75_octets_without_splitting_characters() {
        let mut ics = Ics::default();
        ics.property("DESCRIPTION", &"é,".repeat(60));
        for line in ics.0.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(line.len() <= 75, "{} octets: {line}", line.len());
        }
        let unfolded = ics.0.replace("\r\n ", "");
        assert_eq!(unfolded, format!("DESCRIPTION:{}\r\n", "é\\,".repeat(60)));
    }

    #[test]
    fn secrets_have_one_shape() {
        assert!(is_secret(&"A".repeat(43)));
        assert!(!is_secret(&"A".repeat(42)));
        assert!(!is_secret(&format!("{}/", "A".repeat(42))));
    }
}

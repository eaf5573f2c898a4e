//! Email: composing the four notifications tokendesk sends, and sending them over SMTP.
//!
//! Composition is pure: each `*_email` function takes a typed description of the mail and returns
//! an [`OutgoingEmail`] (plain-text and HTML bodies rendered from askama templates under
//! `templates/email/`, HTML escaped by default). The token value is never an input, so it can
//! never end up in an email; the approval email carries only the delivery link.
//!
//! An [`OutgoingEmail`] for an approval contains the link (and so the envelope key): queue it only
//! encrypted (see [`crate::delivery::envelope::seal_at_rest`]). Its `Debug` shows no body.
//!
//! Sending: [`SmtpSender`] wraps lettre's pooled async SMTP transport. Failures come back as
//! [`EmailError`], which tells the caller whether retrying may help ([`EmailError::is_transient`])
//! and never contains a message body or link in its text.
//!
//! Dates are written in UTC as `2026-12-05 14:00 UTC` ([`format_datetime`]) and days as
//! `2026-12-05` ([`format_date`]).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use askama::Template;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, UtcOffset};

use crate::domain::EmailKind;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Errors from composing or sending email.
///
/// Display texts never contain a message body or a delivery link: they hold an address (for
/// [`EmailError::InvalidAddress`]), a setting name, or the SMTP server's reply / the network
/// error, shortened to [`MAX_DETAIL`] characters.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// An email address (recipient or From) could not be parsed.
    #[error("invalid email address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The SMTP settings are unusable (e.g. a user name without a password).
    #[error("invalid SMTP settings: {0}")]
    Config(String),
    /// Rendering a template or building the MIME message failed.
    #[error("could not compose the email: {0}")]
    Compose(String),
    /// A failure that may go away on retry: connection refused or reset, timeout, TLS handshake
    /// failure, an unreadable reply, or an SMTP 4xx reply.
    #[error("temporary email delivery failure{}: {detail}", code_suffix(*.code))]
    Transient {
        /// The SMTP reply code, when the server answered.
        code: Option<u16>,
        /// The server's reply or the network error.
        detail: String,
    },
    /// A failure that retrying the same message will not fix: an SMTP 5xx reply (unknown
    /// recipient, rejected content, failed authentication) or a client-side protocol problem
    /// such as the server not offering STARTTLS or a needed authentication mechanism.
    #[error("permanent email delivery failure{}: {detail}", code_suffix(*.code))]
    Permanent {
        /// The SMTP reply code, when the server answered.
        code: Option<u16>,
        /// The server's reply or the client error.
        detail: String,
    },
}

/// Longest server/network detail kept in an [`EmailError`].
pub const MAX_DETAIL: usize = 300;

fn code_suffix(code: Option<u16>) -> String {
    code.map(|c| format!(" ({c})")).unwrap_or_default()
}

impl EmailError {
    /// Whether retrying later may succeed (connection problems, timeouts, 4xx replies).
    /// Address, configuration, composition and 5xx errors are not transient.
    pub fn is_transient(&self) -> bool {
        matches!(self, EmailError::Transient { .. })
    }

    /// The SMTP reply code, if the server answered with an error.
    pub fn smtp_code(&self) -> Option<u16> {
        match self {
            EmailError::Transient { code, .. } | EmailError::Permanent { code, .. } => *code,
            _ => None,
        }
    }

    fn from_smtp(err: &lettre::transport::smtp::Error) -> Self {
        let code = err.status().map(u16::from);
        let detail = sanitize_detail(&err.to_string());
        if err.is_permanent() || err.is_client() {
            EmailError::Permanent { code, detail }
        } else {
            // Transient replies, timeouts, connection/network/TLS errors, unparsable replies,
            // transport shut down: all worth another try later.
            EmailError::Transient { code, detail }
        }
    }
}

/// Keeps server replies and network errors to one short line of printable text.
fn sanitize_detail(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DETAIL)
        .collect();
    if s.chars().count() > MAX_DETAIL {
        out.push('…');
    }
    out
}

/// Parses a bare email address (`jane@example.edu`, no display name).
pub fn parse_address(s: &str) -> Result<Address, EmailError> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(EmailError::InvalidAddress {
            address: s.to_owned(),
            reason: "the address is empty".to_owned(),
        });
    }
    trimmed
        .parse::<Address>()
        .map_err(|e| EmailError::InvalidAddress {
            address: s.to_owned(),
            reason: format!("{e} (expected something like name@example.edu)"),
        })
}

// ---------------------------------------------------------------------------------------------
// The composed email
// ---------------------------------------------------------------------------------------------

/// A composed email, ready to send or to queue (serde, so it can be stored — encrypted, since an
/// approval email holds the delivery link). `Debug` omits the bodies.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingEmail {
    /// Recipient address (`jane@example.edu`).
    pub to: String,
    /// Recipient display name.
    pub to_name: Option<String>,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

impl fmt::Debug for OutgoingEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingEmail")
            .field("to", &self.to)
            .field("to_name", &self.to_name)
            .field("subject", &self.subject)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .field("html", &format_args!("<{} bytes>", self.html.len()))
            .finish()
    }
}

/// `2026-12-05 14:00 UTC`: how emails (and anything else that wants to match them) show an
/// instant. The value is converted to UTC first.
pub fn format_datetime(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{} {:02}:{:02} UTC",
        format_date(at.date()),
        at.hour(),
        at.minute()
    )
}

/// `2026-12-05`.
pub fn format_date(day: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

// ---------------------------------------------------------------------------------------------
// Composition
// ---------------------------------------------------------------------------------------------

/// One email tokendesk sends: its kind, its recipient and its subject. Its two bodies come
/// from `templates/email/<name>.txt` and `<name>.html` (declared with [`email!`]),
/// rendered with the email itself as `v`; the HTML one escapes what it shows.
pub trait Email: Bodies {
    /// What the email tells its reader.
    const KIND: EmailKind;
    /// The recipient's address.
    fn to(&self) -> &str;
    /// The recipient's display name.
    fn to_name(&self) -> Option<&str>;
    /// The subject line.
    fn subject(&self) -> String;
}

/// The rendered bodies of an email: (plain text, HTML). Implemented by [`email!`].
pub trait Bodies {
    fn bodies(&self) -> Result<(String, String), askama::Error>;
}

/// Declares an email type: its kind and its two templates, `email!(Type, EmailKind::X,
/// "email/x.txt", "email/x.html")`. The type has `to` and `to_name` fields and a
/// `subject_line()`; its templates also get `greeting()`, the name to greet if any.
macro_rules! email {
    ($mail:ident, $kind:expr, $text:literal, $html:literal) => {
        impl Email for $mail<'_> {
            const KIND: EmailKind = $kind;
            fn to(&self) -> &str {
                self.to
            }
            fn to_name(&self) -> Option<&str> {
                self.to_name
            }
            fn subject(&self) -> String {
                self.subject_line()
            }
        }

        impl $mail<'_> {
            /// The name to greet, if any.
            fn greeting(&self) -> Option<&str> {
                non_empty(self.to_name)
            }
        }

        const _: () = {
            #[derive(Template)]
            #[template(path = $text)]
            struct Text<'v, 'a> {
                v: &'v $mail<'a>,
            }

            #[derive(Template)]
            #[template(path = $html)]
            struct Html<'v, 'a> {
                v: &'v $mail<'a>,
            }

            impl Bodies for $mail<'_> {
                fn bodies(&self) -> Result<(String, String), askama::Error> {
                    Ok((Text { v: self }.render()?, Html { v: self }.render()?))
                }
            }
        };
    };
}

/// Composes an email: its subject and both bodies. The token value is never an input.
pub fn compose<E: Email>(mail: &E) -> Result<OutgoingEmail, EmailError> {
    let (text, html) = mail
        .bodies()
        .map_err(|e| EmailError::Compose(format!("template error: {e}")))?;
    Ok(OutgoingEmail {
        to: mail.to().trim().to_owned(),
        to_name: non_empty(mail.to_name()).map(one_line),
        subject: mail.subject(),
        text,
        html,
    })
}

/// "Your token is ready": the delivery link, when it expires, how to activate the token in
/// Canvas (Account → Settings → Approved Integrations), its expiry day, and "treat it like a
/// password". Never the token value.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalMail<'a> {
    /// The requester's address.
    pub to: &'a str,
    /// The requester's display name.
    pub to_name: Option<&'a str>,
    /// The request the token was issued for.
    pub request_id: i64,
    /// The delivery link (`https://HOST/e/ID#KEY`), from [`crate::delivery::envelope::delivery_link`].
    pub link: &'a SecretString,
    /// When the link stops working.
    pub link_expires_at: OffsetDateTime,
    /// The day Canvas stops accepting the token.
    pub token_expires_on: Date,
    /// Where the person activates the token, e.g. `https://canvas.example.edu/profile/settings`.
    pub canvas_settings_url: &'a str,
    /// Name shown in subjects and signatures, e.g. `Example University Canvas tokens`.
    pub product_name: &'a str,
}

email!(
    ApprovalMail,
    EmailKind::Delivery,
    "email/approval.txt",
    "email/approval.html"
);

impl ApprovalMail<'_> {
    fn subject_line(&self) -> String {
        format!(
            "Your Canvas access token is ready (request #{})",
            self.request_id
        )
    }
    fn link(&self) -> &str {
        self.link.expose_secret()
    }
    fn link_expires(&self) -> String {
        format_datetime(self.link_expires_at)
    }
    fn token_expires(&self) -> String {
        expiry_text(self.token_expires_on)
    }
}

/// "Your request was not approved", with the approver's reason.
#[derive(Debug, Clone, Copy)]
pub struct DenialMail<'a> {
    /// The requester's address.
    pub to: &'a str,
    /// The requester's display name.
    pub to_name: Option<&'a str>,
    /// The denied request.
    pub request_id: i64,
    /// The approver's reason, shown verbatim (escaped in HTML).
    pub reason: &'a str,
    /// Where to submit a new request, if it should be linked.
    pub portal_url: Option<&'a str>,
    /// Name shown in subjects and signatures.
    pub product_name: &'a str,
}

email!(
    DenialMail,
    EmailKind::Denied,
    "email/denial.txt",
    "email/denial.html"
);

impl DenialMail<'_> {
    fn subject_line(&self) -> String {
        format!(
            "Your Canvas access token request #{} was not approved",
            self.request_id
        )
    }
    fn reason(&self) -> &str {
        self.reason.trim()
    }
    fn portal(&self) -> Option<&str> {
        non_empty(self.portal_url)
    }
}

/// "Your token has been revoked", naming the token by request and/or Canvas token hint. At
/// least one of `request_id` / `token_hint` should be given so the person can tell which token
/// is meant.
#[derive(Debug, Clone, Copy)]
pub struct RevocationMail<'a> {
    /// The token owner's address.
    pub to: &'a str,
    /// The owner's display name.
    pub to_name: Option<&'a str>,
    /// The request the token came from, if it was issued by tokendesk.
    pub request_id: Option<i64>,
    /// Canvas's `token_hint` (the first few characters), never the token value.
    pub token_hint: Option<&'a str>,
    /// Why it was revoked, shown verbatim (escaped in HTML).
    pub reason: &'a str,
    /// Where to request a new token, if it should be linked.
    pub portal_url: Option<&'a str>,
    /// Name shown in subjects and signatures.
    pub product_name: &'a str,
}

email!(
    RevocationMail,
    EmailKind::Revoked,
    "email/revocation.txt",
    "email/revocation.html"
);

impl RevocationMail<'_> {
    fn subject_line(&self) -> String {
        match self.request_id {
            Some(id) => format!("Your Canvas access token has been revoked (request #{id})"),
            None => "Your Canvas access token has been revoked".to_owned(),
        }
    }
    /// Starts with a space when non-empty: "Your Canvas API access token{which} has been
    /// revoked".
    fn which(&self) -> String {
        match (self.request_id, non_empty(self.token_hint)) {
            (Some(id), Some(h)) => format!(" from request #{id} (token hint {h})"),
            (Some(id), None) => format!(" from request #{id}"),
            (None, Some(h)) => format!(" with token hint {h}"),
            (None, None) => String::new(),
        }
    }
    fn reason(&self) -> &str {
        self.reason.trim()
    }
    fn portal(&self) -> Option<&str> {
        non_empty(self.portal_url)
    }
}

/// "A new request is waiting for review", to an approver.
#[derive(Debug, Clone, Copy)]
pub struct NewRequestMail<'a> {
    /// The approver's address.
    pub to: &'a str,
    /// The approver's display name.
    pub to_name: Option<&'a str>,
    /// The requester's display name.
    pub requester_name: &'a str,
    /// The requester's sign-in name (or email).
    pub requester_login: &'a str,
    /// The new request.
    pub request_id: i64,
    /// The purpose the requester gave.
    pub purpose: &'a str,
    /// The expiry day the requester asked for (or the policy maximum).
    pub expires_on: Date,
    /// The page where the approver reviews it.
    pub review_url: &'a str,
    /// Name shown in subjects and signatures.
    pub product_name: &'a str,
}

email!(
    NewRequestMail,
    EmailKind::NewRequest,
    "email/new_request.txt",
    "email/new_request.html"
);

impl NewRequestMail<'_> {
    fn subject_line(&self) -> String {
        format!(
            "New Canvas access token request #{} from {}",
            self.request_id,
            one_line(self.requester_name)
        )
    }
    fn purpose(&self) -> &str {
        self.purpose.trim()
    }
    fn expires(&self) -> String {
        expiry_text(self.expires_on)
    }
}

/// "Your token expires soon": the day and instant, and where to renew it.
#[derive(Debug, Clone, Copy)]
pub struct ReminderMail<'a> {
    pub to: &'a str,
    pub to_name: Option<&'a str>,
    pub request_id: i64,
    pub purpose: &'a str,
    pub expires_on: Date,
    /// Days left until `expires_on`.
    pub days_left: i64,
    /// The token's page, with Renew.
    pub token_url: &'a str,
    pub product_name: &'a str,
}

email!(
    ReminderMail,
    EmailKind::Reminder,
    "email/reminder.txt",
    "email/reminder.html"
);

impl ReminderMail<'_> {
    fn subject_line(&self) -> String {
        format!(
            "Your Canvas access token expires on {} (request #{})",
            format_date(self.expires_on),
            self.request_id
        )
    }
    fn expires(&self) -> String {
        expiry_text(self.expires_on)
    }
    fn when(&self) -> String {
        match self.days_left {
            0 => "today".to_owned(),
            1 => "tomorrow".to_owned(),
            n => format!("in {n} days"),
        }
    }
    fn purpose(&self) -> &str {
        self.purpose.trim()
    }
}

/// "Your token was never put to use and was removed": why, and how to ask again.
#[derive(Debug, Clone, Copy)]
pub struct ExpiredUnusedMail<'a> {
    pub to: &'a str,
    pub to_name: Option<&'a str>,
    pub request_id: i64,
    pub reason: &'a str,
    /// Where to ask for a new token.
    pub portal_url: &'a str,
    pub product_name: &'a str,
}

email!(
    ExpiredUnusedMail,
    EmailKind::ExpiredUnused,
    "email/expired_unused.txt",
    "email/expired_unused.html"
);

impl ExpiredUnusedMail<'_> {
    fn subject_line(&self) -> String {
        format!(
            "Your Canvas access token was never used and has been removed (request #{})",
            self.request_id
        )
    }
    fn reason(&self) -> &str {
        self.reason.trim()
    }
}

/// "Your token's expiry was moved" (a renewal that extends the same token).
#[derive(Debug, Clone, Copy)]
pub struct ExtendedMail<'a> {
    pub to: &'a str,
    pub to_name: Option<&'a str>,
    pub request_id: i64,
    pub expires_on: Date,
    pub token_url: &'a str,
    pub product_name: &'a str,
}

email!(
    ExtendedMail,
    EmailKind::Extended,
    "email/extended.txt",
    "email/extended.html"
);

impl ExtendedMail<'_> {
    fn subject_line(&self) -> String {
        format!(
            "Your Canvas access token now expires on {} (request #{})",
            format_date(self.expires_on),
            self.request_id
        )
    }
    fn expires(&self) -> String {
        expiry_text(self.expires_on)
    }
}

/// "Your token has not been used for a while and will be revoked".
#[derive(Debug, Clone, Copy)]
pub struct UnusedWarningMail<'a> {
    pub to: &'a str,
    pub to_name: Option<&'a str>,
    pub request_id: i64,
    /// How long it has been unused (`policy.revoke_unused_days`).
    pub days: u32,
    /// The day it is revoked unless it is used before.
    pub revoke_on: Date,
    pub token_url: &'a str,
    pub product_name: &'a str,
}

email!(
    UnusedWarningMail,
    EmailKind::UnusedWarning,
    "email/unused_warning.txt",
    "email/unused_warning.html"
);

impl UnusedWarningMail<'_> {
    fn subject_line(&self) -> String {
        format!(
            "Your Canvas access token has not been used for {} days (request #{})",
            self.days, self.request_id
        )
    }
    fn revoke_on(&self) -> String {
        format_date(self.revoke_on)
    }
}

/// One request in an approver's digest.
#[derive(Debug, Clone)]
pub struct DigestItem {
    pub request_id: i64,
    pub requester: String,
    pub purpose: String,
    pub expires_on: Date,
    /// The request it renews, if it is a renewal.
    pub renews: Option<i64>,
    /// Whether it arrived since the previous digest.
    pub new: bool,
    pub url: String,
}

impl DigestItem {
    fn expires(&self) -> String {
        expiry_text(self.expires_on)
    }
    fn purpose(&self) -> &str {
        self.purpose.trim()
    }
}

/// "Requests are waiting for your review": every waiting request, the new ones marked, each
/// with its link. One per approver per `notify.approver_digest_minutes`.
#[derive(Debug, Clone)]
pub struct DigestMail<'a> {
    pub to: &'a str,
    pub to_name: Option<&'a str>,
    pub items: &'a [DigestItem],
    /// The queue page.
    pub queue_url: &'a str,
    pub product_name: &'a str,
}

email!(
    DigestMail,
    EmailKind::Digest,
    "email/digest.txt",
    "email/digest.html"
);

impl DigestMail<'_> {
    fn subject_line(&self) -> String {
        let new = self.items.iter().filter(|i| i.new).count();
        match (self.items.len(), new) {
            (1, _) => "A Canvas access token request is waiting for your review".to_owned(),
            (n, new) if new > 0 && new < n => {
                format!("{n} Canvas access token requests are waiting for your review ({new} new)")
            }
            (n, _) => format!("{n} Canvas access token requests are waiting for your review"),
        }
    }
}

/// A token's expiry as people read it (see [`crate::domain::request::expiry_text`]).
pub fn expiry_text(day: Date) -> String {
    crate::domain::request::expiry_text(day)
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// Subjects must be one line; user-supplied names could contain newlines.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------------

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text. Only for a relay on localhost or in tests.
    None,
    /// Connect in plain text, then require STARTTLS (usually port 587).
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// SMTP settings. `from` may be a bare address or `Name <address>`.
/// With `tls` other than [`SmtpTls::None`], `host` must be the name on the server's certificate.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Server host name.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Transport security.
    pub tls: SmtpTls,
    /// User name for AUTH; requires `password`.
    pub username: Option<String>,
    /// Password for AUTH; requires `username`.
    pub password: Option<SecretString>,
    /// The From header and envelope sender.
    pub from: String,
    /// Limit for connecting, and for one whole send (connect, greeting, commands, data).
    /// lettre's async transport only applies its own timeout to the TCP connect, so
    /// [`SmtpSender`] enforces this around every send: a server that stalls mid-dialogue
    /// yields a transient error instead of hanging a worker.
    pub timeout: Duration,
}

/// Sends [`OutgoingEmail`]s through one SMTP server, reusing connections (lettre's pool).
/// Cheap to clone.
#[derive(Clone)]
pub struct SmtpSender {
    pool: Arc<Mutex<Pooled>>,
    /// What a new pool is built from.
    builder: Arc<AsyncSmtpTransportBuilder>,
    from: Mailbox,
    timeout: Duration,
}

/// The transport whose pool sends now, and how many were replaced before it.
struct Pooled {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    generation: u64,
}

impl fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSender")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpSender {
    /// Validates the settings and builds the transport. Does not connect (see
    /// [`SmtpSender::check_connection`]).
    ///
    /// Must be called inside a Tokio runtime: the connection pool spawns a background task.
    /// Outside one this returns [`EmailError::Config`] instead of panicking.
    pub fn new(settings: &SmtpSettings) -> Result<Self, EmailError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EmailError::Config(
                "the SMTP sender must be created inside a Tokio runtime".to_owned(),
            ));
        }
        let host = settings.host.trim();
        if host.is_empty() {
            return Err(EmailError::Config("the SMTP host is empty".to_owned()));
        }
        if settings.timeout.is_zero() {
            return Err(EmailError::Config(
                "the SMTP timeout must be positive".to_owned(),
            ));
        }
        if settings.port == 0 {
            return Err(EmailError::Config("the SMTP port must not be 0".to_owned()));
        }
        let from: Mailbox =
            settings
                .from
                .trim()
                .parse()
                .map_err(
                    |e: lettre::address::AddressError| EmailError::InvalidAddress {
                        address: settings.from.clone(),
                        reason: format!(
                            "{e} (the From setting must be an address or \"Name <address>\")"
                        ),
                    },
                )?;
        let builder = match settings.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| EmailError::Config(format!("STARTTLS to {host}: {e}")))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| EmailError::Config(format!("TLS to {host}: {e}")))?,
        };
        let mut builder = builder.port(settings.port).timeout(Some(settings.timeout));
        match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(
                    user.clone(),
                    password.expose_secret().to_owned(),
                ));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(EmailError::Config(
                    "an SMTP username is set but no password".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(EmailError::Config(
                    "an SMTP password is set but no username".to_owned(),
                ));
            }
        }
        Ok(Self {
            pool: Arc::new(Mutex::new(Pooled {
                transport: builder.clone().build(),
                generation: 0,
            })),
            builder: Arc::new(builder),
            from,
            timeout: settings.timeout,
        })
    }

    /// The From mailbox used for every message.
    pub fn from_mailbox(&self) -> &Mailbox {
        &self.from
    }

    /// Builds the MIME message: From (settings), To, Subject, Date, Message-ID, and a
    /// multipart/alternative body with the text part first and the HTML part second.
    pub fn build_message(&self, email: &OutgoingEmail) -> Result<Message, EmailError> {
        let to = Mailbox::new(email.to_name.clone(), parse_address(&email.to)?);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(one_line(&email.subject))
            .message_id(None)
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            // lettre's builder errors name headers/addresses, never the body.
            .map_err(|e| EmailError::Compose(e.to_string()))
    }

    /// Sends one email. Transient failures (connection, timeout, 4xx) are worth retrying.
    pub async fn send(&self, email: &OutgoingEmail) -> Result<(), EmailError> {
        let message = self.build_message(email)?;
        let (transport, generation) = self.transport();
        match tokio::time::timeout(self.timeout, transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(EmailError::from_smtp(&e)),
            Err(_) => {
                self.replace_pool(generation);
                Err(self.timed_out())
            }
        }
    }

    fn transport(&self) -> (AsyncSmtpTransport<Tokio1Executor>, u64) {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        (pooled.transport.clone(), pooled.generation)
    }

    /// A send given up on at the timeout leaves its connection half-way through the exchange,
    /// and lettre puts it back in the pool as it is: the next send would begin on it, and hang
    /// (its server still waits for the rest of a message) or fail. So the pool it came from is
    /// replaced (unless another send replaced it already), and the old one closes its
    /// connections once the sends still using it are done.
    fn replace_pool(&self, generation: u64) {
        let mut pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pooled.generation == generation {
            pooled.transport = AsyncSmtpTransportBuilder::clone(&self.builder).build();
            pooled.generation += 1;
        }
    }

    fn timed_out(&self) -> EmailError {
        EmailError::Transient {
            code: None,
            detail: format!(
                "the SMTP server did not complete the exchange within {:?}",
                self.timeout
            ),
        }
    }

    /// Connects and greets the server (for `check-config` and readiness), without sending.
    pub async fn check_connection(&self) -> Result<(), EmailError> {
        let (transport, generation) = self.transport();
        let checked = tokio::time::timeout(self.timeout, transport.test_connection()).await;
        if checked.is_err() {
            self.replace_pool(generation);
        }
        match checked {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(EmailError::Transient {
                code: None,
                detail: "the SMTP server did not accept the connection".to_owned(),
            }),
            Ok(Err(e)) => Err(EmailError::from_smtp(&e)),
            Err(_) => Err(self.timed_out()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    const LINK: &str = "https://tokens.example.edu/e/AAECAwQFBgcICQoLDA0ODw#AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    fn approval() -> OutgoingEmail {
        let link = SecretString::from(LINK.to_owned());
        compose(&ApprovalMail {
            to: "jane@example.edu",
            to_name: Some("Jane <Doe> & Co"),
            request_id: 42,
            link: &link,
            link_expires_at: datetime!(2026-12-05 15:00 +01:00),
            token_expires_on: date!(2027 - 03 - 01),
            canvas_settings_url: "https://canvas.example.edu/profile/settings",
            product_name: "Example University Canvas tokens",
        })
        .unwrap()
    }

    #[test]
    fn dates_are_readable_utc() {
        assert_eq!(
            format_datetime(datetime!(2026-12-05 15:00:59 +01:00)),
            "2026-12-05 14:00 UTC"
        );
        assert_eq!(format_date(date!(2027 - 03 - 01)), "2027-03-01");
    }

    #[test]
    fn approval_contains_link_expiry_activation_and_warning() {
        let m = approval();
        assert_eq!(m.to, "jane@example.edu");
        assert_eq!(m.subject, "Your Canvas access token is ready (request #42)");
        for body in [&m.text, &m.html] {
            assert!(body.contains(LINK), "link missing");
            assert!(body.contains("2026-12-05 14:00 UTC"));
            assert!(body.contains("2027-03-01"));
            assert!(body.contains("Approved Integrations"));
            assert!(body.contains("Account → Settings"));
            assert!(body.contains("like a password"));
            assert!(body.contains("Example University Canvas tokens"));
            assert!(body.contains("#42"));
        }
        assert!(m.text.starts_with("Hello Jane <Doe> & Co,"));
        assert!(
            m.html.contains("Hello Jane &#60;Doe&#62; &#38; Co,"),
            "{}",
            m.html
        );
        assert!(m.html.contains(&format!("href=\"{LINK}\"")));
        assert!(
            m.html
                .contains("https://canvas.example.edu/profile/settings")
        );
    }

    #[test]
    fn debug_hides_bodies() {
        let m = approval();
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"));
        assert!(dbg.contains("jane@example.edu"));
    }

    #[test]
    fn serde_round_trip() {
        let m = approval();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<OutgoingEmail>(&json).unwrap(), m);
    }

    #[test]
    fn html_escapes_user_text() {
        let m = compose(&DenialMail {
            to: "a@example.edu",
            to_name: None,
            request_id: 7,
            reason: "<script>alert(1)</script> & \"quotes\"",
            portal_url: Some("https://tokens.example.edu/"),
            product_name: "tokendesk",
        })
        .unwrap();
        assert!(!m.html.contains("<script>"));
        assert!(m.html.contains("&#60;script&#62;"));
        assert!(m.text.contains("<script>alert(1)</script> & \"quotes\""));
        assert!(m.text.starts_with("Hello,\n"));
        assert!(
            m.text
                .contains("submit a new request:\n  https://tokens.example.edu/\nIf you")
        );
        assert_eq!(
            m.subject,
            "Your Canvas access token request #7 was not approved"
        );
        let no_portal = compose(&DenialMail {
            to: "a@example.edu",
            to_name: Some("  "),
            request_id: 7,
            reason: "no",
            portal_url: None,
            product_name: "tokendesk",
        })
        .unwrap();
        assert!(
            no_portal.text.contains("submit a new request.\nIf you"),
            "{}",
            no_portal.text
        );
        assert!(no_portal.to_name.is_none());
    }

    #[test]
    fn revocation_names_the_token() {
        let base = RevocationMail {
            to: "a@example.edu",
            to_name: Some("Al"),
            request_id: Some(9),
            token_hint: Some("7~Ab"),
            reason: "Security: the token was found in a public repository.",
            portal_url: None,
            product_name: "tokendesk",
        };
        let m = compose(&base).unwrap();
        assert!(
            m.text
                .contains("token from request #9 (token hint 7~Ab)\nhas been revoked"),
            "{}",
            m.text
        );
        assert!(m.html.contains("public repository"));
        assert_eq!(
            m.subject,
            "Your Canvas access token has been revoked (request #9)"
        );
        let m = compose(&RevocationMail {
            request_id: None,
            ..base
        })
        .unwrap();
        assert!(
            m.text
                .contains("token with token hint 7~Ab\nhas been revoked")
        );
        let m = compose(&RevocationMail {
            request_id: None,
            token_hint: None,
            ..base
        })
        .unwrap();
        assert!(
            m.text
                .contains("Your Canvas API access token\nhas been revoked"),
            "{}",
            m.text
        );
    }

    #[test]
    fn new_request_for_approver() {
        let m = compose(&NewRequestMail {
            to: "admin@example.edu",
            to_name: Some("Canvas Admin"),
            requester_name: "Jane\nDoe",
            requester_login: "jdoe",
            request_id: 12,
            purpose: "Grade sync script",
            expires_on: date!(2026 - 12 - 05),
            review_url: "https://tokens.example.edu/approvals/12",
            product_name: "tokendesk",
        })
        .unwrap();
        assert_eq!(
            m.subject,
            "New Canvas access token request #12 from Jane Doe"
        );
        for body in [&m.text, &m.html] {
            assert!(body.contains("Grade sync script"));
            assert!(body.contains("2026-12-05"));
            assert!(body.contains("https://tokens.example.edu/approvals/12"));
            assert!(body.contains("jdoe"));
        }
    }

    #[test]
    fn address_validation() {
        assert_eq!(
            parse_address(" jane@example.edu ").unwrap().to_string(),
            "jane@example.edu"
        );
        for bad in [
            "",
            "  ",
            "jane",
            "jane@",
            "@example.edu",
            "a b@example.edu",
            "Jane <jane@example.edu>",
        ] {
            let err = parse_address(bad).unwrap_err();
            assert!(matches!(err, EmailError::InvalidAddress { .. }), "{bad}");
            assert!(!err.is_transient());
            assert!(
                err.to_string().starts_with("invalid email address"),
                "{err}"
            );
        }
    }

    fn settings() -> SmtpSettings {
        SmtpSettings {
            host: "127.0.0.1".into(),
            port: 2525,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "Canvas tokens <tokens@example.edu>".into(),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn sender_outside_runtime_is_an_error_not_a_panic() {
        let err = SmtpSender::new(&settings()).unwrap_err();
        assert!(matches!(err, EmailError::Config(_)), "{err}");
    }

    #[tokio::test]
    async fn sender_settings_validation() {
        let s = SmtpSender::new(&settings()).unwrap();
        assert_eq!(s.from_mailbox().email.to_string(), "tokens@example.edu");
        assert!(
            SmtpSender::new(&SmtpSettings {
                from: "nope".into(),
                ..settings()
            })
            .is_err()
        );
        assert!(
            SmtpSender::new(&SmtpSettings {
                host: " ".into(),
                ..settings()
            })
            .is_err()
        );
        let err = SmtpSender::new(&SmtpSettings {
            username: Some("u".into()),
            ..settings()
        })
        .unwrap_err();
        assert!(matches!(err, EmailError::Config(_)));
        let pw = SmtpSettings {
            username: Some("u".into()),
            password: Some(SecretString::from("hunter2".to_owned())),
            ..settings()
        };
        assert!(SmtpSender::new(&pw).is_ok());
        assert!(!format!("{pw:?}").contains("hunter2"));
        assert!(
            SmtpSender::new(&SmtpSettings {
                tls: SmtpTls::Starttls,
                host: "smtp.example.edu".into(),
                ..settings()
            })
            .is_ok()
        );
        assert!(
            SmtpSender::new(&SmtpSettings {
                tls: SmtpTls::Tls,
                host: "smtp.example.edu".into(),
                ..settings()
            })
            .is_ok()
        );
    }

    #[tokio::test]
    async fn built_message_is_multipart_alternative() {
        let s = SmtpSender::new(&settings()).unwrap();
        let msg = s.build_message(&approval()).unwrap();
        let raw = String::from_utf8(msg.formatted()).unwrap();
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("text/plain"));
        assert!(raw.contains("text/html"));
        assert!(raw.contains("Message-ID: <"));
        assert!(
            raw.contains("From: \"Canvas tokens\" <tokens@example.edu>")
                || raw.contains("From: Canvas tokens <tokens@example.edu>"),
            "{raw}"
        );
        let env = msg.envelope();
        assert_eq!(env.to()[0].to_string(), "jane@example.edu");
        assert_eq!(env.from().unwrap().to_string(), "tokens@example.edu");
    }

    #[test]
    fn smtp_tls_serde_names() {
        assert_eq!(
            serde_json::from_str::<SmtpTls>("\"starttls\"").unwrap(),
            SmtpTls::Starttls
        );
        assert_eq!(serde_json::to_string(&SmtpTls::None).unwrap(), "\"none\"");
    }

    #[test]
    fn error_texts() {
        let e = EmailError::Transient {
            code: Some(451),
            detail: "try later".into(),
        };
        assert!(e.is_transient());
        assert_eq!(e.smtp_code(), Some(451));
        assert_eq!(
            e.to_string(),
            "temporary email delivery failure (451): try later"
        );
        let e = EmailError::Permanent {
            code: None,
            detail: "x".into(),
        };
        assert_eq!(e.to_string(), "permanent email delivery failure: x");
        assert!(!e.is_transient());
        assert_eq!(sanitize_detail("a\r\nb"), "a  b");
        assert_eq!(
            sanitize_detail(&"x".repeat(400)).chars().count(),
            MAX_DETAIL + 1
        );
    }
}

/// To the help desk: a token was reported leaked and has been revoked.
#[derive(Debug, Clone, Copy)]
pub struct LeakReportedMail<'a> {
    pub to: &'a str,
    pub to_name: Option<&'a str>,
    pub owner: &'a str,
    pub request_id: i64,
    pub token_hint: &'a str,
    pub token_url: &'a str,
    pub audit_url: &'a str,
    pub product_name: &'a str,
}

email!(
    LeakReportedMail,
    EmailKind::LeakReported,
    "email/leak_reported.txt",
    "email/leak_reported.html"
);

impl LeakReportedMail<'_> {
    fn subject_line(&self) -> String {
        format!(
            "A leaked token of {} was reported and revoked (request #{})",
            self.owner, self.request_id
        )
    }
}

/// To an owner: tokens of theirs revoked by a bulk revocation (one email per run).
#[derive(Debug, Clone)]
pub struct BulkRevokedMail<'a> {
    pub to: &'a str,
    pub to_name: Option<&'a str>,
    pub reason: &'a str,
    /// (request id, hint) of each token revoked.
    pub tokens: &'a [(i64, String)],
    pub portal_url: &'a str,
    pub product_name: &'a str,
}

email!(
    BulkRevokedMail,
    EmailKind::BulkRevoked,
    "email/bulk_revoked.txt",
    "email/bulk_revoked.html"
);

impl BulkRevokedMail<'_> {
    fn subject_line(&self) -> String {
        match self.tokens.len() {
            1 => "Your Canvas access token was revoked".to_owned(),
            n => format!("{n} of your Canvas access tokens were revoked"),
        }
    }
}

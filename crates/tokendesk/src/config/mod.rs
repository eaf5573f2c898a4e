//! Typed configuration: a TOML file, then `TOKENDESK_…` environment overrides, layered with
//! figment, then checked key by key with every problem reported at once. Secrets are held as
//! [`SecretString`] and never printed.
//!
//! Every key is declared once, as a field of a [`section!`](crate::settings::section) struct
//! below (or [`Policy`] in the domain): its type, default and doc comment. The environment
//! variable, the unknown-key check, `check-config` and the tables of `docs/configuration.md`
//! (see [`docs`]) all come from those declarations. A new key is one field here.

pub mod docs;
mod error;
#[cfg(test)]
mod fuzz;
mod load;
mod report;
#[cfg(test)]
mod tests;
mod values;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::delivery::envelope::AtRestKey;
use crate::domain::{Login, UserIdPattern};
use crate::settings::section;

pub use error::{ConfigError, ConfigErrors, ErrorKind, Origin};
pub use report::{check_config_report, check_config_report_with_env, summary};
pub(crate) use values::choices;
pub use values::{Secret, SecretSource};

/// `[policy]`: the institution's rules, as numbers (the domain's own type).
pub use crate::domain::Policy;

/// The whole configuration of a tokendesk instance, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the HTTP server listens (`listen`).
    pub listen: Listen,
    /// The Unix socket's permissions (`listen_mode`).
    pub listen_mode: u32,
    /// Base URL of the service as users reach it; delivery links are built on it. Always ends
    /// with `/`.
    pub public_url: Url,
    /// The database (`database_url`).
    pub database: DatabaseUrl,
    /// Largest accepted request body, in bytes (`max_body_bytes`).
    pub max_body_bytes: usize,
    /// The acknowledgement on the request form (`terms_text`); `None` for the built-in text.
    pub terms_text: Option<String>,
    /// `[database]`: the connection pool.
    pub pool: PoolConfig,
    /// `[workers]`: background work.
    pub workers: WorkersConfig,
    /// `[canvas]`.
    pub canvas: CanvasConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[auth.oidc]`, checked: present exactly when `auth.mode = "oidc"`.
    pub oidc: Option<OidcConfig>,
    /// `[roles]`.
    pub roles: RolesConfig,
    /// `[email]`.
    pub email: EmailConfig,
    /// `[policy]`.
    pub policy: Policy,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[notify]`.
    pub notify: NotifyConfig,
    /// `security.fingerprint_key`, when set.
    pub fingerprint_key: Option<OutboxKey>,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// What is acceptable but unwise, one sentence each (check-config prints them, serve logs
    /// them).
    pub warnings: Vec<String>,
    /// The file this configuration was loaded from, if any.
    pub file: Option<PathBuf>,
}

/// Where the server listens (`listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    /// A Unix socket at this (absolute) path.
    Unix(PathBuf),
}

impl Listen {
    /// The TCP address, if it is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Listen::Tcp(addr) => Some(*addr),
            Listen::Unix(_) => None,
        }
    }

    /// Whether only this host can reach it (loopback, or a Unix socket).
    pub fn is_local(&self) -> bool {
        match self {
            Listen::Tcp(addr) => addr.ip().to_canonical().is_loopback(),
            Listen::Unix(_) => true,
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Listen {
        Listen::Tcp(addr)
    }
}

/// The address tokendesk's connections on a Unix socket count as coming from.
pub const UNIX_PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Default `listen`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// Default `max_body_bytes` (64 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default `email.from`.
pub const DEFAULT_FROM: &str = "tokendesk <tokendesk@localhost>";

section! {
    /// The keys at the top of the file, outside any table.
    #[derive(Debug, Clone)]
    pub struct TopKeys in "" {
        /// Where the HTTP server listens: `IP:PORT` (an IP address, not a host name; `[::]:8080`
        /// for all IPv6/IPv4), or `unix:/PATH`, a Unix socket for a proxy on the same host (no
        /// other local account can reach it; connections on it count as from `127.0.0.1`, so
        /// keep loopback in `auth.trusted_proxies`).
        listen: Listen = Listen::Tcp(DEFAULT_LISTEN);
        /// With `listen = "unix:/PATH"`: the socket file's permissions, in octal. Give the
        /// proxy's user the group (`0660`: owner and group may connect).
        listen_mode: String = "0660".to_owned(), shown "`0660`";
        /// Base URL as people reach the service (behind the proxy). Delivery links are
        /// `<public_url>e/<ID>#<KEY>`. Must be `https://` unless the host is loopback
        /// (`localhost`, `127.0.0.1`, `::1`); no query, fragment or credentials. A trailing `/`
        /// is added.
        public_url: Option<String> = None, shown "`http://<listen>/`";
        /// `sqlite://PATH` (or `sqlite:PATH`; created if missing; a relative PATH as described
        /// under [Paths](#paths)), `sqlite::memory:` (tests), or
        /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…]` (`postgresql://` too; see
        /// [PostgreSQL](#postgresql)). May hold a password: shown with it replaced by `***`;
        /// prefer `database_url_file` for a URL with a password.
        database_url: Secret = Secret::default(), shown "`sqlite://tokendesk.db` beside the file";
        /// Largest accepted request body.
        max_body_bytes: u64 = DEFAULT_MAX_BODY_BYTES as u64, in 1024..=104857600;
        /// The acknowledgement a requester must tick on the request form (the institution's
        /// terms for API tokens); up to 2000 characters.
        terms_text: Option<String> = None, shown "built-in text";
    }
}

section! {
    /// `[database]`: the connection pool and the status look-up cache (PostgreSQL and SQLite
    /// files; an in-memory SQLite database always has one connection).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PoolConfig in "database" {
        /// Most connections this instance opens.
        max_connections: u32 = 10, in 1..=1000;
        /// How long a query waits for a connection, including opening a new one (the connect
        /// timeout); then the operation fails and `/readyz` reports the database unreachable.
        acquire_timeout_secs: u64 = 10, in 1..=600;
        /// Close a connection idle this long; `0` keeps idle connections open.
        idle_timeout_secs: u64 = 600, in 0..=86400;
        /// Status look-ups (`GET /api/v1/requests/{id}`, the request pages) are answered from
        /// memory when this instance read the same request within `view_cache_secs`; at most
        /// this many request views are kept (about 1 KB each). `0` reads the database every
        /// time.
        view_cache_entries: u64 = 50_000, in 0..=1000000;
        /// `serve` brings the schema up to date when it starts. `false` leaves that to
        /// `tokendesk migrate` (run it as part of an upgrade): `serve` then refuses a database
        /// with migrations still to apply. A database migrated by a newer release is always
        /// refused.
        auto_migrate: bool = true;
        /// The longest a cached view is served. Changes do not wait for it: a change made
        /// through this instance drops the view when it commits, and on PostgreSQL every
        /// instance hears of every change.
        view_cache_secs: u64 = 10, in 1..=3600;
    }
}

section! {
    /// `[workers]`: how background work is shared between instances.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct WorkersConfig in "workers" {
        /// How long an instance holds a job or email it claimed. If it dies, another instance
        /// takes the work over once the lease has run out. Keep it well above the longest
        /// Canvas call (`canvas.timeout_secs` × retries).
        lease_secs: u64 = 300, in 1..=86400;
        /// The sweep runs once per this period across all instances sharing the database (each
        /// instance checks; the first to claim the period runs it).
        sweep_every_secs: u64 = 30, in 1..=86400;
        /// Reconciliation (every live token compared with Canvas, one listing per person) runs
        /// once per this period across all instances.
        reconcile_every_secs: u64 = 3600, in 60..=604800;
    }
}

section! {
    /// `[canvas]`: the Canvas instance and the admin token tokendesk acts with.
    #[derive(Debug, Clone)]
    pub struct CanvasKeys in "canvas" {
        /// Base URL of Canvas, e.g. `https://canvas.example.edu`. `https://` unless loopback
        /// (the admin token travels over it).
        url: Option<String> = None, shown "**required**";
        /// Admin token with the permissions to create, view and delete users' access tokens.
        /// Exactly one of `admin_token` / `admin_token_file` is required.
        admin_token: Secret = Secret::default(), shown "**required**";
        /// The root account id.
        account_id: u64 = 1, in 1..=9223372036854775807;
        /// How a tokendesk login names its person in Canvas: as their SIS login
        /// (`sis_login_id:{login}`), their SIS user id (`sis_user_id:{login}`), or their numeric
        /// Canvas id (`{login}`: then only numbers are accepted as logins). Nothing else: text
        /// around `{login}` could let a login name another person. Issuance also checks that the
        /// person Canvas finds has that login or SIS id.
        user_id_pattern: UserIdPattern = UserIdPattern::SisLogin;
        /// Timeout of one Canvas request.
        timeout_secs: u64 = 30, in 1..=600;
        /// Retries of a throttled or failed Canvas request.
        max_retries: u32 = 4, in 0..=20;
    }
}

/// How people sign in (`auth.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// A reverse proxy (SAML/Shibboleth, …) authenticates and sets `auth.header`; the header is
    /// believed only from `auth.trusted_proxies`.
    #[default]
    TrustedHeader,
    /// Pick a seeded user; for the demo only (loopback `listen` required when loaded from a file).
    Demo,
    /// OpenID Connect against the campus identity provider (`[auth.oidc]`).
    Oidc,
}

choices!(AuthMode { "trusted-header" => TrustedHeader, "demo" => Demo, "oidc" => Oidc });

impl AuthMode {
    /// Whether people sign in to tokendesk itself and hold a session in the database (demo and
    /// OIDC), rather than being vouched for on every request by a proxy.
    pub fn has_sessions(self) -> bool {
        matches!(self, AuthMode::Demo | AuthMode::Oidc)
    }
}

/// Whether a network lies within the loopback, private (RFC 1918, unique local) or link-local
/// ranges: the only places a reverse proxy in front of tokendesk should be.
pub fn is_private_net(net: &IpNet) -> bool {
    match net {
        IpNet::V4(n) => {
            let a = n.network();
            let inside = |base: [u8; 4], len: u8| {
                Ipv4Net::new(Ipv4Addr::from(base), len).is_ok_and(|r| r.contains(n))
            };
            a.is_loopback() && n.prefix_len() >= 8
                || inside([10, 0, 0, 0], 8)
                || inside([172, 16, 0, 0], 12)
                || inside([192, 168, 0, 0], 16)
                || inside([169, 254, 0, 0], 16)
        }
        IpNet::V6(n) => {
            let inside =
                |base: Ipv6Addr, len: u8| Ipv6Net::new(base, len).is_ok_and(|r| r.contains(n));
            (n.network().is_loopback() && n.prefix_len() == 128)
                || inside(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7)
                || inside(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10)
        }
    }
}

/// The default `auth.trusted_proxies`: loopback.
fn loopback_nets() -> Vec<IpNet> {
    [
        Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8)
            .map(IpNet::V4)
            .ok(),
        Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).map(IpNet::V6).ok(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

section! {
    /// `[auth]`: how people sign in.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AuthConfig in "auth" {
        /// `trusted-header`: a reverse proxy (SAML/Shibboleth, …) authenticates and sets
        /// `header`, believed only from `trusted_proxies`. `oidc`: OpenID Connect with the
        /// identity provider of `[auth.oidc]`. `demo`: pick a seeded person (only with a
        /// loopback `listen`).
        mode: AuthMode = AuthMode::TrustedHeader;
        /// The header carrying the login in trusted-header mode.
        header: String = "X-Remote-User".to_owned();
        /// Peers whose `header` (and `X-Forwarded-For`) is believed: networks (`10.0.0.0/8`) or
        /// single addresses, within the loopback and private ranges (`127.0.0.0/8`, `::1`,
        /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7`, link-local).
        trusted_proxies: Vec<IpNet> = loopback_nets();
        /// A secret the proxy sends in `proxy_secret_header` on every request (at least 32
        /// characters; compared in constant time). When set, `header` and `X-Forwarded-For`
        /// are believed only from a trusted proxy that sends it, so that another process on
        /// the proxy's host cannot sign in as anyone. Prefer `proxy_secret_file`.
        proxy_secret: Secret = Secret::default();
        /// The header carrying `proxy_secret`.
        proxy_secret_header: String = "X-Tokendesk-Proxy-Secret".to_owned();
        /// Trusted-header mode: a scope removed from the login the proxy sends, e.g.
        /// `@example.edu` for Shibboleth's `sam.student@example.edu`; a login with another
        /// scope is refused. (With OIDC, `auth.oidc.strip_domain`; one rule for both.)
        strip_domain: Option<String> = None;
        /// `oidc` and `demo`: a session not used for this many minutes ends (NIST SP 800-63B
        /// AAL2 asks for at most 60).
        session_idle_minutes: u32 = 60, in 1..=1440;
        /// `oidc` and `demo`: a session ends this many hours after sign-in, used or not (AAL2:
        /// at most 12).
        session_max_hours: u32 = 12, in 1..=720;
    }
}

impl AuthConfig {
    /// How long a session may sit unused, in seconds.
    pub fn session_idle_secs(&self) -> i64 {
        i64::from(self.session_idle_minutes) * 60
    }

    /// How long a session lasts at most, in seconds.
    pub fn session_max_secs(&self) -> i64 {
        i64::from(self.session_max_hours) * 3600
    }
}

section! {
    /// `[auth.oidc]`: the OpenID provider, with `auth.mode = "oidc"`. Register tokendesk there
    /// as a confidential web client with the redirect URI `<public_url>auth/callback` and the
    /// post-logout redirect URI `<public_url>auth/signed-out`.
    #[derive(Debug, Clone)]
    pub struct OidcKeys in "auth.oidc" {
        /// The provider's issuer URL, as its discovery document
        /// (`<issuer>/.well-known/openid-configuration`) names it; `https://` unless loopback.
        /// Required with `auth.mode = "oidc"`.
        issuer: Option<String> = None;
        /// The client id tokendesk is registered with. Required with `auth.mode = "oidc"`.
        client_id: Option<String> = None;
        /// The client secret (prefer `client_secret_file`). Required with `auth.mode = "oidc"`.
        client_secret: Secret = Secret::default();
        /// The scopes asked for; `openid` is always among them.
        scopes: Vec<String> = vec!["openid".to_owned(), "profile".to_owned(), "email".to_owned()];
        /// The ID token claim holding the login (e.g. `preferred_username`, `upn`, `email`).
        login_claim: String = "preferred_username".to_owned();
        /// A suffix removed from the login claim when present, e.g. `@wisc.edu`.
        strip_domain: Option<String> = None;
        /// The ID token claim listing the person's groups (mapped to roles by `[roles]
        /// *_groups`).
        groups_claim: String = "groups".to_owned();
    }
}

impl AuthConfig {
    /// Whether a peer address is a trusted proxy (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

section! {
    /// `[roles]`: logins holding each role (a person may hold several). Requesters need no
    /// entry. Every entry must be a valid login.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RolesConfig in "roles" {
        /// May approve or deny requests (Canvas admins).
        approvers: Vec<Login> = Vec::new();
        /// May look anyone up, revoke, re-send links.
        helpdesk: Vec<Login> = Vec::new();
        /// May read and export the audit trail.
        auditors: Vec<Login> = Vec::new();
        /// Everything, plus policy.
        admins: Vec<Login> = Vec::new();
        /// `auth.mode = "oidc"`: members of these groups (values of `auth.oidc.groups_claim`)
        /// are approvers.
        approver_groups: Vec<String> = Vec::new();
        /// `auth.mode = "oidc"`: members of these groups are help desk.
        helpdesk_groups: Vec<String> = Vec::new();
        /// `auth.mode = "oidc"`: members of these groups are auditors.
        auditor_groups: Vec<String> = Vec::new();
        /// `auth.mode = "oidc"`: members of these groups are admins.
        admin_groups: Vec<String> = Vec::new();
    }
}

section! {
    /// `[limits]`: how often one person, or one address, may do a thing (each `0` turns its
    /// limit off), and how long a slow client may take. Over a limit, pages and the API answer
    /// `429` with `Retry-After`. Each instance counts on its own.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct LimitsConfig in "limits" {
        /// Requests a person may submit per hour.
        submissions_per_hour: u32 = 10, in 0..=100000;
        /// Reveals a person may make per hour, over all their envelopes (each envelope also
        /// allows only `policy.max_reveals`).
        reveals_per_hour: u32 = 30, in 0..=100000;
        /// Envelope look-ups (the delivery page, the envelope API, reveals and burns) a person,
        /// and an address, may make per minute: what guessing envelope ids costs.
        envelope_lookups_per_minute: u32 = 30, in 0..=100000;
        /// Sign-ins an address may make per minute.
        sign_ins_per_minute: u32 = 20, in 0..=100000;
        /// Leaked-token reports a person may make per hour (`/report`): what testing whether a
        /// guess is someone's live token costs.
        reports_per_hour: u32 = 10, in 0..=100000;
        /// A client must have sent a request's headers this many seconds after it began (or
        /// after it connected); then the connection is closed.
        header_timeout_secs: u64 = 10, in 1..=300;
        /// A client must have sent a request's body within this many seconds; then it is
        /// answered `408`.
        body_timeout_secs: u64 = 30, in 1..=600;
    }
}

section! {
    /// `[security]`: keys that protect what tokendesk keeps.
    #[derive(Debug, Clone)]
    pub struct SecurityKeys in "security" {
        /// 32 bytes (64 hex digits or base64) under which tokendesk keeps a keyed fingerprint
        /// (HMAC-SHA256) of every token it issues, so that a leaked value pasted into the report
        /// form (`/report`) is matched to its token without the value ever being stored. Without
        /// it, reports match by the 5-character hint only. Prefer `fingerprint_key_file`.
        fingerprint_key: Secret = Secret::default();
    }
}

section! {
    /// `[metrics]`: `/metrics`, in Prometheus's text format (HTTP requests by route and status,
    /// requests, tokens and envelopes by state, queues, email failures, Canvas calls, the status
    /// look-up cache, the audit chain's length). Off unless one of these is set.
    #[derive(Debug, Clone)]
    pub struct MetricsConfig in "metrics" {
        /// A second address that serves `/metrics` only, without authentication: bind it where
        /// only the monitoring system reaches (loopback, or an internal interface).
        listen: Option<SocketAddr> = None, shown "off";
        /// With it, `/metrics` is served on the main `listen` address too, to
        /// `Authorization: Bearer <key>` (at least 32 characters). Prefer `bearer_key_file`.
        bearer_key: Secret = Secret::default();
    }
}

section! {
    /// `[audit]`: the audit trail's hash chain.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct AuditConfig in "audit" {
        /// The chain's head (newest sequence number and hash) is logged this often, and at
        /// shutdown, so that the log system keeps a copy outside the database: `tokendesk audit
        /// verify --expect-head SEQ:HASH` then shows whether events were removed since.
        head_log_minutes: u64 = 60, in 1..=10080;
    }
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Readable lines: time, level, the request's span (id, method, route, login), message.
    #[default]
    Text,
    /// One JSON object per line, with the same fields.
    Json,
}

choices!(LogFormat { "text" => Text, "json" => Json });

section! {
    /// `[log]`: the one stream tokendesk writes, to standard error (the journal under systemd).
    /// Which lines: `TOKENDESK_LOG`, else `RUST_LOG`, else `log.filter`, as an
    /// [`EnvFilter`](https://docs.rs/tracing-subscriber/latest/tracing_subscriber/filter/struct.EnvFilter.html)
    /// (`info` by default for tokendesk, `warn` for the libraries under it).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LogConfig in "log" {
        /// `text` or `json`.
        format: LogFormat = LogFormat::Text;
        /// Which lines, as an `EnvFilter` (`info,tokendesk=debug`), when neither `TOKENDESK_LOG`
        /// nor `RUST_LOG` is set. Re-read on SIGHUP.
        filter: Option<String> = None, shown "`warn,tokendesk=info,tokendesk_canvas=info,tokendesk_canvas_sim=info`";
    }
}

section! {
    /// `[notify]`: how people are told of things.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct NotifyConfig in "notify" {
        /// Approvers get one email per this many minutes listing the requests that arrived
        /// (with links to each); `0` sends one email per request instead.
        approver_digest_minutes: u32 = 60, in 0..=10080;
    }
}

/// How email leaves tokendesk (`email.transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmailTransport {
    /// Kept in the database and shown on the mailbox page (demo, tests).
    #[default]
    Mailbox,
    /// Sent through `email.smtp_*`.
    Smtp,
}

choices!(EmailTransport { "mailbox" => Mailbox, "smtp" => Smtp });

/// SMTP transport security (`email.smtp_tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// Plain text (loopback relays only when a password is used).
    None,
    /// Plain connection upgraded with STARTTLS (required).
    #[default]
    StartTls,
    /// TLS from the first byte ("SMTPS").
    Tls,
}

choices!(SmtpTls { "none" => None, "starttls" => StartTls, "tls" => Tls });

impl SmtpTls {
    /// The port used when `smtp_port` is not set: 25, 587 or 465.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

fn default_from() -> Mailbox {
    Mailbox::new(
        Some("tokendesk".to_owned()),
        lettre::Address::new_dangerous("tokendesk", "localhost"),
    )
}

section! {
    /// `[email]`: how email is sent.
    #[derive(Debug, Clone)]
    pub struct EmailKeys in "email" {
        /// `mailbox` keeps email in the database and shows it at `/mailbox` (demo and tests;
        /// the inbox holds delivery links, so never in production); `smtp` sends it.
        transport: EmailTransport = EmailTransport::Mailbox;
        /// The From: of every email. Required with `transport = "smtp"`.
        from: Mailbox = default_from();
        /// SMTP server host name or IP, without scheme or port. Required with
        /// `transport = "smtp"`.
        smtp_host: Option<String> = None;
        /// SMTP port.
        smtp_port: Option<u16> = None, shown "25, 587 or 465 by `smtp_tls`";
        /// `starttls` (upgrade a plain connection, required), `tls` (TLS from the first byte)
        /// or `none` (plain; with a password only to a loopback host).
        smtp_tls: SmtpTls = SmtpTls::StartTls;
        /// SMTP user name, if the server needs a login (then a password is required).
        smtp_user: Option<String> = None;
        /// SMTP password.
        smtp_password: Secret = Secret::default();
        /// 32 bytes (64 hex digits or base64) that keep an unsent delivery email encrypted in
        /// the database until it is sent. Without it, a delivery email that cannot be sent is
        /// re-issued (new value, new link) when it is retried.
        outbox_key: Secret = Secret::default();
    }
}

/// Every table of the configuration, in the documented order: (table, its keys).
pub fn sections() -> Vec<(Option<&'static str>, Vec<crate::settings::KeyDoc>)> {
    use crate::settings::Section;
    fn entry<S: Section>() -> (Option<&'static str>, Vec<crate::settings::KeyDoc>) {
        (S::TABLE, S::keys())
    }
    vec![
        entry::<TopKeys>(),
        entry::<PoolConfig>(),
        entry::<WorkersConfig>(),
        entry::<CanvasKeys>(),
        entry::<AuthConfig>(),
        entry::<OidcKeys>(),
        entry::<RolesConfig>(),
        entry::<EmailKeys>(),
        entry::<Policy>(),
        entry::<LimitsConfig>(),
        entry::<NotifyConfig>(),
        entry::<SecurityKeys>(),
        entry::<AuditConfig>(),
        entry::<MetricsConfig>(),
        entry::<LogConfig>(),
    ]
}

/// `[canvas]`, checked: the keys, with the URL and the admin token resolved.
#[derive(Debug, Clone)]
pub struct CanvasConfig {
    /// The keys as given.
    pub keys: CanvasKeys,
    /// Base URL of Canvas.
    pub url: Url,
    /// Admin token with the create/view/delete access-token permissions.
    pub admin_token: SecretString,
    /// Where the admin token came from.
    pub admin_token_source: SecretSource,
}

impl std::ops::Deref for CanvasConfig {
    type Target = CanvasKeys;
    fn deref(&self) -> &CanvasKeys {
        &self.keys
    }
}

impl CanvasConfig {
    /// Defaults with the given URL and admin token.
    pub fn new(url: Url, admin_token: SecretString) -> CanvasConfig {
        CanvasConfig {
            keys: CanvasKeys::default(),
            url,
            admin_token,
            admin_token_source: SecretSource::Code,
        }
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.keys.timeout_secs)
    }

    /// The Canvas `:user_id` for a login (not URL-encoded; the client encodes path segments).
    pub fn user_id_for(&self, login: &str) -> String {
        self.keys.user_id_pattern.as_str().replace("{login}", login)
    }
}

/// `[auth.oidc]`, checked (with `auth.mode = "oidc"`).
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL exactly as given (the ID token's `iss` must equal it).
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretString,
    /// Where the client secret came from.
    pub client_secret_source: SecretSource,
    /// The scopes asked for, `openid` first.
    pub scopes: Vec<String>,
    /// The claim holding the login.
    pub login_claim: String,
    /// A suffix taken off the login claim (lower case), if any.
    pub strip_domain: Option<String>,
    /// The claim listing groups.
    pub groups_claim: String,
}

/// `[email]`, checked: the keys, with SMTP and the outbox key resolved.
#[derive(Debug, Clone, Default)]
pub struct EmailConfig {
    /// The keys as given (secrets resolved).
    pub keys: EmailKeys,
    /// SMTP settings; `Some` exactly when `transport` is [`EmailTransport::Smtp`].
    pub smtp: Option<SmtpConfig>,
    /// Encrypts unsent delivery emails at rest when set.
    pub outbox_key: Option<OutboxKey>,
}

impl std::ops::Deref for EmailConfig {
    type Target = EmailKeys;
    fn deref(&self) -> &EmailKeys {
        &self.keys
    }
}

/// Query parameters accepted in a PostgreSQL URL (what the driver understands; anything else
/// is a typo that would otherwise be ignored, e.g. a misspelt `sslmode`).
pub const POSTGRES_URL_PARAMS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "options",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "statement-cache-capacity",
];

/// Values of `sslmode`, as libpq spells them.
pub const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// The database to use (`database_url`).
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite database file (created if missing). `sqlite://PATH` or `sqlite:PATH`; a relative
    /// PATH is resolved against the configuration file's directory.
    Sqlite(PathBuf),
    /// An in-memory SQLite database (`sqlite::memory:`), gone when the process exits.
    SqliteMemory,
    /// A PostgreSQL server (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?…]`).
    Postgres(PostgresUrl),
}

impl DatabaseUrl {
    /// `"sqlite"` or `"postgres"`.
    pub fn kind(&self) -> &'static str {
        match self {
            DatabaseUrl::Sqlite(_) | DatabaseUrl::SqliteMemory => "sqlite",
            DatabaseUrl::Postgres(_) => "postgres",
        }
    }

    /// Parse a database URL; relative SQLite paths are joined to `base_dir`.
    pub fn parse(value: &str, base_dir: &Path) -> Result<DatabaseUrl, String> {
        const HINT: &str = "use sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB";
        let value = value.trim();
        if value == "sqlite::memory:" || value == "sqlite://:memory:" {
            return Ok(DatabaseUrl::SqliteMemory);
        }
        if let Some(rest) = value.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(format!("the SQLite path is empty; {HINT}"));
            }
            if path.contains('?') {
                return Err(
                    "query parameters are not supported for SQLite; give only the path".to_owned(),
                );
            }
            return Ok(DatabaseUrl::Sqlite(base_dir.join(path)));
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            let url = Url::parse(value).map_err(|e| format!("not a valid URL ({e}); {HINT}"))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("the PostgreSQL URL has no host; {HINT}"));
            }
            for (key, value) in url.query_pairs() {
                if !POSTGRES_URL_PARAMS.contains(&key.as_ref()) {
                    return Err(format!(
                        "unknown PostgreSQL URL parameter `{key}`; known: {}",
                        POSTGRES_URL_PARAMS.join(", ")
                    ));
                }
                if key == "sslmode" && !SSL_MODES.contains(&value.as_ref()) {
                    return Err(format!(
                        "sslmode `{value}` is not one of {}",
                        SSL_MODES.join(", ")
                    ));
                }
            }
            return Ok(DatabaseUrl::Postgres(PostgresUrl(SecretString::from(
                value.to_owned(),
            ))));
        }
        Err(format!("unsupported database URL; {HINT}"))
    }
}

impl fmt::Display for DatabaseUrl {
    /// Never shows a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DatabaseUrl::SqliteMemory => f.write_str("sqlite::memory:"),
            DatabaseUrl::Postgres(url) => f.write_str(&url.redacted()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// A PostgreSQL URL, which may hold a password: Debug and [`PostgresUrl::redacted`] hide it.
#[derive(Clone)]
pub struct PostgresUrl(SecretString);

impl PostgresUrl {
    /// The full URL, password included, for the database driver only.
    pub fn expose_url(&self) -> &str {
        self.0.expose_secret()
    }

    /// The TLS mode asked for in the URL (`sslmode`), or `prefer`, the driver's default.
    pub fn sslmode(&self) -> String {
        Url::parse(self.0.expose_secret())
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "sslmode")
                    .map(|(_, v)| v.into_owned())
            })
            .unwrap_or_else(|| "prefer".to_owned())
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match Url::parse(self.0.expose_secret()) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                url.to_string()
            }
            Err(_) => "postgres://[unparseable]".to_owned(),
        }
    }
}

impl PartialEq for PostgresUrl {
    fn eq(&self, other: &Self) -> bool {
        self.expose_url() == other.expose_url()
    }
}
impl Eq for PostgresUrl {}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.redacted())
    }
}

/// SMTP settings (present exactly when `email.transport = "smtp"`).
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Server host name or IP.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Transport security.
    pub tls: SmtpTls,
    /// Login, if the server requires one.
    pub credentials: Option<SmtpCredentials>,
}

/// SMTP login.
#[derive(Debug, Clone)]
pub struct SmtpCredentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: SecretString,
    /// Where the password came from.
    pub password_source: SecretSource,
}

/// A 32-byte key that keeps unsent delivery emails encrypted at rest (`email.outbox_key`).
#[derive(Clone)]
pub struct OutboxKey {
    key: AtRestKey,
    /// Where it came from.
    pub source: SecretSource,
}

impl OutboxKey {
    /// Parse 32 bytes given as 64 hex digits or base64 (standard or URL-safe, padding optional).
    pub fn parse(text: &str, source: SecretSource) -> Result<OutboxKey, String> {
        let key = AtRestKey::parse(text.trim()).map_err(|_| {
            "must be 32 bytes written as 64 hex digits or base64 (generate one with `openssl rand -base64 32`)"
                .to_owned()
        })?;
        Ok(OutboxKey { key, source })
    }

    /// The key.
    pub fn key(&self) -> &AtRestKey {
        &self.key
    }
}

impl fmt::Debug for OutboxKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutboxKey([REDACTED], {:?})", self.source)
    }
}

impl Config {
    /// Load the configuration: the file at `path` (if any), then the `TOKENDESK_…` variables in
    /// `env` (pass [`std::env::vars_os`]; other variables are ignored), then validate.
    /// Returns every problem found, not just the first.
    pub fn load<I, K, V>(path: Option<&Path>, env: I) -> Result<Config, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        load::load(path, env)
    }

    /// Load from `path`, or else from the file named by `TOKENDESK_CONFIG`, or else from defaults
    /// only; with the process environment as overrides.
    pub fn load_from_process(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let from_env = std::env::var_os("TOKENDESK_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let path = path.map(Path::to_path_buf).or(from_env);
        Config::load(path.as_deref(), std::env::vars_os())
    }

    /// A configuration for tests: defaults everywhere (trusted-header auth, mailbox email, an
    /// in-memory SQLite database, loopback `listen` and `public_url`), with the given Canvas.
    pub fn for_tests(canvas_url: Url, admin_token: SecretString) -> Config {
        let public_url =
            Url::parse(&format!("http://{DEFAULT_LISTEN}/")).unwrap_or_else(|_| canvas_url.clone());
        Config {
            listen: Listen::Tcp(DEFAULT_LISTEN),
            listen_mode: 0o660,
            public_url,
            database: DatabaseUrl::SqliteMemory,
            pool: PoolConfig::default(),
            workers: WorkersConfig::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            terms_text: None,
            canvas: CanvasConfig::new(canvas_url, admin_token),
            auth: AuthConfig::default(),
            oidc: None,
            roles: RolesConfig::default(),
            email: EmailConfig::default(),
            policy: Policy::default(),
            limits: LimitsConfig::default(),
            notify: NotifyConfig::default(),
            fingerprint_key: None,
            audit: AuditConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
            warnings: Vec::new(),
            file: None,
        }
    }

    /// The configuration `tokendesk demo` runs with: SQLite in `data_dir/tokendesk.db`, the
    /// simulator's URL and admin token, demo sign-in, mailbox email, serving on `listen`.
    pub fn demo(
        data_dir: &Path,
        listen: SocketAddr,
        canvas_url: Url,
        admin_token: SecretString,
    ) -> Config {
        let mut config = Config::for_tests(canvas_url, admin_token);
        config.listen = Listen::Tcp(listen);
        if let Ok(url) = Url::parse(&format!("http://{listen}/")) {
            config.public_url = url;
        }
        config.database = DatabaseUrl::Sqlite(data_dir.join("tokendesk.db"));
        config.auth.mode = AuthMode::Demo;
        config
    }
}

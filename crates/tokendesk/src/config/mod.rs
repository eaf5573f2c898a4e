//! Typed configuration: a TOML file, then `TOKENDESK_…` environment overrides, then validation that
//! reports every problem at once. Secrets are held as [`SecretString`] and never printed.
//!
//! Layering ([`Config::load`]):
//! 1. the file (optional) is parsed and walked against the key schema: unknown keys and values of
//!    the wrong type are all reported, with line numbers;
//! 2. environment variables `TOKENDESK_<KEY>` / `TOKENDESK_<TABLE>__<KEY>` override keys, their
//!    text coerced to the key's type (numbers, comma-separated lists);
//! 3. the merged table is deserialized into `deny_unknown_fields` structs;
//! 4. every value is validated and turned into the typed [`Config`]; secret files are read.
//!
//! See `docs/configuration.md` for every key.

mod error;
mod load;
mod report;
mod schema;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::delivery::envelope::AtRestKey;

pub use error::{ConfigError, ConfigErrors, ErrorKind, Origin};
pub use report::{check_config_report, check_config_report_with_env, summary};

/// The whole configuration of a tokendesk instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP server binds (`listen`).
    pub listen: SocketAddr,
    /// Base URL of the service as users reach it; delivery links are built on it. Always ends
    /// with `/`.
    pub public_url: Url,
    /// The database (`database_url`).
    pub database: DatabaseUrl,
    /// `[database]`: the connection pool.
    pub pool: PoolConfig,
    /// `[workers]`: background work.
    pub workers: WorkersConfig,
    /// Largest accepted request body, in bytes (`max_body_bytes`).
    pub max_body_bytes: usize,
    /// The acknowledgement on the request form (`terms_text`); `None` for the built-in text.
    pub terms_text: Option<String>,
    /// `[canvas]`.
    pub canvas: CanvasConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[roles]`.
    pub roles: RolesConfig,
    /// `[email]`.
    pub email: EmailConfig,
    /// `[policy]`.
    pub policy: Policy,
    /// The file this configuration was loaded from, if any.
    pub file: Option<PathBuf>,
}

/// Default `listen`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// Default `max_body_bytes` (64 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

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
            listen: DEFAULT_LISTEN,
            public_url,
            database: DatabaseUrl::SqliteMemory,
            pool: PoolConfig::default(),
            workers: WorkersConfig::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            terms_text: None,
            canvas: CanvasConfig::new(canvas_url, admin_token),
            auth: AuthConfig::default(),
            roles: RolesConfig::default(),
            email: EmailConfig::default(),
            policy: Policy::default(),
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
        config.listen = listen;
        if let Ok(url) = Url::parse(&format!("http://{listen}/")) {
            config.public_url = url;
        }
        config.database = DatabaseUrl::Sqlite(data_dir.join("tokendesk.db"));
        config.auth.mode = AuthMode::Demo;
        config
    }
}

/// Where a secret came from (shown by `check-config`; the value never is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the configuration file.
    Inline,
    /// From this environment variable.
    Env(String),
    /// Read from this file (content trimmed).
    File(PathBuf),
    /// Set in code (tests, demo).
    Code,
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline => f.write_str("set (in the configuration file)"),
            SecretSource::Env(var) => write!(f, "set (from environment variable {var})"),
            SecretSource::File(path) => write!(f, "set (from file {})", path.display()),
            SecretSource::Code => f.write_str("set (in code)"),
        }
    }
}

/// `[database]`: the connection pool and the status look-up cache (PostgreSQL and SQLite files; an in-memory SQLite database
/// always has one connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most connections this instance opens (`max_connections`).
    pub max_connections: u32,
    /// How long a query waits for a connection, including opening a new one
    /// (`acquire_timeout_secs`).
    pub acquire_timeout_secs: u64,
    /// An idle connection is closed after this long; 0 keeps them (`idle_timeout_secs`).
    pub idle_timeout_secs: u64,
    /// Request views the status look-up cache keeps; 0 turns it off (`view_cache_entries`).
    pub view_cache_entries: u64,
    /// How long a cached view is served at most (`view_cache_secs`); changes made through any
    /// instance drop it at once.
    pub view_cache_secs: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 10,
            acquire_timeout_secs: 10,
            idle_timeout_secs: 600,
            view_cache_entries: 50_000,
            view_cache_secs: 10,
        }
    }
}

/// `[workers]`: how background work is shared between instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkersConfig {
    /// How long a worker holds a claimed job or email before another instance may take it over
    /// (`lease_secs`).
    pub lease_secs: u64,
    /// How often the sweep runs, once per period across all instances (`sweep_every_secs`).
    pub sweep_every_secs: u64,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            lease_secs: 300,
            sweep_every_secs: 30,
        }
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

/// Default `canvas.user_id_pattern`.
pub const DEFAULT_USER_ID_PATTERN: &str = "sis_login_id:{login}";

/// `[canvas]`: the Canvas instance and the admin token tokendesk acts with.
#[derive(Debug, Clone)]
pub struct CanvasConfig {
    /// Base URL of Canvas.
    pub url: Url,
    /// Admin token with the create/view/delete access-token permissions.
    pub admin_token: SecretString,
    /// Where the admin token came from.
    pub admin_token_source: SecretSource,
    /// The root account id (`account_id`).
    pub account_id: u64,
    /// How a tokendesk login maps to a Canvas `:user_id`; contains `{login}`.
    pub user_id_pattern: String,
    /// Per-request timeout in seconds.
    pub timeout_secs: u64,
    /// Retries of a throttled or failed request.
    pub max_retries: u32,
}

impl CanvasConfig {
    /// Defaults with the given URL and admin token.
    pub fn new(url: Url, admin_token: SecretString) -> CanvasConfig {
        CanvasConfig {
            url,
            admin_token,
            admin_token_source: SecretSource::Code,
            account_id: 1,
            user_id_pattern: DEFAULT_USER_ID_PATTERN.to_owned(),
            timeout_secs: 30,
            max_retries: 4,
        }
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs)
    }

    /// The Canvas `:user_id` for a login (not URL-encoded; the client encodes path segments).
    pub fn user_id_for(&self, login: &str) -> String {
        self.user_id_pattern.replace("{login}", login)
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
}

impl AuthMode {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::TrustedHeader => "trusted-header",
            AuthMode::Demo => "demo",
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// How people sign in.
    pub mode: AuthMode,
    /// The header carrying the login in trusted-header mode.
    pub header: String,
    /// Peers whose `header` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::TrustedHeader,
            header: "X-Remote-User".to_owned(),
            trusted_proxies: [
                Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8)
                    .map(IpNet::V4)
                    .ok(),
                Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).map(IpNet::V6).ok(),
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }
}

impl AuthConfig {
    /// Whether a peer address is a trusted proxy (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

/// `[roles]`: logins holding each role (a person may hold several). Requesters need no entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolesConfig {
    /// May approve or deny requests.
    pub approvers: Vec<String>,
    /// May look anyone up, revoke, re-send links.
    pub helpdesk: Vec<String>,
    /// May read and export the audit trail.
    pub auditors: Vec<String>,
    /// Everything, plus policy.
    pub admins: Vec<String>,
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

impl EmailTransport {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EmailTransport::Mailbox => "mailbox",
            EmailTransport::Smtp => "smtp",
        }
    }
}

impl fmt::Display for EmailTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

impl SmtpTls {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::None => "none",
            SmtpTls::StartTls => "starttls",
            SmtpTls::Tls => "tls",
        }
    }

    /// The port used when `smtp_port` is not set: 25, 587 or 465.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

impl fmt::Display for SmtpTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// `[email]`.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// How mail is sent.
    pub transport: EmailTransport,
    /// The From: of every email.
    pub from: Mailbox,
    /// SMTP settings; `Some` exactly when `transport` is [`EmailTransport::Smtp`].
    pub smtp: Option<SmtpConfig>,
    /// Encrypts unsent delivery emails at rest when set.
    pub outbox_key: Option<OutboxKey>,
}

/// Default `email.from`.
pub const DEFAULT_FROM: &str = "tokendesk <tokendesk@localhost>";

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            transport: EmailTransport::Mailbox,
            from: Mailbox::new(
                Some("tokendesk".to_owned()),
                lettre::Address::new_dangerous("tokendesk", "localhost"),
            ),
            smtp: None,
            outbox_key: None,
        }
    }
}

/// `[policy]`: the institution's rules, as numbers (the domain's own type).
pub use crate::domain::Policy;

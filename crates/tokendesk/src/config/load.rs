//! Loading: file → schema walk → environment overrides → serde → validation.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use toml::{Table, Value};
use url::Url;

use super::error::{ConfigErrors, ErrorKind, Origin};
use super::schema::{self, Kind};
use super::{
    AuthConfig, AuthMode, CanvasConfig, Config, DEFAULT_FROM, DEFAULT_LISTEN,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_USER_ID_PATTERN, DatabaseUrl, EmailConfig, EmailTransport,
    OutboxKey, Policy, PoolConfig, RolesConfig, SecretSource, SmtpConfig, SmtpCredentials, SmtpTls,
    WorkersConfig,
};

// ---------------------------------------------------------------------------------------------
// Raw, deserialized form: every key optional, every table `deny_unknown_fields`.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    listen: Option<String>,
    public_url: Option<String>,
    database_url: Option<SecretString>,
    max_body_bytes: Option<u64>,
    terms_text: Option<String>,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    workers: RawWorkers,
    #[serde(default)]
    canvas: RawCanvas,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    roles: RawRoles,
    #[serde(default)]
    email: RawEmail,
    #[serde(default)]
    policy: RawPolicy,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    max_connections: Option<u32>,
    acquire_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    view_cache_entries: Option<u64>,
    view_cache_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorkers {
    lease_secs: Option<u64>,
    sweep_every_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCanvas {
    url: Option<String>,
    admin_token: Option<SecretString>,
    admin_token_file: Option<String>,
    account_id: Option<u64>,
    user_id_pattern: Option<String>,
    timeout_secs: Option<u64>,
    max_retries: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    mode: Option<String>,
    header: Option<String>,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRoles {
    approvers: Option<Vec<String>>,
    helpdesk: Option<Vec<String>>,
    auditors: Option<Vec<String>>,
    admins: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    transport: Option<String>,
    from: Option<String>,
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    smtp_tls: Option<String>,
    smtp_user: Option<String>,
    smtp_password: Option<SecretString>,
    smtp_password_file: Option<String>,
    outbox_key: Option<SecretString>,
    outbox_key_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    max_lifetime_days: Option<u32>,
    link_ttl_days: Option<u32>,
    max_reveals: Option<u32>,
    purpose_min_chars: Option<u32>,
    max_open_requests_per_person: Option<u32>,
    max_active_tokens_per_person: Option<u32>,
}

// ---------------------------------------------------------------------------------------------

/// What the loader knows while validating: where each key was set, which keys were dropped
/// because of an earlier error, and the problems so far.
struct Ctx {
    errors: ConfigErrors,
    origins: BTreeMap<String, Origin>,
    /// Keys whose value was rejected by the type check (no further complaints about them).
    poisoned: BTreeSet<String>,
    file: Option<PathBuf>,
    /// Directory relative paths in the file are resolved against.
    file_dir: PathBuf,
    /// Directory relative paths from the environment are resolved against.
    cwd: PathBuf,
}

impl Ctx {
    fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Unset)
    }

    fn error(&mut self, key: &str, kind: ErrorKind, message: impl Into<String>) {
        let origin = self.origin(key);
        self.errors.push(key, origin, kind, message);
    }

    fn invalid(&mut self, key: &str, message: impl Into<String>) {
        self.error(key, ErrorKind::Invalid, message);
    }

    fn missing(&mut self, table: Option<&str>, key: &str, extra: &str) {
        let dotted = schema::dotted(table, key);
        if self.poisoned.contains(&dotted) {
            return;
        }
        let place = match table {
            Some(t) => format!("`{key}` in [{t}]"),
            None => format!("`{key}` at the top of the file"),
        };
        let env = schema::env_name(table, key);
        self.error(
            &dotted,
            ErrorKind::Missing,
            format!("required{extra}; set {place} or {env}"),
        );
    }

    /// The base directory for a relative path given at `key`.
    fn base_dir(&self, key: &str) -> &Path {
        match self.origins.get(key) {
            Some(Origin::File { .. }) => &self.file_dir,
            _ => &self.cwd,
        }
    }

    fn secret_source(&self, key: &str) -> SecretSource {
        match self.origins.get(key) {
            Some(Origin::Env { var }) => SecretSource::Env(var.clone()),
            _ => SecretSource::Inline,
        }
    }

    /// Resolve a secret given inline at `table.key` or as a file at `table.key_file`.
    /// `required`: report when neither is set. `read`: whether to read the file at all.
    fn secret(
        &mut self,
        table: &str,
        key: &str,
        inline: Option<SecretString>,
        file: Option<String>,
        required: bool,
    ) -> Option<(SecretString, SecretSource)> {
        let inline_key = format!("{table}.{key}");
        let file_key = format!("{table}.{key}_file");
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.error(
                    &inline_key,
                    ErrorKind::Conflict,
                    format!("{key} and {key}_file are both set; keep one"),
                );
                None
            }
            (Some(value), None) => {
                if value.expose_secret().trim().is_empty() {
                    self.invalid(&inline_key, "is empty");
                    return None;
                }
                let source = self.secret_source(&inline_key);
                Some((
                    SecretString::from(value.expose_secret().trim().to_owned()),
                    source,
                ))
            }
            (None, Some(path)) => {
                let path = self.base_dir(&file_key).join(path.trim());
                match std::fs::read_to_string(&path) {
                    Ok(content) if content.trim().is_empty() => {
                        self.invalid(&file_key, format!("the file {} is empty", path.display()));
                        None
                    }
                    Ok(content) => {
                        let value = SecretString::from(content.trim().to_owned());
                        drop(zeroize::Zeroizing::new(content));
                        Some((value, SecretSource::File(path)))
                    }
                    Err(e) => {
                        self.error(
                            &file_key,
                            ErrorKind::Io,
                            format!(
                                "cannot read {}: {e} (a relative path is resolved against the configuration file's directory)",
                                path.display()
                            ),
                        );
                        None
                    }
                }
            }
            (None, None) => {
                if required
                    && !self.poisoned.contains(&inline_key)
                    && !self.poisoned.contains(&file_key)
                {
                    let (ti, tf) = (
                        table.to_ascii_uppercase(),
                        format!("{}_FILE", key.to_ascii_uppercase()),
                    );
                    self.error(
                        &inline_key,
                        ErrorKind::Missing,
                        format!(
                            "required; set exactly one of `{key}` or `{key}_file` in [{table}] (or TOKENDESK_{ti}__{} / TOKENDESK_{ti}__{tf})",
                            key.to_ascii_uppercase()
                        ),
                    );
                }
                None
            }
        }
    }
}

/// Load and validate; see [`Config::load`].
pub(super) fn load<I, K, V>(path: Option<&Path>, env: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let cwd = std::path::absolute(".").unwrap_or_else(|_| PathBuf::from("."));
    let file = path.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let file_dir = file
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.clone());
    let mut ctx = Ctx {
        errors: ConfigErrors::default(),
        origins: BTreeMap::new(),
        poisoned: BTreeSet::new(),
        file: file.clone(),
        file_dir,
        cwd,
    };

    // 1. The file.
    let mut table = Table::new();
    if let Some(file) = &file {
        match std::fs::read_to_string(file) {
            Ok(text) => match parse_file(&text, file) {
                Ok((parsed, lines)) => {
                    for (key, line) in lines {
                        ctx.origins.insert(
                            key,
                            Origin::File {
                                path: file.clone(),
                                line: Some(line),
                            },
                        );
                    }
                    table = parsed;
                }
                Err(errors) => ctx.errors.errors.extend(errors.errors),
            },
            Err(e) => ctx.errors.push(
                "configuration file",
                Origin::File {
                    path: file.clone(),
                    line: None,
                },
                ErrorKind::Io,
                format!("cannot read: {e}"),
            ),
        }
    }
    let file_ok = ctx.errors.is_empty();
    if file_ok {
        walk_file(&mut table, &mut ctx);
    }

    // 2. The environment.
    let overrides = env_overrides(env, &mut ctx);
    if !file_ok {
        return Err(ctx.errors);
    }
    apply_overrides(&mut table, overrides, &mut ctx);

    // 3. serde.
    let raw: RawConfig = match table.try_into() {
        Ok(raw) => raw,
        Err(e) => {
            ctx.errors.push(
                "configuration",
                Origin::Unset,
                ErrorKind::Type,
                e.message().to_owned(),
            );
            return Err(ctx.errors);
        }
    };

    // 4. Values.
    match build(raw, &mut ctx) {
        Some(config) if ctx.errors.is_empty() => Ok(config),
        _ => Err(ctx.errors),
    }
}

/// Parse TOML text, returning the table and the 1-based line of every key (dotted).
fn parse_file(text: &str, path: &Path) -> Result<(Table, BTreeMap<String, usize>), ConfigErrors> {
    let line_of = |offset: usize| {
        text.get(..offset)
            .map_or(1, |s| s.matches('\n').count() + 1)
    };
    let (doc, syntax_errors) = toml::de::DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        let mut errors = ConfigErrors::default();
        for e in syntax_errors {
            let line = e.span().map(|s| line_of(s.start));
            errors.push(
                "syntax",
                Origin::File {
                    path: path.to_path_buf(),
                    line,
                },
                ErrorKind::Syntax,
                format!("invalid TOML: {}", e.message().trim_end()),
            );
        }
        return Err(errors);
    }
    let mut lines = BTreeMap::new();
    for (key, value) in doc.get_ref() {
        let name = key.get_ref().to_string();
        lines.insert(name.clone(), line_of(key.span().start));
        if let toml::de::DeValue::Table(inner) = value.get_ref() {
            for (k, _) in inner {
                lines.insert(format!("{name}.{}", k.get_ref()), line_of(k.span().start));
            }
        }
    }
    match text.parse::<Table>() {
        Ok(table) => Ok((table, lines)),
        Err(e) => {
            let mut errors = ConfigErrors::default();
            let line = e.span().map(|s| line_of(s.start));
            errors.push(
                "syntax",
                Origin::File {
                    path: path.to_path_buf(),
                    line,
                },
                ErrorKind::Syntax,
                format!("invalid TOML: {}", e.message().trim_end()),
            );
            Err(errors)
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

/// Check a file value against its kind; `Err(message)` when it does not fit.
fn check_kind(value: &Value, kind: Kind) -> Result<(), String> {
    let ok = match (kind, value) {
        (Kind::Str | Kind::Secret, Value::String(_)) => true,
        (Kind::Int { max }, Value::Integer(i)) => {
            return u64::try_from(*i)
                .ok()
                .filter(|v| *v <= max)
                .map(|_| ())
                .ok_or_else(|| format!("must be a whole number between 0 and {max} (got {i})"));
        }
        (Kind::StrList, Value::Array(items)) => {
            return match items.iter().position(|v| !v.is_str()) {
                None => Ok(()),
                Some(i) => Err(format!(
                    "expected a list of strings, but item {} is {}",
                    i + 1,
                    items.get(i).map_or("not a string", type_name)
                )),
            };
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let mut message = format!("expected {}, found {}", kind.describe(), type_name(value));
    match (kind, value) {
        (Kind::Int { .. }, Value::String(s)) if s.trim().parse::<u64>().is_ok() => {
            message.push_str("; write the number without quotes");
        }
        (Kind::StrList, Value::String(_)) => message.push_str(r#"; write it as ["…", "…"]"#),
        (Kind::Str | Kind::Secret, Value::Integer(_) | Value::Float(_) | Value::Boolean(_)) => {
            message.push_str("; put the value in quotes");
        }
        _ => {}
    }
    Err(message)
}

fn known_list(keys: &[(&str, Kind)]) -> String {
    keys.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
}

fn table_names() -> String {
    schema::TABLES
        .iter()
        .map(|(t, _)| format!("[{t}]"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Report unknown keys and ill-typed values in the file, removing them from the table.
fn walk_file(table: &mut Table, ctx: &mut Ctx) {
    let first_new = ctx.errors.len();
    walk_file_unsorted(table, ctx);
    if let Some(new) = ctx.errors.errors.get_mut(first_new..) {
        new.sort_by_key(|e| match e.origin {
            Origin::File { line, .. } => line.unwrap_or(0),
            _ => 0,
        });
    }
}

fn walk_file_unsorted(table: &mut Table, ctx: &mut Ctx) {
    let top: Vec<String> = table.keys().cloned().collect();
    for key in top {
        if let Some(keys) = schema::table_keys(&key) {
            let Some(Value::Table(inner)) = table.get_mut(&key) else {
                let found = table.get(&key).map_or("nothing", type_name);
                ctx.error(
                    &key,
                    ErrorKind::Type,
                    format!("expected a table [{key}], found {found}"),
                );
                table.remove(&key);
                ctx.poisoned
                    .extend(keys.iter().map(|(k, _)| format!("{key}.{k}")));
                continue;
            };
            let names: Vec<String> = inner.keys().cloned().collect();
            for name in names {
                let dotted = format!("{key}.{name}");
                match schema::kind_of(Some(&key), &name) {
                    None => {
                        let hint = schema::suggest(&name, keys.iter().map(|(k, _)| *k))
                            .map(|s| format!("did you mean `{s}`? "))
                            .unwrap_or_default();
                        ctx.error(
                            &dotted,
                            ErrorKind::UnknownKey,
                            format!(
                                "unknown key `{dotted}`; {hint}known keys in [{key}]: {}",
                                known_list(keys)
                            ),
                        );
                        inner.remove(&name);
                    }
                    Some(kind) => {
                        if let Some(Err(message)) = inner.get(&name).map(|v| check_kind(v, kind)) {
                            ctx.error(&dotted, ErrorKind::Type, message);
                            ctx.poisoned.insert(dotted);
                            inner.remove(&name);
                        }
                    }
                }
            }
        } else if let Some(kind) = schema::kind_of(None, &key) {
            if let Some(Err(message)) = table.get(&key).map(|v| check_kind(v, kind)) {
                ctx.error(&key, ErrorKind::Type, message);
                ctx.poisoned.insert(key.clone());
                table.remove(&key);
            }
        } else {
            let candidates = schema::TOP_LEVEL
                .iter()
                .map(|(k, _)| *k)
                .chain(schema::TABLES.iter().map(|(t, _)| *t));
            let hint = schema::suggest(&key, candidates)
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            let what = if table.get(&key).is_some_and(Value::is_table) {
                "table"
            } else {
                "key"
            };
            ctx.error(
                &key,
                ErrorKind::UnknownKey,
                format!(
                    "unknown {what} `{key}`; {hint}known top-level keys: {}; tables: {}",
                    known_list(schema::TOP_LEVEL),
                    table_names()
                ),
            );
            table.remove(&key);
        }
    }
}

/// One environment override, already coerced to the key's type (`None`: unset the key).
struct Override {
    table: Option<&'static str>,
    key: &'static str,
    value: Option<Value>,
}

/// Read the `TOKENDESK_…` variables: report unknown names and values that do not coerce.
fn env_overrides<I, K, V>(env: I, ctx: &mut Ctx) -> Vec<Override>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut vars: Vec<(String, Option<String>)> = env
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.as_ref().to_str()?.to_owned();
            name.starts_with(schema::ENV_PREFIX)
                .then(|| (name, v.as_ref().to_str().map(str::to_owned)))
        })
        .filter(|(name, _)| !schema::NON_KEY_VARS.contains(&name.as_str()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));

    let mut overrides = Vec::new();
    for (var, value) in vars {
        let Some((table, key, kind)) = resolve_env_name(&var) else {
            let env_origin = Origin::Env { var: var.clone() };
            let rest = var
                .get(schema::ENV_PREFIX.len()..)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let message = if let Some(keys) = schema::table_keys(&rest) {
                let examples: Vec<String> = keys
                    .iter()
                    .take(2)
                    .map(|(k, _)| schema::env_name(schema_table(&rest), k))
                    .collect();
                format!(
                    "[{rest}] is a table; set its keys, e.g. {}",
                    examples.join(", ")
                )
            } else {
                let all: Vec<String> = schema::all_keys()
                    .map(|(t, k, _)| schema::env_name(t, k))
                    .collect();
                let hint = schema::suggest(&var, all.iter().map(String::as_str))
                    .map(|s| format!("did you mean {s}? "))
                    .unwrap_or_default();
                format!(
                    "unknown environment variable; {hint}variables are TOKENDESK_<KEY> or TOKENDESK_<TABLE>__<KEY> (double underscore) for the keys in docs/configuration.md"
                )
            };
            ctx.errors
                .push(var.clone(), env_origin, ErrorKind::UnknownKey, message);
            continue;
        };
        let dotted = schema::dotted(table, key);
        ctx.origins
            .insert(dotted.clone(), Origin::Env { var: var.clone() });
        let Some(text) = value else {
            ctx.error(&dotted, ErrorKind::Type, "is not valid UTF-8");
            ctx.poisoned.insert(dotted);
            continue;
        };
        let value = match kind {
            Kind::Str | Kind::Secret if text.trim().is_empty() => None,
            Kind::Str | Kind::Secret => Some(Value::String(text)),
            Kind::Int { .. } if text.trim().is_empty() => None,
            Kind::Int { max } => match text.trim().parse::<u64>().ok().filter(|v| *v <= max) {
                Some(v) => Some(Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))),
                None => {
                    ctx.error(
                        &dotted,
                        ErrorKind::Type,
                        format!("expected a whole number between 0 and {max}, got `{text}`"),
                    );
                    ctx.poisoned.insert(dotted);
                    continue;
                }
            },
            Kind::StrList => Some(Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            )),
        };
        overrides.push(Override { table, key, value });
    }
    overrides
}

fn schema_table(name: &str) -> Option<&'static str> {
    schema::TABLES
        .iter()
        .find(|(t, _)| *t == name)
        .map(|(t, _)| *t)
}

/// `TOKENDESK_CANVAS__URL` → (Some("canvas"), "url", kind). Only the exact uppercase spelling.
fn resolve_env_name(var: &str) -> Option<(Option<&'static str>, &'static str, Kind)> {
    schema::all_keys().find(|(t, k, _)| schema::env_name(*t, k) == var)
}

/// Put the overrides onto the file's table. Setting either form of a secret pair in the
/// environment replaces both forms from the file.
fn apply_overrides(table: &mut Table, overrides: Vec<Override>, ctx: &mut Ctx) {
    for (t, inline, file) in schema::SECRET_PAIRS {
        let touched = overrides
            .iter()
            .any(|o| o.table == Some(t) && (o.key == *inline || o.key == *file));
        if !touched {
            continue;
        }
        if let Some(Value::Table(inner)) = table.get_mut(*t) {
            for key in [inline, file] {
                let dotted = format!("{t}.{key}");
                if inner.remove(*key).is_some()
                    && !overrides
                        .iter()
                        .any(|o| o.table == Some(t) && o.key == *key)
                {
                    ctx.origins.remove(&dotted);
                }
            }
        }
    }
    for o in overrides {
        let target = match o.table {
            None => &mut *table,
            Some(t) => {
                let entry = table.entry(t).or_insert_with(|| Value::Table(Table::new()));
                if !entry.is_table() {
                    *entry = Value::Table(Table::new());
                }
                match entry {
                    Value::Table(inner) => inner,
                    _ => continue,
                }
            }
        };
        match o.value {
            Some(v) => {
                target.insert(o.key.to_owned(), v);
            }
            None => {
                target.remove(o.key);
                ctx.origins.remove(&schema::dotted(o.table, o.key));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Values.

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An http(s) URL with a host; https unless the host is loopback (`why` says what travels over it).
fn http_url(ctx: &mut Ctx, key: &str, value: &str, why: &str) -> Option<Url> {
    let url = match Url::parse(value.trim()) {
        Ok(url) => url,
        Err(e) => {
            ctx.invalid(
                key,
                format!("`{value}` is not a URL ({e}); write it like https://host.example.edu"),
            );
            return None;
        }
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        ctx.invalid(
            key,
            format!("`{value}` must be an http:// or https:// URL with a host"),
        );
        return None;
    }
    if url.scheme() == "http" && !is_loopback_host(&url) {
        ctx.invalid(
            key,
            format!("`{value}` must use https:// ({why}); plain http:// is allowed only for a loopback host (localhost, 127.0.0.1, ::1)"),
        );
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() {
        ctx.invalid(
            key,
            format!("`{value}` must not have a ?query or #fragment"),
        );
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        ctx.invalid(key, "must not contain a user name or password");
        return None;
    }
    Some(url)
}

fn parse_enum<T: Copy>(
    ctx: &mut Ctx,
    key: &str,
    value: Option<String>,
    options: &[(&str, T)],
    default: T,
) -> Option<T> {
    let Some(value) = value else {
        return Some(default);
    };
    let found = options
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value.trim()))
        .map(|(_, v)| *v);
    if found.is_none() {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        ctx.invalid(
            key,
            format!("expected one of {}, got `{value}`", names.join(", ")),
        );
    }
    found
}

fn login_list(ctx: &mut Ctx, key: &str, list: Option<Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, login) in list.unwrap_or_default().into_iter().enumerate() {
        let login = login.trim().to_owned();
        if login.is_empty() || login.chars().any(char::is_whitespace) {
            ctx.invalid(
                key,
                format!(
                    "item {} (`{login}`) must be a non-empty login without whitespace",
                    i + 1
                ),
            );
        } else if !out.contains(&login) {
            out.push(login);
        }
    }
    out
}

fn build(raw: RawConfig, ctx: &mut Ctx) -> Option<Config> {
    // Top level.
    let listen = match raw.listen {
        None => Some(DEFAULT_LISTEN),
        Some(text) => match text.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                ctx.invalid("listen", format!("`{text}` is not IP:PORT; write it like 127.0.0.1:8080 or [::]:8080 (an IP address, not a host name)"));
                None
            }
        },
    };
    let public_url = match raw.public_url {
        None => Url::parse(&format!("http://{}/", listen.unwrap_or(DEFAULT_LISTEN))).ok(),
        Some(text) => {
            http_url(ctx, "public_url", &text, "delivery links travel over it").map(|mut url| {
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                url
            })
        }
    };
    let database = match raw.database_url {
        None => Some(DatabaseUrl::Sqlite(ctx.file_dir.join("tokendesk.db"))),
        Some(text) => {
            let base = ctx.base_dir("database_url").to_path_buf();
            match DatabaseUrl::parse(text.expose_secret(), &base) {
                Ok(db) => Some(db),
                Err(message) => {
                    ctx.invalid("database_url", message);
                    None
                }
            }
        }
    };
    let max_body_bytes = match raw.max_body_bytes {
        None => Some(DEFAULT_MAX_BODY_BYTES),
        Some(n) if (1024..=100 * 1024 * 1024).contains(&n) => usize::try_from(n).ok(),
        Some(n) => {
            ctx.invalid(
                "max_body_bytes",
                format!("must be between 1024 and 104857600 (got {n})"),
            );
            None
        }
    };

    let terms_text = match raw.terms_text.map(|t| t.trim().to_owned()) {
        None => Some(None),
        Some(t) if t.is_empty() => {
            ctx.invalid(
                "terms_text",
                "must not be empty; leave the key out for the default text".to_owned(),
            );
            None
        }
        Some(t) if t.chars().count() > 2000 => {
            ctx.invalid(
                "terms_text",
                format!(
                    "must be at most 2000 characters (got {})",
                    t.chars().count()
                ),
            );
            None
        }
        Some(t) => Some(Some(t)),
    };
    let pool = build_pool(raw.database, ctx);
    let workers = build_workers(raw.workers, ctx);
    let canvas = build_canvas(raw.canvas, ctx);
    let auth = build_auth(raw.auth, listen, ctx);
    let roles = RolesConfig {
        approvers: login_list(ctx, "roles.approvers", raw.roles.approvers),
        helpdesk: login_list(ctx, "roles.helpdesk", raw.roles.helpdesk),
        auditors: login_list(ctx, "roles.auditors", raw.roles.auditors),
        admins: login_list(ctx, "roles.admins", raw.roles.admins),
    };
    let email = build_email(raw.email, ctx);
    let defaults = Policy::default();
    let p = raw.policy;
    let policy = Policy {
        max_lifetime_days: p.max_lifetime_days.unwrap_or(defaults.max_lifetime_days),
        link_ttl_days: p.link_ttl_days.unwrap_or(defaults.link_ttl_days),
        max_reveals: p.max_reveals.unwrap_or(defaults.max_reveals),
        purpose_min_chars: p.purpose_min_chars.unwrap_or(defaults.purpose_min_chars),
        max_open_requests_per_person: p
            .max_open_requests_per_person
            .unwrap_or(defaults.max_open_requests_per_person),
        max_active_tokens_per_person: p
            .max_active_tokens_per_person
            .unwrap_or(defaults.max_active_tokens_per_person),
    };
    for (field, message) in policy.validate() {
        let key = format!("policy.{field}");
        // A comparison with a poisoned (defaulted) key would mislead.
        if field == "link_ttl_days" && ctx.poisoned.contains("policy.max_lifetime_days") {
            continue;
        }
        ctx.invalid(&key, message);
    }

    Some(Config {
        listen: listen?,
        public_url: public_url?,
        database: database?,
        pool: pool?,
        workers: workers?,
        max_body_bytes: max_body_bytes?,
        terms_text: terms_text?,
        canvas: canvas?,
        auth: auth?,
        roles,
        email: email?,
        policy,
        file: ctx.file.clone(),
    })
}

/// A whole number of seconds (or a count) within `range`, or its default.
fn in_range(
    ctx: &mut Ctx,
    key: &str,
    value: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Option<u64> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Some(value)
    } else {
        ctx.invalid(
            key,
            format!(
                "must be between {} and {} (got {value})",
                range.start(),
                range.end()
            ),
        );
        None
    }
}

fn build_pool(raw: RawDatabase, ctx: &mut Ctx) -> Option<PoolConfig> {
    let d = PoolConfig::default();
    let max_connections = in_range(
        ctx,
        "database.max_connections",
        raw.max_connections.map(u64::from),
        u64::from(d.max_connections),
        1..=1000,
    );
    let acquire = in_range(
        ctx,
        "database.acquire_timeout_secs",
        raw.acquire_timeout_secs,
        d.acquire_timeout_secs,
        1..=600,
    );
    let idle = in_range(
        ctx,
        "database.idle_timeout_secs",
        raw.idle_timeout_secs,
        d.idle_timeout_secs,
        0..=86_400,
    );
    let cache_entries = in_range(
        ctx,
        "database.view_cache_entries",
        raw.view_cache_entries,
        d.view_cache_entries,
        0..=1_000_000,
    );
    let cache_secs = in_range(
        ctx,
        "database.view_cache_secs",
        raw.view_cache_secs,
        d.view_cache_secs,
        1..=3600,
    );
    Some(PoolConfig {
        max_connections: u32::try_from(max_connections?).ok()?,
        acquire_timeout_secs: acquire?,
        idle_timeout_secs: idle?,
        view_cache_entries: cache_entries?,
        view_cache_secs: cache_secs?,
    })
}

fn build_workers(raw: RawWorkers, ctx: &mut Ctx) -> Option<WorkersConfig> {
    let d = WorkersConfig::default();
    let lease = in_range(
        ctx,
        "workers.lease_secs",
        raw.lease_secs,
        d.lease_secs,
        1..=86_400,
    );
    let sweep = in_range(
        ctx,
        "workers.sweep_every_secs",
        raw.sweep_every_secs,
        d.sweep_every_secs,
        1..=86_400,
    );
    Some(WorkersConfig {
        lease_secs: lease?,
        sweep_every_secs: sweep?,
    })
}

fn build_canvas(raw: RawCanvas, ctx: &mut Ctx) -> Option<CanvasConfig> {
    let url = match raw.url {
        None => {
            ctx.missing(
                Some("canvas"),
                "url",
                " (the base URL of your Canvas, e.g. https://canvas.example.edu)",
            );
            None
        }
        Some(text) => http_url(ctx, "canvas.url", &text, "the admin token travels over it"),
    };
    let token = ctx.secret(
        "canvas",
        "admin_token",
        raw.admin_token,
        raw.admin_token_file,
        true,
    );
    let account_id = raw.account_id.unwrap_or(1);
    if account_id == 0 {
        ctx.invalid(
            "canvas.account_id",
            "must be at least 1 (the root account is usually 1)",
        );
    }
    let user_id_pattern = raw
        .user_id_pattern
        .unwrap_or_else(|| DEFAULT_USER_ID_PATTERN.to_owned());
    if !user_id_pattern.contains("{login}") {
        ctx.invalid(
            "canvas.user_id_pattern",
            format!("`{user_id_pattern}` must contain {{login}}, e.g. \"sis_login_id:{{login}}\" or \"{{login}}\""),
        );
    }
    let timeout_secs = raw.timeout_secs.unwrap_or(30);
    if !(1..=600).contains(&timeout_secs) {
        ctx.invalid(
            "canvas.timeout_secs",
            format!("must be between 1 and 600 (got {timeout_secs})"),
        );
    }
    let max_retries = raw.max_retries.unwrap_or(4);
    if max_retries > 20 {
        ctx.invalid(
            "canvas.max_retries",
            format!("must be between 0 and 20 (got {max_retries})"),
        );
    }
    let (admin_token, admin_token_source) = token?;
    Some(CanvasConfig {
        url: url?,
        admin_token,
        admin_token_source,
        account_id,
        user_id_pattern,
        timeout_secs,
        max_retries,
    })
}

fn build_auth(raw: RawAuth, listen: Option<SocketAddr>, ctx: &mut Ctx) -> Option<AuthConfig> {
    let defaults = AuthConfig::default();
    let mode = parse_enum(
        ctx,
        "auth.mode",
        raw.mode,
        &[
            ("trusted-header", AuthMode::TrustedHeader),
            ("demo", AuthMode::Demo),
        ],
        AuthMode::TrustedHeader,
    );
    if mode == Some(AuthMode::Demo) && listen.is_some_and(|l| !l.ip().is_loopback()) {
        ctx.invalid(
            "auth.mode",
            "demo lets anyone sign in as anyone; it is allowed only when listen is a loopback address (127.0.0.1, ::1)",
        );
    }
    let header = raw
        .header
        .map(|h| h.trim().to_owned())
        .unwrap_or(defaults.header);
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if header.is_empty() || !header.chars().all(token_char) {
        ctx.invalid("auth.header", format!("`{header}` is not an HTTP header name; use letters, digits and '-', e.g. X-Remote-User"));
    }
    let trusted_proxies = match raw.trusted_proxies {
        None => defaults.trusted_proxies,
        Some(list) => {
            let mut nets = Vec::new();
            for item in list {
                let text = item.trim();
                if let Ok(net) = text.parse::<IpNet>() {
                    nets.push(net.trunc());
                } else if let Ok(ip) = text.parse::<IpAddr>() {
                    nets.push(IpNet::from(ip));
                } else {
                    ctx.invalid(
                        "auth.trusted_proxies",
                        format!("`{item}` is not an IP network; write a CIDR like 10.0.0.0/8 or a single address like 10.1.2.3"),
                    );
                }
            }
            nets
        }
    };
    Some(AuthConfig {
        mode: mode?,
        header,
        trusted_proxies,
    })
}

fn build_email(raw: RawEmail, ctx: &mut Ctx) -> Option<EmailConfig> {
    let transport = parse_enum(
        ctx,
        "email.transport",
        raw.transport,
        &[
            ("mailbox", EmailTransport::Mailbox),
            ("smtp", EmailTransport::Smtp),
        ],
        EmailTransport::Mailbox,
    );
    let smtp_wanted = transport == Some(EmailTransport::Smtp);
    if smtp_wanted && raw.from.is_none() {
        ctx.missing(
            Some("email"),
            "from",
            " with transport = \"smtp\" (e.g. \"tokendesk <tokendesk@example.edu>\")",
        );
    }
    let from_text = raw.from.unwrap_or_else(|| DEFAULT_FROM.to_owned());
    let from = match from_text.trim().parse::<Mailbox>() {
        Ok(mailbox) => Some(mailbox),
        Err(_) => {
            ctx.invalid(
                "email.from",
                format!("`{from_text}` is not an email address; write `name@example.edu` or `Display Name <name@example.edu>`"),
            );
            None
        }
    };
    let tls = parse_enum(
        ctx,
        "email.smtp_tls",
        raw.smtp_tls,
        &[
            ("none", SmtpTls::None),
            ("starttls", SmtpTls::StartTls),
            ("tls", SmtpTls::Tls),
        ],
        SmtpTls::StartTls,
    );
    if raw.smtp_port == Some(0) {
        ctx.invalid("email.smtp_port", "must be between 1 and 65535");
    }
    // Both forms of a secret are a conflict even when SMTP is not in use.
    let password_conflict = raw.smtp_password.is_some() && raw.smtp_password_file.is_some();
    let password_given = raw.smtp_password.is_some() || raw.smtp_password_file.is_some();
    if raw.smtp_user.is_none() && password_given && !password_conflict {
        let key = if raw.smtp_password.is_some() {
            "email.smtp_password"
        } else {
            "email.smtp_password_file"
        };
        ctx.invalid(
            key,
            "is set but smtp_user is not; set smtp_user too, or remove the password",
        );
    }
    let smtp = if smtp_wanted || password_conflict {
        let host = raw
            .smtp_host
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty());
        if smtp_wanted && host.is_none() {
            ctx.missing(Some("email"), "smtp_host", " with transport = \"smtp\"");
        }
        if let Some(h) = &host
            && (h.contains('/')
                || h.chars().any(char::is_whitespace)
                || (h.contains(':') && h.parse::<std::net::Ipv6Addr>().is_err()))
        {
            ctx.invalid(
                "email.smtp_host",
                format!("`{h}` must be a bare host name or IP, without scheme or port (set the port in smtp_port)"),
            );
        }
        let user = raw.smtp_user.map(|u| u.trim().to_owned());
        if user.as_deref() == Some("") {
            ctx.invalid(
                "email.smtp_user",
                "is empty; remove it if the server needs no login",
            );
        }
        let credentials = match &user {
            Some(user) if !user.is_empty() => {
                let secret = ctx.secret(
                    "email",
                    "smtp_password",
                    raw.smtp_password,
                    raw.smtp_password_file,
                    true,
                );
                secret.map(|(password, password_source)| SmtpCredentials {
                    user: user.clone(),
                    password,
                    password_source,
                })
            }
            _ => {
                if password_conflict {
                    ctx.secret(
                        "email",
                        "smtp_password",
                        raw.smtp_password,
                        raw.smtp_password_file,
                        false,
                    );
                }
                None
            }
        };
        if let (Some(SmtpTls::None), Some(_), Some(h)) = (tls, &credentials, &host) {
            let loopback = h.eq_ignore_ascii_case("localhost")
                || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                ctx.invalid("email.smtp_tls", "is \"none\" but a password is set and the host is not loopback; use \"starttls\" or \"tls\"");
            }
        }
        match (host, tls, smtp_wanted) {
            (Some(host), Some(tls), true) => Some(SmtpConfig {
                host,
                port: raw.smtp_port.unwrap_or_else(|| tls.default_port()),
                tls,
                credentials,
            }),
            _ => None,
        }
    } else {
        None
    };
    let outbox_key = match ctx.secret(
        "email",
        "outbox_key",
        raw.outbox_key,
        raw.outbox_key_file,
        false,
    ) {
        None => None,
        Some((text, source)) => {
            let key = if matches!(source, SecretSource::File(_)) {
                "email.outbox_key_file"
            } else {
                "email.outbox_key"
            };
            match OutboxKey::parse(text.expose_secret(), source) {
                Ok(k) => Some(k),
                Err(message) => {
                    ctx.invalid(key, message);
                    None
                }
            }
        }
    };
    if smtp_wanted && smtp.is_none() {
        return None;
    }
    Some(EmailConfig {
        transport: transport?,
        from: from?,
        smtp,
        outbox_key,
    })
}

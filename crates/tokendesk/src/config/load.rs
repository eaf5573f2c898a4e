//! Loading: the file and the environment layered with figment, every key read through its
//! declaration (see [`super::sections`]), then the checks that involve several keys.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Empty, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::error::{ConfigErrors, ErrorKind, Origin};
use super::{
    AuditConfig, AuthConfig, AuthMode, CanvasConfig, CanvasKeys, Config, DatabaseUrl, EmailConfig,
    EmailKeys, EmailTransport, LimitsConfig, LogConfig, MetricsConfig, NotifyConfig, OidcConfig,
    OidcKeys, OutboxKey, Policy, PoolConfig, RolesConfig, SecretSource, SecurityKeys, SmtpConfig,
    SmtpCredentials, SmtpTls, TopKeys, WorkersConfig, sections,
};
use crate::settings::{Found, KeyDoc, Problem, ReadContext, Reader, Section, env_value, type_name};

/// The environment prefix.
pub(super) const ENV_PREFIX: &str = "TOKENDESK_";

/// Environment variables with the prefix that are not configuration keys.
pub(super) const NON_KEY_VARS: &[&str] = &["TOKENDESK_CONFIG", "TOKENDESK_LOG"];

/// The name of the environment layer's figment metadata.
const ENV_LAYER: &str = "TOKENDESK_ environment variables";

/// The dotted name of a key: `listen`, `canvas.url`.
pub(super) fn dotted(table: Option<&str>, key: &str) -> String {
    match table {
        None => key.to_owned(),
        Some(t) => format!("{t}.{key}"),
    }
}

/// The environment variable that overrides a key: `TOKENDESK_CANVAS__ADMIN_TOKEN`.
pub fn env_name(table: Option<&str>, key: &str) -> String {
    match table {
        None => format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
        // A nested table (`auth.oidc`) is `AUTH__OIDC`.
        Some(t) => format!(
            "{ENV_PREFIX}{}__{}",
            t.replace('.', "__").to_ascii_uppercase(),
            key.to_ascii_uppercase()
        ),
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            let delete = prev[j + 1] + 1;
            let insert = cur[j] + 1;
            cur.push(substitute.min(delete).min(insert));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Every declared key: (table, key doc).
fn all_keys() -> Vec<(Option<&'static str>, KeyDoc)> {
    sections()
        .into_iter()
        .flat_map(|(t, keys)| keys.into_iter().map(move |k| (t, k)))
        .collect()
}

fn table_names() -> Vec<&'static str> {
    sections().into_iter().filter_map(|(t, _)| t).collect()
}

/// The keys of a table (or the top level).
fn keys_of(table: Option<&str>) -> Option<Vec<KeyDoc>> {
    sections()
        .into_iter()
        .find(|(t, _)| *t == table)
        .map(|(_, keys)| keys)
}

/// What the loader knows while checking: where each key was set, and the problems so far.
struct Ctx {
    errors: ConfigErrors,
    /// Where each key was set, by dotted name.
    origins: BTreeMap<String, Origin>,
    /// Keys whose value was rejected (no further complaints about them, or checks using them).
    poisoned: BTreeSet<String>,
    file: Option<PathBuf>,
    /// Directory relative paths in the file are resolved against.
    file_dir: PathBuf,
    /// Directory relative paths from the environment are resolved against.
    cwd: PathBuf,
    /// What is acceptable but unwise (a secret file others may read, …).
    warnings: std::cell::RefCell<Vec<String>>,
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
        let dotted = dotted(table, key);
        if self.poisoned.contains(&dotted) {
            return;
        }
        let place = match table {
            Some(t) => format!("`{key}` in [{t}]"),
            None => format!("`{key}` at the top of the file"),
        };
        let env = env_name(table, key);
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

    /// Records the problems a reader found.
    fn problems(&mut self, problems: Vec<(String, Problem)>) {
        for (key, problem) in problems {
            let (kind, messages) = match problem {
                Problem::Type(m) => (ErrorKind::Type, vec![m]),
                Problem::Invalid(m) => (ErrorKind::Invalid, vec![m]),
                Problem::Items(ms) => (ErrorKind::Invalid, ms),
                Problem::Conflict(m) => (ErrorKind::Conflict, vec![m]),
                Problem::Io(m) => (ErrorKind::Io, vec![m]),
            };
            for message in messages {
                self.error(&key, kind, message);
            }
            self.poisoned.insert(key);
        }
    }
}

/// What a setting may ask of the loader while it is read.
struct Context<'a> {
    origins: &'a BTreeMap<String, Origin>,
    file_dir: &'a Path,
    cwd: &'a Path,
    warnings: &'a std::cell::RefCell<Vec<String>>,
}

/// A warning when a secret file may be read by others than its owner.
fn secret_file_warning(key: &str, path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "{key}: the secret file {} may be read by {} (mode {mode:04o}); make it readable by the service's user only: chmod 600 {}",
                path.display(),
                if mode & 0o007 != 0 { "every local user" } else { "its group" },
                path.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (key, path);
        None
    }
}

impl ReadContext for Context<'_> {
    fn read_secret_file(&self, key: &str, path: &str) -> Result<(String, PathBuf), Problem> {
        let base = match self.origins.get(key) {
            Some(Origin::File { .. }) => self.file_dir,
            _ => self.cwd,
        };
        let path = base.join(path);
        match std::fs::read_to_string(&path) {
            Ok(content) if content.trim().is_empty() => Err(Problem::Invalid(format!(
                "the file {} is empty",
                path.display()
            ))),
            Ok(content) => {
                let value = content.trim().to_owned();
                drop(zeroize::Zeroizing::new(content));
                if let Some(warning) = secret_file_warning(key, &path) {
                    self.warnings.borrow_mut().push(warning);
                }
                Ok((value, path))
            }
            Err(e) => Err(Problem::Io(format!(
                "cannot read {}: {e} (a relative path is resolved against the configuration file's directory)",
                path.display()
            ))),
        }
    }

    fn env_var(&self, key: &str) -> Option<String> {
        match self.origins.get(key) {
            Some(Origin::Env { var }) => Some(var.clone()),
            _ => None,
        }
    }
}

/// The environment layer: `TOKENDESK_<TABLE>__<KEY>` variables as string values, in a figment
/// provider (figment's own `Env` reads only the process environment and re-types values, which
/// would turn a secret such as `0042` into the number 42).
struct EnvLayer(Dict);

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_LAYER)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Map::from([(Profile::Default, self.0.clone())]))
    }
}

fn insert(dict: &mut Dict, table: Option<&str>, key: &str, value: Value) {
    let mut at = dict;
    for part in table.into_iter().flat_map(|t| t.split('.')) {
        let entry = at
            .entry(part.to_owned())
            .or_insert_with(|| Value::from(Dict::new()));
        let Value::Dict(_, inner) = entry else {
            return;
        };
        at = inner;
    }
    at.insert(key.to_owned(), value);
}

/// The table at a dotted path (`auth.oidc`), if the values hold one there.
fn table_at<'a>(dict: &'a Dict, path: &str) -> Option<&'a Dict> {
    let mut at = dict;
    for part in path.split('.') {
        match at.get(part)? {
            Value::Dict(_, inner) => at = inner,
            _ => return None,
        }
    }
    Some(at)
}

/// Reads the `TOKENDESK_…` variables into the environment layer, reporting unknown names.
/// Setting either form of a secret replaces both forms from the file.
fn env_layer<I, K, V>(env: I, ctx: &mut Ctx) -> EnvLayer
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let keys = all_keys();
    let mut vars: Vec<(String, Option<String>)> = env
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.as_ref().to_str()?.to_owned();
            name.starts_with(ENV_PREFIX)
                .then(|| (name, v.as_ref().to_str().map(str::to_owned)))
        })
        .filter(|(name, _)| !NON_KEY_VARS.contains(&name.as_str()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut dict = Dict::new();
    let mut set: Vec<(Option<&'static str>, String)> = Vec::new();
    for (var, value) in vars {
        let Some((table, key)) = keys
            .iter()
            .find(|(t, k)| env_name(*t, &k.key) == var)
            .map(|(t, k)| (*t, k.clone()))
        else {
            let origin = Origin::Env { var: var.clone() };
            let rest = var
                .get(ENV_PREFIX.len()..)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let message = if let Some(table_keys) = table_names()
                .into_iter()
                .find(|t| *t == rest)
                .and_then(|t| keys_of(Some(t)).map(|k| (t, k)))
            {
                let (t, table_keys) = table_keys;
                let examples: Vec<String> = table_keys
                    .iter()
                    .take(2)
                    .map(|k| env_name(Some(t), &k.key))
                    .collect();
                format!(
                    "[{rest}] is a table; set its keys, e.g. {}",
                    examples.join(", ")
                )
            } else {
                let all: Vec<String> = keys.iter().map(|(t, k)| env_name(*t, &k.key)).collect();
                let hint = suggest(&var, all.iter().map(String::as_str))
                    .map(|s| format!("did you mean {s}? "))
                    .unwrap_or_default();
                format!(
                    "unknown environment variable; {hint}variables are TOKENDESK_<KEY> or TOKENDESK_<TABLE>__<KEY> (double underscore) for the keys in docs/configuration.md"
                )
            };
            ctx.errors
                .push(var.clone(), origin, ErrorKind::UnknownKey, message);
            continue;
        };
        let dotted = dotted(table, &key.key);
        let Some(text) = value else {
            ctx.origins
                .insert(dotted.clone(), Origin::Env { var: var.clone() });
            ctx.error(&dotted, ErrorKind::Type, "is not valid UTF-8");
            ctx.poisoned.insert(dotted);
            continue;
        };
        let value = env_value(&text);
        if matches!(value, Value::Empty(..)) {
            ctx.origins.remove(&dotted);
        } else {
            ctx.origins
                .insert(dotted.clone(), Origin::Env { var: var.clone() });
        }
        insert(&mut dict, table, &key.key, value);
        set.push((table, key.key.clone()));
    }
    // A secret set in the environment, in either form, replaces both forms from the file.
    for (table, key) in &keys {
        let Some(inline) = &key.companion_of else {
            continue;
        };
        let file_key = &key.key;
        let touched = set
            .iter()
            .any(|(t, k)| t == table && (k == inline || k == file_key));
        if !touched {
            continue;
        }
        for form in [inline, file_key] {
            if !set.iter().any(|(t, k)| t == table && k == form) {
                insert(&mut dict, *table, form, Value::from(Empty::None));
                ctx.origins.remove(&dotted(*table, form));
            }
        }
    }
    EnvLayer(dict)
}

/// Parse TOML text: the 1-based line of every key (dotted), or the syntax errors with theirs.
fn key_lines(text: &str, path: &Path) -> Result<BTreeMap<String, usize>, ConfigErrors> {
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
    fn walk(
        table: &toml::de::DeTable<'_>,
        prefix: &str,
        line_of: &dyn Fn(usize) -> usize,
        lines: &mut BTreeMap<String, usize>,
    ) {
        for (key, value) in table {
            let name = format!("{prefix}{}", key.get_ref());
            lines.insert(name.clone(), line_of(key.span().start));
            if let toml::de::DeValue::Table(inner) = value.get_ref() {
                walk(inner, &format!("{name}."), line_of, lines);
            }
        }
    }
    let mut lines = BTreeMap::new();
    walk(doc.get_ref(), "", &line_of, &mut lines);
    Ok(lines)
}

/// Reports unknown keys and tables (with "did you mean"), and a table given as a value,
/// removing them from the merged values.
fn unknown_keys(dict: &mut Dict, ctx: &mut Ctx) {
    let first_new = ctx.errors.len();
    let top_keys: Vec<String> = keys_of(None)
        .unwrap_or_default()
        .into_iter()
        .map(|k| k.key)
        .collect();
    let tables = table_names();
    let top_tables: Vec<&str> = tables
        .iter()
        .copied()
        .filter(|t| !t.contains('.'))
        .collect();
    let names: Vec<String> = dict.keys().cloned().collect();
    for name in names {
        if top_tables.contains(&name.as_str()) {
            check_table(dict, &name, &name, &tables, ctx);
        } else if !top_keys.contains(&name) {
            let candidates = top_keys
                .iter()
                .map(String::as_str)
                .chain(top_tables.iter().copied());
            let hint = suggest(&name, candidates)
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            let what = if matches!(dict.get(&name), Some(Value::Dict(..))) {
                "table"
            } else {
                "key"
            };
            let tables_list: Vec<String> = tables.iter().map(|t| format!("[{t}]")).collect();
            ctx.error(
                &name,
                ErrorKind::UnknownKey,
                format!(
                    "unknown {what} `{name}`; {hint}known top-level keys: {}; tables: {}",
                    top_keys.join(", "),
                    tables_list.join(", ")
                ),
            );
            dict.remove(&name);
        }
    }
    if let Some(new) = ctx.errors.errors.get_mut(first_new..) {
        new.sort_by_key(|e| match e.origin {
            Origin::File { line, .. } => line.unwrap_or(0),
            _ => 0,
        });
    }
}

/// Checks the table `path` (dotted), held in `parent` under `name`: it must be a table, and
/// hold only its declared keys and its declared sub-tables (`[auth.oidc]` inside `[auth]`).
fn check_table(parent: &mut Dict, name: &str, path: &str, tables: &[&str], ctx: &mut Ctx) {
    let keys: Vec<String> = keys_of(Some(path))
        .unwrap_or_default()
        .into_iter()
        .map(|k| k.key)
        .collect();
    let children: Vec<&str> = tables
        .iter()
        .filter_map(|t| t.strip_prefix(path)?.strip_prefix('.'))
        .filter(|rest| !rest.contains('.'))
        .collect();
    let Some(Value::Dict(_, inner)) = parent.get_mut(name) else {
        let found = parent.get(name).map_or("nothing", type_name);
        ctx.error(
            path,
            ErrorKind::Type,
            format!("expected a table [{path}], found {found}"),
        );
        parent.remove(name);
        ctx.poisoned
            .extend(keys.iter().map(|k| format!("{path}.{k}")));
        return;
    };
    let inner_names: Vec<String> = inner.keys().cloned().collect();
    for key in inner_names {
        if keys.contains(&key) {
            continue;
        }
        if children.contains(&key.as_str()) {
            check_table(inner, &key, &format!("{path}.{key}"), tables, ctx);
            continue;
        }
        let full = format!("{path}.{key}");
        let hint = suggest(
            &key,
            keys.iter()
                .map(String::as_str)
                .chain(children.iter().copied()),
        )
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
        let sub = if children.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = children.iter().map(|c| format!("[{path}.{c}]")).collect();
            format!("; tables: {}", list.join(", "))
        };
        ctx.error(
            &full,
            ErrorKind::UnknownKey,
            format!(
                "unknown key `{full}`; {hint}known keys in [{path}]: {}{sub}",
                keys.join(", ")
            ),
        );
        inner.remove(&key);
    }
}

/// Reads one section from the merged values.
fn read<S: Section>(dict: &Dict, figment: &Figment, ctx: &mut Ctx) -> S {
    let table: Option<&Dict> = match S::TABLE {
        None => Some(dict),
        Some(t) => table_at(dict, t),
    };
    let lookup = |key: &str| -> Option<Found<'_>> {
        let value = table?.get(key)?;
        let from_env = figment
            .get_metadata(value.tag())
            .is_some_and(|m| m.name == ENV_LAYER);
        Some(Found { value, from_env })
    };
    let context = Context {
        origins: &ctx.origins,
        file_dir: &ctx.file_dir,
        cwd: &ctx.cwd,
        warnings: &ctx.warnings,
    };
    let mut reader = Reader::new(S::TABLE, &lookup, &context);
    let section = S::read(&mut reader);
    let problems = reader.into_problems();
    ctx.problems(problems);
    section
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
        warnings: Default::default(),
    };

    // 1. The file: its syntax, and where each key is.
    let mut text = String::new();
    if let Some(file) = &file {
        match std::fs::read_to_string(file) {
            Ok(content) => match key_lines(&content, file) {
                Ok(lines) => {
                    for (key, line) in lines {
                        ctx.origins.insert(
                            key,
                            Origin::File {
                                path: file.clone(),
                                line: Some(line),
                            },
                        );
                    }
                    text = content;
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

    // 2. The environment over it.
    let env = env_layer(env, &mut ctx);
    if !file_ok {
        return Err(ctx.errors);
    }
    let figment = Figment::new().merge(Toml::string(&text)).merge(env);
    let mut dict = match figment.data() {
        Ok(mut profiles) => profiles.remove(&Profile::Default).unwrap_or_default(),
        Err(e) => {
            for error in e {
                ctx.errors.push(
                    "configuration",
                    Origin::Unset,
                    ErrorKind::Syntax,
                    error.to_string(),
                );
            }
            return Err(ctx.errors);
        }
    };
    unknown_keys(&mut dict, &mut ctx);

    // 3. Every key through its declaration.
    let top: TopKeys = read(&dict, &figment, &mut ctx);
    let pool: PoolConfig = read(&dict, &figment, &mut ctx);
    let workers: WorkersConfig = read(&dict, &figment, &mut ctx);
    let canvas: CanvasKeys = read(&dict, &figment, &mut ctx);
    let auth: AuthConfig = read(&dict, &figment, &mut ctx);
    let oidc: OidcKeys = read(&dict, &figment, &mut ctx);
    let roles: RolesConfig = read(&dict, &figment, &mut ctx);
    let email: EmailKeys = read(&dict, &figment, &mut ctx);
    let policy: Policy = read(&dict, &figment, &mut ctx);
    let limits: LimitsConfig = read(&dict, &figment, &mut ctx);
    let notify: NotifyConfig = read(&dict, &figment, &mut ctx);
    let security: SecurityKeys = read(&dict, &figment, &mut ctx);
    let audit: AuditConfig = read(&dict, &figment, &mut ctx);
    let metrics: MetricsConfig = read(&dict, &figment, &mut ctx);
    let log: LogConfig = read(&dict, &figment, &mut ctx);
    if let Some(filter) = &log.filter
        && let Err(e) = tracing_subscriber::EnvFilter::try_new(filter)
    {
        ctx.invalid(
            "log.filter",
            format!("is not a log filter ({e}); write e.g. \"info\" or \"warn,tokendesk=debug\""),
        );
    }
    if let Some(key) = metrics.bearer_key.value()
        && key.expose_secret().chars().count() < 32
    {
        ctx.invalid(
            "metrics.bearer_key",
            "is shorter than 32 characters: make a long random one, e.g. `openssl rand -hex 32`",
        );
    }
    let fingerprint_key = key_of(
        &mut ctx,
        "security.fingerprint_key",
        &security.fingerprint_key,
    );

    // 4. What involves several keys, or the file's place.
    let built = build(top, canvas, auth, oidc, email, &policy, &mut ctx);
    match built {
        Some(parts) if ctx.errors.is_empty() => Ok(Config {
            listen: parts.listen,
            listen_mode: parts.listen_mode,
            public_url: parts.public_url,
            database: parts.database,
            max_body_bytes: parts.max_body_bytes,
            terms_text: parts.terms_text,
            pool,
            workers,
            canvas: parts.canvas,
            auth: parts.auth,
            oidc: parts.oidc,
            roles,
            email: parts.email,
            policy,
            limits,
            notify,
            fingerprint_key,
            audit,
            metrics,
            log,
            warnings: ctx.warnings.take(),
            file: ctx.file.clone(),
        }),
        _ => Err(ctx.errors),
    }
}

/// What the checks across keys resolve.
struct Built {
    listen: super::Listen,
    listen_mode: u32,
    public_url: Url,
    database: DatabaseUrl,
    max_body_bytes: usize,
    terms_text: Option<String>,
    canvas: CanvasConfig,
    auth: AuthConfig,
    oidc: Option<OidcConfig>,
    email: EmailConfig,
}

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

fn build(
    top: TopKeys,
    canvas: CanvasKeys,
    auth: AuthConfig,
    oidc: OidcKeys,
    email: EmailKeys,
    policy: &Policy,
    ctx: &mut Ctx,
) -> Option<Built> {
    let listen = top.listen.clone();
    let listen_mode = match u32::from_str_radix(top.listen_mode.trim().trim_start_matches("0o"), 8)
    {
        Ok(mode) if mode <= 0o777 => Some(mode),
        _ => {
            ctx.invalid(
                "listen_mode",
                format!(
                    "`{}` is not a file mode in octal, e.g. \"0660\"",
                    top.listen_mode.escape_default()
                ),
            );
            None
        }
    };
    let public_url = match (&top.public_url, &listen) {
        (None, super::Listen::Unix(_)) => {
            ctx.missing(
                None,
                "public_url",
                " with listen = \"unix:…\" (how people reach tokendesk through its proxy)",
            );
            None
        }
        (None, super::Listen::Tcp(listen)) => Url::parse(&format!("http://{listen}/")).ok(),
        (Some(text), _) => {
            http_url(ctx, "public_url", text, "delivery links travel over it").map(|mut url| {
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                url
            })
        }
    };
    let database = match top.database_url.value() {
        None => Some(DatabaseUrl::Sqlite(ctx.file_dir.join("tokendesk.db"))),
        Some(text) => {
            // From a file: relative paths as for the file's key.
            let key = match top.database_url.source() {
                Some(SecretSource::File(_)) => "database_url_file",
                _ => "database_url",
            };
            let base = ctx.base_dir(key).to_path_buf();
            match DatabaseUrl::parse(text.expose_secret(), &base) {
                Ok(db) => Some(db),
                Err(message) => {
                    ctx.invalid(key, message);
                    None
                }
            }
        }
    };
    let max_body_bytes = usize::try_from(top.max_body_bytes).ok();
    let terms_text = match top.terms_text.as_deref().map(str::trim) {
        None => Some(None),
        Some("") => {
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
        Some(t) => Some(Some(t.to_owned())),
    };
    let canvas = build_canvas(canvas, ctx);
    let oidc = if auth.mode == AuthMode::Oidc {
        build_oidc(oidc, top.public_url.is_some(), ctx).map(Some)
    } else {
        Some(None)
    };
    let auth = build_auth(auth, &listen, ctx);
    let email = build_email(email, ctx);
    // A comparison with a rejected (defaulted) value would mislead.
    let policy_ok = !ctx.poisoned.iter().any(|k| k.starts_with("policy."));
    if policy_ok {
        for (field, message) in policy.validate() {
            ctx.invalid(&format!("policy.{field}"), message);
        }
    }
    Some(Built {
        listen,
        listen_mode: listen_mode?,
        public_url: public_url?,
        database: database?,
        max_body_bytes: max_body_bytes?,
        terms_text: terms_text?,
        canvas: canvas?,
        auth: auth?,
        oidc: oidc?,
        email: email?,
    })
}

/// The secret given at `table.key` (in either form), or a "required" error.
fn required_secret(
    ctx: &mut Ctx,
    table: &str,
    key: &str,
    secret: &super::Secret,
) -> Option<(SecretString, SecretSource)> {
    if let Some(found) = &secret.0 {
        return Some(found.clone());
    }
    let inline_key = format!("{table}.{key}");
    let file_key = format!("{table}.{key}_file");
    if !ctx.poisoned.contains(&inline_key) && !ctx.poisoned.contains(&file_key) {
        let (vi, vf) = (
            env_name(Some(table), key),
            env_name(Some(table), &format!("{key}_file")),
        );
        ctx.error(
            &inline_key,
            ErrorKind::Missing,
            format!(
                "required; set exactly one of `{key}` or `{key}_file` in [{table}] (or {vi} / {vf})"
            ),
        );
    }
    None
}

fn build_canvas(keys: CanvasKeys, ctx: &mut Ctx) -> Option<CanvasConfig> {
    let url = match &keys.url {
        None => {
            ctx.missing(
                Some("canvas"),
                "url",
                " (the base URL of your Canvas, e.g. https://canvas.example.edu)",
            );
            None
        }
        Some(text) => http_url(ctx, "canvas.url", text, "the admin token travels over it"),
    };
    let token = required_secret(ctx, "canvas", "admin_token", &keys.admin_token);
    let (admin_token, admin_token_source) = token?;
    Some(CanvasConfig {
        url: url?,
        admin_token,
        admin_token_source,
        keys,
    })
}

fn build_auth(auth: AuthConfig, listen: &super::Listen, ctx: &mut Ctx) -> Option<AuthConfig> {
    if auth.mode == AuthMode::Demo && !listen.tcp().is_some_and(|a| a.ip().is_loopback()) {
        ctx.invalid(
            "auth.mode",
            "demo lets anyone sign in as anyone; it is allowed only when listen is a loopback address (127.0.0.1, ::1)",
        );
    }
    let header = auth.header.trim().to_owned();
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if header.is_empty() || !header.chars().all(token_char) {
        ctx.invalid("auth.header", format!("`{header}` is not an HTTP header name; use letters, digits and '-', e.g. X-Remote-User"));
        return None;
    }
    for net in &auth.trusted_proxies {
        if !super::is_private_net(net) {
            ctx.invalid(
                "auth.trusted_proxies",
                format!(
                    "{net} reaches beyond the loopback and private ranges: a proxy in front of tokendesk is on this host or the institution's own network; name it (e.g. \"10.0.4.17\" or \"10.0.4.0/24\")"
                ),
            );
        }
    }
    let proxy_header = auth.proxy_secret_header.trim().to_owned();
    if proxy_header.is_empty() || !proxy_header.chars().all(token_char) {
        ctx.invalid(
            "auth.proxy_secret_header",
            format!("`{proxy_header}` is not an HTTP header name; use letters, digits and '-'"),
        );
    }
    if let Some(secret) = auth.proxy_secret.value()
        && secret.expose_secret().chars().count() < 32
    {
        ctx.invalid(
            "auth.proxy_secret",
            "is shorter than 32 characters: make a long random one, e.g. `openssl rand -hex 32`",
        );
    }
    let strip_domain = match auth.strip_domain.as_deref() {
        None => None,
        Some(d) => match scope(d) {
            Some(d) => Some(d),
            None => {
                ctx.invalid(
                    "auth.strip_domain",
                    format!(
                        "`{}` must be a domain with its @, e.g. \"@example.edu\"",
                        d.escape_default()
                    ),
                );
                return None;
            }
        },
    };
    if auth.mode == AuthMode::TrustedHeader
        && auth.proxy_secret.value().is_none()
        && listen.tcp().is_some()
    {
        ctx.warnings.borrow_mut().push(format!(
            "auth.proxy_secret_file is not set: in trusted-header mode any process that can reach {listen} from a trusted proxy's address (every local account, with loopback trusted) can send {header} and be anyone; give the proxy a secret (auth.proxy_secret_file, sent in {proxy_header})"
        ));
    }
    Some(AuthConfig {
        header,
        proxy_secret_header: proxy_header,
        strip_domain,
        ..auth
    })
}

/// A login scope as `strip_domain` takes it: `@` and a domain, lower-cased.
fn scope(raw: &str) -> Option<String> {
    let d = raw.trim();
    (d.len() >= 2
        && d.starts_with('@')
        && !d[1..].contains('@')
        && !d.chars().any(char::is_whitespace))
    .then(|| d.to_lowercase())
}

/// `[auth.oidc]` with `auth.mode = "oidc"`: the provider, the client, and a public URL the
/// provider can send people back to.
fn build_oidc(keys: OidcKeys, public_url_given: bool, ctx: &mut Ctx) -> Option<OidcConfig> {
    if !public_url_given && !ctx.poisoned.contains("public_url") {
        ctx.missing(
            None,
            "public_url",
            " with auth.mode = \"oidc\" (the provider sends people back to <public_url>auth/callback)",
        );
    }
    let issuer = match keys.issuer.as_deref().map(str::trim) {
        None | Some("") => {
            ctx.missing(
                Some("auth.oidc"),
                "issuer",
                " with auth.mode = \"oidc\" (e.g. https://login.microsoftonline.com/TENANT/v2.0)",
            );
            None
        }
        Some(text) => {
            let checked = http_url(
                ctx,
                "auth.oidc.issuer",
                text,
                "ID tokens and the client secret travel over it",
            );
            checked.map(|_| text.to_owned())
        }
    };
    let client_id = match keys.client_id.as_deref().map(str::trim) {
        None | Some("") => {
            ctx.missing(
                Some("auth.oidc"),
                "client_id",
                " with auth.mode = \"oidc\" (the id the provider gave tokendesk)",
            );
            None
        }
        Some(id) => Some(id.to_owned()),
    };
    let secret = required_secret(ctx, "auth.oidc", "client_secret", &keys.client_secret);
    let mut scopes: Vec<String> = vec!["openid".to_owned()];
    let mut scopes_ok = true;
    for scope in &keys.scopes {
        let scope = scope.trim();
        if scope.is_empty()
            || !scope
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            ctx.invalid(
                "auth.oidc.scopes",
                format!(
                    "`{}` is not a scope; a scope is one word of printable ASCII, e.g. \"email\"",
                    scope.escape_default()
                ),
            );
            scopes_ok = false;
        } else if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    let claim_ok = |ctx: &mut Ctx, key: &str, value: &str| {
        let ok = !value.trim().is_empty() && value.len() <= 100;
        if !ok {
            ctx.invalid(
                key,
                "must name a claim of the ID token, e.g. \"preferred_username\"",
            );
        }
        ok
    };
    let login_ok = claim_ok(ctx, "auth.oidc.login_claim", &keys.login_claim);
    let groups_ok = claim_ok(ctx, "auth.oidc.groups_claim", &keys.groups_claim);
    let strip_domain = match keys.strip_domain.as_deref().map(str::trim) {
        None => Some(None),
        Some(d) if scope(d).is_some() => Some(scope(d)),
        Some(d) => {
            ctx.invalid(
                "auth.oidc.strip_domain",
                format!(
                    "`{}` must be a domain with its @, e.g. \"@wisc.edu\"",
                    d.escape_default()
                ),
            );
            None
        }
    };
    let (client_secret, client_secret_source) = secret?;
    if !(scopes_ok && login_ok && groups_ok) {
        return None;
    }
    Some(OidcConfig {
        issuer: issuer?,
        client_id: client_id?,
        client_secret,
        client_secret_source,
        scopes,
        login_claim: keys.login_claim.trim().to_owned(),
        strip_domain: strip_domain?,
        groups_claim: keys.groups_claim.trim().to_owned(),
    })
}

/// A 32-byte key given at `key` (or `key_file`), checked; a bad one is named in the form given.
fn key_of(ctx: &mut Ctx, key: &str, secret: &super::Secret) -> Option<OutboxKey> {
    let (text, source) = secret.0.as_ref()?;
    match OutboxKey::parse(text.expose_secret(), source.clone()) {
        Ok(k) => Some(k),
        Err(message) => {
            let named = if matches!(source, SecretSource::File(_)) {
                format!("{key}_file")
            } else {
                key.to_owned()
            };
            ctx.invalid(&named, message);
            None
        }
    }
}

fn build_email(mut keys: EmailKeys, ctx: &mut Ctx) -> Option<EmailConfig> {
    let smtp_wanted = keys.transport == EmailTransport::Smtp;
    if smtp_wanted
        && !ctx.origins.contains_key("email.from")
        && !ctx.poisoned.contains("email.from")
    {
        ctx.missing(
            Some("email"),
            "from",
            " with transport = \"smtp\" (e.g. \"tokendesk <tokendesk@example.edu>\")",
        );
    }
    if keys.smtp_port == Some(0) {
        ctx.invalid("email.smtp_port", "must be between 1 and 65535");
    }
    let password_conflict = ctx.poisoned.contains("email.smtp_password")
        && ctx
            .errors
            .iter()
            .any(|e| e.key == "email.smtp_password" && e.kind == ErrorKind::Conflict);
    let password_given = keys.smtp_password.is_set();
    if keys.smtp_user.is_none() && password_given {
        let key = if ctx.origins.contains_key("email.smtp_password") {
            "email.smtp_password"
        } else {
            "email.smtp_password_file"
        };
        ctx.invalid(
            key,
            "is set but smtp_user is not; set smtp_user too, or remove the password",
        );
    }
    let smtp = if smtp_wanted {
        let host = keys
            .smtp_host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned);
        if host.is_none() {
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
        let user = keys.smtp_user.as_deref().map(str::trim).map(str::to_owned);
        if user.as_deref() == Some("") {
            ctx.invalid(
                "email.smtp_user",
                "is empty; remove it if the server needs no login",
            );
        }
        let credentials = match &user {
            Some(user) if !user.is_empty() && !password_conflict => {
                required_secret(ctx, "email", "smtp_password", &keys.smtp_password).map(
                    |(password, password_source)| SmtpCredentials {
                        user: user.clone(),
                        password,
                        password_source,
                    },
                )
            }
            _ => None,
        };
        if let (SmtpTls::None, Some(_), Some(h)) = (keys.smtp_tls, &credentials, &host) {
            let loopback = h.eq_ignore_ascii_case("localhost")
                || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                ctx.invalid("email.smtp_tls", "is \"none\" but a password is set and the host is not loopback; use \"starttls\" or \"tls\"");
            }
        }
        match host {
            Some(host) => Some(SmtpConfig {
                host,
                port: keys
                    .smtp_port
                    .unwrap_or_else(|| keys.smtp_tls.default_port()),
                tls: keys.smtp_tls,
                credentials,
            }),
            None => None,
        }
    } else {
        None
    };
    let outbox_key = key_of(ctx, "email.outbox_key", &keys.outbox_key);
    // The resolved secrets live in `smtp` and `outbox_key`; the keys keep no copy.
    keys.smtp_password = super::Secret::default();
    keys.outbox_key = super::Secret::default();
    if smtp_wanted && smtp.is_none() {
        return None;
    }
    Some(EmailConfig {
        keys,
        smtp,
        outbox_key,
    })
}

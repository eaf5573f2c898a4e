//! The schema of known keys: drives unknown-key detection, type checks of file values and the
//! coercion of environment variables. Keep it in step with the `Raw*` structs in `load.rs` (a
//! unit test checks that every key here deserializes).

/// The type a key's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string.
    Str,
    /// A string that must never be echoed in an error message.
    Secret,
    /// A whole number that fits the given inclusive range (the Rust type's range).
    Int { max: u64 },
    /// A list of strings (comma-separated in the environment).
    StrList,
}

impl Kind {
    pub(crate) fn describe(self) -> String {
        match self {
            Kind::Str | Kind::Secret => "a string".to_owned(),
            Kind::Int { max } => format!("a whole number between 0 and {max}"),
            Kind::StrList => "a list of strings".to_owned(),
        }
    }
}

const U16: Kind = Kind::Int {
    max: u16::MAX as u64,
};
const U32: Kind = Kind::Int {
    max: u32::MAX as u64,
};
const U64: Kind = Kind::Int {
    max: i64::MAX as u64,
};

/// Keys at the top level of the file (outside any table).
pub(crate) const TOP_LEVEL: &[(&str, Kind)] = &[
    ("listen", Kind::Str),
    ("public_url", Kind::Str),
    ("database_url", Kind::Secret),
    ("max_body_bytes", U64),
    ("terms_text", Kind::Str),
];

/// Tables and their keys, in the order they are documented.
pub(crate) const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "database",
        &[
            ("max_connections", U32),
            ("acquire_timeout_secs", U64),
            ("idle_timeout_secs", U64),
            ("view_cache_entries", U64),
            ("view_cache_secs", U64),
        ],
    ),
    ("workers", &[("lease_secs", U64), ("sweep_every_secs", U64)]),
    (
        "canvas",
        &[
            ("url", Kind::Str),
            ("admin_token", Kind::Secret),
            ("admin_token_file", Kind::Str),
            ("account_id", U64),
            ("user_id_pattern", Kind::Str),
            ("timeout_secs", U64),
            ("max_retries", U32),
        ],
    ),
    (
        "auth",
        &[
            ("mode", Kind::Str),
            ("header", Kind::Str),
            ("trusted_proxies", Kind::StrList),
        ],
    ),
    (
        "roles",
        &[
            ("approvers", Kind::StrList),
            ("helpdesk", Kind::StrList),
            ("auditors", Kind::StrList),
            ("admins", Kind::StrList),
        ],
    ),
    (
        "email",
        &[
            ("transport", Kind::Str),
            ("from", Kind::Str),
            ("smtp_host", Kind::Str),
            ("smtp_port", U16),
            ("smtp_tls", Kind::Str),
            ("smtp_user", Kind::Str),
            ("smtp_password", Kind::Secret),
            ("smtp_password_file", Kind::Str),
            ("outbox_key", Kind::Secret),
            ("outbox_key_file", Kind::Str),
        ],
    ),
    (
        "policy",
        &[
            ("max_lifetime_days", U32),
            ("link_ttl_days", U32),
            ("max_reveals", U32),
            ("purpose_min_chars", U32),
            ("max_open_requests_per_person", U32),
            ("max_active_tokens_per_person", U32),
        ],
    ),
];

/// Secrets that may be given inline or as a file: (table, inline key, file key).
pub(crate) const SECRET_PAIRS: &[(&str, &str, &str)] = &[
    ("canvas", "admin_token", "admin_token_file"),
    ("email", "smtp_password", "smtp_password_file"),
    ("email", "outbox_key", "outbox_key_file"),
];

/// Environment variables with the prefix that are not configuration keys.
pub(crate) const NON_KEY_VARS: &[&str] = &["TOKENDESK_CONFIG", "TOKENDESK_LOG"];

/// The environment prefix.
pub(crate) const ENV_PREFIX: &str = "TOKENDESK_";

pub(crate) fn table_keys(table: &str) -> Option<&'static [(&'static str, Kind)]> {
    TABLES
        .iter()
        .find(|(name, _)| *name == table)
        .map(|(_, keys)| *keys)
}

/// The kind of `table.key` (or of a top-level `key` when `table` is `None`).
pub(crate) fn kind_of(table: Option<&str>, key: &str) -> Option<Kind> {
    let keys = match table {
        None => TOP_LEVEL,
        Some(t) => table_keys(t)?,
    };
    keys.iter()
        .find(|(name, _)| *name == key)
        .map(|(_, kind)| *kind)
}

/// The dotted name of a key: `listen`, `canvas.url`.
pub(crate) fn dotted(table: Option<&str>, key: &str) -> String {
    match table {
        None => key.to_owned(),
        Some(t) => format!("{t}.{key}"),
    }
}

/// The environment variable that overrides a key: `TOKENDESK_CANVAS__ADMIN_TOKEN`.
pub(crate) fn env_name(table: Option<&str>, key: &str) -> String {
    match table {
        None => format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
        Some(t) => format!(
            "{ENV_PREFIX}{}__{}",
            t.to_ascii_uppercase(),
            key.to_ascii_uppercase()
        ),
    }
}

/// Every key as (table, key, kind), top-level keys first.
pub(crate) fn all_keys() -> impl Iterator<Item = (Option<&'static str>, &'static str, Kind)> {
    TOP_LEVEL.iter().map(|(k, kind)| (None, *k, *kind)).chain(
        TABLES
            .iter()
            .flat_map(|(t, keys)| keys.iter().map(move |(k, kind)| (Some(*t), *k, *kind))),
    )
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
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

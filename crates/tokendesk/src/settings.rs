//! Settings declared once: a [`section!`] declares a table of the configuration file as a
//! struct whose every field is a key, with its type, its default and its documentation. From that
//! one declaration come the key's reading and checking ([`Reader`]), the environment variable
//! that overrides it, the unknown-key check and the documentation table (see `crate::config`).
//!
//! This module knows nothing of tokendesk; the domain declares its policy with it and the
//! configuration everything else.

use std::ops::RangeInclusive;

use figment::value::{Empty, Num, Value};

/// What the documentation says of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    /// The key's name in its table.
    pub key: String,
    /// Its type, as the documentation's type column shows it.
    pub kind: String,
    /// Its default, as the documentation shows it (`—` for none, `**required**`).
    pub default: String,
    /// What it means (the field's doc comment).
    pub doc: String,
    /// For the `_file` form of a secret: the key it is the other form of.
    pub companion_of: Option<String>,
}

/// A table of the configuration (or its top level), declared with [`section!`].
pub trait Section: Sized + Default {
    /// The table's name, or `None` for the keys at the top of the file.
    const TABLE: Option<&'static str>;
    /// Every key, in declaration order.
    fn keys() -> Vec<KeyDoc>;
    /// Reads every key of the table (defaults for those not given), reporting each problem.
    fn read(reader: &mut Reader<'_>) -> Self;
}

/// A value given for a key, and whether it came from an environment variable (whose text is
/// converted to the key's type).
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    pub value: &'a Value,
    pub from_env: bool,
}

/// What is wrong with a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not of the key's type.
    Type(String),
    /// Of the right type, but not acceptable.
    Invalid(String),
    /// Several items of a list are not acceptable, one message each.
    Items(Vec<String>),
    /// Two forms of the key are both set.
    Conflict(String),
    /// Reading what the key names failed (a secret file).
    Io(String),
}

/// A type a key may have.
pub trait Setting: Sized {
    /// The documentation's type column.
    fn kind() -> String;

    /// The documentation's default column for this value.
    fn show(&self) -> String;

    /// Reads the value given for the key.
    fn parse(found: Found<'_>) -> Result<Self, Problem>;

    /// Reads the key named `key` into this type: the given value, or `default` when there is
    /// none. A type made of several keys (a secret and its `_file` form) overrides this.
    fn read(reader: &mut Reader<'_>, key: &'static str, default: Self) -> Self {
        match reader.found(key) {
            None => default,
            Some(found) => match Self::parse(found) {
                Ok(value) => value,
                Err(problem) => {
                    reader.problem(key, problem);
                    default
                }
            },
        }
    }

    /// The keys this type answers to when declared as `key`.
    fn key_names(key: &'static str) -> Vec<String> {
        vec![key.to_owned()]
    }

    /// A whole number, for range checks.
    fn as_count(&self) -> Option<u64> {
        None
    }
}

/// Looks up the value given for a key of the table being read, if any.
pub type Lookup<'a> = dyn Fn(&str) -> Option<Found<'a>> + 'a;

/// Reads the keys of one table, collecting every problem (a key with a problem keeps its
/// default, and is named in [`Reader::problems`]).
pub struct Reader<'a> {
    table: Option<&'static str>,
    lookup: &'a Lookup<'a>,
    problems: Vec<(String, Problem)>,
    /// Extra work a setting needs done while reading (secret files are read relative to this).
    pub context: &'a dyn ReadContext,
}

/// What a setting may need from the loader while it is read.
pub trait ReadContext {
    /// Reads a secret from a file named at `key` (relative paths resolved as the loader
    /// documents); `Err` says why not.
    fn read_secret_file(
        &self,
        key: &str,
        path: &str,
    ) -> Result<(String, std::path::PathBuf), Problem>;
    /// The environment variable a key was set from, if it was.
    fn env_var(&self, key: &str) -> Option<String>;
}

impl<'a> Reader<'a> {
    pub fn new(
        table: Option<&'static str>,
        lookup: &'a Lookup<'a>,
        context: &'a dyn ReadContext,
    ) -> Reader<'a> {
        Reader {
            table,
            lookup,
            problems: Vec::new(),
            context,
        }
    }

    /// The dotted name of a key of this table.
    pub fn dotted(&self, key: &str) -> String {
        match self.table {
            Some(t) => format!("{t}.{key}"),
            None => key.to_owned(),
        }
    }

    /// The value given for `key`, unless it is empty (an empty environment variable unsets).
    pub fn found(&self, key: &str) -> Option<Found<'a>> {
        (self.lookup)(key).filter(|f| !matches!(f.value, Value::Empty(..)))
    }

    /// Records a problem with `key`.
    pub fn problem(&mut self, key: &str, problem: Problem) {
        let dotted = self.dotted(key);
        self.problems.push((dotted, problem));
    }

    /// Reads one declared field: its value (or default), checked against `range` if any.
    pub fn field<T: Setting>(
        &mut self,
        key: &'static str,
        default: T,
        range: Option<RangeInclusive<u64>>,
    ) -> T {
        let given = self.found(key).is_some();
        let value = T::read(self, key, default);
        if let (true, Some(range), Some(n)) = (given, range, value.as_count())
            && !range.contains(&n)
        {
            self.problem(
                key,
                Problem::Invalid(format!(
                    "must be between {} and {} (got {n})",
                    range.start(),
                    range.end()
                )),
            );
        }
        value
    }

    /// The problems found, as (dotted key, problem).
    pub fn into_problems(self) -> Vec<(String, Problem)> {
        self.problems
    }
}

/// A section's table from its declaration: `""` for the top level.
pub const fn table_name(name: &'static str) -> Option<&'static str> {
    if name.is_empty() { None } else { Some(name) }
}

/// A doc comment as one paragraph (the leading space of each line removed, lines joined).
pub fn doc_text(raw: &str) -> String {
    raw.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The documentation's type column of a field.
pub fn kind_of<T: Setting>(range: Option<RangeInclusive<u64>>) -> String {
    match range {
        Some(r) if *r.end() >= i64::MAX as u64 => format!("integer ≥ {}", r.start()),
        Some(r) => format!("{}–{}", r.start(), r.end()),
        None => T::kind(),
    }
}

/// Declares a table of the configuration: a struct whose fields are its keys. Each field has
/// its doc comment (the documentation of the key), its type (a [`Setting`]), its default, and
/// for whole numbers an optional inclusive range:
///
/// ```ignore
/// section! {
///     /// `[workers]`: background work.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub struct WorkersConfig in "workers" {
///         /// How long a claimed job is held.
///         lease_secs: u64 = 300, in 1..=86_400;
///     }
/// }
/// ```
macro_rules! section {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident in $table:literal {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $default:expr $(, in $lo:literal ..= $hi:literal)? $(, shown $shown:literal)? ;
            )*
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl $crate::settings::Section for $name {
            const TABLE: Option<&'static str> = $crate::settings::table_name($table);

            fn keys() -> Vec<$crate::settings::KeyDoc> {
                let defaults = Self::default();
                let mut keys = Vec::new();
                $(
                    let names = <$ty as $crate::settings::Setting>::key_names(stringify!($field));
                    for (i, name) in names.into_iter().enumerate() {
                        let companion = i > 0;
                        keys.push($crate::settings::KeyDoc {
                            key: name,
                            kind: if companion {
                                "path".to_owned()
                            } else {
                                $crate::settings::kind_of::<$ty>($crate::settings::section!(@range $($lo, $hi)?))
                            },
                            default: if companion {
                                "—".to_owned()
                            } else {
                                $crate::settings::section!(@shown defaults.$field $(, $shown)?)
                            },
                            doc: if companion {
                                format!("File holding `{}`; a relative path as described under [Paths](#paths).", stringify!($field))
                            } else {
                                $crate::settings::doc_text(concat!($($doc, "\n",)*))
                            },
                            companion_of: companion.then(|| stringify!($field).to_owned()),
                        });
                    }
                )*
                keys
            }

            fn read(reader: &mut $crate::settings::Reader<'_>) -> Self {
                let defaults = Self::default();
                Self {
                    $(
                        $field: reader.field(
                            stringify!($field),
                            defaults.$field,
                            $crate::settings::section!(@range $($lo, $hi)?),
                        ),
                    )*
                }
            }
        }
    };
    (@shown $value:expr) => { $crate::settings::Setting::show(&$value) };
    (@shown $value:expr, $shown:literal) => { $shown.to_owned() };
    (@range) => { None };
    (@range $lo:literal, $hi:literal) => { Some(($lo as u64)..=($hi as u64)) };
}
pub(crate) use section;

/// How a value's type is named in messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(..) | Value::Char(..) => "a string",
        Value::Num(_, Num::F32(_) | Num::F64(_)) => "a float",
        Value::Num(..) => "an integer",
        Value::Bool(..) => "a boolean",
        Value::Empty(..) => "nothing",
        Value::Dict(..) => "a table",
        Value::Array(..) => "a list",
    }
}

/// The text of a string value.
pub fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(_, s) => Some(s.clone()),
        Value::Char(_, c) => Some(c.to_string()),
        _ => None,
    }
}

fn expected(kind: &str, value: &Value) -> Problem {
    let mut message = format!("expected {kind}, found {}", type_name(value));
    match value {
        Value::Num(..) | Value::Bool(..) if kind.contains("string") => {
            message.push_str("; put the value in quotes");
        }
        Value::String(_, s) if kind.contains("whole number") && s.trim().parse::<u64>().is_ok() => {
            message.push_str("; write the number without quotes");
        }
        Value::String(..) if kind.contains("list") => {
            message.push_str(r#"; write it as ["…", "…"]"#)
        }
        _ => {}
    }
    Problem::Type(message)
}

impl Setting for String {
    fn kind() -> String {
        "string".to_owned()
    }
    fn show(&self) -> String {
        format!("`{self}`")
    }
    fn parse(found: Found<'_>) -> Result<Self, Problem> {
        as_text(found.value).ok_or_else(|| expected("a string", found.value))
    }
}

impl<T: Setting> Setting for Option<T> {
    fn kind() -> String {
        T::kind()
    }
    fn show(&self) -> String {
        match self {
            Some(v) => v.show(),
            None => "—".to_owned(),
        }
    }
    fn parse(found: Found<'_>) -> Result<Self, Problem> {
        T::parse(found).map(Some)
    }
    fn as_count(&self) -> Option<u64> {
        self.as_ref().and_then(Setting::as_count)
    }
}

impl Setting for bool {
    fn kind() -> String {
        "boolean".to_owned()
    }
    fn show(&self) -> String {
        format!("`{self}`")
    }
    fn parse(found: Found<'_>) -> Result<Self, Problem> {
        match found.value {
            Value::Bool(_, b) => Ok(*b),
            Value::String(_, s) if found.from_env => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(Problem::Type(format!("expected true or false, got `{s}`"))),
            },
            other => Err(expected("a boolean (true or false)", other)),
        }
    }
}

/// Reads a whole number no larger than `max`.
fn whole(found: Found<'_>, max: u64) -> Result<u64, Problem> {
    let kind = format!("a whole number between 0 and {max}");
    match found.value {
        Value::Num(_, n) => match n.to_i128() {
            Some(i) => u64::try_from(i)
                .ok()
                .filter(|v| *v <= max)
                .ok_or_else(|| Problem::Type(format!("must be {kind} (got {i})"))),
            None => Err(expected(&kind, found.value)),
        },
        Value::String(_, s) if found.from_env => s
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|v| *v <= max)
            .ok_or_else(|| Problem::Type(format!("expected {kind}, got `{s}`"))),
        other => Err(expected(&kind, other)),
    }
}

macro_rules! whole_number {
    ($($t:ty => $max:expr),*) => {$(
        impl Setting for $t {
            fn kind() -> String {
                "integer".to_owned()
            }
            fn show(&self) -> String {
                format!("`{self}`")
            }
            fn parse(found: Found<'_>) -> Result<Self, Problem> {
                let n = whole(found, $max)?;
                <$t>::try_from(n).map_err(|_| Problem::Type(format!("{n} is too large")))
            }
            fn as_count(&self) -> Option<u64> {
                u64::try_from(*self).ok()
            }
        }
    )*};
}

whole_number!(u16 => u64::from(u16::MAX), u32 => u64::from(u32::MAX), u64 => i64::MAX as u64);

/// A list of strings: a TOML array, or comma-separated text in the environment (blanks around
/// commas ignored; an empty value is an empty list).
impl Setting for Vec<String> {
    fn kind() -> String {
        "list of strings".to_owned()
    }
    fn show(&self) -> String {
        show_list(self)
    }
    fn parse(found: Found<'_>) -> Result<Self, Problem> {
        match found.value {
            Value::Array(_, items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    as_text(item).ok_or_else(|| {
                        Problem::Type(format!(
                            "expected a list of strings, but item {} is {}",
                            i + 1,
                            type_name(item)
                        ))
                    })
                })
                .collect(),
            Value::String(_, s) if found.from_env => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()),
            other => Err(expected("a list of strings", other)),
        }
    }
}

/// A list as the documentation shows it: `["a", "b"]`.
pub fn show_list<T: std::fmt::Display>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("`[{}]`", items.join(", "))
}

/// An environment variable's value, unset when empty.
pub fn env_value(text: &str) -> Value {
    if text.trim().is_empty() {
        Value::from(Empty::None)
    } else {
        Value::from(text.to_owned())
    }
}

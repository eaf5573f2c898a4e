//! The types configuration keys have beyond strings and numbers: each reads and checks its
//! value once, with a message that says how to fix it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};

use crate::domain::{Login, UserIdPattern};
use crate::settings::{Found, Problem, Reader, Setting, as_text, type_name};

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

/// A secret given inline (`key`) or in a file (`key_file`): the value, trimmed, and where it
/// came from. Setting both forms is an error; a secret is never shown in a message.
#[derive(Clone, Default)]
pub struct Secret(pub Option<(SecretString, SecretSource)>);

impl Secret {
    /// A secret set in code.
    pub fn code(value: SecretString) -> Secret {
        Secret(Some((value, SecretSource::Code)))
    }

    pub fn value(&self) -> Option<&SecretString> {
        self.0.as_ref().map(|(v, _)| v)
    }

    pub fn source(&self) -> Option<&SecretSource> {
        self.0.as_ref().map(|(_, s)| s)
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source() {
            Some(source) => write!(f, "Secret([REDACTED], {source:?})"),
            None => f.write_str("Secret(unset)"),
        }
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some((a, sa)), Some((b, sb))) => a.expose_secret() == b.expose_secret() && sa == sb,
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for Secret {}

impl Setting for Secret {
    fn kind() -> String {
        "string (secret)".to_owned()
    }
    fn show(&self) -> String {
        "—".to_owned()
    }
    fn parse(found: Found<'_>) -> Result<Self, Problem> {
        let text = as_text(found.value).ok_or_else(|| {
            Problem::Type(format!(
                "expected a string, found {}",
                type_name(found.value)
            ))
        })?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Problem::Invalid("is empty".to_owned()));
        }
        Ok(Secret(Some((
            SecretString::from(trimmed.to_owned()),
            SecretSource::Inline,
        ))))
    }
    fn key_names(key: &'static str) -> Vec<String> {
        vec![key.to_owned(), format!("{key}_file")]
    }
    fn read(reader: &mut Reader<'_>, key: &'static str, default: Self) -> Self {
        let file_key = format!("{key}_file");
        let inline = reader.found(key);
        let file = reader.found(&file_key);
        match (inline, file) {
            (Some(_), Some(_)) => {
                reader.problem(
                    key,
                    Problem::Conflict(format!("{key} and {key}_file are both set; keep one")),
                );
                default
            }
            (Some(found), None) => match Secret::parse(found) {
                Ok(Secret(Some((value, _)))) => {
                    let source = match reader.context.env_var(&reader.dotted(key)) {
                        Some(var) => SecretSource::Env(var),
                        None => SecretSource::Inline,
                    };
                    Secret(Some((value, source)))
                }
                Ok(other) => other,
                Err(problem) => {
                    reader.problem(key, problem);
                    default
                }
            },
            (None, Some(found)) => {
                let Some(path) = as_text(found.value) else {
                    reader.problem(
                        &file_key,
                        Problem::Type(format!(
                            "expected a string, found {}",
                            type_name(found.value)
                        )),
                    );
                    return default;
                };
                let dotted = reader.dotted(&file_key);
                match reader.context.read_secret_file(&dotted, path.trim()) {
                    Ok((content, path)) => Secret(Some((
                        SecretString::from(content),
                        SecretSource::File(path),
                    ))),
                    Err(problem) => {
                        reader.problem(&file_key, problem);
                        default
                    }
                }
            }
            (None, None) => default,
        }
    }
}

impl Setting for SecretString {
    fn kind() -> String {
        "string (secret)".to_owned()
    }
    fn show(&self) -> String {
        "—".to_owned()
    }
    fn parse(found: Found<'_>) -> Result<Self, Problem> {
        as_text(found.value).map(SecretString::from).ok_or_else(|| {
            Problem::Type(format!(
                "expected a string, found {}",
                type_name(found.value)
            ))
        })
    }
}

impl Setting for SocketAddr {
    fn kind() -> String {
        "`IP:PORT`".to_owned()
    }
    fn show(&self) -> String {
        format!("`{self}`")
    }
    fn parse(found: Found<'_>) -> Result<Self, Problem> {
        let text = String::parse(found)?;
        text.trim().parse::<SocketAddr>().map_err(|_| {
            Problem::Invalid(format!(
                "`{text}` is not IP:PORT; write it like 127.0.0.1:8080 or [::]:8080 (an IP address, not a host name)"
            ))
        })
    }
}

impl Setting for super::Listen {
    fn kind() -> String {
        "`IP:PORT` or `unix:/PATH`".to_owned()
    }
    fn show(&self) -> String {
        format!("`{self}`")
    }
    fn parse(found: Found<'_>) -> Result<Self, Problem> {
        let text = String::parse(found)?;
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            let path = std::path::PathBuf::from(path);
            if !path.is_absolute() {
                return Err(Problem::Invalid(format!(
                    "`{text}`: a Unix socket's path must be absolute, e.g. unix:/run/tokendesk/http.sock"
                )));
            }
            return Ok(super::Listen::Unix(path));
        }
        text.parse::<SocketAddr>().map(super::Listen::Tcp).map_err(|_| {
            Problem::Invalid(format!(
                "`{text}` is not IP:PORT or unix:/PATH; write it like 127.0.0.1:8080, [::]:8080 (an IP address, not a host name) or unix:/run/tokendesk/http.sock"
            ))
        })
    }
}

/// Peers given as networks (`10.0.0.0/8`) or single addresses.
impl Setting for Vec<IpNet> {
    fn kind() -> String {
        "list of IP networks".to_owned()
    }
    fn show(&self) -> String {
        crate::settings::show_list(self)
    }
    fn parse(found: Found<'_>) -> Result<Self, Problem> {
        let items = <Vec<String>>::parse(found)?;
        let mut nets = Vec::new();
        let mut bad = Vec::new();
        for item in items {
            let text = item.trim();
            if let Ok(net) = text.parse::<IpNet>() {
                nets.push(net.trunc());
            } else if let Ok(ip) = text.parse::<IpAddr>() {
                nets.push(IpNet::from(ip));
            } else {
                bad.push(format!(
                    "`{item}` is not an IP network; write a CIDR like 10.0.0.0/8 or a single address like 10.1.2.3"
                ));
            }
        }
        if bad.is_empty() {
            Ok(nets)
        } else {
            Err(Problem::Items(bad))
        }
    }
}

/// Logins, checked with the same rules as a sign-in; duplicates are dropped.
impl Setting for Vec<Login> {
    fn kind() -> String {
        "list of logins".to_owned()
    }
    fn show(&self) -> String {
        crate::settings::show_list(self)
    }
    fn parse(found: Found<'_>) -> Result<Self, Problem> {
        let items = <Vec<String>>::parse(found)?;
        let mut logins: Vec<Login> = Vec::new();
        let mut bad = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match Login::parse(item) {
                Ok(login) => {
                    if !logins.contains(&login) {
                        logins.push(login);
                    }
                }
                Err(e) => bad.push(format!(
                    "item {} (`{}`) must be a non-empty login without whitespace: {}",
                    i + 1,
                    item.trim(),
                    e.message
                )),
            }
        }
        if bad.is_empty() {
            Ok(logins)
        } else {
            Err(Problem::Items(bad))
        }
    }
}

impl Setting for UserIdPattern {
    fn kind() -> String {
        UserIdPattern::ALL
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(" \\| ")
    }
    fn show(&self) -> String {
        format!("`{self}`")
    }
    fn parse(found: Found<'_>) -> Result<Self, Problem> {
        let text = String::parse(found)?;
        UserIdPattern::parse(&text).map_err(Problem::Invalid)
    }
}

impl Setting for Mailbox {
    fn kind() -> String {
        "email address".to_owned()
    }
    fn show(&self) -> String {
        format!("`{self}`")
    }
    fn parse(found: Found<'_>) -> Result<Self, Problem> {
        let text = String::parse(found)?;
        text.trim().parse::<Mailbox>().map_err(|_| {
            Problem::Invalid(format!(
                "`{text}` is not an email address; write `name@example.edu` or `Display Name <name@example.edu>`"
            ))
        })
    }
}

/// A closed set of choices named in the configuration: `choices!(Type { "name" => Variant })`
/// gives it its spelling (`as_str`, `Display`) and its reading ("expected one of …").
macro_rules! choices {
    ($ty:ident { $($name:literal => $variant:ident),+ $(,)? }) => {
        impl $ty {
            /// Every choice, in the documented order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The configuration spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::settings::Setting for $ty {
            fn kind() -> String {
                $ty::ALL
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(" \\| ")
            }
            fn show(&self) -> String {
                format!("`{self}`")
            }
            fn parse(
                found: $crate::settings::Found<'_>,
            ) -> Result<Self, $crate::settings::Problem> {
                let text = <String as $crate::settings::Setting>::parse(found)?;
                $ty::ALL
                    .iter()
                    .copied()
                    .find(|c| c.as_str().eq_ignore_ascii_case(text.trim()))
                    .ok_or_else(|| {
                        let names: Vec<&str> = $ty::ALL.iter().map(|c| c.as_str()).collect();
                        $crate::settings::Problem::Invalid(format!(
                            "expected one of {}, got `{text}`",
                            names.join(", ")
                        ))
                    })
            }
        }
    };
}
pub(crate) use choices;

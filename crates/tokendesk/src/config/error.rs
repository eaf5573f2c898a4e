//! Configuration problems: every one names the key, where it was set, what is wrong and how to fix it.

use std::fmt;
use std::path::PathBuf;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file, at this 1-based line when known.
    File { path: PathBuf, line: Option<usize> },
    /// An environment variable.
    Env { var: String },
    /// Not set anywhere (a default or a missing required key).
    Unset,
}

/// What kind of problem it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be read, or a secret file could not be read.
    Io,
    /// The file is not valid TOML.
    Syntax,
    /// A key, table or `TOKENDESK_…` variable that tokendesk does not know.
    UnknownKey,
    /// A value of the wrong type (a string where a number is expected, …).
    Type,
    /// A required key is missing.
    Missing,
    /// Two keys contradict each other (both forms of a secret, …).
    Conflict,
    /// A value of the right type that is not acceptable.
    Invalid,
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted key (`canvas.url`), or the variable name for an unknown variable.
    pub key: String,
    /// Where the offending value was set.
    pub origin: Origin,
    /// What kind of problem this is.
    pub kind: ErrorKind,
    /// What is wrong and how to fix it. Never contains a secret value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File {
                path,
                line: Some(line),
            } => {
                write!(
                    f,
                    "{}:{line}: {}: {}",
                    path.display(),
                    self.key,
                    self.message
                )
            }
            Origin::File { path, line: None } => {
                write!(f, "{}: {}: {}", path.display(), self.key, self.message)
            }
            Origin::Env { var } if *var == self.key => write!(f, "{var}: {}", self.message),
            Origin::Env { var } => write!(f, "{var} ({}): {}", self.key, self.message),
            Origin::Unset => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// All the problems found in a configuration (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors {
    /// The problems, in the order they were found: file syntax, unknown keys, types, then values.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// The number of problems.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Whether there are no problems.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Iterate over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    /// Whether some problem concerns `key` (a dotted key such as `policy.max_reveals`).
    pub fn has_key(&self, key: &str) -> bool {
        self.errors.iter().any(|e| e.key == key)
    }

    pub(crate) fn push(
        &mut self,
        key: impl Into<String>,
        origin: Origin,
        kind: ErrorKind,
        message: impl Into<String>,
    ) {
        self.errors.push(ConfigError {
            key: key.into(),
            origin,
            kind,
            message: message.into(),
        });
    }
}

impl fmt::Display for ConfigErrors {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

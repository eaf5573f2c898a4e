//! The people (and their pre-made tokens) a simulator starts with: a TOML seed file or the
//! documented default seed.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml::Spanned;

use crate::token::plausible_value;

/// The default seed's admin token (user 1, `ada.admin`). Documented so that demos and scripts
/// can use it; never use the default seed anywhere but on loopback.
pub const DEFAULT_ADMIN_TOKEN: &str =
    "kAh2Ez6rU24NnHf9Z7N4PEtnwN3rmYRFmrTZ3eW3rxABTJFKXyvTrV2Xcmu6LZR7";
/// The default seed's token for `sam.student` (user 2).
pub const DEFAULT_STUDENT_TOKEN: &str =
    "rQ4BHutC9K3M77K2n6r4DrBCEkTk4fH3FcXYYZPWVP4VLEDhyF3LthKRQKAKTYGm";
/// The default seed's token for `theo.teacher` (user 4).
pub const DEFAULT_TEACHER_TOKEN: &str =
    "2Z9uF2DVAnXQ9EQMNQQC8JC2XhZKEJJwJ8P44hzTTzUt8MB7xR86RJ2cvYcKmKxz";

/// Enrollment roles a seeded person may have.
pub const ROLES: &[&str] = &["student", "teacher", "ta", "observer", "designer"];

/// Root-account settings of the admin-managed tokens feature (`canvas-api.md` §1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeedSettings {
    /// Nobody may create or update tokens for themselves (admins still may for anyone).
    pub limit_personal_access_tokens: bool,
    /// People whose only roles are student/observer may not create tokens for themselves.
    pub restrict_personal_access_tokens_from_students: bool,
}

/// Everything a simulator starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub settings: SeedSettings,
    pub users: Vec<SeedUser>,
}

/// One person in Canvas. It serializes without its tokens (the simulator's state file keeps a
/// person so, and their tokens as records with hashed values).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct SeedUser {
    pub id: u64,
    pub name: String,
    /// The SIS login (`sis_login_id:` resolves it).
    pub login_id: String,
    pub email: String,
    pub sis_user_id: Option<String>,
    /// Holds the root-account permissions to create, view and delete other people's tokens.
    pub admin: bool,
    pub roles: Vec<String>,
    #[serde(skip)]
    pub tokens: Vec<SeedToken>,
}

/// The state of a pre-made token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedTokenState {
    Pending,
    Active,
    Deleted,
}

/// A pre-made token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedToken {
    pub value: String,
    pub purpose: String,
    pub expires_at: Option<OffsetDateTime>,
    pub state: SeedTokenState,
}

impl SeedToken {
    /// An active token without expiry.
    pub fn active(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            purpose: "seeded".to_owned(),
            expires_at: None,
            state: SeedTokenState::Active,
        }
    }
}

/// A seed file that cannot be used, with the line it concerns where there is one.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read seed file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(String),
    #[error("line {line}: {reason}")]
    Invalid { line: usize, reason: String },
}

impl Default for Seed {
    /// The documented default seed: one admin, two students, a teacher and a person who is both.
    fn default() -> Self {
        let user =
            |id, name: &str, login: &str, sis: &str, admin, roles: &[&str], tokens: &[&str]| {
                SeedUser {
                    id,
                    name: name.to_owned(),
                    login_id: login.to_owned(),
                    email: format!("{login}@example.edu"),
                    sis_user_id: Some(sis.to_owned()),
                    admin,
                    roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                    tokens: tokens.iter().map(|t| SeedToken::active(*t)).collect(),
                }
            };
        Seed {
            settings: SeedSettings::default(),
            users: vec![
                user(
                    1,
                    "Ada Admin",
                    "ada.admin",
                    "A0001",
                    true,
                    &[],
                    &[DEFAULT_ADMIN_TOKEN],
                ),
                user(
                    2,
                    "Sam Student",
                    "sam.student",
                    "S1001",
                    false,
                    &["student"],
                    &[DEFAULT_STUDENT_TOKEN],
                ),
                user(
                    3,
                    "Stella Student",
                    "stella.student",
                    "S1002",
                    false,
                    &["student"],
                    &[],
                ),
                user(
                    4,
                    "Theo Teacher",
                    "theo.teacher",
                    "T2001",
                    false,
                    &["teacher"],
                    &[DEFAULT_TEACHER_TOKEN],
                ),
                user(
                    5,
                    "Rita Researcher",
                    "rita.researcher",
                    "R3001",
                    false,
                    &["teacher", "student"],
                    &[],
                ),
            ],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeed {
    #[serde(default)]
    settings: SeedSettings,
    #[serde(default)]
    users: Vec<Spanned<RawUser>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    id: Spanned<u64>,
    name: Spanned<String>,
    login_id: Spanned<String>,
    email: Spanned<String>,
    sis_user_id: Option<Spanned<String>>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    roles: Vec<Spanned<String>>,
    #[serde(default)]
    tokens: Vec<Spanned<RawToken>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawToken {
    Value(String),
    Full {
        value: String,
        purpose: Option<String>,
        expires_at: Option<String>,
        state: Option<SeedTokenState>,
    },
}

impl Seed {
    /// Reads and checks a seed file.
    pub fn load(path: &Path) -> Result<Seed, SeedError> {
        let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Seed::from_toml(&text)
    }

    /// Parses and checks seed TOML; errors name the line and the reason.
    pub fn from_toml(text: &str) -> Result<Seed, SeedError> {
        let raw: RawSeed =
            toml::from_str(text).map_err(|e| SeedError::Syntax(e.to_string().trim().to_owned()))?;
        let line_of = |span: std::ops::Range<usize>| {
            text.get(..span.start)
                .map_or(1, |before| before.matches('\n').count() + 1)
        };
        let invalid = |span, reason: String| SeedError::Invalid {
            line: line_of(span),
            reason,
        };

        let mut ids = HashSet::new();
        let mut logins = HashSet::new();
        let mut sis_ids = HashSet::new();
        let mut values = HashSet::new();
        let mut users = Vec::with_capacity(raw.users.len());
        for raw_user in raw.users {
            let u = raw_user.into_inner();
            if *u.id.get_ref() == 0 {
                return Err(invalid(
                    u.id.span(),
                    "`id` must be a positive integer".into(),
                ));
            }
            if !ids.insert(*u.id.get_ref()) {
                return Err(invalid(
                    u.id.span(),
                    format!(
                        "`id` {} is used by another user; ids must be unique",
                        u.id.get_ref()
                    ),
                ));
            }
            for (field, value) in [
                ("name", &u.name),
                ("login_id", &u.login_id),
                ("email", &u.email),
            ] {
                if value.get_ref().trim().is_empty() {
                    return Err(invalid(
                        value.span(),
                        format!("`{field}` must not be empty"),
                    ));
                }
            }
            let login = u.login_id.get_ref();
            if login.chars().any(char::is_whitespace) {
                return Err(invalid(
                    u.login_id.span(),
                    format!("`login_id` {login:?} must not contain spaces"),
                ));
            }
            if !logins.insert(login.to_lowercase()) {
                return Err(invalid(
                    u.login_id.span(),
                    format!("`login_id` {login:?} is used by another user; logins must be unique"),
                ));
            }
            if !u.email.get_ref().contains('@') {
                return Err(invalid(
                    u.email.span(),
                    format!("`email` {:?} is not an email address", u.email.get_ref()),
                ));
            }
            if let Some(sis) = &u.sis_user_id
                && (sis.get_ref().trim().is_empty() || !sis_ids.insert(sis.get_ref().clone()))
            {
                return Err(invalid(
                    sis.span(),
                    format!(
                        "`sis_user_id` {:?} is empty or used by another user",
                        sis.get_ref()
                    ),
                ));
            }
            let mut roles = Vec::new();
            for role in u.roles {
                if !ROLES.contains(&role.get_ref().as_str()) {
                    return Err(invalid(
                        role.span(),
                        format!(
                            "unknown role {:?}; use one of: {}",
                            role.get_ref(),
                            ROLES.join(", ")
                        ),
                    ));
                }
                roles.push(role.into_inner());
            }
            let mut tokens = Vec::new();
            for raw_token in u.tokens {
                let span = raw_token.span();
                let token = match raw_token.into_inner() {
                    RawToken::Value(value) => SeedToken::active(value),
                    RawToken::Full {
                        value,
                        purpose,
                        expires_at,
                        state,
                    } => {
                        let expires_at = match expires_at {
                            None => None,
                            Some(s) => Some(OffsetDateTime::parse(&s, &Rfc3339).map_err(|_| {
                                invalid(
                                    span.clone(),
                                    format!(
                                        "`expires_at` {s:?} is not an RFC 3339 time such as \"2030-01-31T12:00:00Z\""
                                    ),
                                )
                            })?),
                        };
                        SeedToken {
                            value,
                            purpose: purpose.unwrap_or_else(|| "seeded".to_owned()),
                            expires_at,
                            state: state.unwrap_or(SeedTokenState::Active),
                        }
                    }
                };
                if !plausible_value(&token.value) {
                    return Err(invalid(
                        span,
                        "a token value must be at least 16 letters or digits, optionally after a `digits~` shard prefix".into(),
                    ));
                }
                if !values.insert(token.value.clone()) {
                    return Err(invalid(span, "this token value is given twice".into()));
                }
                tokens.push(token);
            }
            users.push(SeedUser {
                id: u.id.into_inner(),
                name: u.name.into_inner(),
                login_id: u.login_id.into_inner(),
                email: u.email.into_inner(),
                sis_user_id: u.sis_user_id.map(Spanned::into_inner),
                admin: u.admin,
                roles,
                tokens,
            });
        }
        if users.is_empty() {
            return Err(SeedError::Syntax(
                "the seed has no users: add at least one [[users]] table".into(),
            ));
        }
        Ok(Seed {
            settings: raw.settings,
            users,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[settings]
restrict_personal_access_tokens_from_students = true

[[users]]
id = 7
name = "Ann"
login_id = "ann"
email = "ann@example.edu"
admin = true
tokens = ["abcdefghijklmnopqrstuvwxyz", { value = "12345~ABCDEFGHJKLMNPQRTUVW", state = "pending", expires_at = "2020-01-01T00:00:00Z" }]

[[users]]
id = 8
name = "Bob"
login_id = "bob"
email = "bob@example.edu"
sis_user_id = "S8"
roles = ["student"]
"#;

    #[test]
    fn a_good_seed_parses() {
        let seed = Seed::from_toml(GOOD).unwrap();
        assert!(seed.settings.restrict_personal_access_tokens_from_students);
        assert_eq!(seed.users.len(), 2);
        assert_eq!(seed.users[0].tokens.len(), 2);
        assert_eq!(seed.users[0].tokens[1].state, SeedTokenState::Pending);
        assert!(seed.users[0].tokens[1].expires_at.is_some());
        assert_eq!(seed.users[1].sis_user_id.as_deref(), Some("S8"));
    }

    fn error_of(text: &str) -> String {
        Seed::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_line_and_reason() {
        let dup = GOOD.replace("id = 8", "id = 7");
        assert_eq!(
            error_of(&dup),
            "line 14: `id` 7 is used by another user; ids must be unique"
        );
        let role = GOOD.replace("\"student\"", "\"wizard\"");
        let e = error_of(&role);
        assert!(e.starts_with("line 19: unknown role \"wizard\""), "{e}");
        let unknown = GOOD.replace("admin = true", "admn = true");
        let e = error_of(&unknown);
        assert!(e.contains("line 10") && e.contains("admn"), "{e}");
        let short = GOOD.replace("abcdefghijklmnopqrstuvwxyz", "abc");
        assert!(error_of(&short).starts_with("line 11: a token value"));
        let bad_time = GOOD.replace("2020-01-01T00:00:00Z", "tomorrow");
        assert!(error_of(&bad_time).contains("`expires_at` \"tomorrow\""));
        assert!(error_of("").contains("no users"));
        assert!(error_of("[[users]]\nid = 1\n").contains("missing field"));
    }

    #[test]
    fn the_default_seed_is_valid() {
        let seed = Seed::default();
        assert!(seed.users.iter().any(|u| u.admin));
        for u in &seed.users {
            for t in &u.tokens {
                assert!(plausible_value(&t.value));
            }
        }
    }
}

/// Fuzz target: seed files, any text, and seeds built with clashing ids, logins and token values
/// whose verdict (and the line an error names) is known in advance.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod fuzz {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    struct User {
        id: u64,
        login: String,
        tokens: Vec<String>,
    }

    fn user() -> impl Strategy<Value = User> {
        let token = prop_oneof![
            // Plausible, and likely to repeat.
            "[ab]{16}",
            "1~[a-zA-Z0-9]{20}",
            // Too short, or with a character Canvas never uses.
            "[a-z]{1,15}",
            "[a-z]{10}-[a-z]{10}",
        ];
        (
            0u64..5,
            "[a-cA-C]{1,2}",
            proptest::collection::vec(token, 0..3),
        )
            .prop_map(|(id, login, tokens)| User { id, login, tokens })
    }

    /// Lines of a user block: `[[users]]`, id, name, login_id, email, tokens.
    const TOKENS_LINE: usize = 5;
    const BLOCK: usize = 6;

    fn text_of(users: &[User]) -> String {
        let mut text = String::new();
        for (i, u) in users.iter().enumerate() {
            let tokens: Vec<String> = u.tokens.iter().map(|t| format!("{t:?}")).collect();
            text.push_str(&format!(
                "[[users]]\nid = {}\nname = \"Person {i}\"\nlogin_id = {:?}\nemail = \"{}@example.edu\"\ntokens = [{}]\n",
                u.id,
                u.login,
                u.login,
                tokens.join(", ")
            ));
        }
        text
    }

    /// The line of the first thing wrong, in the order the parser checks, or `None`.
    fn first_problem(users: &[User]) -> Option<usize> {
        let (mut ids, mut logins, mut values) = (HashSet::new(), HashSet::new(), HashSet::new());
        for (i, u) in users.iter().enumerate() {
            let start = i * BLOCK + 1;
            if u.id == 0 || !ids.insert(u.id) {
                return Some(start + 1);
            }
            if !logins.insert(u.login.to_lowercase()) {
                return Some(start + 3);
            }
            for t in &u.tokens {
                if !crate::token::plausible_value(t) || !values.insert(t.clone()) {
                    return Some(start + TOKENS_LINE);
                }
            }
        }
        None
    }

    proptest! {
        #[test]
        fn any_text_is_refused_or_accepted_without_panicking(text in "\\PC{0,300}") {
            if let Err(e) = Seed::from_toml(&text) {
                prop_assert!(!e.to_string().is_empty());
            }
        }

        #[test]
        fn clashes_are_found_on_their_line(users in proptest::collection::vec(user(), 1..5)) {
            let text = text_of(&users);
            match (Seed::from_toml(&text), first_problem(&users)) {
                (Ok(seed), None) => prop_assert_eq!(seed.users.len(), users.len()),
                (Err(SeedError::Invalid { line, .. }), Some(expected)) => {
                    prop_assert_eq!(line, expected, "{}", text)
                }
                (got, expected) => {
                    return Err(TestCaseError::fail(format!(
                        "expected a problem on line {expected:?}, got {got:?}\n{text}"
                    )))
                }
            }
        }
    }
}

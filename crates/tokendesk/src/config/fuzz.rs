//! Fuzz target: the configuration parser. Any file text and any value of any documented key (in
//! the file or in its environment variable) gives a configuration or a list of problems, never a
//! panic; a problem names the key it is about; a secret never appears in a problem; a number
//! outside a key's documented range (from the same declaration the docs come from) is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

const TOKEN: &str = "7~fuzzadmintokenvalue0123456789";
const MINIMAL: &str = "[canvas]\nurl = \"https://canvas.example.edu\"\nadmin_token = \"7~fuzzadmintokenvalue0123456789\"\n";

/// A file in a directory of this test's own (cases write it over and over).
fn file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokendesk-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("tokendesk.toml")
}

/// Every documented key: `(table, key, kind)`.
fn keys() -> Vec<(Option<&'static str>, String, String)> {
    sections()
        .into_iter()
        .flat_map(|(table, keys)| keys.into_iter().map(move |k| (table, k.key, k.kind)))
        .collect()
}

fn dotted(table: Option<&str>, key: &str) -> String {
    table.map_or_else(|| key.to_owned(), |t| format!("{t}.{key}"))
}

/// `lo–hi` in the documentation's type column.
fn range_of(kind: &str) -> Option<(i64, i64)> {
    let (lo, hi) = kind.split_once('–')?;
    Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
}

/// Values of every shape a person might type.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        any::<i64>().prop_map(|n| n.to_string()),
        (-5i64..200).prop_map(|n| n.to_string()),
        Just(String::new()),
        "(true|false|yes|no|on|off)",
        "\\[(\"[a-z.]{0,8}\"(, )?){0,3}\\]",
        "[0-9.:\\[\\]a-f/]{1,30}",
        "(https?|postgres|sqlite|ftp)://[a-z0-9.:@/?#%]{0,30}",
    ]
}

/// `value` as TOML: numbers and booleans bare when they parse as such, lists as lists, the rest
/// a quoted string.
fn toml_value(value: &str) -> String {
    if value.parse::<i64>().is_ok() || value == "true" || value == "false" {
        value.to_owned()
    } else if value.starts_with('[') && value.parse::<toml::Value>().is_err() {
        let probe = format!("v = {value}");
        if probe.parse::<toml::Table>().is_ok() {
            value.to_owned()
        } else {
            toml::Value::String(value.to_owned()).to_string()
        }
    } else {
        toml::Value::String(value.to_owned()).to_string()
    }
}

proptest! {
    #[test]
    fn any_file_text_loads_or_says_why(text in "\\PC{0,300}") {
        let path = file("text");
        std::fs::write(&path, &text).unwrap();
        if let Err(errors) = Config::load(Some(&path), [("TOKENDESK_CANVAS__ADMIN_TOKEN", TOKEN)]) {
            prop_assert!(!errors.errors.is_empty());
            let shown = errors.to_string();
            prop_assert!(!shown.contains(TOKEN), "{}", shown);
        }
    }

    #[test]
    fn any_value_of_any_key_in_the_file_loads_or_names_the_key(
        which in any::<prop::sample::Index>(),
        value in any_value(),
    ) {
        let keys = keys();
        let (table, key, _) = &keys[which.index(keys.len())];
        let line = format!("{key} = {}", toml_value(&value));
        let text = match table {
            None => format!("{line}\n{MINIMAL}"),
            Some("canvas") => format!("{MINIMAL}{line}\n"),
            Some(t) => format!("{MINIMAL}[{t}]\n{line}\n"),
        };
        let path = file("value");
        std::fs::write(&path, &text).unwrap();
        if let Err(errors) = Config::load(Some(&path), std::iter::empty::<(&str, &str)>()) {
            let shown = errors.to_string();
            prop_assert!(!shown.contains(TOKEN), "{}", shown);
            let name = dotted(*table, key);
            // A problem about this key, or about a key it must agree with (which names it), or a
            // duplicate key when the fuzzer chose one that MINIMAL sets too.
            prop_assert!(
                errors.errors.iter().any(|e| e.key == name || e.message.contains(key.as_str()))
                    || errors.errors.iter().all(|e| e.kind == ErrorKind::Syntax),
                "{}\n{}", shown, text
            );
        }
    }

    #[test]
    fn any_value_of_any_key_in_the_environment_loads_or_names_the_variable(
        which in any::<prop::sample::Index>(),
        value in any_value(),
    ) {
        let keys = keys();
        let (table, key, _) = &keys[which.index(keys.len())];
        let var = load::env_name(*table, key);
        let mut env = vec![
            ("TOKENDESK_CANVAS__URL".to_owned(), "https://canvas.example.edu".to_owned()),
            ("TOKENDESK_CANVAS__ADMIN_TOKEN".to_owned(), TOKEN.to_owned()),
        ];
        env.retain(|(k, _)| *k != var);
        env.push((var.clone(), value.clone()));
        if let Err(errors) = Config::load(None, env) {
            let shown = errors.to_string();
            prop_assert!(!shown.contains(TOKEN), "{}", shown);
            prop_assert!(
                errors.errors.iter().any(|e| {
                    matches!(&e.origin, Origin::Env { var: v } if *v == var)
                        || e.message.contains(key.as_str())
                }),
                "{} = {:?}: {}", var, value, shown
            );
        }
    }

    #[test]
    fn numbers_outside_a_documented_range_are_refused(
        which in any::<prop::sample::Index>(),
        offset in -3i64..4,
        inside in any::<bool>(),
        pick in any::<prop::sample::Index>(),
    ) {
        let ranged: Vec<_> = keys()
            .into_iter()
            .filter_map(|(t, k, kind)| range_of(&kind).map(|r| (t, k, r)))
            .collect();
        prop_assume!(!ranged.is_empty());
        let (table, key, (lo, hi)) = &ranged[which.index(ranged.len())];
        let value = if inside {
            lo + (pick.index(usize::try_from(hi - lo + 1).unwrap_or(usize::MAX)) as i64)
        } else if offset < 0 {
            lo + offset
        } else {
            hi + 1 + offset
        };
        let var = load::env_name(*table, key);
        let env = [
            ("TOKENDESK_CANVAS__URL".to_owned(), "https://canvas.example.edu".to_owned()),
            ("TOKENDESK_CANVAS__ADMIN_TOKEN".to_owned(), TOKEN.to_owned()),
            (var.clone(), value.to_string()),
        ];
        let result = Config::load(None, env);
        let about_this = |errors: &ConfigErrors| {
            errors.errors.iter().any(|e| matches!(&e.origin, Origin::Env { var: v } if *v == var))
        };
        if (*lo..=*hi).contains(&value) {
            // Inside its own range a value may still clash with another key (a link may not
            // outlive the token), but then the message says which.
            if let Err(errors) = &result {
                prop_assert!(
                    !about_this(errors) || errors.errors.iter().all(|e| e.kind == ErrorKind::Invalid && e.message.contains("than")),
                    "{} = {} is inside {}–{}: {}", var, value, lo, hi, errors
                );
            }
        } else {
            let errors = result.expect_err("out of range");
            prop_assert!(about_this(&errors), "{} = {}: {}", var, value, errors);
        }
    }
}
